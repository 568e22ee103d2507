"""The delivery state machine: claim, renew, release, load, record, finish, make due.

This is the only module that moves a ``Delivery``'s status. Every write that follows a
claim is fenced: it changes a delivery only while the claimant still holds it and it is
still pending (``WHERE claimed_by = me AND status = 'pending'``). An outcome that arrives
after its claim was lost (the lease ran out and another worker took the delivery over) is
still stored as a ``DeliveryAttempt``, since that request was made, but it moves nothing:
a delivery that succeeded never becomes pending or failed again.
"""

import logging
import time
from dataclasses import dataclass, field

from django.db import close_old_connections as _close_old_connections
from django.db import connections, models, router, transaction

from djwebhooks import _sql, conf, health, options
from djwebhooks.models import DatabaseNow, Delivery, DeliveryAttempt, copy_instance

logger = logging.getLogger("djwebhooks.queue")

PENDING, SUCCEEDED = Delivery.Status.PENDING, Delivery.Status.SUCCEEDED
FAILED, CANCELLED = Delivery.Status.FAILED, Delivery.Status.CANCELLED
#: The longest error text kept on an attempt; the rest is cut.
MAX_ERROR_LENGTH = 2000


def database():
    """The database alias deliveries are read from and written to: the one they are
    written to, so that nothing on the sending path reads from a lagging replica."""
    return router.db_for_write(Delivery)


def close_old_connections():
    """Close this thread's database connections that are broken or older than
    ``CONN_MAX_AGE``, as Django does around each request; a worker calls it around each
    batch. Not inside an atomic block (a test's transaction), which closing would end."""
    if not connections[database()].in_atomic_block:
        _close_old_connections()


def close_all_connections():
    """Close this thread's database connections, unless inside an atomic block."""
    if not connections[database()].in_atomic_block:
        connections.close_all()


@dataclass
class Claim:
    """Deliveries claimed together, and until when their claim surely lasts."""

    ids: list
    #: A ``time.monotonic()`` moment before which the database's lease cannot end (taken
    #: just before the claim was made, so it errs early).
    expires: float = 0.0


def claim(claimant, *, limit, lease=None, ids=None, exclude_targets=()):
    """Claim up to ``limit`` due deliveries (among ``ids`` if given); return a ``Claim``.

    ``lease`` is in seconds (the ``LEASE`` setting when None). Deliveries to
    ``exclude_targets`` (target ids) are left for later.
    """
    lease = conf.get_seconds("LEASE") if lease is None else lease
    started = time.monotonic()
    claimed = _sql.claim(database(), claimant, limit=limit, lease=lease, ids=ids,
                         exclude_targets=exclude_targets)
    return Claim(claimed, started + lease)


def renew(claimant, ids, *, lease=None):
    """Extend the claims on ``ids``; return ``(ids still held, monotonic expiry)``."""
    lease = conf.get_seconds("LEASE") if lease is None else lease
    started = time.monotonic()
    return _sql.renew(database(), claimant, ids, lease), started + lease


def release(claimant, ids):
    """Give back the claims on ``ids`` unsent: they are due again at once, and no queue
    holds them (so the next sweep hands them over)."""
    if ids:
        Delivery.objects.using(database()).filter(
            pk__in=list(ids), claimed_by=claimant, status=PENDING
        ).update(claimed_by="", claimed_until=None, queued_at=None)


def unqueued(ids):
    """Note that no queue holds the pending deliveries ``ids`` (handing them to the backend
    failed), so the next sweep hands them over at once."""
    if ids:
        Delivery.objects.using(database()).filter(
            pk__in=list(ids), status=PENDING
        ).update(queued_at=None)


def overdue(*, limit, requeue_after):
    """Return the ids of up to ``limit`` deliveries that are due, that no one has claimed
    (or whose claim has expired), and that no queue has been holding for them in the last
    ``requeue_after`` seconds: those a queue lost, or was never given. Oldest due first.
    A delivery of an ordered target that waits for an earlier one is not overdue: it is
    handed over once its turn comes.

    Read through the partial index of pending deliveries by due time, so its cost follows
    the number of pending deliveries, not the size of the table.
    """
    return list(overdue_deliveries(requeue_after).values_list("pk", flat=True)[:limit])


def overdue_deliveries(requeue_after):
    """The queryset ``overdue()`` reads, oldest due first."""
    now = DatabaseNow()
    cutoff = _sql.now_plus(-requeue_after)
    return (
        Delivery.objects.using(database())
        .filter(status=PENDING, next_attempt_at__lte=now)
        .filter(models.Q(claimed_until__isnull=True) | models.Q(claimed_until__lt=now))
        .filter(models.Q(queued_at__isnull=True) | models.Q(queued_at__lt=cutoff))
        .in_turn()
        .order_by("next_attempt_at", "pk")
    )


def not_yet_free(ids):
    """Return ``{id: when}`` for the pending deliveries among ``ids`` that cannot be sent
    now: held by a live claim (``when`` it ends) or not yet due (``when`` they are)."""
    now = _sql.db_now(database())
    waiting = {}
    for pk, claimed_until, due in Delivery.objects.using(database()).filter(
            pk__in=list(ids), status=PENDING).values_list("pk", "claimed_until",
                                                         "next_attempt_at"):
        if claimed_until is not None and claimed_until > now:
            waiting[pk] = claimed_until
        elif due is not None and due > now:
            waiting[pk] = due
    return waiting


def in_turn(*, ids=None, targets=None):
    """Return the ids of the deliveries of ordered targets (among ``ids``, or of the targets
    ``targets``) that can be sent now: due, free, and in their turn. At most one a target.
    """
    rows = Delivery.objects.using(database()).due().in_turn().filter(
        webhook_target__ordered=True)
    if ids is not None:
        rows = rows.filter(pk__in=list(ids))
    if targets is not None:
        rows = rows.filter(webhook_target_id__in=list(targets))
    return list(rows.order_by("pk").values_list("pk", flat=True))


def mark_queued(ids):
    """Note that the pending deliveries ``ids`` were handed to the backend just now."""
    if ids:
        Delivery.objects.using(database()).filter(
            pk__in=list(ids), status=PENDING
        ).update(queued_at=DatabaseNow())


def load(claimant, ids, *, known=None):
    """Return the deliveries ``ids`` that ``claimant`` holds, with their targets and owners,
    in the order of ``ids``. ``known`` (a dict, empty at first) lets the loads of one
    claim's parts share the targets and owners made."""
    found = {delivery.pk: delivery
             for delivery in _sql.load(database(), claimant, ids, known=known)}
    return [found[pk] for pk in ids if pk in found]


def finish(claimant, deliveries, status, reason):
    """End deliveries without an attempt (their target is inactive, or they were
    cancelled); return those this moved (still held by ``claimant``)."""
    if not deliveries:
        return []
    using = database()
    reason = reason[:255]
    with transaction.atomic(using=using):
        now = _sql.db_now(using)
        moved = _sql.update_held(using, claimant, [d.pk for d in deliveries], {
            "status": status, "next_attempt_at": None, "reason": reason, "claimed_by": "",
            "claimed_until": None, "queued_at": None, "modified": now,
        })
    finished = []
    for delivery in deliveries:
        if delivery.pk in moved:
            delivery.status, delivery.reason, delivery.next_attempt_at = status, reason, None
            delivery.claimed_by, delivery.claimed_until, delivery.modified = "", None, now
            delivery.queued_at = None
            logger.info("Delivery %s %s: %s.", delivery.pk, status, reason)
            finished.append(delivery)
    return finished


@dataclass
class Recorded:
    """An attempt as stored, and what it did to its delivery."""

    delivery: Delivery
    attempt: DeliveryAttempt
    #: False for a late outcome: the claim was lost, so the delivery was left as it was.
    moved: bool


@dataclass
class Record:
    """What ``record()`` stored."""

    recorded: list = field(default_factory=list)
    #: Target id -> the reason it was disabled by these outcomes.
    disabled: dict = field(default_factory=dict)


def record(claimant, outcomes, *, policy=None, defer_within=None):
    """Store each ``(delivery, AttemptResult)`` outcome as the delivery's next attempt, and
    move the deliveries ``claimant`` still holds on: succeeded, pending with a retry time
    (``policy``, a ``RetryPolicy``; from settings when None), or failed.

    ``defer_within`` says which retries the caller hands to its backend in advance: those
    due within that many seconds (``math.inf``: all). Their ``queued_at`` is their retry
    time; the others' is empty, for the sweep. None hands none over.

    One transaction for the whole batch: the attempts are inserted together, the
    deliveries updated together, each target's health counted once. Text from receivers
    is made storable. Outcomes whose delivery no longer exists (its target was deleted)
    are left out, with a log line. The deliveries must be distinct. Returns a ``Record``.
    """
    if not outcomes:
        return Record()
    policy = policy or conf.get_retry_policy()
    using = database()
    clean = _sql.text_cleaner(using)
    successes, failures = {}, []
    for delivery, result in outcomes:
        if result.success:
            successes.setdefault(result.response_status, []).append(delivery.pk)
        else:
            failures.append(delivery.pk)
    with transaction.atomic(using=using):
        now = _sql.db_now(using)
        numbers, held, portable = {}, set(), {}
        for status, ids in successes.items():
            # PostgreSQL numbers the attempt and finishes the delivery in one statement.
            done = _sql.succeed(using, claimant, ids, _succeeded_fields(status, now))
            if done is not None:
                numbers.update(done)
                held.update(done)
            counted = _sql.count_attempts(using, [pk for pk in ids if pk not in numbers])
            numbers.update({pk: row[0] for pk, row in counted.items()})
            if done is None:
                portable[status] = [pk for pk, row in counted.items() if _holds(row, claimant)]
                held.update(portable[status])
        counted = _sql.count_attempts(using, failures)
        numbers.update({pk: row[0] for pk, row in counted.items()})
        held.update(pk for pk, row in counted.items() if _holds(row, claimant))
        present = []
        for delivery, result in outcomes:
            if delivery.pk in numbers:
                present.append((delivery, result))
            else:
                logger.warning("Delivery %s no longer exists (its target was deleted); its "
                               "attempt (%s) is not recorded.", delivery.pk,
                               result.notification or result.error)
        # Who asked for a replay is copied from the delivery (as loaded under the claim:
        # make_due leaves claimed rows alone) onto the attempt that follows it, and only
        # when that attempt moves the delivery, which clears it there.
        attempts = [_attempt_row(delivery, result, numbers[delivery.pk], now, clean,
                                 delivery.replayed_by_id if delivery.pk in held else None)
                    for delivery, result in present]
        _sql.insert_attempts(using, attempts)
        for status, ids in portable.items():
            # Still held: their rows are locked since they were counted.
            if ids:
                Delivery.objects.using(using).filter(pk__in=ids).update(
                    **_succeeded_fields(status, now))
        for delivery, _ in present:
            delivery.attempt = numbers[delivery.pk]
        moved = [(d, r) for d, r in present if d.pk in held]
        policies = {}
        for delivery, result in moved:
            _apply(delivery, result, _policy_for(delivery, policy, policies), now, clean,
                   defer_within)
        _save_failures(using, claimant, [d for d, r in moved if not r.success])
        tallies = {}
        for delivery, result in moved:
            tallies.setdefault(delivery.webhook_target_id, health.TargetTally()).add(
                delivery, result)
        disabled = health.record(tallies, using=using, now=now)
    recorded = [Recorded(delivery, attempt, delivery.pk in held)
                for (delivery, _), attempt in zip(present, attempts, strict=True)]
    for item, (_, result) in zip(recorded, present, strict=True):
        _log(item, result)
    return Record(recorded, disabled)


def _holds(row, claimant):
    attempt, claimed_by, status = row
    return claimed_by == claimant and status == PENDING


def _succeeded_fields(response_status, now):
    """The fields of a delivery that succeeded."""
    return {"status": SUCCEEDED, "success": True, "response_status": response_status,
            "next_attempt_at": None, "reason": "", "claimed_by": "", "claimed_until": None,
            "queued_at": None, "replayed_by": None, "modified": now}


_ATTEMPT_TEMPLATE = DeliveryAttempt(attempt=0)


def _attempt_row(delivery, result, number, now, clean, replayed_by_id):
    attempt = copy_instance(_ATTEMPT_TEMPLATE)
    attempt.__dict__.update(
        replayed_by_id=replayed_by_id,
        delivery_id=delivery.pk, attempt=number, success=result.success,
        response_status=result.response_status,
        response_message=clean(result.response_message),
        response_content_type=clean(result.response_content_type)[:255],
        error=clean(result.error)[:MAX_ERROR_LENGTH], duration=result.duration,
        notification=clean(result.notification)[:255], created=now,
    )
    return attempt


def _policy_for(delivery, policy, policies):
    """The ``RetryPolicy`` of ``delivery``'s target: ``policy`` with the target's own
    schedule, if it has one (made once per schedule, kept in ``policies``)."""
    schedule = delivery.webhook_target.retry_schedule
    if schedule is None:
        return policy
    key = repr(schedule)
    if key not in policies:
        try:
            policies[key] = policy.with_schedule(options.check_schedule(schedule))
        except options.OptionError as exc:
            # Saved from code, without validation: the sender's schedule, and a word why.
            logger.warning("Webhook target %s has a retry schedule that cannot be used, so "
                           "the sender's is: %s", delivery.webhook_target_id, exc)
            policies[key] = policy
    return policies[key]


def _apply(delivery, result, policy, now, clean, defer_within):
    """Set the delivery's fields after its attempt ended with ``result``."""
    if result.success:
        fields = _succeeded_fields(result.response_status, now)
    else:
        decision = policy.decide(delivery.attempt, now=now, status=result.response_status,
                                 exception=result.exception, retry_after=result.retry_after)
        queued = decision.retry and defer_within is not None and (
            (decision.retry_at - now).total_seconds() <= defer_within)
        fields = {
            "status": PENDING if decision.retry else FAILED, "success": False,
            "response_status": result.response_status, "next_attempt_at": decision.retry_at,
            "reason": clean(decision.reason)[:255], "claimed_by": "", "claimed_until": None,
            "queued_at": decision.retry_at if queued else None, "replayed_by": None,
            "modified": now,
        }
    for name, value in fields.items():
        setattr(delivery, name, value)


_STATE_FIELDS = ("status", "success", "response_status", "next_attempt_at", "reason",
                 "claimed_by", "claimed_until", "queued_at", "replayed_by", "modified")


def _save_failures(using, claimant, deliveries):
    """Write the failed deliveries' new states: one UPDATE per distinct state, and one CASE
    statement for the retries that each have their own time (jitter)."""
    groups = {}
    for delivery in deliveries:
        state = (delivery.status, delivery.response_status, delivery.next_attempt_at,
                 delivery.reason, delivery.queued_at)
        groups.setdefault(state, []).append(delivery)
    held = Delivery.objects.using(using).filter(claimed_by=claimant, status=PENDING)
    singles = [group[0] for group in groups.values() if len(group) == 1]
    if len(singles) > 1:
        held.bulk_update(singles, _STATE_FIELDS)
    for group in groups.values():
        if len(singles) > 1 and len(group) == 1:
            continue
        first = group[0]
        held.filter(pk__in=[d.pk for d in group]).update(
            **{name: getattr(first, name) for name in _STATE_FIELDS})


def _log(item, result):
    # The line of an attempt that moved its delivery is sending.record's, which knows who
    # makes the retry.
    delivery = item.delivery
    if not item.moved:
        logger.warning("Delivery %s attempt %s came back after its claim was lost: %s "
                       "(kept as an attempt; the delivery is left as it is).", delivery.pk,
                       item.attempt.attempt, result.notification or result.error)


def cancel(ids, reason):
    """Cancel the pending deliveries ``ids`` that no live claim holds (one being sent now
    finishes as its attempt goes); return the ids cancelled, and the ordered targets among
    theirs (``(ids, target ids)``)."""
    using = database()
    reason = reason[:255]
    with transaction.atomic(using=using):
        now = _sql.db_now(using)
        free = Delivery.objects.using(using).filter(pk__in=list(ids), status=PENDING).filter(
            models.Q(claimed_until__isnull=True) | models.Q(claimed_until__lt=DatabaseNow())
        )
        cancelled = sorted(_sql.update_rows(using, free, {
            "status": CANCELLED, "next_attempt_at": None, "reason": reason, "claimed_by": "",
            "claimed_until": None, "queued_at": None, "replayed_by": None, "modified": now,
        }))
        targets = set(Delivery.objects.using(using).filter(
            pk__in=cancelled, webhook_target__ordered=True).values_list(
            "webhook_target_id", flat=True))
    for pk in cancelled:
        logger.info("Delivery %s cancelled: %s.", pk, reason)
    return cancelled, targets


def make_due(ids, *, replayed_by=None):
    """Make the deliveries ``ids`` pending and due now, as a replay does, except those a
    live claim holds (a worker is sending them right now); return the ids made due.

    ``replayed_by`` (a user, or None) is noted on them, and then on the next attempt of
    each."""
    using = database()
    with transaction.atomic(using=using):
        now = _sql.db_now(using)
        free = Delivery.objects.using(using).filter(pk__in=list(ids)).filter(
            models.Q(claimed_until__isnull=True) | models.Q(claimed_until__lt=DatabaseNow())
        )
        return sorted(_sql.update_rows(using, free, {
            "status": PENDING, "next_attempt_at": now, "reason": "replayed",
            "claimed_by": "", "claimed_until": None, "queued_at": now, "modified": now,
            "replayed_by": getattr(replayed_by, "pk", None),
        }))
