"""Shortcuts for tests: stand in for a worker's claim, record outcomes through the sending
path, and move deliveries' times instead of the clock."""

from datetime import timedelta

from django.conf import settings
from django.db.models import F

from djwebhooks import queue, sending
from djwebhooks.models import Delivery, WebhookTarget

CLAIMANT = "tests:claimant"


def by_mode(*, threads, async_):
    """What a test expects in the sending mode the suite runs in (DJWEBHOOKS_TEST_SEND_MODE):
    the details of an error are the HTTP client's own words, requests' or dj-webhooks' own."""
    return async_ if settings.DJWEBHOOKS.get("SEND_MODE") == "async" else threads


def post_async(url, body, headers, **kwargs):
    """``aio.Client.post`` on the process's event loop, waited for: ``transport.post``'s
    arguments (but ``session``), answer and errors."""
    from djwebhooks import aio

    loop = aio.event_loop()
    return loop.submit(loop.client.post(url, body, headers, **kwargs)).result(30)


def hold(deliveries, claimant=CLAIMANT, seconds=60):
    """Claim ``deliveries`` (instances or ids) for ``claimant``, whatever their due time,
    as a worker that took them would have."""
    ids = [getattr(item, "pk", item) for item in deliveries]
    Delivery.objects.filter(pk__in=ids, status=Delivery.Status.PENDING).update(
        claimed_by=claimant, claimed_until=queue._sql.now_plus(seconds))
    return ids


def record(outcomes, claimant=CLAIMANT, policy=None):
    """Record ``(delivery, AttemptResult)`` outcomes as the claimant that sent them: the
    deliveries are claimed, loaded afresh with their targets, and recorded (fenced)."""
    ids = hold([delivery for delivery, _ in outcomes], claimant)
    loaded = {delivery.pk: delivery for delivery in queue.load(claimant, ids)}
    fresh = [(loaded.get(delivery.pk, delivery), result) for delivery, result in outcomes]
    stored = sending.record(claimant, fresh, policy=policy)
    for (given, _), (fresh_delivery, _) in zip(outcomes, fresh, strict=True):
        if given is not fresh_delivery:
            given.__dict__.update({k: v for k, v in fresh_delivery.__dict__.items()
                                   if not k.startswith("_")})
    return stored


def attempts_of(stored):
    """The ``DeliveryAttempt`` rows a ``record()`` stored."""
    return [item.attempt for item in stored.recorded]


def travel(seconds):
    """Make every delivery's times ``seconds`` earlier, as if that long had passed: retries
    fall due, claims expire, queues' hold on deliveries grows old."""
    delta = timedelta(seconds=seconds)
    Delivery.objects.filter(next_attempt_at__isnull=False).update(
        next_attempt_at=F("next_attempt_at") - delta)
    Delivery.objects.filter(claimed_until__isnull=False).update(
        claimed_until=F("claimed_until") - delta)
    Delivery.objects.filter(queued_at__isnull=False).update(queued_at=F("queued_at") - delta)
    WebhookTarget.objects.filter(failing_since__isnull=False).update(
        failing_since=F("failing_since") - delta)
