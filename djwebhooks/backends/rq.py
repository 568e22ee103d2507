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
from djwebhooks.backends.base import BaseBackend

logger = logging.getLogger("djwebhooks.backends.rq")

#: The job's function, as RQ stores it and a worker imports it.
SEND_JOB = f"{__name__}.send"

#: Seconds a job may take beyond ``TOTAL_TIMEOUT`` for each of its deliveries (claiming,
#: loading and recording them) before RQ stops it.
JOB_TIMEOUT_MARGIN = 60


class RQBackend(BaseBackend):
    """Send deliveries from RQ workers, through a queue of django-rq's ``RQ_QUEUES``.

    Options (``DJWEBHOOKS["BACKEND_OPTIONS"]``):

    ``queue``
        The name of the queue in ``RQ_QUEUES`` the jobs go to (default ``"default"``).
    ``batch_size``
        Deliveries per job (default 1): a job sends its deliveries one after the other,
        so 1 lets every worker take one. Larger batches save a few queries (and, with
        RQ's forking worker, a process) per delivery when receivers are fast.

    Each job may run for ``batch_size`` times ``TOTAL_TIMEOUT``, and a minute more, before
    RQ stops it (``webhooks_sweep`` then hands its deliveries over again once their claims
    expire); its result is not kept.
    """

    defers = True

    def __init__(self, *, queue="default", batch_size=1):
        if not isinstance(queue, str) or not queue:
            raise TypeError(f"queue must be a queue name (a string), got {queue!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not (
                1 <= batch_size <= 1000):
            raise TypeError(f"batch_size must be a whole number from 1 to 1000, got "
                            f"{batch_size!r}")
        queues = getattr(settings, "RQ_QUEUES", None)
        if not isinstance(queues, dict):
            raise TypeError(f"queue {queue!r} needs django-rq's RQ_QUEUES setting, a dict "
                            f"of queues, got {queues!r}")
        if queue not in queues:
            known = ", ".join(repr(name) for name in queues) or "none"
            raise TypeError(f"queue {queue!r} is not in django-rq's RQ_QUEUES (its queues: "
                            f"{known})")
        self.queue = queue
        self.batch_size = batch_size

    def job_timeout(self):
        """Seconds a job of ``batch_size`` deliveries may run before RQ stops it."""
        return math.ceil(self.batch_size * conf.get_seconds("TOTAL_TIMEOUT")) + \
            JOB_TIMEOUT_MARGIN

    def enqueue(self, delivery_ids, *, run_after=None):
        """Enqueue one ``send`` job per ``batch_size`` ids; from ``run_after`` when it is
        given and still ahead, through the queue's scheduled-job registry."""
        queue = get_queue(self.queue)
        timeout = self.job_timeout()
        if run_after is not None and run_after <= timezone.now():
            run_after = None
        ids = list(delivery_ids)
        for start in range(0, len(ids), self.batch_size):
            args = (ids[start:start + self.batch_size],)
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
