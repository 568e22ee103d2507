"""``manage.py webhooks_worker``: send due deliveries until stopped."""

import logging
import signal
from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from djwebhooks import conf, queue, wakeup
from djwebhooks.exceptions import WebhookImproperlyConfigured
from djwebhooks.management.parsing import LONGEST_WAIT, check_seconds, check_text
from djwebhooks.models import Delivery
from djwebhooks.worker import BURST_DATABASE_ERRORS, Worker

#: The most threads one worker process runs; for more deliveries at once, run more
#: processes (or use the async mode). Far beyond it, a process runs out of memory or of
#: threads.
MAX_CONCURRENCY = 1000
#: The most requests one worker process keeps in flight in the async mode, each on a
#: socket of its own (the process's limit on open files is raised to fit, if it can be).
MAX_ASYNC_CONCURRENCY = 10_000
#: Open files a worker needs besides its sockets to receivers.
SPARE_FILES = 100
#: The longest --worker-id: the claimant name it is part of (claimed_by) adds ":" and eight
#: characters of its own.
WORKER_ID_MAX_LENGTH = Delivery._meta.get_field("claimed_by").max_length - 9


class Command(BaseCommand):
    help = (
        "Send pending webhook deliveries as they fall due, with retries. Run one or more "
        "of these with the database backend (or beside the inline backend, for its retries). "
        "SIGTERM or SIGINT finishes the deliveries in flight, then exits."
    )

    def add_arguments(self, parser):
        parser.add_argument("--concurrency", type=int, default=4,
                            help="Deliveries sent at once (default 4): at most "
                            f"{MAX_CONCURRENCY} threads in the threads mode, "
                            f"{MAX_ASYNC_CONCURRENCY} requests in the async mode.")
        parser.add_argument("--mode", choices=conf.SEND_MODES,
                            help="How requests are made: 'threads', one thread per request "
                            "in flight, or 'async', every request on one event loop. "
                            "Default: DJWEBHOOKS['SEND_MODE'], "
                            "'threads' unless set.")
        parser.add_argument("--interval", type=float, default=1.0,
                            help="Seconds between looks for due deliveries when idle "
                            f"(default 1, at most {LONGEST_WAIT}).")
        parser.add_argument("--no-listen", action="store_false", dest="listen",
                            help="On PostgreSQL, do not wake on notifications of new "
                            "deliveries; only look every --interval (for a connection "
                            "pooler in transaction mode, which cannot LISTEN).")
        parser.add_argument("--burst", action="store_true",
                            help="Exit once nothing is due, instead of waiting for more.")
        parser.add_argument("--max-deliveries", type=int,
                            help="Exit after sending this many deliveries.")
        parser.add_argument("--lease", type=float,
                            help="Seconds a claim lasts unless the worker renews it, which "
                            "it does every few seconds while it runs (default: "
                            f"DJWEBHOOKS['LEASE'], at most {LONGEST_WAIT}).")
        parser.add_argument("--worker-id", help="The name of this worker, at most "
                            f"{WORKER_ID_MAX_LENGTH} characters (default: host:pid).")
        parser.add_argument("--metrics-port", type=int,
                            help="Serve Prometheus metrics at http://ADDRESS:PORT/metrics "
                            "from this process (needs dj-webhooks[prometheus]).")
        parser.add_argument("--metrics-address", default="127.0.0.1",
                            help="The address --metrics-port listens on (default 127.0.0.1: "
                            "this host only).")

    def handle(self, *args, concurrency=4, interval=1.0, burst=False, max_deliveries=None,
               lease=None, worker_id=None, listen=True, verbosity=1, mode=None, **options):
        try:
            mode = conf.get_send_mode(mode)
        except WebhookImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1.")
        if mode == "threads" and concurrency > MAX_CONCURRENCY:
            raise CommandError(f"--concurrency must be at most {MAX_CONCURRENCY} (threads in one "
                               "process); run more processes, or use --mode async, to send "
                               "more at once.")
        if mode == "async":
            if concurrency > MAX_ASYNC_CONCURRENCY:
                raise CommandError(f"--concurrency must be at most {MAX_ASYNC_CONCURRENCY} "
                                   "with --mode async; run more processes to send more at "
                                   "once.")
            make_room_for_sockets(concurrency + SPARE_FILES)
        check_seconds("--interval", interval)
        if max_deliveries is not None and max_deliveries < 1:
            raise CommandError("--max-deliveries must be a positive number.")
        if lease is not None:
            check_seconds("--lease", lease)
            total = conf.get_seconds("TOTAL_TIMEOUT")
            if lease < conf.shortest_lease(total):
                raise CommandError(
                    f"--lease {lease:g} is too short: a request starts only while its claim "
                    f"outlasts DJWEBHOOKS['TOTAL_TIMEOUT'] ({total:g} s), so nothing would "
                    f"be sent. Give at least {conf.shortest_lease(total):g} seconds."
                )
        if worker_id is not None:
            check_text("--worker-id", worker_id)
            if len(worker_id) > WORKER_ID_MAX_LENGTH:
                raise CommandError(f"--worker-id must be at most {WORKER_ID_MAX_LENGTH} "
                                   f"characters long; got {len(worker_id)}.")
        worker = Worker(concurrency=concurrency, interval=interval, burst=burst,
                        max_deliveries=max_deliveries, lease=lease, worker_id=worker_id,
                        mode=mode, listen=listen)
        metrics_server = serve_metrics(options["metrics_port"], options["metrics_address"])

        def shut_down(signum, frame):
            self.stderr.write(f"{signal.Signals(signum).name}: finishing the deliveries in "
                              "flight, then stopping.")
            worker.stop()

        previous = {sig: signal.signal(sig, shut_down) for sig in (signal.SIGTERM, signal.SIGINT)}
        if verbosity:
            how = "" if burst else f"; {waking(worker)}"
            self.stdout.write(f"Worker {worker.worker_id} sending webhooks "
                              f"({mode}, concurrency {concurrency}{how}). Stop with "
                              "Ctrl-C or SIGTERM.")
        try:
            with logs_shown(verbosity, self.stderr):
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
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
        if verbosity:
            self.stdout.write(f"Worker {worker.worker_id} stopped after {processed} "
                              f"{'delivery' if processed == 1 else 'deliveries'}.")


def make_room_for_sockets(files):
    """Raise this process's limit on open files to ``files`` if it is lower and the hard
    limit allows; refuse, saying what to do, when it does not."""
    try:
        import resource
    except ImportError:  # not on this platform: nothing to check
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= files:
        return
    if hard != resource.RLIM_INFINITY and hard < files:
        raise CommandError(
            f"This --concurrency needs {files} open files, and this process may open at "
            f"most {hard} (ulimit -Hn). Lower --concurrency to {hard - SPARE_FILES}, or "
            "raise the limit (ulimit -n, or LimitNOFILE= in a systemd unit).")
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, hard))


def waking(worker):
    """How ``worker`` learns of new deliveries, in words."""
    if worker.listen and wakeup.can_listen(queue.database()):
        return (f"woken by notifications on channel {wakeup.channel()!r}, looking for "
                f"retries every {worker.interval:g} s")
    return f"looking for due deliveries every {worker.interval:g} s"


def serve_metrics(port, address):
    """Start the metrics server for --metrics-port, or return None without the option."""
    if port is None:
        return None
    if not 1 <= port <= 65535:
        raise CommandError(f"--metrics-port must be a port number from 1 to 65535; got {port}.")
    from djwebhooks import metrics

    try:
        return metrics.start_server(port, address)
    except WebhookImproperlyConfigured as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"Cannot serve metrics on {address}:{port} ({exc}); choose "
                           "another --metrics-port, or stop what listens there.") from None


#: The level of dj-webhooks' loggers at each --verbosity above 1: 2 shows a line per
#: attempt (INFO), 3 everything (DEBUG). At 0 and 1 the project's logging decides.
LOG_LEVELS = {2: logging.INFO, 3: logging.DEBUG}


@contextmanager
def logs_shown(verbosity, stream):
    """Show dj-webhooks' log lines down to the level ``verbosity`` asks for while the block
    runs: on ``stream`` when logging has no handler for them (nothing is configured), else
    through the handlers the project configured."""
    level = LOG_LEVELS.get(min(verbosity, 3))
    if level is None:
        yield
        return
    logger = logging.getLogger("djwebhooks")
    previous = logger.level
    handler = None
    if not logger.hasHandlers():
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
        if handler is not None:
            logger.removeHandler(handler)
