"""``manage.py webhooks_prune``: delete old finished deliveries and their attempts."""

from django.core.management.base import BaseCommand

from djwebhooks import conf
from djwebhooks.management.parsing import check_count, parse_age
from djwebhooks.retention import prune

#: The most deliveries deleted in one transaction: batches are meant to be short, and their
#: ids are sent as query parameters, of which SQLite takes 32,766 by default (since 3.32).
MAX_BATCH_SIZE = 10000


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

    def handle(self, *args, older_than=None, batch_size=1000, verbosity=1, **options):
        check_count("--batch-size", batch_size, most=MAX_BATCH_SIZE)
        if older_than is not None:
            age = parse_age(older_than, "--older-than", "30d, 12h or 2w")
        else:
            age = conf.get_seconds("RETENTION")

        def progress(deleted):
            if verbosity > 1:
                self.stdout.write(f"deleted {deleted} so far")

        deleted = prune(age, batch_size=batch_size, on_batch=progress)
        self.stdout.write(f"Deleted {deleted} finished "
                          f"{'delivery' if deleted == 1 else 'deliveries'}.")
