"""The database worker: claim due deliveries, send them on a pool of threads, repeat.

Claiming is a short transaction (``SELECT ... FOR UPDATE SKIP LOCKED`` where the database
has it) that stamps each row with the worker's claimant name and a lease; the HTTP
requests happen outside any transaction. While it runs, the worker renews the claims it
holds at every heartbeat, so the lease can be short: the deliveries of a worker that died
are due again within one lease. A request is never started unless the claim outlasts its
deadline. The steps themselves (prepare, send, record) are the sending path's; this
module only batches them across threads.
"""

import collections
import contextlib
import logging
import os
import queue as queues
import secrets
import socket
import threading
import time

from django.db import DatabaseError, connections

from djwebhooks import _sql, conf, models, pacing, queue, sending, transport, wakeup
from djwebhooks.exceptions import DeliveryTimeout
from djwebhooks.models import DatabaseNow, WorkerHeartbeat
from djwebhooks.senders.orm import DjangoSenderable

logger = logging.getLogger("djwebhooks.worker")

#: How many database errors in a row a ``burst`` worker takes before it gives up.
BURST_DATABASE_ERRORS = 5
#: Failing targets remembered at most (those with nothing in flight are forgotten first),
#: and as many targets that have answered (a target forgotten is on probation again).
FAILING_TARGETS_KEPT = 10_000
#: Heartbeat rows of workers not seen for this long are deleted when a worker starts.
HEARTBEAT_RETENTION = 86400
#: Claimed deliveries are loaded and prepared this many at a time.
PREPARE_CHUNK = 100
#: How long, at most, results are let gather before they are recorded in a batch.
GATHER_SECONDS = 0.2
#: Deliveries kept waiting for a target at its cap (or its rate): this many rounds of its
#: cap, or seconds of its rate (or a smallest claim's worth, if more), and as many as a
#: largest claim for all targets together; the rest of a claim is given back at once.
PARKED_ROUNDS = 2


def default_worker_id():
    """Return ``host:pid``, which names this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Worker:
    """Send due deliveries with ``concurrency`` threads until stopped.

    ``burst`` stops once nothing is due; ``max_deliveries`` stops after that many;
    ``stop()`` (from a signal handler, say) lets in-flight deliveries finish, then stops.
    The threads only make HTTP requests, each with its own session. A target whose last
    attempt failed gets one thread at most until it answers again, so an endpoint that is
    down or slow cannot take every thread; and no target gets more requests at once than
    its cap allows (``djwebhooks.pacing``), nor more a second than its rate limit, shared
    with the other workers. Deliveries claimed beyond that wait in the worker, a few
    rounds' worth at most, and their target is not claimed again meanwhile. All database
    work (claiming, renewing, loading, recording results in batches) happens in the thread
    that called ``run()``, on one connection. On PostgreSQL, unless ``listen`` is False, a
    thread of its own listens for notifications of new deliveries on another connection
    (see ``djwebhooks.wakeup``), so an idle worker claims them at once; ``interval`` is
    then how often it looks for retries that fell due.
    """

    def __init__(self, *, concurrency=4, interval=1.0, burst=False, max_deliveries=None,
                 worker_id=None, lease=None, mode=None, listen=True):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        #: "threads" or "async" (``SEND_MODE`` when None).
        self.mode = conf.get_send_mode(mode)
        total = self._total = conf.get_seconds("TOTAL_TIMEOUT")
        if lease is not None and lease < conf.shortest_lease(total):
            raise ValueError(
                f"lease must be at least {conf.shortest_lease(total):g} seconds with "
                f"TOTAL_TIMEOUT {total:g}: a request starts only while its claim outlasts "
                "its deadline."
            )
        self.concurrency = concurrency
        self.interval = interval
        self.burst = burst
        self.max_deliveries = max_deliveries
        self.worker_id = worker_id or default_worker_id()
        #: The name on the deliveries this run claims: the worker id and a random part,
        #: so that no other run (a restarted worker with the same id) shares its claims.
        self.claimant = f"{self.worker_id}:{secrets.token_hex(4)}"[-255:]
        self.lease = lease
        #: Wake on PostgreSQL's notifications of new deliveries (where the database can),
        #: rather than only at the next look ``interval`` seconds on.
        self.listen = listen
        self._listener = None
        self._woken = False  # a notification came since the last look for work
        #: The fewest and the most deliveries held claimed (being sent, or queued for the
        #: threads); between the two, what the threads send in ``claim_ahead`` seconds.
        self.min_batch = max(16, 2 * concurrency)
        self.max_batch = max(512, 2 * concurrency)
        self.claim_ahead = 0.5
        self._rate = 0.0  # deliveries finished per second, smoothed
        self._rate_since = time.monotonic()
        self._finished_since = 0
        self.processed = 0  # deliveries handled to the end, sent or not
        self._claimed = 0
        self._in_flight = 0
        self._stopping = False
        self._results = []
        #: True once a result of an ordered target is in: the target's next delivery waits
        #: for it to be recorded, so it is recorded at once.
        self._turn_waits = False
        #: Claimed deliveries not yet recorded nor given back: id -> monotonic expiry.
        self._held = {}
        self._lost = set()  # held ids whose claim a renewal did not find any more
        self._targets_in_flight = collections.Counter()
        self._sending = collections.Counter()
        #: Per target: requests queued for the threads or being sent.
        self._admitted = collections.Counter()
        #: Per target: prepared deliveries waiting for room under its cap or its rate.
        self._parked = {}
        self._parked_count = 0
        #: Rate-limited targets with deliveries parked: id -> (rate, when to take next).
        self._paced = {}
        self._default_most = None  # MAX_IN_FLIGHT, read at each claim
        self._failing = collections.OrderedDict()  # target id -> True, oldest first
        #: Targets that have answered this worker (threads mode): id -> True, oldest
        #: first. Until a target answers, it gets one thread at a time (see ``_limit``).
        self._answered = collections.OrderedDict()
        self._changed = threading.Condition()
        self._queue = queues.SimpleQueue()
        self._next_beat = 0.0
        self._event_loop = None  # the async mode's
        self._async_sending = 0

    def stop(self):
        """Claim nothing more; finish what is in flight, then return from ``run()``."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()

    @property
    def lease_seconds(self):
        return conf.get_seconds("LEASE") if self.lease is None else self.lease

    def run(self):
        """Run until stopped; return the number of deliveries handled.

        Raises ``WebhookImproperlyConfigured`` when the tables do not exist, and, in
        ``burst`` mode, the last ``DatabaseError`` once the database has failed
        ``BURST_DATABASE_ERRORS`` times in a row.
        """
        check_tables()
        self._total = conf.get_seconds("TOTAL_TIMEOUT")
        logger.info("Worker %s started (%s, concurrency %s).", self.worker_id, self.mode,
                    self.concurrency)
        threads = []
        if self.mode == "async" and transport.session_overridden():
            # A test double (djwebhooks.testing's outbox) stands in for every thread's
            # session: only the threads go through it.
            logger.info("Worker %s sends with threads: a session is overridden.",
                        self.worker_id)
            self.mode = "threads"
        if self.mode == "async":
            from djwebhooks import aio

            self._event_loop = aio.EventLoop()
        else:
            threads = [
                threading.Thread(target=self._send_loop, name=f"djwebhooks-{n}",
                                 daemon=True)
                for n in range(self.concurrency)
            ]
        for thread in threads:
            thread.start()
        self._start_listening()
        try:
            self._loop()
        finally:
            if self._listener is not None:
                self._listener.stop()
            self._release_unsent()
            for _ in threads:
                self._queue.put(None)
            for thread in threads:
                thread.join()
            if self._event_loop is not None:
                self._wait_for_async()
                self._event_loop.close()
            self._record()  # what finished while stopping
            try:
                self._beat(stopping=True)
            except DatabaseError:
                logger.exception("Worker %s could not write its last heartbeat.",
                                 self.worker_id)
            queue.close_old_connections()
        logger.info("Worker %s stopped after %s %s.", self.worker_id, self.processed,
                    "delivery" if self.processed == 1 else "deliveries")
        return self.processed

    def _loop(self):
        failures = 0
        while True:
            try:
                self._record()
                if time.monotonic() >= self._next_beat:
                    self._beat()
                with self._changed:
                    if self._stopping:
                        return
                    # A notification from now on ends the next wait at once: it may be
                    # for a delivery committed after this look.
                    self._woken = False
                    # Claim ahead, so that no thread waits for the next claim and the
                    # database work is done in batches.
                    room = self.batch_size - self._in_flight
                if self.max_deliveries is not None:
                    room = min(room, self.max_deliveries - self._claimed)
                    if room <= 0 and self._in_flight == 0 and not self._parked_count:
                        return
                ids = []
                if room > 0:
                    ids = self._claim(room)
                self._admit_paced()
                if room > 0 and not ids and self._idle():
                    self._refresh_connection()
            except DatabaseError as exc:
                failures += 1
                if self.burst and failures >= BURST_DATABASE_ERRORS:
                    logger.error("Worker %s: the database failed %s times in a row (%s); "
                                 "giving up.", self.worker_id, failures, exc)
                    raise
                pause = min(30.0, self.interval * 2 ** min(failures, 5))
                logger.error("Worker %s cannot reach the database (%s); trying again in "
                             "%.1f s.", self.worker_id, exc, pause)
                queue.close_all_connections()
                self._pause(pause)
                continue
            if failures:
                logger.warning("Worker %s: the database is back.", self.worker_id)
                failures = 0
            if not ids and self.burst:
                with self._changed:
                    if self._in_flight == 0 and not self._results and \
                            not self._parked_count:
                        return
            with self._changed:
                if self._stopping:
                    continue
                if not ids and not self._in_flight and not self._results:
                    # Nothing due: look again later (or at the next heartbeat), or as soon
                    # as a notification says something fell due.
                    self._changed.wait_for(lambda: self._woken or self._stopping,
                                           min(self.interval, self._until_beat(),
                                               self._until_paced()))
                else:
                    # Let results gather until half the work in hand is done, so they are
                    # recorded, and more claimed, in batches; but not for long, and not
                    # past a notification while there is room to send more (a request
                    # that hangs must not hold up the deliveries committed meanwhile).
                    self._changed.wait_for(
                        lambda: self._enough_results() or (
                            self._woken and self._in_flight < self.concurrency),
                        min(self.interval, GATHER_SECONDS, self._until_beat(),
                            self._until_paced()))

    def _idle(self):
        with self._changed:
            return not self._in_flight and not self._results

    def _refresh_connection(self):
        """Before waiting idle: as at the start of a request, drop a connection past its
        ``CONN_MAX_AGE`` or broken (while work flows, it is kept); then connect again at
        once, so that the look a notification wakes the worker for does not wait for a new
        connection."""
        queue.close_old_connections()
        connections[queue.database()].ensure_connection()

    def _start_listening(self):
        """Start the listener where the database can notify, and say how the worker
        learns of new deliveries."""
        using = queue.database()
        if self.listen and not self.burst and wakeup.can_listen(using):
            self._listener = wakeup.Listener(using, self._wake)
            self._listener.start()
            logger.info("Worker %s wakes on notifications on channel %r, and looks for "
                        "retries due every %g s.", self.worker_id, self._listener.channel,
                        self.interval)
        elif not self.burst:
            logger.info("Worker %s looks for due deliveries every %g s.", self.worker_id,
                        self.interval)

    def _wake(self):
        """Called by the listener: deliveries may have fallen due."""
        with self._changed:
            self._woken = True
            self._changed.notify_all()

    def _claim(self, room):
        """Claim up to ``room`` deliveries, prepare them and queue them for the threads."""
        claim = queue.claim(self.claimant, limit=room, lease=self.lease_seconds,
                            exclude_targets=self._held_back())
        if not claim.ids:
            return []
        sending.send_signal("worker_claimed", Worker, worker=self, ids=claim.ids)
        with self._changed:
            for pk in claim.ids:
                self._held[pk] = claim.expires
        self._claimed += len(claim.ids)
        try:
            options = DjangoSenderable.settings_options()
        except Exception:
            options = None
        try:
            self._default_most = conf.get_max_in_flight()
        except Exception:
            self._default_most = None  # the system checks say what is wrong with it
        hold = self._holder()
        known = {}  # the targets and owners loaded, for the claim's other parts
        # Loaded and prepared a part at a time, each queued at once: the first requests
        # start while the rest of a large claim is still being loaded.
        for start in range(0, len(claim.ids), PREPARE_CHUNK):
            chunk = claim.ids[start:start + PREPARE_CHUNK]
            held_before = len(hold.held)
            try:
                ready, failed = sending.prepare(queue.load(self.claimant, chunk, known=known),
                                                claimant=self.claimant, options=options,
                                                hold=hold)
            except DatabaseError:
                # Claimed but not loaded: give those claims back (or, with the database
                # gone, stop renewing them, so they expire), then let the loop wait the
                # error out. What was queued already is sent.
                rest = claim.ids[start:]
                with self._changed:
                    for pk in rest:
                        self._held.pop(pk, None)
                self._claimed -= len(rest)
                with contextlib.suppress(DatabaseError):
                    queue.release(self.claimant, rest)
                raise
            self._queue_prepared(chunk, ready, failed)
            # Given back for later, and claimed again then: not handled yet.
            held = len(hold.held) - held_before
            self._claimed -= held
            self.processed += len(chunk) - len(ready) - len(failed) - held
        return claim.ids

    def _queue_prepared(self, ids, ready, failed):
        """Queue the ``ready`` deliveries of ``ids`` for sending, and the ``failed`` ones
        for recording; stop holding the others (finished, or given back)."""
        queued = {item.delivery.pk for item in ready} | {d.pk for d, _ in failed}
        given_back = []
        with self._changed:
            for pk in ids:
                if pk not in queued:
                    self._held.pop(pk, None)
            # Failed before sending: recorded with the next batch of results.
            self._results.extend(failed)
            for item in ready:
                target = item.delivery.webhook_target
                self._targets_in_flight[target.pk] += 1
                if target.pk in self._parked or target.rate_limit is not None or \
                        self._capped(target):
                    if not self._park(item):
                        given_back.append(item)
                else:
                    self._admit(item)
            for delivery, _ in failed:
                self._targets_in_flight[delivery.webhook_target_id] += 1
            for item in given_back:
                self._forget(item.delivery)
        self._give_back(given_back)
        if self._event_loop is not None:
            self._event_loop.call_soon(self._dispatch)

    def _limit(self, target):
        """How many requests ``target`` may have in flight from here now: one while it is
        on probation, else its cap."""
        if self._on_probation(target.pk):
            return 1
        return pacing.windows.limit(
            target.pk, pacing.maximum(target, self.concurrency, self._default_most))

    def _on_probation(self, target_id):
        """Whether ``target_id`` has yet to answer this worker in the threads mode: a
        receiver that hangs from its first request then holds one thread, not every one,
        until its timeout says so. (On the event loop, a request waiting costs no thread.)"""
        return self._event_loop is None and target_id not in self._answered

    def _heard(self, target_id, result):
        """Note whether ``target_id`` answered (called with the lock held): any HTTP
        answer ends its probation, and a timeout begins it again."""
        if result.response_status is not None:
            _remember(self._answered, target_id)
        elif isinstance(result.exception, DeliveryTimeout):
            self._answered.pop(target_id, None)

    def _capped(self, target):
        """Whether ``target`` has as many requests queued or being sent as its cap allows,
        when its cap is below the threads' number (at or above it, the threads are the
        bound, and its deliveries queue for them as any others do)."""
        if target.max_in_flight is None and self._default_most is None and \
                target.pk not in pacing.windows and not self._on_probation(target.pk):
            return False  # at the threads' number: the usual case, decided at once
        limit = self._limit(target)
        return limit < self.concurrency and self._admitted[target.pk] >= limit

    def _admit(self, item):
        """Queue ``item`` for the threads (called with the lock held)."""
        self._admitted[item.delivery.webhook_target_id] += 1
        self._in_flight += 1
        self._queue.put(item)

    def _park(self, item):
        """Keep ``item`` until its target has room (called with the lock held); return
        False when its target has enough waiting already."""
        target = item.delivery.webhook_target
        parked = self._parked.setdefault(target.pk, collections.deque())
        rate = pacing.rate_of(target)
        keep = max(PARKED_ROUNDS * max(self._limit(target), rate or 0), self.min_batch)
        if len(parked) >= min(keep, self.max_batch) or self._parked_count >= self.max_batch:
            if not parked:
                del self._parked[target.pk]
            return False
        parked.append(item)
        self._parked_count += 1
        if rate is not None and target.pk not in self._paced:
            self._paced[target.pk] = (rate, 0.0)
        return True

    def _unpark(self, target_id, most=None):
        """Admit what ``target_id``'s cap has room for, at most ``most`` (called with the
        lock held); return how many."""
        parked = self._parked.get(target_id)
        admitted = 0
        while parked and (most is None or admitted < most):
            target = parked[0].delivery.webhook_target
            if self._admitted[target_id] >= self._limit(target):
                break
            self._admit(parked.popleft())
            self._parked_count -= 1
            admitted += 1
        if not parked:
            self._parked.pop(target_id, None)
            self._paced.pop(target_id, None)
        return admitted

    def _room_under_cap(self, target_id):
        parked = self._parked.get(target_id)
        if not parked:
            return 0
        room = self._limit(parked[0].delivery.webhook_target) - self._admitted[target_id]
        return max(0, min(room, len(parked)))

    def _admit_paced(self):
        """Take what rate-limited targets with deliveries waiting may send now from their
        shared buckets, and admit that many."""
        now = time.monotonic()
        with self._changed:
            due = [(target_id, rate, self._room_under_cap(target_id))
                   for target_id, (rate, when) in self._paced.items() if when <= now]
        admitted = False
        for target_id, rate, wanted in due:
            if not wanted:
                # At its cap: look again once a request of it has had time to end.
                with self._changed:
                    if target_id in self._paced:
                        self._paced[target_id] = (rate, now + min(1 / rate, GATHER_SECONDS))
                continue
            granted, wait = pacing.take(target_id, rate, wanted, using=queue.database())
            with self._changed:
                if granted:
                    admitted |= bool(self._unpark(target_id, granted))
                if target_id in self._paced:
                    self._paced[target_id] = (rate, time.monotonic() + wait)
        if admitted and self._event_loop is not None:
            self._event_loop.call_soon(self._dispatch)

    def _until_paced(self):
        """Seconds until a rate-limited target may take again (at most ``interval``)."""
        with self._changed:
            whens = [when for _, when in self._paced.values()]
        if not whens:
            return self.interval
        return max(0.005, min(whens) - time.monotonic())

    def _give_back(self, items):
        """Give back the claims of prepared ``items`` that will not be sent from here."""
        if not items:
            return
        self._claimed -= len(items)
        queue.release(self.claimant, [item.delivery.pk for item in items])

    def _wait_for_async(self):
        """Wait until the requests in flight on the event loop have ended: each ends by its
        deadline. Those still running after that (a loop that stopped answering) are left
        to their leases."""
        wait = self._total + sending.LOOP_GRACE_SECONDS
        with self._changed:
            if not self._changed.wait_for(lambda: self._async_sending == 0, wait):
                logger.error("Worker %s: %s requests did not end within %s s of stopping; "
                             "their deliveries are sent again once their leases expire.",
                             self.worker_id, self._async_sending, round(wait))

    def _beat(self, stopping=False):
        """Renew the claims held, and write this worker's heartbeat row."""
        lease = self.lease_seconds
        self._next_beat = time.monotonic() + conf.heartbeat_interval(lease)
        with self._changed:
            ids = [pk for pk in self._held if pk not in self._lost]
        if ids and not stopping:
            held, expires = queue.renew(self.claimant, ids, lease=lease)
            with self._changed:
                for pk in ids:
                    if pk in held:
                        if pk in self._held:
                            self._held[pk] = expires
                    else:
                        self._lost.add(pk)
            lost = len(ids) - len(held)
            if lost:
                logger.warning("Worker %s lost its claim on %s %s (expired, or finished "
                               "elsewhere); they will not be sent from here.",
                               self.worker_id, lost, "delivery" if lost == 1 else
                               "deliveries")
        rows = WorkerHeartbeat.objects.using(queue.database())
        fields = {"last_seen": DatabaseNow(), "handled": self.processed}
        if stopping:
            fields["stopped_at"] = DatabaseNow()
        if not rows.filter(claimant=self.claimant).update(**fields) and not stopping:
            rows.filter(last_seen__lt=_sql.now_plus(-HEARTBEAT_RETENTION)).delete()
            rows.create(claimant=self.claimant, worker_id=self.worker_id[:255],
                        hostname=socket.gethostname()[:255], pid=os.getpid(),
                        concurrency=self.concurrency, started_at=DatabaseNow(),
                        last_seen=DatabaseNow(), handled=self.processed)

    def _until_beat(self):
        return max(0.01, self._next_beat - time.monotonic())

    @property
    def batch_size(self):
        """How many deliveries to hold claimed now: enough for the threads to keep sending
        while results are recorded and more claimed, so that database work is done in
        batches; few when receivers are slow, so that no claim waits long in the queue."""
        ahead = int(self._rate * self.claim_ahead)
        return max(self.min_batch, min(self.max_batch, ahead))

    def _measure(self, finished):
        """Count ``finished`` deliveries in the send rate, smoothed over a few tenths of a
        second."""
        self._finished_since += finished
        now = time.monotonic()
        elapsed = now - self._rate_since
        if elapsed >= 0.1:
            self._rate = (self._rate + self._finished_since / elapsed) / 2
            self._rate_since, self._finished_since = now, 0

    def _enough_results(self):
        done, pending = len(self._results), self._in_flight
        return (self._stopping or pending == 0 or self._turn_waits
                or done >= max(1, (done + pending) // 2))

    def _release_unsent(self):
        """Give back the claims of deliveries claimed ahead that no thread has started, and
        of those waiting for room at their targets."""
        unsent = []
        while True:
            try:
                unsent.append(self._queue.get_nowait())
            except queues.Empty:
                break
        with self._changed:
            parked = [item for items in self._parked.values() for item in items]
            self._parked.clear()
            self._paced.clear()
            self._parked_count = 0
            self._in_flight -= len(unsent)
            for item in unsent:
                self._unadmit(item.delivery.webhook_target_id)
            for item in unsent + parked:
                self._forget(item.delivery)
        ids = [item.delivery.pk for item in unsent + parked]
        if not ids:
            return
        try:
            queue.release(self.claimant, ids)
        except DatabaseError:
            logger.exception("Worker %s could not give back %s claims; they expire with "
                             "their lease.", self.worker_id, len(ids))

    def _forget(self, delivery):
        """Stop tracking ``delivery`` (called with the lock held)."""
        self._held.pop(delivery.pk, None)
        self._lost.discard(delivery.pk)
        target = delivery.webhook_target_id
        self._targets_in_flight[target] -= 1
        if self._targets_in_flight[target] <= 0:
            del self._targets_in_flight[target]

    def _held_back(self):
        """Targets not to claim for now: failing ones that already have a delivery in
        flight, and those with deliveries waiting for room."""
        with self._changed:
            return {target for target in self._failing
                    if self._targets_in_flight[target] > 0} | self._parked.keys()

    def _unadmit(self, target_id):
        self._admitted[target_id] -= 1
        if self._admitted[target_id] <= 0:
            del self._admitted[target_id]

    def _holder(self):
        """Return a ``hold`` for ``prepare``: one delivery at a time to a failing target."""
        with self._changed:
            counts = collections.Counter(self._targets_in_flight)
            failing = set(self._failing)

        def hold(delivery):
            target = delivery.webhook_target_id
            if target in failing and counts[target] >= 1:
                hold.held.append(delivery.pk)
                return True
            counts[target] += 1
            return False

        hold.held = []
        return hold

    def _mark(self, target, failed):
        """Remember whether ``target``'s last attempt failed (called with the lock held),
        keeping at most ``FAILING_TARGETS_KEPT``: memory stays flat however many targets
        the worker has sent to."""
        if not failed:
            self._failing.pop(target, None)
            return
        _remember(self._failing, target)

    def _pause(self, seconds):
        with self._changed:
            if not self._stopping:
                self._changed.wait(seconds)

    def _record(self):
        """Record the results the threads have handed back, in one batch."""
        with self._changed:
            finished, self._results = self._results, []
            self._turn_waits = False
            outcomes, given_back, others = [], [], 0
            for delivery, result in finished:
                lost = delivery.pk in self._lost
                self._forget(delivery)
                if result is _DEFERRED:
                    given_back.append(delivery.pk)
                elif result is _LOST:
                    others += 1  # another worker holds it now: not ours to send or record
                else:
                    outcomes.append((delivery, result))
                    self._mark(delivery.webhook_target_id, not result.success)
                    if lost:
                        logger.info("Delivery %s finished after its claim was lost.",
                                    delivery.pk)
        self._measure(len(finished))
        self.processed += len(outcomes)
        self._claimed -= len(given_back) + others
        try:
            # Put back, unclaimed, for when their failing target answers again (or a
            # fresh claim can cover their request).
            queue.release(self.claimant, given_back)
            sending.record(self.claimant, outcomes, retries_here=True)
        except DatabaseError:
            # The claims stay until their leases expire; then a worker sends them again.
            logger.exception("Worker %s could not record %s results.", self.worker_id,
                             len(outcomes))
            queue.close_all_connections()

    def _send_loop(self):
        try:
            while (item := self._queue.get()) is not None:
                skip = self._begin(item)
                self._end(item, skip, skip or sending.send(item))
        finally:
            transport.close_session()
            # A sender subclass may have queried the database from this thread; close what
            # it opened, so the connection does not outlive the thread.
            connections.close_all()

    def _begin(self, item):
        """Decide whether ``item`` is sent now: return None to send it (counted as being
        sent to its target), or ``_LOST`` / ``_DEFERRED`` to skip it."""
        delivery = item.delivery
        target = delivery.webhook_target_id
        with self._changed:
            if delivery.pk in self._lost:
                return _LOST
            # Claimed ahead before its target began to fail: one at a time now. Or its
            # claim could end before the request's deadline: another worker could then
            # send it too.
            if (target in self._failing and self._sending[target] > 0
                    or self._held.get(delivery.pk, 0) - time.monotonic() < self._total):
                return _DEFERRED
            self._sending[target] += 1
            return None

    def _end(self, item, skip, result):
        """Hand back the result (or the skip) of ``item`` for the main loop to record."""
        delivery = item.delivery
        target = delivery.webhook_target_id
        with self._changed:
            if skip is None:
                self._sending[target] -= 1
                if self._sending[target] <= 0:
                    del self._sending[target]
            self._results.append((delivery, result))
            self._in_flight -= 1
            self._unadmit(target)
            if skip is None and self._event_loop is None:
                self._heard(target, result)
            if skip is None and (not result.success or target in pacing.windows):
                pacing.windows.answered(
                    target, pacing.maximum(delivery.webhook_target, self.concurrency,
                                           self._default_most), result, item.started)
            if target in self._parked and target not in self._paced:
                self._unpark(target)
            if delivery.webhook_target.ordered:
                self._turn_waits = True
            # Wake the main thread only when it has enough to do: waking it for every
            # result would cost a thread switch per delivery.
            if self._enough_results():
                self._changed.notify_all()

    def _dispatch(self):
        """In the async mode, on the event loop's thread: start senders for the queued
        deliveries, up to ``concurrency`` (called once a part of a claim is queued).
        Everything after the hand-over happens on that thread, so nothing crosses between
        threads per delivery."""
        with self._changed:
            room = min(self.concurrency - self._async_sending, self._queue.qsize())
            self._async_sending += max(0, room)
        for _ in range(room):
            self._event_loop.loop.create_task(self._sender())

    async def _sender(self):
        """Send queued deliveries one after another until none is left: a task per sender,
        not per delivery."""
        client = self._event_loop.client
        try:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queues.Empty:
                    return
                skip = self._begin(item)
                if skip is not None:
                    self._end(item, skip, skip)
                    continue
                try:
                    result = await sending.send_async(item, client)
                except BaseException as exc:  # cancelled with the loop; sending never raises
                    self._end(item, None, sending.failed_before_sending(
                        exc, notification="Sender error"))
                    raise
                self._end(item, None, result)
        finally:
            with self._changed:
                self._async_sending -= 1
                if not self._async_sending:
                    self._changed.notify_all()


def _remember(recent, target_id):
    """Put ``target_id`` last in ``recent`` (an ``OrderedDict``, oldest first), forgetting
    the oldest beyond ``FAILING_TARGETS_KEPT``."""
    recent[target_id] = True
    recent.move_to_end(target_id)
    while len(recent) > FAILING_TARGETS_KEPT:
        recent.popitem(last=False)


#: A thread's answer for a delivery it put back instead of sending.
_DEFERRED = object()
#: A thread's answer for a delivery whose claim was lost before it was sent.
_LOST = object()


def check_tables():
    """Raise ``WebhookImproperlyConfigured`` unless dj-webhooks' tables exist."""
    models.check_tables(queue.database())
