"""How fast each target is sent to: a cap on its requests in flight that adapts to its
answers, and its rate limit.

**The cap** is additive increase, multiplicative decrease, kept by each sending process
for each target it sends to. It starts at the target's maximum (``max_in_flight``, else
``MAX_IN_FLIGHT``, else the process's concurrency). An answer that says "slow down" (429,
502, 503 or 504) or a timeout halves it, at most once for the requests that were in
flight together: those started before the last cut were sent under the old cap and tell
nothing new. Each success grows it by one over the cap (one request more per round of
requests), and by an eighth of that once it is within one of where it was last cut, so
that it comes back to just below a receiver's limit quickly and passes it carefully. It
never falls below one. Processes sending to the same target each keep their own and, as
TCP's flows do, each halves on the receiver's signal, so together they settle under its
limit; nothing is written to the database for it.

**The rate limit** (``rate_limit``, requests a second) is shared by every worker through
the target's ``RateBucket`` row: the generic cell rate algorithm, in which the requests
granted so far are spread at the rate up to a moment, ``busy_until``, and more may start
while that moment is at most a second ahead. Taking is one read and one conditional
update (compare and set), so it needs no lock and no transaction, on every database.
"""

import collections
import logging
import math
import threading
import time
from datetime import timedelta

from django.db import IntegrityError

from djwebhooks import _sql, options
from djwebhooks.exceptions import DeliveryTimeout
from djwebhooks.models import DatabaseNow, RateBucket

logger = logging.getLogger("djwebhooks.pacing")

#: Answers that say "slow down": Too Many Requests, Bad Gateway, Service Unavailable and
#: Gateway Timeout.
SLOW_DOWN = frozenset({429, 502, 503, 504})
#: Near the cap where it was last cut, it grows this many times more slowly.
CAREFUL = 8
#: Caps below their maximum remembered at most (the oldest changed are forgotten first).
WINDOWS_KEPT = 10_000
#: How far ahead of now a rate may be spent: one second's worth of requests may start at
#: once after a quiet second.
BURST_SECONDS = 1.0
#: Compare-and-set attempts before a take gives up for now (other workers took meanwhile).
TAKE_TRIES = 5


def slows_down(result):
    """Whether ``result`` (an ``AttemptResult``) asks for fewer requests at once."""
    return result.response_status in SLOW_DOWN or isinstance(result.exception,
                                                             DeliveryTimeout)


def _said(result):
    if result.response_status is not None:
        return str(result.response_status)
    return "nothing in time"


def maximum(target, concurrency, default=None):
    """The most requests in flight ``target`` may have from a process that sends
    ``concurrency`` at once; ``default`` is ``MAX_IN_FLIGHT`` (read once for a batch by
    the caller)."""
    most = target.max_in_flight
    if most is None:
        most = default
    if most is None:
        return concurrency
    return max(1, min(most, concurrency, options.MAX_IN_FLIGHT))


def rate_of(target):
    """``target``'s rate limit in requests a second, bounded; None when it has none."""
    rate = target.rate_limit
    if rate is None:
        return None
    return max(1, min(rate, options.MAX_RATE_LIMIT))


class Window:
    """One target's cap on requests in flight."""

    __slots__ = ("cap", "ceiling", "cut_at")

    def __init__(self, cap):
        self.cap = float(cap)
        #: The cap when it was last cut; None once the cap has grown past it.
        self.ceiling = None
        #: When it was last cut (``time.monotonic()``).
        self.cut_at = -math.inf

    def limit(self):
        return max(1, int(self.cap))

    def grow(self, most):
        step = 1 / self.cap
        if self.ceiling is not None and self.cap >= self.ceiling - 1:
            step /= CAREFUL
        self.cap = min(float(most), self.cap + step)
        if self.ceiling is not None and self.cap >= self.ceiling + 1:
            self.ceiling = None

    def cut(self, started, now):
        """Halve the cap for an answer to a request ``started`` then; return whether it was
        cut (not for a request that was in flight when it was last cut)."""
        if started < self.cut_at:
            return False
        self.ceiling = self.cap
        self.cap = max(1.0, self.cap / 2)
        self.cut_at = now
        return True


class Windows:
    """Every target's cap in this process. Only caps below their maximum are kept: a
    target that has never asked to slow down costs nothing. Safe on any thread."""

    def __init__(self, kept=WINDOWS_KEPT):
        self._windows = collections.OrderedDict()
        self._lock = threading.Lock()
        self._kept = kept

    def __contains__(self, target_id):
        """Whether ``target_id``'s cap is below its maximum (it has slowed down)."""
        return target_id in self._windows

    def limit(self, target_id, most):
        """How many requests ``target_id`` may have in flight now, at most ``most``."""
        window = self._windows.get(target_id)
        if window is None:
            return most
        return min(most, window.limit())

    def answered(self, target_id, most, result, started):
        """Adapt ``target_id``'s cap (at most ``most``) to ``result``, the answer to a
        request ``started`` at that ``time.monotonic()``."""
        if result.success:
            if target_id not in self._windows:
                return  # at its maximum already
            with self._lock:
                window = self._windows.get(target_id)
                if window is None:
                    return
                window.grow(most)
                if window.cap >= most:
                    del self._windows[target_id]
            return
        if not slows_down(result):
            return
        with self._lock:
            window = self._windows.get(target_id)
            if window is None:
                window = self._windows[target_id] = Window(most)
            else:
                window.cap = min(window.cap, float(most))
            before = window.limit()
            if not window.cut(started, time.monotonic()):
                return
            self._windows.move_to_end(target_id)
            while len(self._windows) > self._kept:
                self._windows.popitem(last=False)
            after = window.limit()
        if after < before:
            logger.info("Target %s answered %s: at most %s %s at once from this process "
                        "(was %s).", target_id, _said(result), after,
                        "request" if after == 1 else "requests", before)

    def forget(self):
        with self._lock:
            self._windows.clear()


#: This process's caps, shared by its worker and every call of the send path.
windows = Windows()


def take(target_id, rate, wanted, *, using):
    """Take up to ``wanted`` requests of ``target_id``'s rate (``rate`` a second) for now;
    return ``(granted, wait)``: how many may start now, and the seconds until one more
    could (0 when all were granted and more could start)."""
    interval = 1 / rate
    rows = RateBucket.objects.using(using)
    for _ in range(TAKE_TRIES):
        found = list(rows.filter(pk=target_id).annotate(now=DatabaseNow())
                     .values_list("busy_until", "now"))
        if not found:
            try:
                rows.bulk_create([RateBucket(target_id=target_id,
                                             busy_until=_sql.db_now(using))],
                                 ignore_conflicts=True)
            except IntegrityError:
                return 0, interval  # the target is gone, and its deliveries with it
            continue
        busy, now = found[0]
        start = max(busy, now)
        if (start - now).total_seconds() > BURST_SECONDS + interval:
            # Further ahead than any grant puts it: the database's clock went back. The
            # target is not held up for the time it went back.
            start = now
        room = (now + timedelta(seconds=BURST_SECONDS) - start).total_seconds()
        granted = min(wanted, math.floor(room * rate + 1e-9))
        if granted <= 0:
            return 0, max(interval - room, 0.001)
        until = start + timedelta(seconds=granted * interval)
        if rows.filter(pk=target_id, busy_until=busy).update(busy_until=until):
            left = room - granted * interval
            return granted, max(0.0, interval - left)
    return 0, interval
