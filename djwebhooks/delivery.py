"""The one sending path: every backend calls ``deliver(delivery_id)``.

This module is the only one that writes ``DeliveryAttempt`` rows and moves a
``Delivery``'s status. It never decides *when* it runs: backends do.
"""

import logging

from django.db import models, router, transaction
from django.utils import timezone

from djwebhooks.models import Delivery, DeliveryAttempt

logger = logging.getLogger("djwebhooks.delivery")


def deliver(delivery_id, *, session=None):
    """Make one attempt for the delivery ``delivery_id`` and record it.

    Returns the ``AttemptResult``, or None when nothing was sent: the delivery no longer
    exists, has already succeeded, or its target is inactive (the delivery is then marked
    failed). A receiver's failure is recorded, never raised.
    """
    from djwebhooks.senders.orm import DjangoSenderable

    delivery = (
        Delivery.objects.select_related("webhook_target__owner").filter(pk=delivery_id).first()
    )
    if delivery is None:
        logger.info("Delivery %s no longer exists; nothing to send.", delivery_id)
        return None
    if delivery.status == Delivery.Status.SUCCEEDED:
        logger.info("Delivery %s has already succeeded; not sending it again.", delivery_id)
        return None
    if not delivery.webhook_target.is_active:
        logger.info("Target of delivery %s is inactive; marking it failed.", delivery_id)
        Delivery.objects.filter(pk=delivery.pk).update(
            status=Delivery.Status.FAILED, next_attempt_at=None, modified=timezone.now()
        )
        return None
    result = DjangoSenderable(delivery, session=session).send()
    log = logger.info if result.success else logger.warning
    log(
        "Delivery %s (%s, %s) attempt %s: %s",
        delivery.pk,
        delivery.event,
        delivery.hash_value,
        delivery.attempt,
        result.notification or result.error,
    )
    return result


def record_attempt(delivery, result):
    """Store ``result`` as the next ``DeliveryAttempt`` and update the delivery."""
    status = Delivery.Status.SUCCEEDED if result.success else Delivery.Status.FAILED
    with transaction.atomic(using=router.db_for_write(Delivery)):
        # The row lock numbers attempts correctly when two senders finish at once.
        number = (
            Delivery.objects.select_for_update()
            .values_list("attempt", flat=True)
            .get(pk=delivery.pk)
        ) + 1
        DeliveryAttempt.objects.create(
            delivery_id=delivery.pk,
            attempt=number,
            success=result.success,
            response_status=result.response_status,
            response_message=result.response_message,
            response_content_type=result.response_content_type[:255],
            error=result.error,
            duration=result.duration,
            notification=result.notification[:255],
        )
        now = timezone.now()
        Delivery.objects.filter(pk=delivery.pk).update(
            attempt=number,
            success=result.success,
            status=status,
            response_status=result.response_status,
            next_attempt_at=None,
            modified=now,
        )
    delivery.attempt = number
    delivery.success = result.success
    delivery.status = status
    delivery.response_status = result.response_status
    delivery.next_attempt_at = None
    delivery.modified = now


def replay(deliveries):
    """Send ``deliveries`` (a queryset or iterable of ids) again; return their ids.

    Each replay is a new attempt on the same ``Delivery``, with the same ``webhook-id``.
    The deliveries are marked pending now and handed to the backend after commit.
    """
    from djwebhooks.backends import get_backend

    if isinstance(deliveries, models.QuerySet):
        ids = list(deliveries.values_list("pk", flat=True))
    else:
        ids = [getattr(item, "pk", item) for item in deliveries]
    if not ids:
        return []
    now = timezone.now()
    Delivery.objects.filter(pk__in=ids).update(
        status=Delivery.Status.PENDING, next_attempt_at=now, modified=now
    )
    transaction.on_commit(
        lambda: get_backend().enqueue(ids), using=router.db_for_write(Delivery)
    )
    return ids
