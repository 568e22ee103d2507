"""When to try a failed delivery again: ``RetryPolicy.decide()`` returns a ``RetryDecision``.

Pure code: no Django, no models, no clock of its own (``now`` is passed in) and an
injectable source of randomness, so every schedule can be tested without waiting.
"""

import random as _random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

#: Seconds between attempts: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 27 hours
#: from the first attempt to the eighth and last).
DEFAULT_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)
DEFAULT_JITTER = 0.2
#: The longest wait a ``Retry-After`` header can ask for (6 hours).
DEFAULT_RETRY_AFTER_MAX = 6 * 3600
#: Waits after a 429 or a timeout are this many times longer: the receiver is overloaded.
SLOW_DOWN_FACTOR = 2


@dataclass(frozen=True)
class RetryDecision:
    """Either "try again at ``retry_at``", or "stop" (``retry_at`` is None); and why."""

    retry_at: datetime | None
    reason: str

    @property
    def retry(self):
        """True when another attempt is scheduled."""
        return self.retry_at is not None


class RetryPolicy:
    """Decide, after a failed attempt, whether and when the delivery is tried again."""

    def __init__(self, schedule=DEFAULT_SCHEDULE, *, jitter=DEFAULT_JITTER,
                 retry_after_max=DEFAULT_RETRY_AFTER_MAX, random=_random.random):
        self.schedule = tuple(float(delay) for delay in schedule)
        self.jitter = float(jitter)
        self.retry_after_max = float(retry_after_max)
        self.random = random

    def with_schedule(self, schedule):
        """This policy with another ``schedule`` (a target's own)."""
        return RetryPolicy(schedule, jitter=self.jitter, retry_after_max=self.retry_after_max,
                           random=self.random)

    @property
    def max_attempts(self):
        """The first attempt plus one per scheduled retry."""
        return len(self.schedule) + 1

    def decide(self, attempt, *, now, status=None, exception=None, retry_after=None):
        """Return the ``RetryDecision`` after failed attempt number ``attempt`` (from 1).

        ``status`` is the HTTP status (None when no response came back), ``exception``
        the ``DeliveryError`` raised instead, ``retry_after`` the raw ``Retry-After``
        header value.
        """
        if status == 410:
            return RetryDecision(None, "410 Gone: the receiver asked for no more deliveries")
        if exception is not None and not getattr(exception, "retryable", True):
            return RetryDecision(None, f"{type(exception).__name__}: not retried ({exception})")
        if attempt >= self.max_attempts:
            plural = "s" if attempt != 1 else ""
            return RetryDecision(None, f"gave up after {attempt} attempt{plural}")
        delay = self.schedule[attempt - 1] * (1 + self.jitter * (2 * self.random() - 1))
        slow = status == 429 or (exception is not None and getattr(exception, "slow", False))
        if slow:
            delay *= SLOW_DOWN_FACTOR
        why = "receiver overloaded, waiting longer" if slow else "scheduled retry"
        asked = parse_retry_after(retry_after, now) if retry_after else None
        if asked is not None and min(asked, self.retry_after_max) > delay:
            # The receiver asked for longer than the schedule: its wish decides.
            delay = min(asked, self.retry_after_max)
            why = f"Retry-After {_shorten(retry_after.strip())}"
        return RetryDecision(now + timedelta(seconds=delay),
                             f"attempt {attempt + 1} of {self.max_attempts}: {why}")


#: Delay-seconds as RFC 9110 writes them: ASCII digits only (``str.isdigit()`` also takes
#: "²" and other digits ``float()`` refuses). Twelve are more than any cap needs.
_DELAY_SECONDS = re.compile(r"[0-9]{1,12}")
#: The longest HTTP date worth parsing ("Wednesday, 09-Nov-1994 08:49:37 GMT" is 37).
_LONGEST_DATE = 64


def parse_retry_after(value, now):
    """Return the seconds a ``Retry-After`` value asks for (delay-seconds or an HTTP date),
    or None when it cannot be read. Never raises: the value comes from the receiver."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    if not value or len(value) > _LONGEST_DATE or not value.isascii():
        return None
    try:
        moment = parsedate_to_datetime(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return max(0.0, (moment - now).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _shorten(text, limit=40):
    return text if len(text) <= limit else text[: limit - 1] + "…"
