"""Deleting old finished deliveries, a batch at a time, without long locks."""

from datetime import timedelta

from django.db import router, transaction
from django.utils import timezone

from djwebhooks.models import Delivery, DeliveryAttempt


def prunable(older_than, *, now=None):
    """Count the finished deliveries ``prune(older_than)`` would delete now; delete none."""
    return _old_finished(older_than, now, router.db_for_write(Delivery)).count()


def _old_finished(older_than, now, using):
    if not isinstance(older_than, timedelta):
        older_than = timedelta(seconds=older_than)
    cutoff = (now or timezone.now()) - older_than
    return Delivery.objects.using(using).finished().filter(modified__lt=cutoff)


def prune(older_than, *, batch_size=1000, now=None, on_batch=None):
    """Delete finished deliveries last changed more than ``older_than`` ago, and their
    attempts; return how many deliveries were deleted.

    ``older_than`` is a ``timedelta`` or seconds. Pending deliveries are never deleted.
    Each batch is its own short transaction; ``on_batch(deleted_so_far)`` is called after
    each one.
    """
    using = router.db_for_write(Delivery)
    old = _old_finished(older_than, now, using).order_by("pk")
    deleted, last = 0, None
    while True:
        with transaction.atomic(using=using):
            # Each batch reads on from the last id of the one before: starting again from
            # the lowest id would walk over every row deleted so far (their index entries
            # and, while an older snapshot is open anywhere, their dead tuples), so each
            # batch would take longer than the one before.
            rows = old if last is None else old.filter(pk__gt=last)
            ids = list(rows.values_list("pk", flat=True)[:batch_size])
            if not ids:
                return deleted
            # Attempts first, in one statement; then the deliveries, loading only their ids.
            DeliveryAttempt.objects.using(using).filter(delivery_id__in=ids).delete()
            Delivery.objects.using(using).filter(pk__in=ids).only("pk").delete()
        deleted += len(ids)
        last = ids[-1]
        if on_batch is not None:
            on_batch(deleted)
        if len(ids) < batch_size:
            return deleted  # the last batch: no more rows after it a moment ago
