"""``manage.py webhooks_sweep``: hand the backend again the due deliveries no queue holds."""

from django.core.management.base import BaseCommand, CommandError

from djwebhooks import conf, queue
from djwebhooks.backends import get_backend
from djwebhooks.exceptions import WebhookImproperlyConfigured
from djwebhooks.management.parsing import check_count, duration_seconds
from djwebhooks.sweep import BATCH_SIZE, LIMIT, sweep

MAX_BATCH_SIZE = 10000


class Command(BaseCommand):
    help = (
        "Hand the webhook backend again every delivery that is due, that no worker holds, "
        "and that no queue has held for DJWEBHOOKS['REQUEUE_AFTER'] (5 minutes): a broker "
        "lost it, an enqueue failed, a worker died, or its retry was too far ahead to queue "
        "in advance. Run it every minute (cron, Celery beat) with a queue backend."
    )

    def add_arguments(self, parser):
        parser.add_argument("--requeue-after", help="A duration (90s, 5m, 1h): how long a "
                            "due delivery may wait in a queue before it is handed over "
                            "again. Defaults to DJWEBHOOKS['REQUEUE_AFTER'].")
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                            help=f"Deliveries per enqueue() call (default {BATCH_SIZE}, at "
                            f"most {MAX_BATCH_SIZE}).")
        parser.add_argument("--limit", type=int, default=LIMIT,
                            help=f"Deliveries handed over at most in this run (default "
                            f"{LIMIT}); the next run takes the rest.")
        parser.add_argument("--dry-run", action="store_true",
                            help="Count the deliveries that would be handed over (up to "
                            "--limit), and hand over none.")

    def handle(self, *args, requeue_after=None, batch_size=BATCH_SIZE, limit=LIMIT,
               dry_run=False, **options):
        check_count("--batch-size", batch_size, most=MAX_BATCH_SIZE)
        check_count("--limit", limit)
        if requeue_after is None:
            seconds = conf.get_seconds("REQUEUE_AFTER")
        else:
            seconds = duration_seconds(requeue_after)
            if seconds is None or seconds > conf.MAX_DURATION:
                raise CommandError(f"--requeue-after {requeue_after!r} is not a duration such "
                                   "as 90s, 5m or 1h (at most ten years).")
        try:
            backend = get_backend()
        except WebhookImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        name = type(backend).__name__
        if dry_run:
            if backend.polls:
                self.stdout.write(f"Nothing to sweep: {name}'s workers find due deliveries "
                                  "in the database themselves.")
                return
            count = len(queue.overdue(limit=limit, requeue_after=seconds))
            self.stdout.write(f"Would hand {count} overdue "
                              f"{'delivery' if count == 1 else 'deliveries'} to {name}.")
            return
        try:
            result = sweep(backend=backend, batch_size=batch_size, limit=limit,
                           requeue_after=seconds)
        except Exception as exc:
            raise CommandError(
                f"{name} refused deliveries: {type(exc).__name__}: {exc}. They stay due; "
                "the next sweep hands them over first."
            ) from exc
        if result.skipped:
            self.stdout.write(f"Nothing to sweep: {result.skipped}.")
            return
        self.stdout.write(f"Handed {result.handed} overdue "
                          f"{'delivery' if result.handed == 1 else 'deliveries'} to {name}.")
