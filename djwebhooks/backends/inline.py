"""``InlineBackend``: the first attempt made in the same process, right after commit."""

import logging

from djwebhooks.backends.base import BaseBackend

logger = logging.getLogger("djwebhooks.backends.inline")


class InlineBackend(BaseBackend):
    """Send each delivery in-process as soon as the caller's transaction commits.

    Simple and dependency-free, but the caller waits for every receiver, so a system
    check warns when it is used with ``DEBUG = False``. A failed attempt is scheduled for
    retry like any other, and ``webhooks_worker`` makes the retries when it runs.
    """

    sends_immediately = True

    def session(self):
        """Return the HTTP session to send with; None means this thread's pooled one."""
        return None

    def enqueue(self, delivery_ids):
        """Claim the deliveries (so no worker sends them too), send each one now, one after
        the other, and record the results together."""
        from djwebhooks.delivery import prepare, record_attempts
        from djwebhooks.worker import claim, default_worker_id

        try:
            claimed = claim(f"inline:{default_worker_id()}", limit=len(delivery_ids),
                            ids=delivery_ids)
            ready = prepare(claimed, session=self.session(), record=False)
        except Exception:
            # The caller's work has committed; a failure to send must not undo its
            # response. The deliveries stay due, for a worker or a replay.
            logger.exception("Could not prepare webhook deliveries %s.", delivery_ids)
            return
        outcomes = []
        for delivery, sender in ready:
            try:
                outcomes.append((delivery, sender.send()))
            except Exception:
                logger.exception("Could not deliver webhook delivery %s.", delivery.pk)
        try:
            record_attempts(outcomes)
        except Exception:
            # Their claims expire after the lease; a worker then sends them again.
            logger.exception("Could not record webhook deliveries %s.",
                             [delivery.pk for delivery, _ in outcomes])
