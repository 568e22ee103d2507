"""The retry decision on its own, with a controllable clock and no randomness."""

from datetime import datetime, timedelta, timezone

import pytest

from djwebhooks.exceptions import DeliveryConnectionError, DeliveryInvalidURL, DeliveryTimeout
from djwebhooks.retry import DEFAULT_SCHEDULE, RetryPolicy, parse_retry_after

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def policy(**options):
    options.setdefault("random", lambda: 0.5)  # no jitter: the middle of the range
    return RetryPolicy(**options)


def wait(decision):
    return (decision.retry_at - NOW).total_seconds()


def test_default_schedule_spans_about_27_hours():
    assert DEFAULT_SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert sum(DEFAULT_SCHEDULE) / 3600 == pytest.approx(27.6, abs=0.05)
    assert RetryPolicy().max_attempts == 8


@pytest.mark.parametrize("attempt", range(1, 8))
def test_each_failed_attempt_waits_its_scheduled_time(attempt):
    decision = policy().decide(attempt, now=NOW, status=500)
    assert decision.retry
    assert wait(decision) == DEFAULT_SCHEDULE[attempt - 1]
    assert decision.reason == f"attempt {attempt + 1} of 8: scheduled retry"


def test_gives_up_after_the_last_attempt():
    decision = policy().decide(8, now=NOW, status=500)
    assert not decision.retry
    assert decision.retry_at is None
    assert decision.reason == "gave up after 8 attempts"
    assert not policy().decide(9, now=NOW, status=500).retry


@pytest.mark.parametrize(("random", "factor"), [(0.0, 0.8), (1.0, 1.2), (0.25, 0.9)])
def test_jitter_is_within_twenty_percent(random, factor):
    decision = RetryPolicy(random=lambda: random).decide(2, now=NOW, status=500)
    assert wait(decision) == pytest.approx(300 * factor)


def test_no_jitter_when_disabled():
    assert wait(RetryPolicy(jitter=0, random=lambda: 0.0).decide(1, now=NOW, status=500)) == 5


def test_410_stops_at_once():
    decision = policy().decide(1, now=NOW, status=410)
    assert not decision.retry
    assert "410 Gone" in decision.reason


def test_invalid_url_stops_at_once():
    decision = policy().decide(1, now=NOW, exception=DeliveryInvalidURL("No host supplied"))
    assert not decision.retry
    assert decision.reason == "DeliveryInvalidURL: not retried (No host supplied)"


def test_connection_errors_are_retried():
    decision = policy().decide(1, now=NOW, exception=DeliveryConnectionError("refused"))
    assert wait(decision) == 5


def test_timeouts_and_429_wait_longer():
    assert wait(policy().decide(2, now=NOW, exception=DeliveryTimeout("read"))) == 600
    decision = policy().decide(2, now=NOW, status=429)
    assert wait(decision) == 600
    assert decision.reason == "attempt 3 of 8: receiver overloaded, waiting longer"


def test_retry_after_seconds_is_honoured():
    decision = policy().decide(1, now=NOW, status=429, retry_after="120")
    assert wait(decision) == 120
    assert decision.reason == "attempt 2 of 8: Retry-After 120"


def test_retry_after_never_shortens_the_schedule():
    decision = policy().decide(3, now=NOW, status=503, retry_after="1")
    assert wait(decision) == 1800
    assert decision.reason == "attempt 4 of 8: scheduled retry"  # the schedule decided
    decision = policy().decide(2, now=NOW, status=429, retry_after="3")
    assert (wait(decision), decision.reason) == (600, "attempt 3 of 8: receiver overloaded, "
                                                      "waiting longer")


def test_retry_after_http_date():
    decision = policy().decide(1, now=NOW, status=503,
                               retry_after="Sat, 28 Nov 2026 12:10:00 GMT")
    assert wait(decision) == 600


def test_retry_after_is_clamped():
    decision = policy(retry_after_max=3600).decide(1, now=NOW, status=503,
                                                   retry_after="999999")
    assert wait(decision) == 3600


def test_unreadable_retry_after_is_ignored():
    decision = policy().decide(1, now=NOW, status=503, retry_after="soon")
    assert wait(decision) == 5
    assert decision.reason == "attempt 2 of 8: scheduled retry"


def test_empty_schedule_never_retries():
    decision = RetryPolicy([]).decide(1, now=NOW, status=500)
    assert not decision.retry
    assert decision.reason == "gave up after 1 attempt"


def test_parse_retry_after():
    assert parse_retry_after("30", NOW) == 30
    assert parse_retry_after(" 30 ", NOW) == 30
    assert parse_retry_after("Sat, 28 Nov 2026 11:00:00 GMT", NOW) == 0  # in the past
    assert parse_retry_after("-5", NOW) is None
    assert parse_retry_after("", NOW) is None


def test_decision_times_follow_the_clock_given():
    later = NOW + timedelta(days=3)
    assert policy().decide(1, now=later, status=500).retry_at == later + timedelta(seconds=5)


@pytest.mark.parametrize("value", [
    "²", "١٢", "1e9", "-5", "+5", "5.5", " ", "", "\x00", "9" * 5000,
    "Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 99 Foo 2026 99:99:99 GMT", "Tue, 1 Jan 0001 00:00:00",
    "a" * 10_000, "120, 60", "\ud800",
])
def test_a_retry_after_that_cannot_be_read_is_ignored(value):
    # A receiver's header never raises: it is read, or it is ignored.
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or seconds >= 0
    decision = policy().decide(1, now=NOW, status=503, retry_after=value)
    assert decision.retry
    assert 5 <= wait(decision) <= policy().retry_after_max
    assert len(decision.reason) < 300


def test_retry_after_far_in_the_future_is_capped_not_an_overflow():
    decision = policy(retry_after_max=3600).decide(1, now=NOW, status=503,
                                                   retry_after="Fri, 31 Dec 9999 23:59:59 GMT")
    assert wait(decision) == 3600
