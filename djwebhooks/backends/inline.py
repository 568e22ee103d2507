"""``InlineBackend``: the first attempt made in the same process, right after commit."""

import logging

from djwebhooks import conf
from djwebhooks.backends.base import BaseBackend
from djwebhooks.sending import send_deliveries

logger = logging.getLogger("djwebhooks.backends.inline")


class InlineBackend(BaseBackend):
    """Send each delivery in-process as soon as the caller's transaction commits.

    Simple and dependency-free, but the caller waits for the receivers, so a system check
    warns when it is used with ``DEBUG = False``. One call spends at most
    ``TOTAL_TIMEOUT`` on its requests: deliveries it has no time left for stay due for
    ``webhooks_worker``, which also makes the retries of failed attempts.
    """

    sends_immediately = True

    def session(self):
        """Return the HTTP session to send with; None means this thread's pooled one."""
        return None

    def enqueue(self, delivery_ids):
        """Send the deliveries now, one after the other, within one ``TOTAL_TIMEOUT``."""
        try:
            send_deliveries(delivery_ids, budget=conf.get_seconds("TOTAL_TIMEOUT"),
                            session=self.session())
        except Exception:
            # The caller's work has committed; a failure to send must not undo its
            # response. What was not recorded stays due (or claimed until its lease ends),
            # for a worker or a replay.
            logger.exception("Could not send webhook deliveries %s.", delivery_ids)
