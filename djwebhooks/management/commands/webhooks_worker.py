"""``manage.py webhooks_worker``: send due deliveries until stopped."""

import signal

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from djwebhooks import conf
from djwebhooks.exceptions import WebhookImproperlyConfigured
from djwebhooks.worker import BURST_DATABASE_ERRORS, Worker


class Command(BaseCommand):
    help = (
        "Send pending webhook deliveries as they fall due, with retries. Run one or more "
        "of these with the database backend (or beside the inline backend, for its retries). "
        "SIGTERM or SIGINT finishes the deliveries in flight, then exits."
    )

    def add_arguments(self, parser):
        parser.add_argument("--concurrency", type=int, default=4,
                            help="Deliveries sent at once, each on its own thread (default 4).")
        parser.add_argument("--interval", type=float, default=1.0,
                            help="Seconds between looks for due deliveries when idle "
                            "(default 1).")
        parser.add_argument("--burst", action="store_true",
                            help="Exit once nothing is due, instead of waiting for more.")
        parser.add_argument("--max-deliveries", type=int,
                            help="Exit after sending this many deliveries.")
        parser.add_argument("--lease", type=float,
                            help="Seconds a claim lasts unless the worker renews it, which "
                            "it does every few seconds while it runs (default: "
                            "DJWEBHOOKS['LEASE']).")
        parser.add_argument("--worker-id", help="The name stored on claimed deliveries "
                            "(default: host:pid).")

    def handle(self, *args, concurrency=4, interval=1.0, burst=False, max_deliveries=None,
               lease=None, worker_id=None, verbosity=1, **options):
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1.")
        if interval <= 0:
            raise CommandError("--interval must be a positive number of seconds.")
        if max_deliveries is not None and max_deliveries < 1:
            raise CommandError("--max-deliveries must be a positive number.")
        if lease is not None and lease <= 0:
            raise CommandError("--lease must be a positive number of seconds.")
        if lease is not None and lease < conf.shortest_lease(conf.get_seconds("TOTAL_TIMEOUT")):
            shortest = conf.shortest_lease(conf.get_seconds("TOTAL_TIMEOUT"))
            raise CommandError(
                f"--lease {lease:g} is too short: a request starts only while its claim "
                f"outlasts DJWEBHOOKS['TOTAL_TIMEOUT'] "
                f"({conf.get_seconds('TOTAL_TIMEOUT'):g} s), so nothing would be sent. "
                f"Give at least {shortest:g} seconds."
            )
        worker = Worker(concurrency=concurrency, interval=interval, burst=burst,
                        max_deliveries=max_deliveries, lease=lease, worker_id=worker_id)

        def shut_down(signum, frame):
            self.stderr.write(f"{signal.Signals(signum).name}: finishing the deliveries in "
                              "flight, then stopping.")
            worker.stop()

        previous = {sig: signal.signal(sig, shut_down) for sig in (signal.SIGTERM, signal.SIGINT)}
        if verbosity:
            self.stdout.write(f"Worker {worker.worker_id} sending webhooks "
                              f"(concurrency {concurrency}). Stop with Ctrl-C or SIGTERM.")
        try:
            processed = worker.run()
        except WebhookImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        except DatabaseError as exc:
            # Only a --burst worker gives up; a long-running one waits the database out.
            raise CommandError(
                f"The database failed {BURST_DATABASE_ERRORS} times in a row ({exc}); "
                "nothing more was sent. Deliveries claimed and not recorded are sent again "
                "once their lease expires."
            ) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if verbosity:
            self.stdout.write(f"Worker {worker.worker_id} stopped after {processed} "
                              f"{'delivery' if processed == 1 else 'deliveries'}.")
