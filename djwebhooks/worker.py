"""The database worker: claim due deliveries, send them on a pool of threads, repeat.

Claiming is a short transaction (``SELECT ... FOR UPDATE SKIP LOCKED`` where the database
has it) that stamps each row with the worker's id and a lease; the HTTP requests happen
outside any transaction. A delivery whose worker died is claimed again when its lease
expires, so nothing is lost; a message sent twice carries the same ``webhook-id``.
"""

import collections
import logging
import os
import queue
import socket
import threading
import time
from datetime import timedelta

from django.db import DatabaseError, close_old_connections, connections, router, transaction
from django.utils import timezone

from djwebhooks import conf, transport
from djwebhooks.delivery import prepare, record_attempts, serialized
from djwebhooks.models import Delivery
from djwebhooks.senders.base import AttemptResult

logger = logging.getLogger("djwebhooks.worker")


def default_worker_id():
    """Return ``host:pid``, which names this process in ``Delivery.locked_by``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(worker_id, *, limit, ids=None, now=None, lease=None, exclude_targets=()):
    """Claim up to ``limit`` due deliveries (among ``ids`` if given) and return their ids.

    Rows locked by another transaction are skipped, not waited for; a row whose lease has
    expired counts as due again. Deliveries to ``exclude_targets`` (target ids) are left
    for later.
    """
    now = now or timezone.now()
    lease = conf.get_seconds("LEASE") if lease is None else lease
    until = now + timedelta(seconds=lease)
    using = router.db_for_write(Delivery)
    due = Delivery.objects.using(using).due(now)
    if ids is not None:
        due = due.filter(pk__in=ids)
    if exclude_targets:
        due = due.exclude(webhook_target_id__in=list(exclude_targets))
    due = due.order_by("next_attempt_at", "pk")
    sqlite = connections[using].vendor == "sqlite"
    if sqlite:
        # Read before the transaction: SQLite cannot turn a reading transaction into a
        # writing one while another connection writes, but it waits to start a write.
        with serialized(using):
            candidates = list(due.values_list("pk", flat=True)[:limit])
        if not candidates:
            return []
    if connections[using].vendor == "postgresql":
        return _claim_returning(due, limit, worker_id, until, using)
    with serialized(using), transaction.atomic(using=using):
        if not sqlite:
            if connections[using].features.has_select_for_update_skip_locked:
                due = due.select_for_update(skip_locked=True)
            candidates = list(due.values_list("pk", flat=True)[:limit])
            if not candidates:
                return []
        # The UPDATE checks the conditions again, so two workers on a database without
        # SKIP LOCKED (or with SQLite's read outside the transaction) cannot both take a row.
        Delivery.objects.using(using).due(now).filter(pk__in=candidates).update(
            locked_by=worker_id, locked_until=until
        )
        return list(
            Delivery.objects.using(using)
            .filter(pk__in=candidates, locked_by=worker_id, locked_until=until)
            .order_by("next_attempt_at", "pk")
            .values_list("pk", flat=True)
        )


def _claim_returning(due, limit, worker_id, until, using):
    """Claim in one statement, ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)
    RETURNING``, where the database has it (PostgreSQL): the claim is on the hot path."""
    connection = connections[using]
    quote = connection.ops.quote_name
    meta = Delivery._meta
    with transaction.atomic(using=using):
        inner = due.select_for_update(skip_locked=True).values("pk")[:limit]
        inner_sql, inner_params = inner.query.get_compiler(using).as_sql()
        pk = quote(meta.pk.column)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {quote(meta.db_table)} "
                f"SET {quote(meta.get_field('locked_by').column)} = %s, "
                f"{quote(meta.get_field('locked_until').column)} = %s "
                f"WHERE {pk} IN ({inner_sql}) "
                f"RETURNING {pk}, {quote(meta.get_field('next_attempt_at').column)}",
                [worker_id, until, *inner_params],
            )
            rows = cursor.fetchall()
    return [pk for pk, _ in sorted(rows, key=lambda row: (row[1], row[0]))]


class Worker:
    """Send due deliveries with ``concurrency`` threads until stopped.

    ``burst`` stops once nothing is due; ``max_deliveries`` stops after that many;
    ``stop()`` (from a signal handler, say) lets in-flight deliveries finish, then stops.
    The threads only make HTTP requests, each with its own session. A target whose last
    attempt failed gets one thread at most until it answers again, so an endpoint that is
    down or slow cannot take every thread. All database work (claiming, loading, recording
    results in batches) happens in the thread that called ``run()``, on one connection.
    """

    def __init__(self, *, concurrency=4, interval=1.0, burst=False, max_deliveries=None,
                 worker_id=None, lease=None, clock=timezone.now):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.interval = interval
        self.burst = burst
        self.max_deliveries = max_deliveries
        self.worker_id = worker_id or default_worker_id()
        self.lease = lease
        self.clock = clock
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
        self._targets_in_flight = collections.Counter()
        self._sending = collections.Counter()
        self._failing_targets = set()
        self._changed = threading.Condition()
        self._queue = queue.SimpleQueue()

    def stop(self):
        """Claim nothing more; finish what is in flight, then return from ``run()``."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()

    def run(self):
        """Run until stopped; return the number of deliveries handled."""
        logger.info("Worker %s started (concurrency %s).", self.worker_id, self.concurrency)
        threads = [
            threading.Thread(target=self._send_loop, name=f"djwebhooks-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        try:
            self._loop()
        finally:
            self._release_unsent()
            for _ in threads:
                self._queue.put(None)
            for thread in threads:
                thread.join()
            self._record()  # what finished while stopping
            close_old_connections()
        logger.info("Worker %s stopped after %s %s.", self.worker_id, self.processed,
                    "delivery" if self.processed == 1 else "deliveries")
        return self.processed

    def _loop(self):
        failures = 0
        idle = True
        while True:
            self._record()
            with self._changed:
                if self._stopping:
                    return
                # Claim ahead, so that no thread waits for the next claim and the database
                # work is done in batches.
                room = self.batch_size - self._in_flight
            if self.max_deliveries is not None:
                room = min(room, self.max_deliveries - self._claimed)
                if room <= 0 and self._in_flight == 0:
                    return
            ids = []
            if room > 0:
                try:
                    if idle:
                        # As at the start of a request: drop a connection past its
                        # CONN_MAX_AGE or broken. While work flows, it is kept.
                        close_old_connections()
                    claimed_at = time.monotonic()
                    ids = claim(self.worker_id, limit=room, now=self.clock(), lease=self.lease,
                                exclude_targets=self._held_back())
                    ready = prepare(ids, record=False, hold=self._holder()) if ids else []
                except DatabaseError as exc:
                    failures += 1
                    pause = min(30.0, self.interval * 2 ** min(failures, 5))
                    logger.error("Worker %s cannot reach the database (%s); trying again in "
                                 "%.1f s.", self.worker_id, exc, pause)
                    connections.close_all()
                    self._pause(pause)
                    continue
                if failures:
                    logger.warning("Worker %s: the database is back.", self.worker_id)
                    failures = 0
                idle = not ids
                self._claimed += len(ids)
                self.processed += len(ids) - len(ready)  # finished without a request
                send_by = self._send_by(claimed_at)
                with self._changed:
                    self._in_flight += len(ready)
                for delivery, sender in ready:
                    self._targets_in_flight[delivery.webhook_target_id] += 1
                    self._queue.put((delivery, sender, send_by))
            if not ids and self.burst:
                with self._changed:
                    if self._in_flight == 0 and not self._results:
                        return
            with self._changed:
                if self._stopping:
                    continue
                if not ids and not self._in_flight and not self._results:
                    self._changed.wait(self.interval)  # nothing due: poll again later
                else:
                    # Let results gather until half the work in hand is done, so they are
                    # recorded, and more claimed, in batches; but not for long.
                    self._changed.wait_for(self._enough_results, min(self.interval, 0.2))

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
        return self._stopping or pending == 0 or done >= max(1, (done + pending) // 2)

    def _send_by(self, claimed_at):
        """The monotonic time after which a delivery claimed at ``claimed_at`` is put back
        instead of sent: its lease could end during the request, and another worker could
        then send it too."""
        lease = conf.get_seconds("LEASE") if self.lease is None else self.lease
        request = conf.get_seconds("TOTAL_TIMEOUT") or 0.0
        return claimed_at + lease - min(request, lease / 2)

    def _release_unsent(self):
        """Give back the claims of deliveries claimed ahead that no thread has started."""
        unsent = []
        while True:
            try:
                unsent.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not unsent:
            return
        with self._changed:
            self._in_flight -= len(unsent)
        ids = [delivery.pk for delivery, _, _ in unsent]
        try:
            Delivery.objects.filter(pk__in=ids, locked_by=self.worker_id).update(
                locked_by="", locked_until=None
            )
        except DatabaseError:
            logger.exception("Worker %s could not give back %s claims; they expire with "
                             "their lease.", self.worker_id, len(ids))

    def _held_back(self):
        """Targets not to claim for now: failing ones that already have a delivery in flight."""
        return {target for target in self._failing_targets
                if self._targets_in_flight[target] > 0}

    def _holder(self):
        """Return a ``hold`` for ``prepare``: one delivery at a time to a failing target."""
        counts = collections.Counter(self._targets_in_flight)

        def hold(delivery):
            target = delivery.webhook_target_id
            if target in self._failing_targets and counts[target] >= 1:
                return True
            counts[target] += 1
            return False

        return hold

    def _pause(self, seconds):
        with self._changed:
            if not self._stopping:
                self._changed.wait(seconds)

    def _record(self):
        """Record the results the threads have handed back, in one batch."""
        with self._changed:
            finished, self._results = self._results, []
            for delivery, result in finished:
                target = delivery.webhook_target_id
                self._targets_in_flight[target] -= 1
                if not self._targets_in_flight[target]:
                    del self._targets_in_flight[target]
                if isinstance(result, AttemptResult):
                    if result.success:
                        self._failing_targets.discard(target)
                    else:
                        self._failing_targets.add(target)
        self._measure(len(finished))
        results = [(d, r) for d, r in finished if isinstance(r, AttemptResult)]
        deferred = [d.pk for d, r in finished if r is _DEFERRED]
        self.processed += len(finished) - len(results) - len(deferred)
        self._claimed -= len(deferred)
        try:
            if deferred:
                # Put back, unclaimed, for when their failing target answers again.
                Delivery.objects.filter(pk__in=deferred, locked_by=self.worker_id).update(
                    locked_by="", locked_until=None
                )
            if results:
                record_attempts(results)
        except DatabaseError:
            # The claims stay until their leases expire; then a worker sends them again.
            logger.exception("Worker %s could not record %s results.", self.worker_id,
                             len(results))
            connections.close_all()
        self.processed += len(results)

    def _send_loop(self):
        try:
            while (item := self._queue.get()) is not None:
                delivery, sender, send_by = item
                target = delivery.webhook_target_id
                with self._changed:
                    # Claimed ahead before its target began to fail: one at a time now.
                    # Or waited so long in the queue that its lease could end mid-request.
                    defer = (target in self._failing_targets and self._sending[target] > 0
                             or time.monotonic() > send_by)
                    if not defer:
                        self._sending[target] += 1
                if defer:
                    result = _DEFERRED
                else:
                    try:
                        result = sender.send()
                    except Exception:
                        # Senders catch the receiver's failures; this is a bug. The claim
                        # stays until its lease expires.
                        logger.exception("Worker %s failed on delivery %s.", self.worker_id,
                                         delivery.pk)
                        result = None
                with self._changed:
                    if not defer:
                        self._sending[target] -= 1
                    self._results.append((delivery, result))
                    self._in_flight -= 1
                    # Wake the main thread only when it has enough to do: waking it for
                    # every result would cost a thread switch per delivery.
                    if self._enough_results():
                        self._changed.notify_all()
        finally:
            transport.close_session()


#: A thread's answer for a delivery it put back instead of sending.
_DEFERRED = object()
