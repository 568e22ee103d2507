"""``manage.py webhooks_prune``: delete old finished deliveries and their attempts."""

from django.core.management.base import BaseCommand, CommandError

from djwebhooks import conf
from djwebhooks.management.commands.webhooks_replay import parse_duration
from djwebhooks.retention import prune


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
                            help="Deliveries deleted per transaction (default 1000).")

    def handle(self, *args, older_than=None, batch_size=1000, verbosity=1, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be a positive number.")
        if older_than is not None:
            age = parse_duration(older_than)
            if age is None:
                raise CommandError(f"--older-than {older_than!r} is not a duration such as "
                                   "30d, 12h or 2w.")
        else:
            age = conf.get_seconds("RETENTION")

        def progress(deleted):
            if verbosity > 1:
                self.stdout.write(f"deleted {deleted} so far")

        deleted = prune(age, batch_size=batch_size, on_batch=progress)
        self.stdout.write(f"Deleted {deleted} finished "
                          f"{'delivery' if deleted == 1 else 'deliveries'}.")
