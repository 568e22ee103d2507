"""Rotating the signing secrets of many targets at once.

Shared by the admin action and ``manage.py webhooks_rotate_secret``; each target is
rotated by ``WebhookTarget.rotate_secret()``. Nothing here logs or returns a secret.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import router, transaction
from django.utils import timezone

from djwebhooks import conf
from djwebhooks.models import WebhookTarget

logger = logging.getLogger(__name__)

#: Targets rotated per transaction: each batch's rows are locked only while it runs.
BATCH_SIZE = 500


@dataclass(frozen=True)
class Rotation:
    """What became, or would become, of one target's secret."""

    target: WebhookTarget
    #: Whether the target was left alone (see ``rotate_secrets``'s ``force``).
    skipped: bool
    #: Until when the old secret is (or stays) valid; None when it stops working at once.
    valid_until: datetime | None


def grace_seconds(grace=None):
    """Return ``grace`` (seconds or a timedelta; None for the setting) as seconds, checked."""
    if grace is None:
        grace = conf.get_seconds("SECRET_ROTATION_GRACE")
    seconds = grace.total_seconds() if isinstance(grace, timedelta) else float(grace)
    if not 0 <= seconds <= conf.MAX_ROTATION_GRACE:
        raise ValueError(
            "The grace period of a secret rotation must be between 0 and 7 days, got "
            f"{seconds:g} seconds."
        )
    return seconds


def rotate_secrets(targets, grace=None, *, force=False, dry_run=False, now=None):
    """Rotate the secret of every target in the queryset ``targets``; return a list of
    ``Rotation`` results.

    A target still in the grace period of an earlier rotation is skipped unless ``force``
    (or ``grace`` is 0): rotating it again would end that period at once, and receivers
    still using the secret from before it would start refusing requests. Targets are
    rotated ``BATCH_SIZE`` at a time, each batch in a transaction that locks its rows, so
    rotating every target holds no lock for long, and two rotations at once do not
    interleave.
    """
    seconds = grace_seconds(grace)
    now = now or timezone.now()
    until = now + timedelta(seconds=seconds) if seconds else None
    using = router.db_for_write(WebhookTarget)
    ids = list(targets.order_by("pk").values_list("pk", flat=True))
    results = []
    for start in range(0, len(ids), BATCH_SIZE):
        with transaction.atomic(using=using):
            rows = WebhookTarget.objects.using(using).select_for_update().filter(
                pk__in=ids[start:start + BATCH_SIZE]).order_by("pk")
            for target in rows:
                in_grace = len(target.signing_secrets(now)) > 1
                if in_grace and seconds and not force:
                    results.append(Rotation(target, True, target.previous_secret_expires))
                    continue
                if not dry_run:
                    target.rotate_secret(seconds, now=now)
                    logger.info("Rotated the signing secret of webhook target %s; the "
                                "previous one is valid until %s.", target.pk,
                                until.isoformat() if until else "now (no grace period)")
                results.append(Rotation(target, False, until))
    return results
