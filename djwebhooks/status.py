"""How sending is going, in figures: what waits, how late the oldest is, which targets fail,
and which workers run. ``status()`` is what ``webhooks_status`` prints; metrics and pages
can read the same figures.

Every figure is read with a few cheap queries: the deliveries' through the partial index of
pending rows (their cost follows the number of pending deliveries, not the size of the
table), the workers' through the index on ``last_seen``. Times are the database's clock.
"""

from dataclasses import dataclass
from datetime import timedelta
from datetime import timezone as dt_timezone

from djwebhooks import _sql, queue
from djwebhooks.models import Delivery, WebhookTarget, WorkerHeartbeat

#: A worker whose heartbeat is older than this is not counted as running.
WORKER_SEEN_WITHIN = 60


@dataclass(frozen=True)
class WorkerStatus:
    """A running worker, from its heartbeat row."""

    worker_id: str
    claimant: str
    hostname: str
    pid: int
    concurrency: int
    started_at: object
    last_seen: object
    handled: int
    #: Deliveries handled per second over the whole run (``handled`` divided by the time
    #: from ``started_at`` to ``last_seen``); None before its second heartbeat.
    per_second: float | None

    def as_dict(self):
        """The figures as JSON can carry them (times in ISO 8601, UTC)."""
        return {
            "worker_id": self.worker_id, "claimant": self.claimant,
            "hostname": self.hostname, "pid": self.pid, "concurrency": self.concurrency,
            "started_at": _iso(self.started_at), "last_seen": _iso(self.last_seen),
            "handled": self.handled,
            "per_second": None if self.per_second is None else round(self.per_second, 3),
        }


@dataclass(frozen=True)
class Status:
    """The figures ``status()`` reads."""

    #: The database's clock when they were read.
    now: object
    #: Deliveries waiting for an attempt (status pending), due or not.
    pending: int
    #: Pending deliveries that are due and that no live claim holds: waiting for a sender.
    #: (Not those of an ordered target that wait for their turn.)
    due: int
    #: How long the oldest of those has been due, in seconds; None when none is.
    oldest_due_seconds: float | None
    #: Its id; None when none is due.
    oldest_due_id: int | None
    #: Active targets whose latest attempts failed (``consecutive_failures`` above 0).
    failing_targets: int
    #: Targets that are not active (disabled automatically or by hand).
    disabled_targets: int
    #: Workers seen in the last ``WORKER_SEEN_WITHIN`` seconds and not stopped.
    workers: tuple

    def as_dict(self):
        """The figures as one JSON object, with the keys documented in docs/status.rst."""
        return {
            "now": _iso(self.now), "pending": self.pending, "due": self.due,
            "oldest_due_seconds": (None if self.oldest_due_seconds is None
                                   else round(self.oldest_due_seconds, 3)),
            "oldest_due_id": self.oldest_due_id,
            "failing_targets": self.failing_targets,
            "disabled_targets": self.disabled_targets,
            "workers": [worker.as_dict() for worker in self.workers],
        }


def status():
    """Read the figures of the delivery queue, the targets and the workers; a ``Status``."""
    using = queue.database()
    now = _sql.db_now(using)
    deliveries = Delivery.objects.using(using)
    # Not an ordered target's deliveries that wait for their turn: no sender may take them.
    due = deliveries.due(now).in_turn(now)
    oldest = (due.order_by("next_attempt_at", "pk")
              .values_list("pk", "next_attempt_at").first())
    targets = WebhookTarget.objects.using(using)
    seen = (WorkerHeartbeat.objects.using(using)
            .filter(stopped_at__isnull=True,
                    last_seen__gte=now - timedelta(seconds=WORKER_SEEN_WITHIN))
            .order_by("worker_id", "claimant"))
    return Status(
        now=now,
        pending=deliveries.pending().count(),
        due=due.count(),
        oldest_due_seconds=None if oldest is None else _seconds(now, oldest[1]),
        oldest_due_id=None if oldest is None else oldest[0],
        failing_targets=targets.filter(is_active=True, consecutive_failures__gt=0).count(),
        disabled_targets=targets.filter(is_active=False).count(),
        workers=tuple(_worker(row) for row in seen),
    )


def _worker(row):
    ran = _seconds(row.last_seen, row.started_at)
    return WorkerStatus(
        worker_id=row.worker_id, claimant=row.claimant, hostname=row.hostname, pid=row.pid,
        concurrency=row.concurrency, started_at=row.started_at, last_seen=row.last_seen,
        handled=row.handled, per_second=row.handled / ran if ran > 0 else None,
    )


def _utc(moment):
    # Written from the database's clock in UTC, read naive where USE_TZ is off.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt_timezone.utc)
    return moment.astimezone(dt_timezone.utc)


def _seconds(later, earlier):
    """Seconds from ``earlier`` to ``later``, never below 0."""
    return max(0.0, (_utc(later) - _utc(earlier)).total_seconds())


def _iso(moment):
    return _utc(moment).isoformat().replace("+00:00", "Z")
