"""The recovery sweep: hand the backend again every due delivery that no queue holds.

A broker can lose a message, an enqueue can fail after the caller's commit, a worker can
die with deliveries claimed, a retry can be too far ahead to hand to a queue in advance.
Each leaves a delivery due in the database with no one about to send it. ``sweep()``
(``manage.py webhooks_sweep``, the Celery beat entry) finds those and enqueues them
again; run every minute, it bounds how long any of them waits. Handing over twice is
harmless: the send path claims a delivery before sending it, so only one copy sends.
"""

import logging
from dataclasses import dataclass

from djwebhooks import conf, queue
from djwebhooks.backends import get_backend

logger = logging.getLogger("djwebhooks.sweep")

#: Deliveries handed to the backend per ``enqueue()`` call.
BATCH_SIZE = 500
#: Deliveries one sweep hands over at most, unless told otherwise.
LIMIT = 10_000


@dataclass
class SweepResult:
    """What a sweep did: how many deliveries it handed to which backend."""

    handed: int
    backend: str
    #: Set when the backend needs no sweep (its workers poll the database).
    skipped: str = ""


def sweep(*, backend=None, batch_size=BATCH_SIZE, limit=LIMIT, requeue_after=None):
    """Hand every overdue delivery (due, unclaimed, and held by no queue for the last
    ``requeue_after`` seconds, ``REQUEUE_AFTER`` by default) to ``backend`` (the configured
    one by default), ``batch_size`` at a time and at most ``limit`` (None: no limit) in
    all, oldest due first. Return a ``SweepResult``.

    An exception from the backend (a broker that is down) propagates, once the batch it
    refused is marked as held by no queue: the next sweep tries those first.
    """
    backend = get_backend() if backend is None else backend
    name = type(backend).__name__
    if backend.polls:
        return SweepResult(0, name, skipped=f"{name}'s workers find due deliveries in the "
                                            "database themselves")
    if requeue_after is None:
        requeue_after = conf.get_seconds("REQUEUE_AFTER")
    handed, seen = 0, set()
    while limit is None or handed < limit:
        size = batch_size if limit is None else min(batch_size, limit - handed)
        ids = [pk for pk in queue.overdue(limit=size, requeue_after=requeue_after)
               if pk not in seen]
        if not ids:
            break  # none left; or (a backend that sends in-process) only those it gave back
        seen.update(ids)
        # Marked first: a backend that sends in-process records each outcome, and a retry
        # it schedules must keep the mark that recording gives it.
        queue.mark_queued(ids)
        try:
            backend.enqueue(ids)
        except Exception:
            queue.unqueued(ids)
            raise
        handed += len(ids)
        logger.info("Handed %s overdue deliveries to %s.", len(ids), name)
    return SweepResult(handed, name)
