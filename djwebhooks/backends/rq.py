"""``RQBackend``: deliveries sent by RQ workers (django-rq), retries with ``enqueue_at``.

Needs ``pip install "dj-webhooks[rq]"`` and the queue in django-rq's ``RQ_QUEUES``. The job
(``djwebhooks.backends.rq.send``) carries delivery ids, never model instances, and runs
the one send path, which claims each delivery before sending it: a job run twice (a
worker killed mid-job, a job requeued by hand) never sends a delivery that another worker
holds or that has already succeeded.

Retries wait in the queue's scheduled-job registry until they are due; only a worker
started with the scheduler moves them to the queue: ``manage.py rqworker webhooks
--with-scheduler``. Without one, they are sent only when ``webhooks_sweep`` hands them
over again, ``REQUEUE_AFTER`` after they were due.
"""

import logging
import math
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django_rq import get_queue

from djwebhooks import conf
from djwebhooks.backends import run_queued
from djwebhooks.backends.base import QueueBackend

logger = logging.getLogger("djwebhooks.backends.rq")

#: The job's function, as RQ stores it and a worker imports it.
SEND_JOB = f"{__name__}.send"

#: Seconds a job may take beyond ``TOTAL_TIMEOUT`` for each of its deliveries (claiming,
#: loading and recording them) before RQ stops it.
JOB_TIMEOUT_MARGIN = 60


class RQBackend(QueueBackend):
    """Send deliveries from RQ workers, through a queue of django-rq's ``RQ_QUEUES``.

    Options (``DJWEBHOOKS["BACKEND_OPTIONS"]``):

    ``queue``
        The name of the queue in ``RQ_QUEUES`` the jobs go to (default ``"default"``).
    ``batch_size``
        Deliveries per job (default 20): the deliveries one ``send_event()`` (or one
        retry time) makes are split into jobs of this many. A job costs RQ a forked
        process and the database a few queries, for one delivery as for twenty.
    ``concurrency``
        Requests a job makes at once (default ``batch_size``), each on a thread.

    Each job may run for ``TOTAL_TIMEOUT`` for each round of ``concurrency`` requests, and
    a minute more, before RQ stops it (``webhooks_sweep`` then hands its deliveries over
    again once their claims expire); its result is not kept.
    """

    def __init__(self, *, queue="default", batch_size=QueueBackend.BATCH_SIZE,
                 concurrency=None):
        if not isinstance(queue, str) or not queue:
            raise TypeError(f"queue must be a queue name (a string), got {queue!r}")
        super().__init__(batch_size=batch_size, concurrency=concurrency)
        queues = getattr(settings, "RQ_QUEUES", None)
        if not isinstance(queues, dict):
            raise TypeError(f"queue {queue!r} needs django-rq's RQ_QUEUES setting, a dict "
                            f"of queues, got {queues!r}")
        if queue not in queues:
            known = ", ".join(repr(name) for name in queues) or "none"
            raise TypeError(f"queue {queue!r} is not in django-rq's RQ_QUEUES (its queues: "
                            f"{known})")
        self.queue = queue

    def job_timeout(self):
        """Seconds a job of ``batch_size`` deliveries may run before RQ stops it."""
        return math.ceil(self.rounds() * conf.get_seconds("TOTAL_TIMEOUT")) + \
            JOB_TIMEOUT_MARGIN

    def enqueue(self, delivery_ids, *, run_after=None):
        """Enqueue one ``send`` job per ``batch_size`` ids; from ``run_after`` when it is
        given and still ahead, through the queue's scheduled-job registry."""
        queue = get_queue(self.queue)
        timeout = self.job_timeout()
        if run_after is not None and run_after <= timezone.now():
            run_after = None
        for batch in self.batches(delivery_ids):
            args = (batch,)
            if run_after is None:
                # Not queue.enqueue(): inside a transaction, django-rq (in its default
                # COMMIT_MODE) holds the job until the default database commits; the
                # caller's transaction has already committed when enqueue() is called.
                queue.enqueue_job(queue.create_job(send, args=args, timeout=timeout,
                                                   result_ttl=0))
            else:
                queue.enqueue_at(_whole_second(run_after), send, args=args,
                                 job_timeout=timeout, result_ttl=0)


def _whole_second(when):
    """Round ``when`` up to a whole second. RQ's scheduler keeps only whole seconds
    (dropping the fraction), and a job moved to the queue before its delivery is due
    would find nothing to send."""
    if when.microsecond:
        return when.replace(microsecond=0) + timedelta(seconds=1)
    return when


def send(delivery_ids):
    """Send the deliveries ``delivery_ids`` that are due, through the configured backend's
    send path (so its retries are scheduled through it)."""
    run_queued(delivery_ids, name=f"a {SEND_JOB} job", logger=logger)
