"""The backend contract: ``enqueue(delivery_ids, *, run_after=None)``, called once the
caller has committed, and again for each retry when the backend can defer."""

import logging
import time
from datetime import datetime, timezone
from numbers import Integral

logger = logging.getLogger("djwebhooks.backends")


class BaseBackend:
    """Decides when and where deliveries are sent. Subclasses implement ``enqueue()``.

    A backend never builds or sends HTTP itself: whenever and wherever it runs deliveries,
    it calls ``run(ids)`` (``djwebhooks.sending.send_deliveries``), which claims, sends and
    records them. It is handed ids, never model instances, so that they can cross a queue.
    ``DJWEBHOOKS["BACKEND_OPTIONS"]`` are passed to the class as keyword arguments.
    """

    #: True when ``enqueue()`` has made the first attempt by the time it returns.
    sends_immediately = False
    #: True when the backend's workers find due deliveries in the database by themselves
    #: (the database backend): nothing needs handing over, and there is nothing to sweep.
    polls = False
    #: True when ``enqueue(ids, run_after=when)`` holds the deliveries back until ``when``:
    #: then each retry is enqueued for its time as soon as its attempt is recorded.
    #: Otherwise retries are left due in the database, for ``webhooks_sweep`` (or
    #: ``webhooks_worker``) to hand over once they are due.
    defers = False
    #: With ``defers``: the longest wait, in seconds, handed to the backend; a retry due
    #: later is left for ``webhooks_sweep``. None hands over any wait.
    defer_limit = None
    #: How many requests ``run()`` makes at once.
    concurrency = 1

    @property
    def retries_failures(self):
        """True when failed attempts are retried by the backend's own machinery: it defers,
        or its workers poll. Otherwise retries need ``webhooks_sweep`` or a worker."""
        return self.defers or self.polls

    def __init__(self, **options):
        if options:
            raise TypeError(f"{type(self).__name__} takes no options, got "
                            f"{', '.join(sorted(options))}")

    def enqueue(self, delivery_ids, *, run_after=None):
        """Arrange for each delivery in ``delivery_ids`` (a list of ints) to be sent, not
        before ``run_after`` (an aware datetime; None means now) where the backend defers.

        Called after the transaction that wrote them commits. An exception raised here is
        logged and the deliveries stay due in the database, for a sweep or a worker: it
        never reaches the caller.
        """
        raise NotImplementedError("Backends must implement enqueue(delivery_ids).")

    def run(self, delivery_ids, **kwargs):
        """Send ``delivery_ids`` now, in this process, through the one send path; enqueue
        each retry through this backend when it defers. Queue workers call this.

        Deliveries of an ordered target are sent one after the other, each once the one
        before it has been recorded. When the backend defers, the delivery whose turn
        comes after one finished here is enqueued (it may be in no batch at hand: it was
        handed over, and dropped, while it waited).
        """
        # Imported here, so that a backend module can be imported before Django is set up
        # (a Celery app's configuration reads BEAT_SCHEDULE that early).
        from djwebhooks import queue
        from djwebhooks.sending import send_deliveries

        kwargs.setdefault("concurrency", self.concurrency)
        if self.defers:
            kwargs.setdefault("retry", self.enqueue)
            kwargs.setdefault("retry_within", self.defer_limit)
        budget = kwargs.get("budget")
        started = time.monotonic()
        outcomes = send_deliveries(delivery_ids, **kwargs)
        unsent = set(delivery_ids) - {delivery.pk for delivery, _ in outcomes}
        while unsent and _finished_ordered(outcomes):
            # The next of an ordered target's deliveries among those not sent yet.
            turn = queue.in_turn(ids=unsent)
            if budget is not None:
                # What is left of it (send_deliveries gives back what it leaves no time for).
                kwargs["budget"] = budget - (time.monotonic() - started)
            sent = send_deliveries(turn, **kwargs) if turn else []
            if not sent:
                break
            outcomes += sent
            unsent -= {delivery.pk for delivery, _ in sent}
        if self.defers:
            if unsent:
                self._hand_back(queue.not_yet_free(unsent))
            self.hand_over_turns({delivery.webhook_target_id
                                  for delivery in _finished_ordered(outcomes)},
                                 handled=set(delivery_ids))
        return outcomes

    def hand_over_turns(self, targets, *, handled=()):
        """Enqueue the delivery whose turn has come at each of the ordered ``targets``
        (target ids), if any, except those in ``handled``. Nothing for a backend whose
        workers poll. One the backend refuses is marked as held by no queue, for the
        sweep."""
        from djwebhooks import queue

        if self.polls or not targets:
            return
        ids = [pk for pk in queue.in_turn(targets=targets) if pk not in handled]
        if not ids:
            return
        queue.mark_queued(ids)
        try:
            self.enqueue(ids)
        except Exception:
            logger.exception("Could not hand deliveries %s, whose turn has come at their "
                             "ordered targets, to the backend; webhooks_sweep will.", ids)
            queue.unqueued(ids)

    def _hand_back(self, waiting):
        """Enqueue again, for the moment they can be sent, deliveries a task was handed
        too early: a message delivered again while another worker's claim on them lives
        (the worker may have died), or ahead of their retry time (clocks differ)."""
        limit = self.defer_limit
        now = datetime.now(timezone.utc)
        later = {}
        for pk, when in waiting.items():
            if limit is None or (when - now).total_seconds() <= limit:
                later.setdefault(when, []).append(pk)
        for when, ids in sorted(later.items()):
            self.enqueue(ids, run_after=when)


class QueueBackend(BaseBackend):
    """A backend whose workers are a task queue's: each task carries up to ``batch_size``
    delivery ids, and sends them ``concurrency`` at a time.

    Batches are what make a queue fast: a task costs the queue a message, and the send
    path a claim, a load and a record, whatever the number of deliveries in it. The
    deliveries of a batch are sent at once (up to ``concurrency``), so a slow receiver
    holds up only its own; a task ends when its slowest request does.
    """

    defers = True
    #: Deliveries per task, unless ``batch_size`` says otherwise.
    BATCH_SIZE = 20

    def __init__(self, *, batch_size=BATCH_SIZE, concurrency=None):
        if not _whole(batch_size) or not 1 <= batch_size <= 1000:
            raise TypeError(f"batch_size must be a whole number from 1 to 1000, got "
                            f"{batch_size!r}")
        if concurrency is None:
            concurrency = batch_size
        elif not _whole(concurrency) or not 1 <= concurrency <= batch_size:
            raise TypeError(f"concurrency must be a whole number from 1 to batch_size "
                            f"({batch_size}), or None for batch_size, got {concurrency!r}")
        self.batch_size = int(batch_size)
        self.concurrency = int(concurrency)

    def batches(self, delivery_ids):
        """Split ``delivery_ids`` into lists of at most ``batch_size`` ids, one per task."""
        ids = list(delivery_ids)
        return [ids[start:start + self.batch_size]
                for start in range(0, len(ids), self.batch_size)]

    def rounds(self):
        """The most requests one after the other that a task of ``batch_size`` makes."""
        return -(-self.batch_size // self.concurrency)


def _finished_ordered(outcomes):
    """The deliveries among ``outcomes`` that an ordered target no longer waits for: they
    succeeded or failed for good."""
    return [delivery for delivery, _ in outcomes
            if delivery.status != "pending" and delivery.webhook_target.ordered]


def _whole(value):
    return isinstance(value, Integral) and not isinstance(value, bool)
