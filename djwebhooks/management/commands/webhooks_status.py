"""``manage.py webhooks_status``: what waits to be sent, how late, and who sends it."""

import json

from django.core.management.base import BaseCommand, CommandError

from djwebhooks.management.parsing import duration_seconds
from djwebhooks.status import WORKER_SEEN_WITHIN, status

#: The widest the table is, so that it fits a terminal, a log line or a chat message.
WIDTH = 100


class Command(BaseCommand):
    help = (
        "Show the webhook deliveries pending and due, how long the oldest due one has "
        "waited, the failing and disabled targets, and the workers running. With "
        "--max-age, exit with status 1 when the oldest due delivery has waited longer: a "
        "health check."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="Print the figures as one JSON object instead of a table.")
        parser.add_argument("--max-age", metavar="DURATION",
                            help="Fail (exit status 1, a line on stderr) when the oldest due "
                            "delivery has waited longer than this: 90s, 5m, 1h.")

    def handle(self, *args, as_json=False, max_age=None, **options):
        limit = None
        if max_age is not None:
            limit = duration_seconds(max_age)
            if limit is None:
                raise CommandError(f"--max-age {max_age!r} is not a duration such as 90s, 5m "
                                   "or 1h.")
        figures = status()
        if as_json:
            self.stdout.write(json.dumps(figures.as_dict(), sort_keys=True))
        else:
            self.stdout.write(table(figures))
        age = figures.oldest_due_seconds
        if limit is not None and age is not None and age > limit:
            raise CommandError(
                f"The oldest due delivery ({figures.oldest_due_id}) has waited "
                f"{duration(age)}, longer than --max-age {max_age}: no worker is sending "
                "(start webhooks_worker, or run webhooks_sweep with a queue backend), or the "
                "workers cannot keep up (add --concurrency or workers).", returncode=1)


def table(figures):
    """The figures as plain text, at most ``WIDTH`` columns wide."""
    oldest = ("none due" if figures.oldest_due_seconds is None else
              f"{duration(figures.oldest_due_seconds)} (delivery {figures.oldest_due_id})")
    rows = [
        ("Deliveries pending", figures.pending),
        ("Due, waiting for a sender", figures.due),
        ("Oldest due has waited", oldest),
        ("Failing targets (active)", figures.failing_targets),
        ("Disabled targets", figures.disabled_targets),
        (f"Workers seen in the last {WORKER_SEEN_WITHIN} s", len(figures.workers)),
    ]
    lines = [f"{label:<34}{value}" for label, value in rows]
    if figures.workers:
        columns = [("Worker", 30), ("Host", 20), ("PID", 8), ("Threads", 8),
                   ("Running", 10), ("Handled", 10), ("Per second", 12)]
        lines.append("")
        lines.append(_row([name for name, _ in columns], columns))
        for worker in figures.workers:
            ran = (worker.last_seen - worker.started_at).total_seconds()
            rate = "-" if worker.per_second is None else f"{worker.per_second:.2f}"
            lines.append(_row([worker.worker_id, worker.hostname, worker.pid,
                               worker.concurrency, duration(ran), worker.handled, rate],
                              columns))
    return "\n".join(lines)


def _row(values, columns):
    cells = []
    for value, (_, width) in zip(values, columns, strict=True):
        text = str(value)
        if len(text) > width - 1:
            text = text[:width - 2] + "…"
        cells.append(f"{text:<{width}}")
    return "".join(cells).rstrip()


def duration(seconds):
    """``seconds`` as people read it: 42s, 3m 05s, 2h 10m, 4d 03h."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"
