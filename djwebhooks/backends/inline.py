"""``InlineBackend``: the first attempt made in the same process, right after commit."""

import logging

from djwebhooks.backends.base import BaseBackend

logger = logging.getLogger("djwebhooks.backends.inline")


class InlineBackend(BaseBackend):
    """Send each delivery in-process as soon as the caller's transaction commits.

    Simple and dependency-free, but the caller waits for every receiver, so a system
    check warns when it is used with ``DEBUG = False``.
    """

    sends_immediately = True

    def enqueue(self, delivery_ids):
        """Deliver each id now, one after the other."""
        from djwebhooks.delivery import deliver

        for delivery_id in delivery_ids:
            try:
                deliver(delivery_id)
            except Exception:
                # The caller's work has committed; a failure to send must not undo its
                # response. The delivery stays pending, to be replayed.
                logger.exception("Could not deliver webhook delivery %s.", delivery_id)
