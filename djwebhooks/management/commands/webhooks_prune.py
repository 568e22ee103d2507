"""``manage.py webhooks_prune``: delete old finished deliveries and their attempts."""

from django.core.management.base import BaseCommand, CommandError

from djwebhooks import conf
from djwebhooks.management.parsing import check_count, parse_age
from djwebhooks.retention import prunable, prune

#: The most deliveries deleted in one transaction: batches are meant to be short, and their
#: ids are sent as query parameters, of which SQLite takes 32,766 by default (since 3.32).
MAX_BATCH_SIZE = 10000
#: Ages shorter than this are refused unless --force: a delivery that finished so recently
#: may still be looked at, or replayed.
SHORTEST_AGE = 3600


class Command(BaseCommand):
    help = (
        "Delete finished webhook deliveries (succeeded, failed, cancelled) older than "
        "--older-than, or DJWEBHOOKS['RETENTION'], with their attempts. Pending deliveries "
        "are kept."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", help="A duration: 30d, 12h, 2w. Defaults to "
                            "DJWEBHOOKS['RETENTION'] (30 days).")
        parser.add_argument("--batch-size", type=int, default=1000,
                            help="Deliveries deleted per transaction (default 1000, at most "
                            f"{MAX_BATCH_SIZE}).")
        parser.add_argument("--dry-run", action="store_true",
                            help="Count the deliveries that would be deleted, and delete none.")
        parser.add_argument("--force", action="store_true",
                            help="Accept an age under one hour.")

    def handle(self, *args, older_than=None, batch_size=1000, dry_run=False, force=False,
               verbosity=1, **options):
        check_count("--batch-size", batch_size, most=MAX_BATCH_SIZE)
        if older_than is not None:
            age = parse_age(older_than, "--older-than", "30d, 12h or 2w").total_seconds()
            given = f"--older-than {older_than}"
        else:
            age = conf.get_seconds("RETENTION")
            given = f"DJWEBHOOKS['RETENTION'] ({age:g} seconds)"
        if age < SHORTEST_AGE and not force:
            raise CommandError(
                f"{given} is under one hour: deliveries that finished so recently may still "
                "be looked at, or about to be replayed. Nothing was deleted. Give an age of "
                "1h or more, or pass --force to delete them anyway."
            )
        if dry_run:
            count = prunable(age)
            self.stdout.write(f"Dry run: {count} finished "
                              f"{'delivery' if count == 1 else 'deliveries'} would be "
                              "deleted; nothing was deleted.")
            return

        def progress(deleted):
            if verbosity > 1:
                self.stdout.write(f"deleted {deleted} so far")

        deleted = prune(age, batch_size=batch_size, on_batch=progress)
        self.stdout.write(f"Deleted {deleted} finished "
                          f"{'delivery' if deleted == 1 else 'deliveries'}.")
