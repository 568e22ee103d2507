"""The worker in-process: claiming, leases, retries against real receivers, stopping.

Time is moved forward by moving the deliveries' times back (the worker goes by the
database's clock), never by sleeping through delays.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.db import OperationalError, transaction
from django.utils import timezone

from djwebhooks import queue, send_event, signals
from djwebhooks.backends.inline import InlineBackend
from djwebhooks.models import Delivery, WebhookTarget
from djwebhooks.worker import Worker
from tests.helpers import by_mode, travel
from tests.receiver import Reply

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def database_backend(settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "BACKEND": "djwebhooks.backends.database.DatabaseBackend"}


def run_worker(later=0, **options):
    """Run a burst worker ``later`` seconds from now (the deliveries' times are moved back
    by that much); return how many deliveries it took."""
    options.setdefault("interval", 0.05)
    travel(later)
    return Worker(burst=True, **options).run()


def claim(claimant, **options):
    return queue.claim(claimant, **options).ids


def seconds_until_next_attempt(delivery):
    delivery.refresh_from_db()
    return (delivery.next_attempt_at - delivery.attempts.latest("attempt").created).total_seconds()


def test_database_backend_leaves_sending_to_the_worker(make_target, user, receiver):
    make_target()
    deliveries = [send_event("project.update", {"n": n}, owner=user)[0] for n in range(12)]
    assert receiver.requests == []
    assert Delivery.objects.pending().count() == 12

    assert run_worker(concurrency=3) == 12

    assert Delivery.objects.filter(status="succeeded").count() == 12
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(
        d.hash_value for d in deliveries
    )
    assert set(Delivery.objects.values_list("claimed_by", "claimed_until")) == {("", None)}


def test_failed_attempt_is_retried_when_due(make_target, user, receiver):
    receiver.replies = [Reply(status=500, body=b"oops")]
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)

    run_worker()
    assert 3.9 <= seconds_until_next_attempt(delivery) <= 6.1
    assert delivery.status == "pending" and delivery.attempt == 1

    assert run_worker() == 0  # not due yet
    assert run_worker(later=7) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt, delivery.response_status) == ("succeeded", 2, 200)
    assert {r.headers["webhook-id"] for r in receiver.requests} == {delivery.hash_value}


def test_429_with_retry_after(make_target, user, receiver):
    receiver.replies = [Reply(status=429, headers={"Retry-After": "120"})]
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    run_worker()

    assert 119 <= seconds_until_next_attempt(delivery) <= 121
    assert delivery.reason == "attempt 2 of 8: Retry-After 120"
    assert run_worker(later=60) == 0
    assert run_worker(later=65) == 1
    assert Delivery.objects.get(pk=delivery.pk).status == "succeeded"


def test_410_stops_and_disables_the_target(make_target, user, receiver):
    receiver.replies = [Reply(status=410)]
    target = make_target()
    disabled = []
    signals.target_disabled.connect(lambda **kw: disabled.append(kw), weak=False,
                                    dispatch_uid="test-410")
    try:
        [first] = send_event("project.update", {}, owner=user)
        run_worker()
    finally:
        signals.target_disabled.disconnect(dispatch_uid="test-410")

    first.refresh_from_db()
    assert first.status == "failed"
    assert first.reason == "410 Gone: the receiver asked for no more deliveries"
    target.refresh_from_db()
    assert target.is_active is False
    assert target.disabled_reason == "the receiver answered 410 Gone"
    assert target.disabled_at is not None
    assert [(kw["target"].pk, kw["reason"]) for kw in disabled] == [
        (target.pk, "the receiver answered 410 Gone")
    ]


def test_deliveries_of_a_target_disabled_meanwhile_stop(make_target, user, receiver):
    target = make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    WebhookTarget.objects.filter(pk=target.pk).update(is_active=False)
    run_worker()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.reason) == ("failed", "target is inactive; nothing was sent")
    assert receiver.requests == []


def test_timeout_waits_twice_as_long(settings, make_target, user, receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "READ_TIMEOUT": 0.3}
    receiver.replies = [Reply(delay=1)]
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    run_worker()
    assert 7.9 <= seconds_until_next_attempt(delivery) <= 12.1
    assert delivery.attempts.get().error.startswith(
        "Timed out after 0.3 s waiting for the response\n\nDetails: " +
        by_mode(threads="ReadTimeout: ", async_="TimeoutError: "))


def test_refused_connection_is_retried(make_target, user, closed_port_url):
    make_target(target_url=closed_port_url)
    [delivery] = send_event("project.update", {}, owner=user)
    run_worker()
    assert 3.9 <= seconds_until_next_attempt(delivery) <= 6.1
    assert delivery.attempts.get().notification == "Connection failed"


def test_slow_drip_within_the_read_timeout_succeeds(settings, make_target, user, receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "READ_TIMEOUT": 0.5}
    receiver.replies = [Reply(body=b"x" * 10, drip=0.1)]
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    run_worker()
    delivery.refresh_from_db()
    assert delivery.status == "succeeded"
    attempt = delivery.attempts.get()
    assert attempt.response_message == "x" * 10
    assert attempt.duration >= 900


def test_drip_slower_than_the_read_timeout_is_a_timeout(settings, make_target, user, receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "READ_TIMEOUT": 0.2}
    receiver.replies = [Reply(body=b"xxxx", drip=0.6)]
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    run_worker()
    assert 7.9 <= seconds_until_next_attempt(delivery) <= 12.1
    assert delivery.attempts.get().notification == "Timed out"


def test_invalid_url_fails_at_once(make_target, user):
    make_target(target_url="http:///no-host")
    [delivery] = send_event("project.update", {}, owner=user)
    run_worker()
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert delivery.reason == "DeliveryRefused: not retried (The URL has no host.)"


def test_retries_run_out(settings, make_target, user, receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RETRY_SCHEDULE": [1]}
    receiver.default = Reply(status=503)
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    failed = []
    signals.delivery_failed.connect(lambda **kw: failed.append(kw), weak=False,
                                    dispatch_uid="test-run-out")
    try:
        run_worker()
        run_worker(later=2)
    finally:
        signals.delivery_failed.disconnect(dispatch_uid="test-run-out")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt) == ("failed", 2)
    assert delivery.reason == "gave up after 2 attempts"
    assert [(kw["delivery"].pk, kw["attempt"].attempt, kw["reason"]) for kw in failed] == [
        (delivery.pk, 2, "gave up after 2 attempts")
    ]


def test_worker_retries_what_the_inline_backend_failed(settings, make_target, user, receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "BACKEND": "djwebhooks.backends.inline.InlineBackend"}
    receiver.replies = [Reply(status=502)]
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)  # sent inline, failed
    assert Delivery.objects.get(pk=delivery.pk).status == "pending"
    assert run_worker(later=7) == 1
    assert Delivery.objects.get(pk=delivery.pk).status == "succeeded"
    assert len(receiver.requests) == 2


def test_inline_backend_does_not_send_what_a_worker_holds(make_target, user, receiver):
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    assert claim("other-worker", limit=10) == [delivery.pk]
    InlineBackend().enqueue([delivery.pk])
    assert receiver.requests == []


def test_an_expired_lease_is_taken_over(make_target, user, receiver):
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    assert claim("dead-worker", limit=10, lease=60) == [delivery.pk]

    assert run_worker(later=30) == 0  # the lease still holds
    assert run_worker(later=31) == 1
    delivery.refresh_from_db()
    assert delivery.status == "succeeded"
    assert delivery.claimed_by == ""


def test_claim_takes_the_oldest_due_first_and_respects_the_limit(make_target, user):
    make_target()
    first, second, third = (send_event("project.update", {}, owner=user)[0] for _ in range(3))
    Delivery.objects.filter(pk=first.pk).update(next_attempt_at=timezone.now()
                                                + timedelta(hours=1))
    assert claim("w", limit=1) == [second.pk]
    assert claim("w", limit=5) == [third.pk]
    assert claim("w", limit=5) == []
    assert Delivery.objects.get(pk=second.pk).claimed_by == "w"


def test_max_deliveries(make_target, user, receiver):
    make_target()
    for n in range(10):
        send_event("project.update", {"n": n}, owner=user)
    assert run_worker(max_deliveries=3, concurrency=2) == 3
    assert Delivery.objects.pending().count() == 7


def test_stop_lets_in_flight_deliveries_finish(make_target, user, receiver):
    receiver.default = Reply(delay=0.5)
    make_target()
    for n in range(6):
        send_event("project.update", {"n": n}, owner=user)
    worker = Worker(concurrency=2, interval=0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.monotonic() + 5
    while receiver.in_flight < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    thread.join(5)
    assert not thread.is_alive()
    # The two in flight finished, and so did the one before them with threads (a target is
    # sent one request at a time until it has answered); the rest were given back, unsent.
    sent = len(receiver.requests)
    assert sent == by_mode(threads=3, async_=2)
    assert Delivery.objects.filter(status="succeeded").count() == sent
    assert Delivery.objects.pending().filter(attempt=0, claimed_by="").count() == 6 - sent


def test_database_errors_while_claiming_are_waited_out(monkeypatch, make_target, user,
                                                       receiver, caplog):
    make_target()
    send_event("project.update", {}, owner=user)
    calls = []

    def flaky_claim(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real_claim(*args, **kwargs)

    real_claim = queue.claim
    monkeypatch.setattr("djwebhooks.queue.claim", flaky_claim)
    assert run_worker(interval=0.01) == 1
    assert "cannot reach the database" in caplog.text
    assert "the database is back" in caplog.text


def test_worker_rejects_bad_concurrency():
    with pytest.raises(ValueError, match="concurrency"):
        Worker(concurrency=0)


def test_deliveries_rolled_back_never_reach_the_worker(make_target, user, receiver):
    make_target()
    with pytest.raises(RuntimeError), transaction.atomic():
        send_event("project.update", {}, owner=user)
        raise RuntimeError
    assert run_worker() == 0


def test_sending_threads_never_touch_the_database(monkeypatch, make_target, user, receiver):
    from django.db.backends.utils import CursorWrapper

    threads = set()
    execute = CursorWrapper.execute

    def spy(self, *args, **kwargs):
        threads.add(threading.current_thread().name)
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(CursorWrapper, "execute", spy)
    make_target()
    for n in range(8):
        send_event("project.update", {"n": n}, owner=user)
    threads.clear()
    assert run_worker(concurrency=4) == 8
    # One connection per worker process, however many threads send.
    assert threads == {threading.current_thread().name}


def test_a_failing_target_gets_one_thread_at_most(settings, make_target, user, receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "READ_TIMEOUT": 0.3}
    make_target(target_url=receiver.url + "/slow/", event="invoice.paid")
    make_target(target_url=receiver.url + "/fast/")
    receiver.routes["/slow/"] = Reply(delay=0.6)  # every attempt times out
    for n in range(6):
        send_event("invoice.paid", {"n": n}, owner=user)  # the oldest: claimed first
    for n in range(4):
        send_event("project.update", {"n": n}, owner=user)

    run_worker(concurrency=2, interval=0.01)

    paths = [request.path for request in receiver.requests]
    assert paths.count("/fast/") == 4
    # Both threads go to the failing target first; once it has failed, it gets one thread
    # at a time, and the healthy target's deliveries go through beside it instead of
    # waiting for all six timeouts.
    last_fast = max(i for i, path in enumerate(paths) if path == "/fast/")
    assert paths[:last_fast].count("/slow/") <= 4
    assert Delivery.objects.filter(event="project.update", status="succeeded").count() == 4


def test_a_delivery_whose_claim_could_end_mid_request_is_put_back(settings, monkeypatch,
                                                                  make_target, user,
                                                                  receiver):
    # A request starts only while its claim outlasts its deadline. Here the main thread,
    # which renews the claims, is held up by a slow signal receiver for longer than the
    # lease: the deliveries still queued run out of time, are put back unsent, claimed
    # again once the main thread is free, and sent once each.
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "TOTAL_TIMEOUT": 1.0, "LEASE": 3}
    receiver.default = Reply(delay=0.6)
    make_target()
    for n in range(6):
        send_event("project.update", {"n": n}, owner=user)
    claims = []
    real_claim = queue.claim

    def counting_claim(*args, **kwargs):
        claim = real_claim(*args, **kwargs)
        claims.extend(claim.ids)
        return claim

    def slow(**kwargs):
        if not hasattr(slow, "done"):
            slow.done = True
            time.sleep(3)

    monkeypatch.setattr(queue, "claim", counting_claim)
    signals.delivery_succeeded.connect(slow, dispatch_uid="test-slow-receiver")
    try:
        assert run_worker(concurrency=1) == 6
    finally:
        signals.delivery_succeeded.disconnect(dispatch_uid="test-slow-receiver")

    assert len(claims) > 6  # some were claimed, put back, and claimed again
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(
        Delivery.objects.values_list("hash_value", flat=True))
    assert set(Delivery.objects.values_list("status", "attempt")) == {("succeeded", 1)}


def test_a_claim_lost_to_another_worker_is_not_sent(settings, make_target, user, receiver):
    # Another worker took over the queued deliveries (as after an expired lease): the
    # next heartbeat finds the claims gone, and nothing of theirs is sent from here.
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "TOTAL_TIMEOUT": 2.0, "LEASE": 4,
                           "READ_TIMEOUT": 2.0}
    receiver.default = Reply(delay=1.5)  # heartbeats come every second
    make_target()
    for n in range(4):
        send_event("project.update", {"n": n}, owner=user)
    worker = Worker(concurrency=1, interval=0.05, burst=True)
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.monotonic() + 5
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    first = receiver.requests[0].headers["webhook-id"]
    Delivery.objects.exclude(hash_value=first).update(
        claimed_by="another-worker", claimed_until=timezone.now() + timedelta(minutes=1))
    thread.join(10)
    assert not thread.is_alive()

    assert [r.headers["webhook-id"] for r in receiver.requests] == [first]
    assert Delivery.objects.get(hash_value=first).status == "succeeded"
    assert set(Delivery.objects.exclude(hash_value=first).values_list(
        "status", "attempt", "claimed_by")) == {("pending", 0, "another-worker")}


def test_claims_ahead_what_the_threads_send_in_half_a_second():
    worker = Worker(concurrency=4)
    assert worker.batch_size == 16  # nothing measured yet: two per thread, at least 16
    worker._rate = 200.0
    assert worker.batch_size == 100
    worker._rate = 50_000.0
    assert worker.batch_size == 512
    assert Worker(concurrency=400).batch_size == 800


def test_the_send_rate_is_smoothed(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    worker = Worker(concurrency=1)
    worker._measure(40)
    assert worker._rate == 0  # less than a tenth of a second measured: not yet
    now[0] += 0.5
    worker._measure(60)
    assert worker._rate == pytest.approx(100)  # (0 + 100 deliveries / 0.5 s) / 2
    now[0] += 1.0
    worker._measure(100)
    assert worker._rate == pytest.approx(100)  # (100 + 100 / 1 s) / 2


def test_a_database_error_after_claiming_gives_the_claims_back(monkeypatch, make_target, user,
                                                               receiver, caplog):
    # The claim went through, then loading failed: the worker must not keep (and renew)
    # claims it will never send; they are given back and sent on the next claim.
    from django.db import OperationalError

    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    real_load, calls = queue.load, []

    def flaky_load(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(queue, "load", flaky_load)
    worker = Worker(burst=True, interval=0.01)
    assert worker.run() == 1
    assert "cannot reach the database" in caplog.text
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt) == ("succeeded", 1)
    assert len(receiver.requests) == 1
    assert not worker._held


def test_a_large_claim_is_loaded_in_parts_and_an_error_gives_back_only_the_rest(
        monkeypatch, make_target, user, receiver, caplog):
    # Five deliveries claimed at once, loaded two at a time; the second load fails (fault
    # injected: the database is really there). The first two are sent at once; the other
    # three are given back, claimed again and sent once each.
    from django.db import OperationalError

    from djwebhooks import worker as worker_module

    monkeypatch.setattr(worker_module, "PREPARE_CHUNK", 2)
    for n in range(5):
        make_target(target_url=f"{receiver.url}/{n}/")
    send_event("project.update", {}, owner=user)
    real_load, loaded = queue.load, []

    def flaky_load(claimant, ids, *args, **kwargs):
        loaded.append(list(ids))
        if len(loaded) == 2:
            raise OperationalError("server closed the connection unexpectedly")
        return real_load(claimant, ids, *args, **kwargs)

    monkeypatch.setattr(queue, "load", flaky_load)
    worker = Worker(concurrency=8, burst=True, interval=0.01)
    assert worker.run() == 5
    assert [len(ids) for ids in loaded[:2]] == [2, 2]
    assert "cannot reach the database" in caplog.text
    assert Delivery.objects.filter(status="succeeded", attempt=1).count() == 5
    assert sorted(request.path for request in receiver.requests) == [f"/{n}/" for n in range(5)]
    assert not worker._held
