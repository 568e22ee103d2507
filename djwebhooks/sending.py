"""The one path from a claim to a record: ``send_deliveries()``, and the steps it takes.

Claim the deliveries, load them with their targets, send ``delivery_sending`` (which may
cancel one), build each request, send it, record every outcome (fenced), and announce what
changed once it is committed. Every backend runs deliveries through ``send_deliveries``;
the database worker runs the same steps (``prepare``, ``send``, ``record``), batching them
across its threads.

Nothing a receiver or the project's own code does escapes these steps: an exception while
preparing or building a request becomes a failed attempt (retried on the schedule), text
from receivers is made storable, and an outcome that cannot be stored with its batch is
stored on its own.
"""

import asyncio
import collections
import contextvars
import logging
import math
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from functools import partial
from urllib.parse import urlsplit, urlunsplit

from django.db import DatabaseError, connections, transaction

from djwebhooks import conf, pacing, queue, signals, transport
from djwebhooks.exceptions import CancelDelivery, DeliveryError
from djwebhooks.models import Delivery, WebhookTarget
from djwebhooks.senders.base import AttemptResult
from djwebhooks.senders.orm import DjangoSenderable

logger = logging.getLogger("djwebhooks.sending")

#: A request is not started with less time than this left in a call's budget.
MIN_REQUEST_SECONDS = 1.0
#: How long past its deadline a request on the event loop is waited for.
LOOP_GRACE_SECONDS = 10.0
#: Without a budget, how long in all a call waits for rate-limited targets to have room;
#: the deliveries that would make it wait longer are given back (handed to the backend
#: for then, where it defers), so that a queue's task is not held by a slow rate.
RATE_WAIT_SECONDS = 1.0

_local = threading.local()
#: The delivery being sent on this thread, or in this task of the event loop.
_current = contextvars.ContextVar("djwebhooks_delivery", default=None)


def default_claimant(kind="inline"):
    """A claimant name unique to this call: ``kind:host:pid:random``."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def send_deliveries(delivery_ids, *, claimant=None, budget=None, session=None, retry=None,
                    retry_within=None, concurrency=1, mode=None):
    """Send the deliveries ``delivery_ids`` that are due, and record each outcome; return
    the ``(delivery, AttemptResult)`` pairs recorded.

    The deliveries are claimed first, under ``claimant`` (a name unique to this call when
    None), so no one else sends them meanwhile; ids that are not due, or that another
    claimant holds, are skipped. Up to ``concurrency`` requests are made at once: in the
    ``"threads"`` ``mode``, each on a thread of this thread's own pool (kept for the next
    call, so that its connections to receivers are kept too); in ``"async"``, all on the
    process's event loop (``SEND_MODE`` when None). The claim, the load and the record
    are one batch each, on this thread. ``budget`` bounds the call in seconds: a request
    is started only while at least a second of it is left (or half ``TOTAL_TIMEOUT``, if
    shorter), its deadline cut to what is left, and deliveries not started are given
    back, due, for a worker. A request never outlives its claim: the claim is renewed when
    it would not outlast the request's deadline. No target gets more requests at once
    than its cap (``djwebhooks.pacing``) nor more a second than its rate limit: those
    left for lack of rate wait for it (while the budget lasts, or ``RATE_WAIT_SECONDS``
    in all without one), and are otherwise given back, and handed to ``retry`` for the moment
    the rate has room.
    ``session`` is the HTTP session to send with (each thread's pooled one when None).
    ``retry(ids, run_after=when)``, when given, is called once the outcomes are committed
    for each retry they scheduled that is due within ``retry_within`` seconds (None: any),
    so a queue can hold it until then (a backend's ``enqueue``); the others stay due in
    the database, for a sweep or a worker.
    Never raises for a receiver's failure; a database error propagates, leaving what was
    not recorded to be sent again once its claim expires.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a whole number of at least 1, got "
                         f"{concurrency!r}")
    mode = conf.get_send_mode(mode)
    claimant = claimant or default_claimant()
    ids = list(dict.fromkeys(delivery_ids))
    if not ids:
        return []
    lease = conf.get_seconds("LEASE")
    total = conf.get_seconds("TOTAL_TIMEOUT")
    claim = queue.claim(claimant, limit=len(ids), ids=ids, lease=lease)
    if not claim.ids:
        return []
    ready, outcomes = prepare(queue.load(claimant, claim.ids), claimant=claimant,
                              session=session)
    default_most = _default_most()
    pending = ready
    end = None
    unsent, starved, wait, waited = [], [], 0.0, 0.0
    lost = set()
    while pending:
        now = time.monotonic()
        if end is None and budget is not None:
            end = now + budget  # the budget is for the requests, from the first one on
        left = None if end is None else end - now
        if left is not None and left < min(MIN_REQUEST_SECONDS, total / 2):
            unsent = [later.delivery.pk for later in pending]
            break
        deadline = total if left is None else min(total, left)
        if claim.expires - now < deadline:
            rest = [later.delivery.pk for later in pending if later.delivery.pk not in lost]
            held, claim.expires = queue.renew(claimant, rest, lease=lease)
            lost.update(set(rest) - held)
            # Only with a LEASE shorter than TOTAL_TIMEOUT (which djwebhooks.E006 refuses)
            # does a fresh claim not cover the request; then it is cut to fit.
            deadline = min(deadline, claim.expires - time.monotonic())
            if deadline < min(MIN_REQUEST_SECONDS, total / 2):
                unsent = [later.delivery.pk for later in pending
                          if later.delivery.pk not in lost]
                break
        for item in pending:
            if item.delivery.pk in lost:
                logger.info("Delivery %s is no longer held by %s; not sending it.",
                            item.delivery.pk, claimant)
        pending = [item for item in pending if item.delivery.pk not in lost]
        wave, pending, wait = _wave(pending, concurrency, default_most)
        if not wave:
            if not pending:
                break
            # Every delivery left waits for its target's rate.
            longest = RATE_WAIT_SECONDS - waited if left is None else \
                left - MIN_REQUEST_SECONDS
            if wait > longest:
                starved = [later.delivery.pk for later in pending]
                break
            time.sleep(wait)
            waited += wait
            continue
        results = send_all(wave, total_timeout=deadline, mode=mode)
        for item, result in zip(wave, results, strict=True):
            target = item.delivery.webhook_target
            pacing.windows.answered(target.pk,
                                    pacing.maximum(target, concurrency, default_most),
                                    result, item.started)
            outcomes.append((item.delivery, result))
    record(claimant, outcomes, retry=retry, retry_within=retry_within)
    queue.release(claimant, unsent + starved)
    if starved and retry is not None:
        # For when their target's rate has room again.
        queue.mark_queued(starved)
        _hand_over(retry, {datetime.now(dt_timezone.utc) + timedelta(seconds=wait): starved})
    return outcomes


def _default_most():
    """``MAX_IN_FLIGHT``, or None when it is not readable (the system checks say why)."""
    try:
        return conf.get_max_in_flight()
    except Exception:
        return None


def _wave(pending, concurrency, default_most):
    """Split ``pending`` (``Ready`` items, in order) into the next wave of at most
    ``concurrency`` requests, each target within its cap (``djwebhooks.pacing``) and its
    rate limit, and the rest; return ``(wave, rest, wait)``, ``wait`` being the seconds
    until a rate-limited target left out may send again (0 when none is)."""
    counts = collections.Counter()
    chosen, paced = [], {}
    for index, item in enumerate(pending):
        if len(chosen) >= concurrency:
            break
        target = item.delivery.webhook_target
        most = pacing.maximum(target, concurrency, default_most)
        if counts[target.pk] >= pacing.windows.limit(target.pk, most):
            continue
        counts[target.pk] += 1
        chosen.append(index)
        if target.rate_limit is not None:
            paced.setdefault(target.pk, []).append(index)
    left_out, wait = set(), 0.0
    for target_id, indexes in paced.items():
        rate = pacing.rate_of(pending[indexes[0]].delivery.webhook_target)
        granted, after = pacing.take(target_id, rate, len(indexes), using=queue.database())
        if granted < len(indexes):
            left_out.update(indexes[granted:])
            wait = after if not wait else min(wait, after)
    taken = {index for index in chosen if index not in left_out}
    wave = [pending[index] for index in sorted(taken)]
    rest = [item for index, item in enumerate(pending) if index not in taken]
    return wave, rest, wait


def send_all(items, *, total_timeout=None, mode="threads"):
    """Send ``Ready`` deliveries at once; return their ``AttemptResult``s in order.

    In the ``"threads"`` mode each is sent on a thread of this thread's pool (one alone
    on this thread); in ``"async"``, all on the process's event loop, unless a session
    of the caller's (a test double) must carry them.
    """
    if mode == "async" and not any(item.sender.session for item in items) and \
            not transport.session_overridden():
        from djwebhooks import aio

        loop = aio.event_loop()
        results = [None] * len(items)
        # One hand-over to the loop for them all, not a future per request.
        future = loop.submit(_send_each(items, loop.client, total_timeout, results))
        # Each request ends by its deadline; a loop that stopped answering (it never has)
        # must not hold this thread for ever either.
        wait = (total_timeout or conf.get_seconds("TOTAL_TIMEOUT")) + LOOP_GRACE_SECONDS
        try:
            future.result(wait)
        except Exception as exc:
            future.cancel()
            results = list(results)  # what ended by now; a later end changes nothing
            logger.error("%s requests on the event loop did not end in %s s; recorded as "
                         "failed.", results.count(None), round(wait))
            failed = failed_before_sending(exc, notification="Sender error")
            return [failed if result is None else result for result in results]
        return results
    if len(items) <= 1:
        return [send(item, total_timeout=total_timeout) for item in items]
    return list(_pool(len(items)).map(partial(send, total_timeout=total_timeout), items))


async def _send_each(items, client, total_timeout, results):
    """Send ``items`` at once on the running loop, putting each one's ``AttemptResult``
    in its place in ``results`` as it ends."""
    async def one(index, item):
        results[index] = await send_async(item, client, total_timeout=total_timeout)

    await asyncio.gather(*(one(index, item) for index, item in enumerate(items)))


def _pool(size):
    """This thread's pool of at least ``size`` sending threads, made in this process (a
    pool made before a fork has no threads in the child)."""
    pool = getattr(_local, "pool", None)
    if pool is None or _local.pool_pid != os.getpid() or _local.pool_size < size:
        if pool is not None and _local.pool_pid == os.getpid():
            pool.shutdown(wait=False)
        pool = _local.pool = ThreadPoolExecutor(size, thread_name_prefix="djwebhooks-send")
        _local.pool_pid, _local.pool_size = os.getpid(), size
    return pool


class Ready:
    """A delivery whose request is built and may be sent; ``started`` is when its request
    started (``time.monotonic()``)."""

    __slots__ = ("delivery", "sender", "started")

    def __init__(self, delivery, sender):
        self.delivery = delivery
        self.sender = sender
        self.started = None


def prepare(deliveries, *, claimant, session=None, options=None, hold=None):
    """Make senders for loaded, claimed deliveries; return ``(ready, outcomes)``.

    Deliveries whose target is inactive fail, and those a ``delivery_sending`` receiver
    cancels are cancelled, without a request; both are finished here. Any other exception
    while preparing (from a receiver, or building the sender) is returned as a failed
    outcome to record, so it is retried on the schedule. ``hold(delivery)`` returning True
    gives a delivery back, unsent, for later. ``options`` are the senders' settings (read
    once here when None).
    """
    if options is None and deliveries:
        try:
            options = DjangoSenderable.settings_options()
        except Exception:
            options = None  # a bad setting: each delivery meets it below, and records it
    ready, outcomes, inactive, cancelled, held = [], [], [], [], []
    for delivery in deliveries:
        if not delivery.webhook_target.is_active:
            inactive.append(delivery)
            continue
        if hold is not None and hold(delivery):
            held.append(delivery.pk)
            continue
        try:
            signals.delivery_sending.send(sender=Delivery, delivery=delivery)
            sender = DjangoSenderable(delivery, session=session, options=options)
        except CancelDelivery as exc:
            cancelled.append((delivery, f"cancelled: {exc}"))
        except Exception as exc:
            logger.exception("Delivery %s could not be prepared for sending.", delivery.pk)
            result = failed_before_sending(exc)
            outcomes.append((delivery, result))
            send_signal("attempt_finished", Delivery, delivery=delivery, result=result)
        else:
            ready.append(Ready(delivery, sender))
    failed = queue.finish(claimant, inactive, queue.FAILED,
                          "target is inactive; nothing was sent")
    if failed:
        transaction.on_commit(partial(_announce_failed, failed), using=queue.database())
    for delivery, reason in cancelled:
        queue.finish(claimant, [delivery], queue.CANCELLED, reason)
    queue.release(claimant, held)
    return ready, outcomes


def failed_before_sending(exc, notification="Error before sending"):
    """The ``AttemptResult`` of an attempt that ended with ``exc`` before any request."""
    return AttemptResult(success=False, response_status=None, response_message="",
                         response_content_type="", error=f"{type(exc).__name__}: {exc}",
                         duration=0, notification=notification, exception=exc)


def send(item, *, total_timeout=None):
    """Send one ``Ready`` delivery; return its ``AttemptResult``. Never raises, and never
    touches the database: safe on any thread."""
    token = _current.set(item.delivery)
    item.started = time.monotonic()
    # For monitoring: on this thread, so a span can be current around the request.
    send_signal("attempt_started", Delivery, delivery=item.delivery)
    try:
        if total_timeout is not None:
            item.sender.total_timeout = min(item.sender.total_timeout, total_timeout)
        result = item.sender.send()
    except Exception as exc:
        # Senders turn the receiver's failures into results; this came from the sender
        # itself (a subclass's method, a bug), before or after the request.
        logger.exception("The sender of delivery %s failed.", item.delivery.pk)
        result = failed_before_sending(exc, notification="Sender error")
    finally:
        _current.reset(token)
    send_signal("attempt_finished", Delivery, delivery=item.delivery, result=result)
    return result


async def send_async(item, client, *, total_timeout=None):
    """``send()`` on an event loop, the request made by ``client`` (an ``aio.Client``).
    The signals are sent in the request's own task, so a span is current around it."""
    token = _current.set(item.delivery)
    item.started = time.monotonic()
    send_signal("attempt_started", Delivery, delivery=item.delivery)
    try:
        if total_timeout is not None:
            item.sender.total_timeout = min(item.sender.total_timeout, total_timeout)
        result = await item.sender.send_async(client)
    except Exception as exc:
        logger.exception("The sender of delivery %s failed.", item.delivery.pk)
        result = failed_before_sending(exc, notification="Sender error")
    finally:
        _current.reset(token)
    send_signal("attempt_finished", Delivery, delivery=item.delivery, result=result)
    return result


def current_delivery():
    """The ``Delivery`` being sent right now on this thread (or in this task of the event
    loop), for test doubles; None when none is."""
    return _current.get()


def record(claimant, outcomes, *, policy=None, retry=None, retry_within=None,
           retries_here=False):
    """Record ``(delivery, AttemptResult)`` outcomes (``queue.record``) and announce what
    they changed once committed; return the ``queue.Record``. ``retry`` and
    ``retry_within`` are as for ``send_deliveries``; ``retries_here`` says that the caller
    makes the retries itself (a worker), for the log lines.

    When the batch cannot be stored, each outcome is stored on its own, so that one that
    the database refuses cannot take the others with it; one refused even alone is stored
    as an attempt that says so, without the receiver's text. A lost connection is not
    retried here: it propagates.
    """
    if not outcomes:
        return queue.Record()
    if retry is None:
        store = partial(queue.record, policy=policy)
    else:
        within = math.inf if retry_within is None else retry_within
        store = partial(queue.record, policy=policy, defer_within=within)
    try:
        stored = store(claimant, outcomes)
    except DatabaseError:
        if not _reachable():
            raise
        if len(outcomes) == 1:
            stored = _record_alone(claimant, outcomes[0], store)
        else:
            logger.exception("%s outcomes could not be recorded together; recording them "
                             "one by one.", len(outcomes))
            stored = queue.Record()
            for outcome in outcomes:
                one = _record_alone(claimant, outcome, store)
                stored.recorded += one.recorded
                stored.disabled.update(one.disabled)
    _log_attempts(stored, retry, retries_here)
    _announce_on_commit(stored, retry)
    return stored


def _log_attempts(stored, retry, retries_here):
    """Log a line per attempt recorded: the delivery, its target, the outcome, how long it
    took, and what comes next: when the next attempt is due and who makes it, or that it
    failed for good. (An outcome that came back after its claim was lost is logged by
    ``queue``.)"""
    # Making a line's arguments costs more than asking whether it is wanted.
    if not logger.isEnabledFor(logging.WARNING):
        return
    successes = logger.isEnabledFor(logging.INFO)
    for item in stored.recorded:
        if not item.moved:
            continue
        delivery, attempt = item.delivery, item.attempt
        if attempt.success:
            if not successes:
                continue
            logger.info("Delivery %s (%s, %s) to %s attempt %s: %s, in %s ms; succeeded.",
                        delivery.pk, delivery.event, delivery.hash_value, _target(delivery),
                        attempt.attempt, attempt.notification or attempt.response_status,
                        attempt.duration)
            continue
        outcome = " ".join((DeliveryError.sentence(attempt.error) or attempt.notification or
                            "failed").split())
        if len(outcome) > 200:
            outcome = outcome[:199] + "…"
        logger.warning("Delivery %s (%s, %s) to %s attempt %s: %s, in %s ms; %s",
                       delivery.pk, delivery.event, delivery.hash_value, _target(delivery),
                       attempt.attempt, outcome, attempt.duration,
                       _next(delivery, retry, retries_here))


def _next(delivery, retry, retries_here):
    """What becomes of a delivery after a failed attempt, for its log line."""
    if delivery.status != Delivery.Status.PENDING or delivery.next_attempt_at is None:
        return f"failed for good: {delivery.reason}."
    wait = max(0, round((delivery.next_attempt_at - delivery.modified).total_seconds()))
    when = (f"next attempt in {wait} s, at "
            f"{delivery.next_attempt_at.astimezone(dt_timezone.utc):%Y-%m-%dT%H:%M:%SZ} "
            f"({delivery.reason})")
    if retries_here:
        return f"{when}."
    if retry is not None and delivery.queued_at:
        return f"{when}, handed to the backend for then."
    if retry is not None:
        return (f"{when}: too far ahead for the backend's queue; webhooks_sweep hands it "
                "over once it is due.")
    return (f"{when}: this backend makes no retries itself; a running webhooks_worker, or "
            "webhooks_sweep run every minute, must send it.")


def _target(delivery):
    """The target of ``delivery`` for a log line: its id and URL, without the parts that
    may carry credentials (user:password@, the query)."""
    if not Delivery.webhook_target.is_cached(delivery):
        return f"target {delivery.webhook_target_id}"
    parts = urlsplit(delivery.webhook_target.target_url)
    try:
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:  # not a URL one could send to; never stored by the forms
        netloc = "?"
    shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    if parts.query:
        shown += "?…"
    return f"target {delivery.webhook_target_id} ({shown})"


def _record_alone(claimant, outcome, store):
    delivery, result = outcome
    try:
        return store(claimant, [outcome])
    except DatabaseError as exc:
        if not _reachable():
            raise
        logger.exception("The outcome of delivery %s could not be stored; storing that "
                         "instead.", delivery.pk)
        plain = AttemptResult(
            success=result.success, response_status=result.response_status,
            response_message="", response_content_type="",
            error=f"The outcome of this attempt could not be stored: {type(exc).__name__}",
            duration=result.duration, notification="Outcome not storable",
            retry_after="", exception=result.exception,
        )
        return store(claimant, [(delivery, plain)])


def _announce_on_commit(stored, retry=None):
    if stored.recorded or stored.disabled:
        transaction.on_commit(partial(_announce, stored), using=queue.database())
    if retry is not None:
        retries = {}
        for item in stored.recorded:
            delivery = item.delivery
            if item.moved and delivery.status == Delivery.Status.PENDING and delivery.queued_at:
                retries.setdefault(delivery.queued_at, []).append(delivery.pk)
        if retries:
            transaction.on_commit(partial(_hand_over, retry, retries), using=queue.database())


def _hand_over(retry, retries):
    """Give each scheduled retry to the backend for its time. One it refuses (a broker
    that is down) is marked as held by no queue, so the sweep hands it over when due."""
    for run_after, ids in retries.items():
        try:
            retry(ids, run_after=run_after)
        except Exception:
            logger.exception("Could not hand the retry of deliveries %s (due %s) to the "
                             "backend; webhooks_sweep will, once it is due.", ids,
                             run_after.isoformat())
            try:
                queue.unqueued(ids)
            except DatabaseError:
                logger.exception("Could not mark deliveries %s as not queued.", ids)


def _announce(stored):
    """Send the signals of recorded outcomes; a receiver that raises is logged, and the
    others are still told (the attempts are recorded whatever happens)."""
    for item in stored.recorded:
        if not item.moved:
            continue  # a late outcome changed nothing
        delivery = item.delivery
        if delivery.status == Delivery.Status.SUCCEEDED:
            send_signal("delivery_succeeded", Delivery, delivery=delivery, attempt=item.attempt)
        elif delivery.status == Delivery.Status.FAILED:
            send_signal("delivery_failed", Delivery, delivery=delivery, attempt=item.attempt,
                    reason=delivery.reason)
    for target_id, reason in stored.disabled.items():
        # The target may have been deleted since; then there is no one to tell.
        target = WebhookTarget.objects.using(queue.database()).filter(pk=target_id).first()
        if target is not None:
            send_signal("target_disabled", WebhookTarget, target=target, reason=reason)


def _announce_failed(deliveries):
    for delivery in deliveries:
        send_signal("delivery_failed", Delivery, delivery=delivery, attempt=None,
                reason=delivery.reason)


def send_signal(name, sender, **kwargs):
    """Send the signal ``name``, logging (never raising) what a receiver raises."""
    for receiver, response in getattr(signals, name).send_robust(sender=sender, **kwargs):
        if isinstance(response, Exception):
            logger.error("A %s receiver (%r) raised for %s.", name, receiver,
                         kwargs.get("delivery") or kwargs.get("target"),
                         exc_info=(type(response), response, response.__traceback__))


def _reachable():
    """After a database error: whether the database still answers (it refused a statement)
    or not (the connection is lost, and trying more statements is pointless)."""
    connection = connections[queue.database()]
    try:
        return connection.connection is not None and connection.is_usable()
    except Exception:
        return False
