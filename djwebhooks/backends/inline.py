"""``InlineBackend``: the first attempt made in the same process, right after commit."""

import logging

from djwebhooks import conf
from djwebhooks.backends.base import BaseBackend

logger = logging.getLogger("djwebhooks.backends.inline")


class InlineBackend(BaseBackend):
    """Send each delivery in-process as soon as the caller's transaction commits.

    Simple and dependency-free, but the caller waits for the receivers, so a system check
    warns when it is used with ``DEBUG = False``. One call spends at most
    ``TOTAL_TIMEOUT`` on its requests: deliveries it has no time left for stay due, and
    the retries of failed attempts are left due in the database, for ``webhooks_sweep``
    (run every minute, it sends them in its own process) or ``webhooks_worker``.
    """

    sends_immediately = True

    def session(self):
        """Return the HTTP session to send with; None means this thread's pooled one."""
        return None

    def enqueue(self, delivery_ids, *, run_after=None):
        """Send the deliveries now, one after the other, within one ``TOTAL_TIMEOUT``.
        (This backend cannot defer: it is never handed a ``run_after``.)"""
        try:
            self.run(delivery_ids, budget=conf.get_seconds("TOTAL_TIMEOUT"),
                     session=self.session())
        except Exception:
            # The caller's work has committed; a failure to send must not undo its
            # response. What was not recorded stays due (or claimed until its lease ends),
            # for a worker or a replay.
            logger.exception("Could not send webhook deliveries %s.", delivery_ids)
