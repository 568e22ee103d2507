"""Pacing: each target's cap on requests in flight adapts to its answers (halved when it
says "slow down", grown back one success at a time), and its rate limit is shared by every
worker through the database."""

import threading
import time
from datetime import timedelta

import pytest
import urllib3
from django.db import connection
from django.utils import timezone

from djwebhooks import pacing, sending
from djwebhooks.exceptions import DeliveryError, DeliveryTimeout
from djwebhooks.models import Delivery, RateBucket, WebhookTarget, WorkerHeartbeat
from djwebhooks.senders.base import AttemptResult
from djwebhooks.sending import send_deliveries
from djwebhooks.worker import Worker
from tests.processes import create_deliveries, statuses, wait_until, worker
from tests.receiver import Reply

DATABASE_BACKEND = "djwebhooks.backends.database.DatabaseBackend"


def answer(status=200, exception=None):
    return AttemptResult(success=status == 200, response_status=status,
                         response_message="", response_content_type="", error="",
                         duration=1, notification="", exception=exception)


# The cap ---------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_an_answer_that_says_slow_down_halves_the_cap(status):
    windows = pacing.Windows()
    windows.answered(7, 16, answer(status), started=time.monotonic())
    assert windows.limit(7, 16) == 8


def test_a_cut_is_logged(caplog):
    caplog.set_level("INFO", logger="djwebhooks.pacing")
    windows = pacing.Windows()
    windows.answered(7, 16, answer(429), started=time.monotonic())
    windows.answered(7, 2, answer(None, exception=DeliveryTimeout("slow")),
                     started=time.monotonic())
    windows.answered(7, 2, answer(429), started=time.monotonic())  # at one already
    assert [r.getMessage() for r in caplog.records] == [
        "Target 7 answered 429: at most 8 requests at once from this process (was 16).",
        "Target 7 answered nothing in time: at most 1 request at once from this process "
        "(was 2).",
    ]


def test_a_timeout_halves_the_cap_and_other_failures_do_not():
    windows = pacing.Windows()
    windows.answered(7, 16, answer(500), started=time.monotonic())
    windows.answered(7, 16, answer(None, exception=DeliveryError()), started=time.monotonic())
    assert windows.limit(7, 16) == 16
    windows.answered(7, 16, answer(None, exception=DeliveryTimeout("slow")),
                     started=time.monotonic())
    assert windows.limit(7, 16) == 8


def test_requests_in_flight_together_cut_the_cap_once():
    windows = pacing.Windows()
    started = time.monotonic()
    for _ in range(10):  # ten 429s to requests that all started before the first cut
        windows.answered(7, 16, answer(429), started=started)
    assert windows.limit(7, 16) == 8
    # A request started after the cut is news: it cuts again.
    windows.answered(7, 16, answer(429), started=time.monotonic())
    assert windows.limit(7, 16) == 4


def test_the_cap_never_falls_below_one():
    windows = pacing.Windows()
    for _ in range(10):
        windows.answered(7, 4, answer(503), started=time.monotonic())
    assert windows.limit(7, 4) == 1


def test_the_cap_grows_back_one_request_per_round_then_carefully_near_where_it_was_cut():
    windows = pacing.Windows()
    windows.answered(7, 64, answer(429), started=time.monotonic())  # 64 -> 32
    windows.answered(7, 64, answer(429), started=time.monotonic())  # 32 -> 16
    successes = 0
    while windows.limit(7, 64) < 31:  # quickly, to one below the last cut (32)
        windows.answered(7, 64, answer(), started=time.monotonic())
        successes += 1
    assert successes == pytest.approx(16 * 15 + 15 * 15 / 2, rel=0.1)  # ~one per round
    careful = 0
    while windows.limit(7, 64) < 32:
        windows.answered(7, 64, answer(), started=time.monotonic())
        careful += 1
    assert careful > 4 * 31  # an eighth as fast: several rounds for one request more


def test_a_cap_back_at_its_maximum_is_forgotten():
    windows = pacing.Windows()
    windows.answered(7, 2, answer(429), started=time.monotonic())
    assert windows.limit(7, 2) == 1
    for _ in range(100):
        windows.answered(7, 2, answer(), started=time.monotonic())
    assert windows.limit(7, 2) == 2
    assert not windows._windows


def test_at_most_so_many_caps_are_remembered():
    windows = pacing.Windows(kept=3)
    for target in range(10):
        windows.answered(target, 8, answer(429), started=time.monotonic())
    assert len(windows._windows) == 3
    assert [windows.limit(target, 8) for target in (0, 9)] == [8, 4]


def test_a_lower_maximum_bounds_a_cap_kept_from_before():
    windows = pacing.Windows()
    windows.answered(7, 16, answer(429), started=time.monotonic())
    assert windows.limit(7, 3) == 3


def test_the_maximum_is_the_targets_then_the_setting_then_the_concurrency(make_target,
                                                                           settings):
    target = make_target()
    assert pacing.maximum(target, 8) == 8
    assert pacing.maximum(target, 8, default=3) == 3
    target.max_in_flight = 5
    assert pacing.maximum(target, 8, default=3) == 5
    assert pacing.maximum(target, 4, default=3) == 4
    target.max_in_flight = 0  # saved from code, without validation
    assert pacing.maximum(target, 4) == 1


# The rate limit ----------------------------------------------------------------------------

def age(target, seconds):
    """Move the target's bucket ``seconds`` into the past, as if that much time went by."""
    bucket = RateBucket.objects.get(pk=target.pk)
    bucket.busy_until -= timedelta(seconds=seconds)
    bucket.save()


def take(target, wanted, rate=None):
    return pacing.take(target.pk, rate or target.rate_limit, wanted, using="default")


@pytest.mark.django_db
def test_a_quiet_target_may_take_a_seconds_worth_then_waits_for_its_rate(make_target):
    target = make_target(rate_limit=10)
    granted, wait = take(target, 50)
    assert granted == 10
    assert 0 < wait <= 0.1
    assert take(target, 5)[0] == 0
    age(target, 0.35)  # 0.35 s later: three more
    granted, wait = take(target, 5)
    assert granted == 3
    assert 0 < wait <= 0.1


@pytest.mark.django_db
def test_what_is_granted_is_spent_for_everyone(make_target):
    target = make_target(rate_limit=4)
    assert take(target, 3) == (3, 0.0)
    # Another worker, the same bucket: one is left.
    assert take(target, 3)[0] == 1
    assert take(target, 1)[0] == 0


@pytest.mark.django_db
def test_time_unspent_is_not_saved_up_beyond_a_second(make_target):
    target = make_target(rate_limit=5)
    take(target, 1)
    age(target, 3600)
    assert take(target, 100)[0] == 5


@pytest.mark.django_db
def test_a_clock_that_went_back_does_not_hold_a_target_up(make_target):
    target = make_target(rate_limit=5)
    take(target, 1)
    age(target, -3600)  # as if the database's clock had gone back an hour since
    assert take(target, 5)[0] == 5


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor == "sqlite",
                    reason="SQLite's shared in-memory test database refuses a second writer "
                    "at once (database table is locked); CI runs this on PostgreSQL and "
                    "MariaDB")
def test_takers_at_once_never_get_more_than_the_rate_between_them(make_target):
    target = make_target(rate_limit=30)
    granted = []

    def taker():
        try:
            for _ in range(20):
                granted.append(take(target, 2)[0])
        finally:
            connection.close()

    threads = [threading.Thread(target=taker) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    # A second's worth at first, then the rate: never more, however the takes interleave.
    assert sum(granted) <= 30 + 30 * elapsed + 1


# The worker ---------------------------------------------------------------------------------

@pytest.fixture
def database_backend(settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "BACKEND": DATABASE_BACKEND,
                           "RETRY_SCHEDULE": [0.01] * 12, "RETRY_JITTER": 0}


def run_until(workers, done, timeout=60):
    """Run ``workers`` in threads until ``done()``; then stop them. (The database is not
    read meanwhile: SQLite's shared in-memory one would be locked by a worker's writes.)"""
    threads = [threading.Thread(target=w.run) for w in workers]
    for thread in threads:
        thread.start()
    try:
        wait_until(done, timeout, lambda: "not done")
    finally:
        for w in workers:
            w.stop()
        for thread in threads:
            thread.join(30)
    assert not any(thread.is_alive() for thread in threads)


def answered(receiver, count, path=None):
    """A ``done`` for ``run_until``: ``count`` requests (to ``path``) answered 200."""
    def done():
        time.sleep(0.02)
        return sum(1 for r in list(receiver.requests) if path in (None, r.path)) - \
            receiver.refused >= count
    receiver.refused = 0
    return done


@pytest.mark.django_db(transaction=True)
def test_a_receiver_that_takes_three_at_once_gets_three_at_once(
        database_backend, make_target, user, receiver):
    """The receiver answers 429 whenever more than three requests are in flight; the
    worker, with room for sixteen, finds that out and keeps to it."""
    target = make_target()
    answers = []

    def respond(request):
        # Called under the receiver's lock, before this request counts as in flight.
        crowded = receiver.in_flight >= 3
        answers.append(crowded)
        receiver.refused += crowded
        return Reply(status=429, body=b"slow down") if crowded else Reply(delay=0.01)

    receiver.respond = respond
    create_deliveries(user, 1000)
    run_until([Worker(concurrency=16, interval=0.02)], answered(receiver, 1000))
    assert statuses() == {"succeeded": 1000}
    refused = sum(answers)
    # Every delivery succeeded; the ones refused were retried, and were few.
    assert len(answers) == 1000 + refused
    assert refused / len(answers) < 0.10
    # Converged: in the second half, hardly a request found the receiver full.
    later = answers[len(answers) // 2:]
    assert sum(later) / len(later) < 0.10
    assert pacing.windows.limit(target.pk, 16) <= 4


def test_the_receiver_counts_a_request_until_it_answers_not_after(receiver):
    """The counts of requests at once the tests below read: a client that has its answer,
    and so may send its next request at once, is no longer counted."""
    pool = urllib3.PoolManager()
    for _ in range(200):
        assert pool.request("POST", receiver.url + "/", body=b"{}").status == 200
        assert receiver.in_flight == 0
    assert receiver.most_in_flight == 1


@pytest.mark.django_db(transaction=True)
def test_a_targets_maximum_bounds_its_requests_at_once(database_backend, make_target, user,
                                                       receiver):
    make_target(max_in_flight=2)
    receiver.default = Reply(delay=0.05)
    create_deliveries(user, 30)
    run_until([Worker(concurrency=8, interval=0.02)], answered(receiver, 30))
    assert receiver.most_in_flight == 2


@pytest.mark.django_db(transaction=True)
def test_the_setting_bounds_the_targets_without_a_maximum_of_their_own(
        database_backend, settings, make_target, user, receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "MAX_IN_FLIGHT": 3}
    make_target()
    receiver.default = Reply(delay=0.05)
    create_deliveries(user, 30)
    run_until([Worker(concurrency=8, interval=0.02)], answered(receiver, 30))
    assert receiver.most_in_flight == 3


@pytest.mark.django_db(transaction=True)
def test_a_target_at_its_cap_does_not_hold_up_the_others(database_backend, make_target,
                                                         user, receiver):
    make_target(target_url=receiver.url + "/slow/", max_in_flight=1)
    make_target(target_url=receiver.url + "/fast/")
    receiver.routes["/slow/"] = Reply(delay=0.2)
    create_deliveries(user, 20, targets=2)
    started = time.monotonic()
    run_until([Worker(concurrency=4, interval=0.02)], answered(receiver, 21))
    # Twenty to the fast target, and one more, in far less than the slow one's 4 s.
    assert time.monotonic() - started < 2
    fast = [r for r in receiver.requests if r.path == "/fast/"]
    assert len(fast) == 20
    assert receiver.most_in_flight_by_path["/slow/"] == 1


@pytest.mark.django_db(transaction=True)
def test_a_target_that_has_not_answered_yet_takes_one_thread(database_backend, settings,
                                                             make_target, user, receiver):
    """A receiver that hangs from the start holds one of the worker's threads, not all of
    them: the others' deliveries, queued behind its own, are sent meanwhile."""
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "READ_TIMEOUT": 3, "TOTAL_TIMEOUT": 3}
    make_target(target_url=receiver.url + "/hang/")
    make_target(target_url=receiver.url + "/fast/")
    receiver.routes["/hang/"] = Reply(delay=5)
    create_deliveries(user, 8, targets=2)  # the two targets' deliveries alternate
    fast, started, took = answered(receiver, 8, path="/fast/"), time.monotonic(), []

    def done():
        took.append(time.monotonic() - started)
        return fast()

    run_until([Worker(concurrency=4, interval=0.02, mode="threads")], done)
    # All eight well within the hanging receiver's 3 s: none waited for a thread it held.
    # (Stopping the worker waits for the hanging request.)
    assert took[-1] < 2
    assert receiver.most_in_flight_by_path["/hang/"] == 1


def test_any_answer_ends_a_targets_probation_and_a_timeout_begins_it_again():
    worker_ = Worker(concurrency=4, mode="threads")
    target = WebhookTarget(pk=1)
    assert worker_._limit(target) == 1
    worker_._heard(1, answer(500))  # an answer, if not a good one: the receiver is there
    assert worker_._limit(target) == 4
    worker_._heard(1, answer(None, exception=DeliveryError("refused")))
    assert worker_._limit(target) == 4
    worker_._heard(1, answer(None, exception=DeliveryTimeout("no answer")))
    assert worker_._limit(target) == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_keep_to_a_rate_limit_between_them(database_backend, make_target, user,
                                                       receiver):
    make_target(rate_limit=5)
    create_deliveries(user, 20)
    started = time.monotonic()
    workers = [Worker(concurrency=4, interval=0.02) for _ in range(2)]
    run_until(workers, answered(receiver, 20))
    elapsed = time.monotonic() - started
    # Five at once after a quiet second, then five a second: twenty take three seconds.
    assert elapsed > 2.5
    assert len(receiver.requests) == 20
    assert all(w.processed for w in workers)


@pytest.mark.django_db(transaction=True)
def test_a_stopped_worker_gives_back_what_waits_for_its_rate(database_backend, make_target,
                                                            user, receiver):
    make_target(rate_limit=1)
    create_deliveries(user, 5)
    worker_ = Worker(concurrency=4, interval=0.02)
    thread = threading.Thread(target=worker_.run)
    thread.start()
    wait_until(lambda: len(receiver.requests) >= 1, 10, lambda: "nothing sent")
    worker_.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert statuses() == {"succeeded": 1, "pending": 4}
    assert not Delivery.objects.exclude(claimed_by="").exists()


# The send path of the queue backends -----------------------------------------------------

@pytest.mark.django_db
def test_a_call_sends_no_more_at_once_than_the_cap(make_target, user, receiver):
    cut = make_target(target_url=receiver.url + "/cut/")
    make_target(target_url=receiver.url + "/whole/")
    for _ in range(2):  # 16 -> 8 -> 4
        pacing.windows.answered(cut.pk, 16, answer(503), started=time.monotonic())
    receiver.default = Reply(delay=0.2)
    ids = [d.pk for d in create_deliveries(user, 8, targets=2)]
    outcomes = send_deliveries(ids, concurrency=16)
    assert len(outcomes) == 16
    # The target that was not cut gets its eight at once (or nearly: a busy machine may
    # start the last after the first has ended); the one cut to four, no more than four.
    assert receiver.most_in_flight_by_path["/whole/"] > 4
    assert receiver.most_in_flight_by_path["/cut/"] <= 4


@pytest.mark.django_db
def test_a_call_waits_for_the_rate_within_its_budget(make_target, user, receiver):
    make_target(rate_limit=4)
    ids = [d.pk for d in create_deliveries(user, 6)]
    started = time.monotonic()
    assert len(send_deliveries(ids, concurrency=6, budget=10)) == 6
    # Four at once, then one every quarter of a second.
    assert 0.4 < time.monotonic() - started < 2


@pytest.mark.django_db
def test_without_a_budget_a_call_waits_a_second_in_all_and_hands_the_rest_over(
        make_target, user, receiver):
    make_target(rate_limit=2)
    ids = [d.pk for d in create_deliveries(user, 10)]
    handed = []
    started = time.monotonic()
    outcomes = send_deliveries(ids, concurrency=10,
                               retry=lambda ids, run_after: handed.append(ids))
    # Two at once, then one each half second for a second; a queue's task is not held.
    assert 3 <= len(outcomes) <= 5
    assert time.monotonic() - started < 2
    [later] = handed
    assert sorted(later + [d.pk for d, _ in outcomes]) == sorted(ids)


@pytest.mark.django_db
def test_what_the_rate_leaves_no_time_for_is_handed_to_the_backend_for_later(
        make_target, user, receiver):
    make_target(rate_limit=1)
    ids = [d.pk for d in create_deliveries(user, 3)]
    handed = []
    outcomes = send_deliveries(ids, concurrency=3, budget=1.5,
                               retry=lambda ids, run_after: handed.append((ids, run_after)))
    assert len(outcomes) == 1
    [(later, run_after)] = handed
    assert sorted(later) == sorted(set(ids) - {outcomes[0][0].pk})
    assert 0 < (run_after - timezone.now()).total_seconds() <= 1
    assert set(Delivery.objects.filter(pk__in=later).values_list("status", "claimed_by")) == {
        ("pending", "")}
    assert Delivery.objects.filter(pk__in=later, queued_at__isnull=False).count() == 2


# Both workers' processes ---------------------------------------------------------------

@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql",
                    reason="starts worker processes that share the test database; run with "
                    "DATABASE_URL=postgres://...")
def test_a_rate_limit_of_twenty_a_second_holds_over_thirty_seconds_with_two_workers(
        tmp_path, settings, receiver, user, make_target):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "BACKEND": DATABASE_BACKEND}
    make_target(rate_limit=20)
    arrivals = []

    def respond(request):
        arrivals.append(time.monotonic())
        return None

    receiver.respond = respond
    create_deliveries(user, 700)
    args = ("--concurrency", "8", "--interval", "0.05")
    with worker(tmp_path, "a", *args) as a, worker(tmp_path, "b", *args) as b:
        wait_until(lambda: time.sleep(0.5) or (
            arrivals and arrivals[-1] - arrivals[0] >= 30), 90,
            lambda: f"{statuses()}; {a.describe()} {b.describe()}")
    first = arrivals[0]
    in_thirty = sum(1 for at in arrivals if at - first < 30)
    # Twenty a second, and one second's worth at the start.
    assert 20 * 30 * 0.9 <= in_thirty <= (20 * 30 + 20) * 1.1
    # Both workers sent their share.
    assert WorkerHeartbeat.objects.filter(handled__gt=0).count() == 2


def test_a_rate_saved_from_code_without_validation_is_bounded(make_target):
    target = make_target()
    assert pacing.rate_of(target) is None
    target.rate_limit = 0
    assert pacing.rate_of(target) == 1  # slow, never stopped
    target.rate_limit = 10**9
    assert pacing.rate_of(target) == 10_000


def prepared(target, count):
    return [sending.Ready(Delivery(pk=pk, webhook_target=target), None)
            for pk in range(1, count + 1)]


def test_a_backlog_for_a_target_under_no_cap_is_queued_whole_for_the_threads():
    worker_ = Worker(concurrency=4)
    worker_._answered[1] = True  # not a target on probation
    items = prepared(WebhookTarget(pk=1), 100)
    worker_._queue_prepared([item.delivery.pk for item in items], items, [])
    # Claimed ahead, as for any target: the threads are the bound.
    assert worker_._queue.qsize() == 100
    assert not worker_._parked


@pytest.mark.django_db
def test_a_capped_targets_backlog_waits_in_the_worker_and_the_rest_is_given_back():
    worker_ = Worker(concurrency=4)
    worker_._answered[1] = True
    items = prepared(WebhookTarget(pk=1, max_in_flight=2), 100)
    worker_._queue_prepared([item.delivery.pk for item in items], items, [])
    assert worker_._queue.qsize() == 2
    assert worker_._parked_count == worker_.min_batch
    assert worker_._claimed == -(100 - 2 - worker_.min_batch)  # given back
    assert worker_._held_back() == {1}
