"""``CeleryBackend``: deliveries sent by Celery workers, retries scheduled with ``eta``.

Needs ``pip install "dj-webhooks[celery]"``. The task (``djwebhooks.send``) carries
delivery ids, never model instances, and runs the one send path, which claims each
delivery before sending it: a message delivered twice (a worker killed mid-task, a Redis
visibility timeout) never sends a delivery that another worker holds or that has already
succeeded. A Celery app that calls ``app.autodiscover_tasks()`` finds the tasks in
``djwebhooks.tasks``.

This module can be imported before Django is set up, so that a Celery app's
configuration can read ``BEAT_SCHEDULE``.
"""

import logging

from celery import shared_task

from djwebhooks.backends import run_queued
from djwebhooks.backends.base import QueueBackend

logger = logging.getLogger("djwebhooks.backends.celery")

#: The task names, as a producer sends them and a router matches them.
SEND_TASK = "djwebhooks.send"
SWEEP_TASK = "djwebhooks.sweep"

#: A ready Celery beat entry: ``webhooks_sweep`` every minute. Add it to the app's
#: ``beat_schedule``: ``app.conf.beat_schedule = {**BEAT_SCHEDULE}``.
BEAT_SCHEDULE = {
    "djwebhooks-sweep": {"task": SWEEP_TASK, "schedule": 60.0},
}

#: Retries due further ahead than this many seconds are not given to Celery in advance
#: (a worker holds an ``eta`` task unacknowledged until it is due: RabbitMQ closes a
#: channel that holds one past its ``consumer_timeout``, 30 minutes by default, and Redis
#: hands it to another worker after its visibility timeout, an hour by default); the
#: sweep hands them over once they are due.
DEFER_LIMIT = 600


class CeleryBackend(QueueBackend):
    """Send deliveries from Celery workers.

    Options (``DJWEBHOOKS["BACKEND_OPTIONS"]``):

    ``queue``
        The Celery queue the tasks go to (the app's default when None).
    ``batch_size``
        Deliveries per task (default 20): the deliveries one ``send_event()`` (or one
        retry time) makes are split into tasks of this many. A task costs Celery and the
        database about as much for one delivery as for twenty.
    ``concurrency``
        Requests a task makes at once (default ``batch_size``), each on a thread of the
        worker's own.
    ``defer_limit``
        Seconds: retries due within this are handed to Celery with ``eta`` (default 600);
        later ones wait in the database for ``webhooks_sweep``.
    """

    def __init__(self, *, queue=None, batch_size=QueueBackend.BATCH_SIZE, concurrency=None,
                 defer_limit=DEFER_LIMIT):
        if queue is not None and (not isinstance(queue, str) or not queue):
            raise TypeError(f"queue must be a queue name (a string) or None, got {queue!r}")
        super().__init__(batch_size=batch_size, concurrency=concurrency)
        if defer_limit is not None and (isinstance(defer_limit, bool) or not isinstance(
                defer_limit, (int, float)) or not 0 <= defer_limit <= 86400):
            raise TypeError(f"defer_limit must be a number of seconds from 0 to 86400, or "
                            f"None, got {defer_limit!r}")
        self.queue = queue
        self.defer_limit = defer_limit

    def enqueue(self, delivery_ids, *, run_after=None):
        """Send one ``djwebhooks.send`` task per ``batch_size`` ids, to run from
        ``run_after`` (Celery's ``eta``) when given."""
        options = {}
        if self.queue is not None:
            options["queue"] = self.queue
        if run_after is not None:
            options["eta"] = run_after
        for batch in self.batches(delivery_ids):
            send.apply_async((batch,), **options)


@shared_task(name=SEND_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def send(delivery_ids):
    """Send the deliveries ``delivery_ids`` that are due, through the configured backend's
    send path (so its retries are scheduled through it)."""
    run_queued(delivery_ids, name=f"a {SEND_TASK} task", logger=logger)
