"""The one sending path: every backend calls ``deliver(delivery_id)``.

This module is the only one that writes ``DeliveryAttempt`` rows and moves a
``Delivery``'s status (and, with it, its target's health). It never decides *when* it
runs: backends and the worker do.
"""

import contextlib
import logging
import threading
from datetime import timedelta
from functools import partial

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connections,
    models,
    router,
    transaction,
)
from django.db.models import F
from django.db.models.base import ModelState
from django.db.models.functions import Coalesce
from django.utils import timezone

from djwebhooks import conf, signals
from djwebhooks.exceptions import CancelDelivery
from djwebhooks.models import Delivery, DeliveryAttempt, WebhookTarget
from djwebhooks.senders.base import AttemptResult

logger = logging.getLogger("djwebhooks.delivery")

_sqlite_lock = threading.RLock()


def serialized(using):
    """Hold a process-wide lock on SQLite, a no-op elsewhere.

    SQLite allows one writer at a time, and its shared-cache in-memory databases fail at
    once instead of waiting; so the worker's threads take turns for their (short) database
    work, while their HTTP requests still run side by side.
    """
    if connections[using].vendor == "sqlite":
        return _sqlite_lock
    return contextlib.nullcontext()


def deliver(delivery_id, *, session=None):
    """Make one attempt for the pending delivery ``delivery_id`` and record it.

    Returns the ``AttemptResult``, or None when nothing was sent: the delivery no longer
    exists or is not pending, its target is inactive (the delivery then fails), or a
    ``delivery_sending`` receiver cancelled it. A receiver's failure is recorded, never
    raised.
    """
    for _, sender in prepare([delivery_id], session=session):
        return sender.send()  # DjangoSenderable.notify records it
    return None


def prepare(delivery_ids, *, session=None, record=True, hold=None):
    """Load pending deliveries and return ``(delivery, sender)`` pairs ready to send.

    One query loads them all, with their targets and owners. Deliveries that no longer
    exist or are not pending are left out; those whose target is inactive fail, and those
    a ``delivery_sending`` receiver cancels are cancelled, without a request. An error while
    preparing a request is recorded as a failed attempt. With ``record=False`` the senders
    leave recording to the caller (``record_attempts``), as the worker does in batches.
    ``hold(delivery)`` returning True puts a delivery back, unsent and unclaimed, for later.
    """
    from djwebhooks.senders.orm import DjangoSenderable

    using = router.db_for_read(Delivery)
    with serialized(using):
        found = {delivery.pk: delivery for delivery in _load(delivery_ids)}
    try:
        options = DjangoSenderable.settings_options() if found else None
    except Exception:
        options = None  # a bad setting: each delivery meets it below, and records it
    ready, held = [], []
    for delivery_id in delivery_ids:
        delivery = found.get(delivery_id)
        if delivery is None:
            logger.info("Delivery %s no longer exists; nothing to send.", delivery_id)
        elif delivery.status != Delivery.Status.PENDING:
            logger.info("Delivery %s is %s; not sending it.", delivery_id, delivery.status)
        elif not delivery.webhook_target.is_active:
            finish(delivery, Delivery.Status.FAILED, "target is inactive; nothing was sent")
        elif hold is not None and hold(delivery):
            held.append(delivery.pk)
        else:
            try:
                signals.delivery_sending.send(sender=Delivery, delivery=delivery)
                sender = DjangoSenderable(delivery, session=session, record=record,
                                          options=options)
            except CancelDelivery as exc:
                finish(delivery, Delivery.Status.CANCELLED, f"cancelled: {exc}")
            except DatabaseError:
                raise
            except Exception as exc:
                # A bug or a bad setting (OWNER_FIELD, say), not the receiver's fault.
                # Record it as a failed attempt, so it shows in the admin and is retried on
                # the usual schedule (the cause may be fixed by then) instead of leaving the
                # delivery stuck.
                logger.exception("Delivery %s could not be prepared for sending.",
                                 delivery.pk)
                record_attempt(delivery, AttemptResult(
                    success=False, response_status=None, response_message="",
                    response_content_type="", error=f"{type(exc).__name__}: {exc}",
                    duration=0, notification="Error before sending", exception=exc,
                ))
            else:
                ready.append((delivery, sender))
    if held:
        with serialized(router.db_for_write(Delivery)):
            Delivery.objects.filter(pk__in=held, status=Delivery.Status.PENDING).update(
                locked_by="", locked_until=None
            )
    return ready


def _load(delivery_ids):
    """Read the deliveries with their targets and owners, reconnecting once if the
    connection went away since its last use (a database restart): nothing was sent yet,
    so trying again is safe."""
    query = Delivery.objects.select_related("webhook_target__owner").filter(
        pk__in=delivery_ids
    )
    try:
        return list(query)
    except (InterfaceError, OperationalError):
        connections[router.db_for_read(Delivery)].close()
        return list(query.all())


def record_attempt(delivery, result, *, now=None, policy=None):
    """Store ``result`` as the next ``DeliveryAttempt``; move the delivery and its target on.

    A failed attempt is given a retry time by the ``RetryPolicy`` (from settings unless
    ``policy`` is given), or fails the delivery for good. ``now`` defaults to the time now.
    Returns the ``DeliveryAttempt``.
    """
    return record_attempts([(delivery, result)], now=now, policy=policy)[0]


def record_attempts(outcomes, *, now=None, policy=None):
    """Record a batch of ``(delivery, result)`` pairs in one transaction; return the attempts.

    The same as ``record_attempt`` for each pair, in a few statements for the whole batch:
    the attempt rows are inserted together, the deliveries updated together, and each
    target's health counted once. The deliveries must be distinct.
    """
    if not outcomes:
        return []
    now = now or timezone.now()
    policy = policy or conf.get_retry_policy()
    using = router.db_for_write(Delivery)
    # A success ends its delivery whatever the attempt's number, so one UPDATE numbers the
    # attempt and finishes the delivery; a failure's next step depends on its number, so
    # its delivery is numbered first and updated once that step is decided.
    groups = {}
    for delivery, result in outcomes:
        key = result.response_status if result.success else _FAILED
        groups.setdefault(key, []).append(delivery.pk)
    with serialized(using), transaction.atomic(using=using):
        # Write first: the UPDATE locks the rows, so two senders finishing at once number
        # their attempts one after the other; and SQLite, which cannot turn a reading
        # transaction into a writing one while another connection writes, waits its turn.
        numbers = {}
        for key, ids in groups.items():
            finished = {} if key is _FAILED else _succeeded_fields(key, now)
            numbers.update(_increment_attempts(ids, using, **finished))
        attempts = _insert_attempts(outcomes, numbers, now, using)
        health = {}
        for delivery, result in outcomes:
            _apply(delivery, result, numbers[delivery.pk], policy, now)
            target = health.setdefault(delivery.webhook_target_id, _Health())
            target.add(delivery, result)
        _save_states([delivery for delivery, result in outcomes if not result.success], now)
        disabled = {}
        for target_id, counts in health.items():
            # A success in the batch shows the target works; failures still count after it.
            if counts.successes and counts.known_failing:
                update_health(target_id, success=True, now=now)
            if counts.failures:
                reason = update_health(target_id, success=False, failures=counts.failures,
                                       gone=counts.gone, final=counts.final, now=now)
                if reason:
                    disabled[target_id] = reason
    announcements = [
        (delivery, attempt, disabled.pop(delivery.webhook_target_id, None))
        for (delivery, _), attempt in zip(outcomes, attempts, strict=True)
    ]
    transaction.on_commit(partial(_announce_all, announcements), using=using)
    for (delivery, result), attempt in zip(outcomes, attempts, strict=True):
        log = logger.info if result.success else logger.warning
        log("Delivery %s (%s, %s) attempt %s: %s; %s", delivery.pk, delivery.event,
            delivery.hash_value, attempt.attempt, result.notification or result.error,
            delivery.reason or delivery.status)
    return attempts


#: The group of failed outcomes in ``record_attempts``.
_FAILED = object()


def _succeeded_fields(response_status, now):
    """The fields of a delivery that succeeded (as ``_apply`` sets them)."""
    return {"status": Delivery.Status.SUCCEEDED, "success": True,
            "response_status": response_status, "next_attempt_at": None, "reason": "",
            "locked_by": "", "locked_until": None, "modified": now}


def _increment_attempts(ids, using, **fields):
    """Add one to the deliveries' ``attempt``, set ``fields``, and return ``{pk: attempt}``
    (in one statement, with ``RETURNING``, on PostgreSQL)."""
    connection = connections[using]
    if connection.vendor == "postgresql":
        quote = connection.ops.quote_name
        meta = Delivery._meta
        pk, attempt = quote(meta.pk.column), quote(meta.get_field("attempt").column)
        assignments = [f"{attempt} = {attempt} + 1"]
        params = []
        for name, value in fields.items():
            field = meta.get_field(name)
            assignments.append(f"{quote(field.column)} = %s")
            params.append(field.get_db_prep_save(value, connection))
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {quote(meta.db_table)} SET {', '.join(assignments)} "
                f"WHERE {pk} = ANY(%s) RETURNING {pk}, {attempt}",
                [*params, list(ids)],
            )
            return dict(cursor.fetchall())
    Delivery.objects.using(using).filter(pk__in=ids).update(attempt=F("attempt") + 1,
                                                            **fields)
    return dict(Delivery.objects.using(using).filter(pk__in=ids).values_list("pk", "attempt"))


#: The columns of ``DeliveryAttempt`` that ``_insert_attempts`` writes, in order.
ATTEMPT_COLUMNS = ("delivery_id", "attempt", "success", "response_status", "response_message",
                   "response_content_type", "error", "duration", "notification", "created")


def _insert_attempts(outcomes, numbers, now, using):
    """Insert one ``DeliveryAttempt`` per outcome and return them.

    A multi-row ``INSERT`` written here rather than ``bulk_create``: the values are plain
    strings, numbers and booleans (only ``created`` needs converting, once), and building
    and compiling a model instance per row cost more than the database's work for it.
    """
    connection = connections[using]
    template = DeliveryAttempt(created=now)
    attempts = []
    for delivery, result in outcomes:
        attempt = copy_instance(template)
        attempt.delivery_id, attempt.attempt = delivery.pk, numbers[delivery.pk]
        attempt.success, attempt.response_status = result.success, result.response_status
        attempt.response_message = result.response_message
        attempt.response_content_type = result.response_content_type[:255]
        attempt.error, attempt.duration = result.error, result.duration
        attempt.notification = result.notification[:255]
        attempts.append(attempt)
    meta, quote = DeliveryAttempt._meta, connection.ops.quote_name
    fields = [meta.get_field(column.removesuffix("_id")) for column in ATTEMPT_COLUMNS]
    created = meta.get_field("created").get_db_prep_save(now, connection)
    returning = connection.features.can_return_rows_from_bulk_insert
    insert = (f"INSERT INTO {quote(meta.db_table)} "
              f"({', '.join(quote(field.column) for field in fields)}) ")
    if connection.vendor == "postgresql":
        # One array per column: the statement's text is the same for every batch size.
        casts = ", ".join(f"%s::{field.db_type(connection)}[]" for field in fields[:-1])
        chunks = [attempts]
        statements = [insert + f"SELECT *, %s FROM unnest({casts})"]
        params = [[created]
                  + [[getattr(a, name) for a in attempts] for name in ATTEMPT_COLUMNS[:-1]]]
    else:
        size = connection.ops.bulk_batch_size(fields, attempts) or len(attempts)
        chunks = [attempts[start:start + size] for start in range(0, len(attempts), size)]
        row = f"({', '.join(['%s'] * len(fields))})"
        statements = [insert + f"VALUES {', '.join([row] * len(chunk))}" for chunk in chunks]
        params = [[value for a in chunk
                   for value in [*(getattr(a, name) for name in ATTEMPT_COLUMNS[:-1]), created]]
                  for chunk in chunks]
    with connection.cursor() as cursor:
        for chunk, sql, values in zip(chunks, statements, params, strict=True):
            if returning:
                sql += f" RETURNING {quote(meta.pk.column)}"
            cursor.execute(sql, values)
            if returning:
                # In the order of the rows given, as bulk_create relies on too.
                for attempt, (pk,) in zip(chunk, cursor.fetchall(), strict=True):
                    attempt.pk = pk
                    attempt._state.adding, attempt._state.db = False, using
    return attempts


def copy_instance(template):
    """Return a new, unsaved model instance with ``template``'s field values.

    Many rows made from one template this way take a fraction of the time of as many
    ``Model.__init__`` calls, which convert every value and send two signals each.
    """
    instance = template.__class__.__new__(template.__class__)
    instance.__dict__.update(template.__dict__)
    instance._state = ModelState()
    return instance


def _save_states(deliveries, now):
    """Write the deliveries' new states: one UPDATE per distinct state, so a batch of
    successes is a single statement (``attempt`` is already written)."""
    groups = {}
    for delivery in deliveries:
        state = (delivery.status, delivery.success, delivery.response_status,
                 delivery.next_attempt_at, delivery.reason)
        groups.setdefault(state, []).append(delivery)
    singles = [group[0] for group in groups.values() if len(group) == 1]
    if len(singles) > 1:
        # Retries each have their own time (jitter): one CASE statement for all of them.
        Delivery.objects.bulk_update(singles, ["status", "success", "response_status",
                                               "next_attempt_at", "reason", "locked_by",
                                               "locked_until", "modified"])
    for (status, success, response_status, next_attempt_at, reason), group in groups.items():
        if len(singles) > 1 and len(group) == 1:
            continue
        Delivery.objects.filter(pk__in=[delivery.pk for delivery in group]).update(
            status=status, success=success, response_status=response_status,
            next_attempt_at=next_attempt_at, reason=reason, locked_by="", locked_until=None,
            modified=now,
        )


def _apply(delivery, result, number, policy, now):
    """Set the delivery's fields after attempt ``number`` ended with ``result``."""
    if result.success:
        fields = _succeeded_fields(result.response_status, now)
    else:
        decision = policy.decide(
            number,
            now=now,
            status=result.response_status,
            exception=result.exception,
            retry_after=result.retry_after,
        )
        fields = {
            "status": Delivery.Status.PENDING if decision.retry else Delivery.Status.FAILED,
            "success": False, "response_status": result.response_status,
            "next_attempt_at": decision.retry_at, "reason": decision.reason[:255],
            "locked_by": "", "locked_until": None, "modified": now,
        }
    delivery.attempt = number
    for name, value in fields.items():
        setattr(delivery, name, value)


class _Health:
    """What one batch tells about one target."""

    def __init__(self):
        self.successes = self.failures = 0
        self.gone = self.final = False
        self.known_failing = False

    def add(self, delivery, result):
        # As loaded with the delivery: a healthy target needs no reset (a failure recorded
        # meanwhile by another worker is reset by the next success seen fresh).
        self.known_failing |= delivery.webhook_target.consecutive_failures > 0
        if result.success:
            self.successes += 1
        else:
            self.failures += 1
            self.gone |= result.response_status == 410
            self.final |= delivery.status == Delivery.Status.FAILED


def update_health(target_id, *, success, failures=1, gone=False, final=False, now):
    """Count a target's consecutive failures; disable it when it should stop receiving.

    ``success`` resets the count; otherwise ``failures`` more are counted. Returns the
    reason the target was disabled by this call, or None.
    """
    targets = WebhookTarget.objects.filter(pk=target_id)
    if success:
        targets.filter(consecutive_failures__gt=0).update(consecutive_failures=0,
                                                          failing_since=None)
        return None
    targets.update(consecutive_failures=F("consecutive_failures") + failures,
                   failing_since=Coalesce("failing_since", models.Value(now)))
    reason = None
    if gone:
        reason = "the receiver answered 410 Gone"
    elif final and conf.get_seconds("DISABLE_AFTER") is not None:
        window = timedelta(seconds=conf.get_seconds("DISABLE_AFTER"))
        if targets.filter(failing_since__lte=now - window).exists():
            reason = f"every attempt failed for more than {_humanize(window)}"
    if reason and targets.filter(is_active=True).update(
        is_active=False, disabled_at=now, disabled_reason=reason
    ):
        logger.warning("Webhook target %s disabled: %s.", target_id, reason)
        return reason
    return None


def finish(delivery, status, reason):
    """End a delivery without an attempt (inactive target, cancelled)."""
    now = timezone.now()
    using = router.db_for_write(Delivery)
    Delivery.objects.filter(pk=delivery.pk).update(
        status=status, next_attempt_at=None, reason=reason[:255], locked_by="",
        locked_until=None, modified=now,
    )
    delivery.status, delivery.reason, delivery.next_attempt_at = status, reason[:255], None
    delivery.locked_by, delivery.locked_until, delivery.modified = "", None, now
    logger.info("Delivery %s %s: %s.", delivery.pk, status, reason)
    if status == Delivery.Status.FAILED:
        transaction.on_commit(
            partial(signals.delivery_failed.send, sender=Delivery, delivery=delivery,
                    attempt=None, reason=reason),
            using=using,
        )


def _announce_all(announcements):
    """Send the signals of a recorded batch; a receiver that raises is logged, and the
    other deliveries are still announced (the attempts are recorded whatever happens)."""
    for delivery, attempt, disabled in announcements:
        try:
            _announce(delivery, attempt, disabled)
        except Exception:
            logger.exception("A signal receiver failed for delivery %s.", delivery.pk)


def _announce(delivery, attempt, disabled):
    if delivery.status == Delivery.Status.SUCCEEDED:
        signals.delivery_succeeded.send(sender=Delivery, delivery=delivery, attempt=attempt)
    elif delivery.status == Delivery.Status.FAILED:
        signals.delivery_failed.send(sender=Delivery, delivery=delivery, attempt=attempt,
                                     reason=delivery.reason)
    if disabled:
        # The target may have been deleted since; then there is no one to tell.
        target = WebhookTarget.objects.filter(pk=delivery.webhook_target_id).first()
        if target is not None:
            signals.target_disabled.send(sender=WebhookTarget, target=target, reason=disabled)


def _humanize(window):
    days, seconds = window.days, window.seconds
    if days and not seconds:
        return f"{days} day{'s' if days != 1 else ''}"
    return f"{window.total_seconds():g} seconds"


def replay(deliveries):
    """Send ``deliveries`` (a queryset or iterable of ids) again; return their ids.

    Each replay is a new attempt on the same ``Delivery``, with the same ``webhook-id``.
    The deliveries are made pending and due now, and handed to the backend after commit;
    one that a worker holds at this moment is left alone (and not in the list returned).
    A replayed delivery that fails again is retried only while its attempts are within
    ``RETRY_SCHEDULE``.
    """
    from djwebhooks.backends import get_backend

    if isinstance(deliveries, models.QuerySet):
        ids = list(deliveries.values_list("pk", flat=True))
    else:
        ids = [getattr(item, "pk", item) for item in deliveries]
    if not ids:
        return []
    now = timezone.now()
    # A delivery a worker is sending right now keeps its claim: it is not replayed.
    free = Delivery.objects.filter(pk__in=ids).filter(
        models.Q(locked_until__isnull=True) | models.Q(locked_until__lt=now)
    )
    ids = list(free.values_list("pk", flat=True))
    free.update(
        status=Delivery.Status.PENDING, next_attempt_at=now, reason="replayed",
        locked_by="", locked_until=None, modified=now,
    )
    if not ids:
        return []
    transaction.on_commit(
        lambda: get_backend().enqueue(ids), using=router.db_for_write(Delivery)
    )
    return ids
