"""Endpoint health: each target's failures since its last success, and disabling targets
that should stop receiving (a ``410 Gone``, or failing for longer than ``DISABLE_AFTER``).
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import F, Value
from django.db.models.functions import Coalesce

from djwebhooks import conf
from djwebhooks.models import Delivery, WebhookTarget

logger = logging.getLogger("djwebhooks.health")


@dataclass
class TargetTally:
    """What one batch of recorded attempts tells about one target."""

    successes: int = 0
    failures: int = 0
    #: A receiver answered 410 Gone.
    gone: bool = False
    #: A delivery failed for good.
    final: bool = False
    #: The target had failures when its deliveries were loaded.
    known_failing: bool = False

    def add(self, delivery, result):
        """Count ``result``, the recorded outcome of an attempt for ``delivery``."""
        self.known_failing |= delivery.webhook_target.consecutive_failures > 0
        if result.success:
            self.successes += 1
        else:
            self.failures += 1
            self.gone |= result.response_status == 410
            self.final |= delivery.status == Delivery.Status.FAILED


def record(tallies, *, using, now):
    """Update the health of every target in ``tallies`` (target id -> ``TargetTally``);
    return ``{target id: reason}`` for those this disabled.

    Targets are updated one by one in the order of their ids, so that any number of
    workers recording at once take the targets' row locks in the same order, and never
    wait for each other in a circle.
    """
    disabled = {}
    window = conf.get_seconds("DISABLE_AFTER")
    for target_id in sorted(tallies):
        tally = tallies[target_id]
        # A success in the batch shows the target works; failures still count after it.
        # (A healthy target needs no reset; a failure recorded meanwhile by another worker
        # is reset by the next success seen fresh.)
        reset = tally.successes and tally.known_failing
        if not reset and not tally.failures:
            continue  # nothing to write: not even a query to build
        targets = WebhookTarget.objects.using(using).filter(pk=target_id)
        if reset:
            targets.filter(consecutive_failures__gt=0).update(consecutive_failures=0,
                                                              failing_since=None,
                                                              modified=now)
        if not tally.failures:
            continue
        targets.update(consecutive_failures=F("consecutive_failures") + tally.failures,
                       failing_since=Coalesce("failing_since", Value(now)), modified=now)
        reason = None
        if tally.gone:
            reason = "the receiver answered 410 Gone"
        elif tally.final and window is not None:
            since = timedelta(seconds=window)
            if targets.filter(failing_since__lte=now - since).exists():
                reason = f"every attempt failed for more than {_humanize(since)}"
        if reason and targets.filter(is_active=True).update(
            is_active=False, disabled_at=now, disabled_reason=reason, modified=now
        ):
            logger.warning("Webhook target %s disabled: %s.", target_id, reason)
            disabled[target_id] = reason
    return disabled


def _humanize(window):
    days, seconds = window.days, window.seconds
    if days and not seconds:
        return f"{days} day{'s' if days != 1 else ''}"
    return f"{window.total_seconds():g} seconds"
