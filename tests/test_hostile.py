"""Nothing a receiver, a target owner or the project's own code does stops the worker.

Each test runs a real worker (in this process) against a real receiver on 127.0.0.1 that
misbehaves, or with project code that raises, and checks that the worker finishes its
run, that every outcome is stored, and that nothing is sent again for ever.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from djwebhooks import send_event, signals
from djwebhooks.models import Delivery, DeliveryAttempt, WebhookTarget
from djwebhooks.senders.orm import DjangoSenderable
from djwebhooks.worker import Worker
from tests.receiver import RawReceiver, Reply, read_request

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def database_backend(settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "BACKEND": "djwebhooks.backends.database.DatabaseBackend"}


def run_worker(**options):
    options.setdefault("interval", 0.02)
    return Worker(burst=True, **options).run()


def raw_answer(answer):
    """A receiver on 127.0.0.1 that reads each request and writes ``answer`` (bytes)."""
    def handle(conn):
        read_request(conn)
        conn.sendall(answer)
        conn.close()

    return RawReceiver(handle)


def test_a_retry_after_that_float_refuses_is_ignored(make_target, user, receiver):
    # "²".isdigit() is True, but float("²") raises: the header is ignored, the delivery
    # retried on the schedule.
    receiver.replies = [Reply(status=503, headers={"Retry-After": "²"})]
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    assert run_worker() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt) == ("pending", 1)
    assert delivery.reason == "attempt 2 of 8: scheduled retry"


@pytest.mark.parametrize("answer", [
    # NUL in the reason phrase, the content type and the body; bytes that are not UTF-8.
    b"HTTP/1.1 500 Bad\x00Reason\r\nContent-Type: text/\x00plain\r\nContent-Length: 7\r\n"
    b"Connection: close\r\n\r\na\x00b\xff\xfec\x00",
    b"HTTP/1.1 200 OK\x00\r\nContent-Type: \x00\r\nContent-Length: 3\r\nConnection: close"
    b"\r\n\r\n\x00\x00\x00",
    # In the body only: valid HTTP for every client.
    b"HTTP/1.1 500 Bad\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n"
    b"Connection: close\r\n\r\na\x00b\xff\xfec\x00",
], ids=["failure", "success", "body"])
def test_nul_bytes_and_invalid_utf8_from_a_receiver_are_stored(make_target, user, answer):
    # On PostgreSQL text cannot hold NUL: the batch's INSERT used to fail, leaving every
    # delivery in it to be sent again at every lease, for ever.
    with raw_answer(answer) as hostile:
        make_target(target_url=f"http://127.0.0.1:{hostile.port}/hook/")
        make_target(event="invoice.paid")
        [poisoned] = send_event("project.update", {}, owner=user)
        [fine] = send_event("invoice.paid", {}, owner=user)
        assert run_worker() == 2
    attempt = DeliveryAttempt.objects.get(delivery=poisoned)
    assert "\x00" not in attempt.response_message + attempt.notification + \
        attempt.response_content_type + attempt.error
    if answer.endswith(b"c\x00") and b"Bad\r\n" in answer:
        assert attempt.response_message == "a\ufffdb\ufffd\ufffdc\ufffd"
        assert attempt.notification == "500 Bad"
    elif attempt.success:
        assert attempt.response_message == "\ufffd" * 3
        assert attempt.notification == "200 OK\ufffd"
    else:
        assert attempt.response_message == "a\ufffdb\ufffd\ufffdc\ufffd"
        assert attempt.notification == "500 Bad\ufffdReason"
        assert attempt.response_content_type == "text/\ufffdplain"
    assert Delivery.objects.get(pk=fine.pk).status == "succeeded"


def test_characters_beyond_the_bmp_are_stored(make_target, user, receiver):
    receiver.default = Reply(status=500, body="rate: 😀 €".encode())
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    assert run_worker() == 1
    attempt = DeliveryAttempt.objects.get(delivery=delivery)
    from djwebhooks import _sql

    expected = "rate: \ufffd €" if _sql.astral_unstorable("default") else "rate: 😀 €"
    assert attempt.response_message == expected


def test_a_target_deleted_while_its_request_is_in_flight(make_target, user, receiver, caplog):
    receiver.routes["/slow/"] = Reply(delay=0.5)
    doomed = make_target(target_url=receiver.url + "/slow/")
    make_target(event="invoice.paid")
    [gone] = send_event("project.update", {}, owner=user)
    [kept] = send_event("invoice.paid", {}, owner=user)

    deleted = []

    def delete_once_sent():
        # SQLite's shared in-memory database answers "table is locked" while the worker's
        # other thread writes; that is this test's database, not the case under test, so try
        # again while the request is still in flight.
        deadline = time.monotonic() + 5
        try:
            while not any(r.path == "/slow/" for r in receiver.requests):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.01)
            while not deleted and time.monotonic() < deadline:
                try:
                    WebhookTarget.objects.filter(pk=doomed.pk).delete()
                    deleted.append(True)
                except OperationalError:
                    time.sleep(0.01)
        finally:
            connection.close()

    deleter = threading.Thread(target=delete_once_sent)
    deleter.start()
    assert run_worker(concurrency=2) == 2
    deleter.join()
    assert deleted, "the target was not deleted while its request was in flight"
    assert not Delivery.objects.filter(pk=gone.pk).exists()
    assert Delivery.objects.get(pk=kept.pk).status == "succeeded"
    assert f"Delivery {gone.pk} no longer exists (its target was deleted)" in caplog.text


def test_a_raising_delivery_failed_receiver_for_an_inactive_target(make_target, user,
                                                                   receiver, caplog):
    def broken(**kwargs):
        raise RuntimeError("project bug")

    target = make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    WebhookTarget.objects.filter(pk=target.pk).update(is_active=False)
    signals.delivery_failed.connect(broken, dispatch_uid="test-broken-failed")
    try:
        assert run_worker() == 1
    finally:
        signals.delivery_failed.disconnect(dispatch_uid="test-broken-failed")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.reason) == ("failed",
                                                  "target is inactive; nothing was sent")
    assert "A delivery_failed receiver" in caplog.text and "project bug" in caplog.text


def test_a_secret_that_cannot_sign_is_a_failed_attempt_retried_on_the_schedule(
        make_target, user, receiver):
    target = make_target()
    WebhookTarget.objects.filter(pk=target.pk).update(secret="whsec_not*base64")
    [delivery] = send_event("project.update", {}, owner=user)
    assert run_worker() == 1
    assert receiver.requests == []
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt) == ("pending", 1)
    assert delivery.next_attempt_at > timezone.now()  # not claimed again at once
    attempt = delivery.attempts.get()
    assert attempt.notification == "Error before sending"
    assert attempt.error.startswith(("Error: ", "ValueError: "))
    assert run_worker() == 0  # not sent again until the retry is due


def test_a_sender_method_that_raises_is_a_failed_attempt(monkeypatch, make_target, user,
                                                         receiver):
    def get_headers(self, body, sent_at):
        raise KeyError("header bug")

    monkeypatch.setattr(DjangoSenderable, "get_headers", get_headers)
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    assert run_worker() == 1
    attempt = Delivery.objects.get(pk=delivery.pk).attempts.get()
    assert (attempt.notification, attempt.error) == ("Error before sending",
                                                     "KeyError: 'header bug'")


@pytest.fixture
def poison_trigger():
    """A trigger that refuses attempts whose response body is "poison": a database that
    refuses one row of a batch, as it would have a NUL byte on PostgreSQL."""
    table = DeliveryAttempt._meta.db_table
    statements = {
        "sqlite": ([f"CREATE TRIGGER poison BEFORE INSERT ON {table} WHEN "
                    "NEW.response_message = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); "
                    "END"], ["DROP TRIGGER poison"]),
        "postgresql": (["CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN IF "
                        "NEW.response_message = 'poison' THEN RAISE EXCEPTION 'poisoned' "
                        "USING ERRCODE = '22000'; END IF; RETURN NEW; END $$ LANGUAGE "
                        "plpgsql",
                        f"CREATE TRIGGER poison BEFORE INSERT ON {table} FOR EACH ROW "
                        "EXECUTE FUNCTION poison()"],
                       [f"DROP TRIGGER poison ON {table}", "DROP FUNCTION poison()"]),
        "mysql": ([f"CREATE TRIGGER poison BEFORE INSERT ON {table} FOR EACH ROW BEGIN IF "
                   "NEW.response_message = 'poison' THEN SIGNAL SQLSTATE '22000' SET "
                   "MESSAGE_TEXT = 'poisoned'; END IF; END"], ["DROP TRIGGER poison"]),
    }
    create, drop = statements[connection.vendor]
    with connection.cursor() as cursor:
        for statement in create:
            cursor.execute(statement)
    yield
    with connection.cursor() as cursor:
        for statement in drop:
            cursor.execute(statement)


def test_an_outcome_the_database_refuses_does_not_take_its_batch_with_it(
        poison_trigger, make_target, user, receiver, caplog):
    receiver.routes["/poison/"] = Reply(status=200, body=b"poison")
    make_target(target_url=receiver.url + "/poison/")
    for event in ("invoice.paid", "project.delete"):
        make_target(event=event)
    deliveries = [send_event(event, {}, owner=user)[0]
                  for event in ("project.update", "invoice.paid", "project.delete")]
    assert run_worker(concurrency=3) == 3
    poisoned, *others = (Delivery.objects.get(pk=d.pk) for d in deliveries)
    assert [d.status for d in others] == ["succeeded", "succeeded"]
    attempt = poisoned.attempts.get()
    assert (attempt.notification, attempt.response_message) == ("Outcome not storable", "")
    assert attempt.error.startswith("The outcome of this attempt could not be stored: ")
    # It was answered 200: recorded as such, so it is not sent again.
    assert (poisoned.status, attempt.response_status) == ("succeeded", 200)
    assert len(receiver.requests) == 3
    assert run_worker() == 0


def test_a_backend_that_fails_after_commit_loses_nothing(settings, make_target, user,
                                                         caplog):
    from django.db import transaction

    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "BACKEND": "tests.test_hostile.BrokerDown"}
    make_target()
    later = []
    with transaction.atomic():
        [delivery] = send_event("project.update", {}, owner=user)
        transaction.on_commit(lambda: later.append("the project's own callback ran"))
    assert later == ["the project's own callback ran"]
    assert "could not take deliveries" in caplog.text and "broker down" in caplog.text
    assert Delivery.objects.due().filter(pk=delivery.pk).exists()  # for a worker


def test_a_batch_is_recorded_one_by_one_when_the_database_refuses_it(poison_trigger,
                                                                    make_target, user, caplog):
    from djwebhooks import queue, sending
    from djwebhooks.senders.base import AttemptResult
    from tests.helpers import CLAIMANT, hold

    target = make_target()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("djwebhooks.events.enqueue_on_commit", lambda *a, **k: None)
        ids = [send_event("project.update", {"n": n}, owner=user)[0].pk for n in range(3)]
    hold(ids)
    deliveries = queue.load(CLAIMANT, ids)

    def answer(body):
        return AttemptResult(success=False, response_status=500, response_message=body,
                             response_content_type="text/plain", error="", duration=3,
                             notification="500 Internal Server Error")

    stored = sending.record(CLAIMANT, [(deliveries[0], answer("fine")),
                                       (deliveries[1], answer("poison")),
                                       (deliveries[2], answer("also fine"))])
    assert "3 outcomes could not be recorded together; recording them one by one" in \
        caplog.text
    assert [item.moved for item in stored.recorded] == [True, True, True]
    rows = {a.delivery_id: a for a in DeliveryAttempt.objects.all()}
    assert [rows[pk].response_message for pk in ids] == ["fine", "", "also fine"]
    assert rows[ids[1]].notification == "Outcome not storable"
    assert rows[ids[1]].response_status == 500
    assert set(Delivery.objects.values_list("status", "attempt")) == {("pending", 1)}
    target.refresh_from_db()
    assert target.consecutive_failures == 3


class BrokerDown:
    """A backend whose broker is unreachable."""

    def enqueue(self, delivery_ids):
        raise ConnectionError("broker down")


def test_a_late_outcome_is_kept_but_never_undoes_a_success(make_target, user, listen):
    # Worker A's lease ran out mid-request; B took the delivery over and succeeded. A's
    # failure, when it comes back, is an attempt like any other, and changes nothing.
    from tests.helpers import hold, record

    failed = listen(signals.delivery_failed)
    succeeded = listen(signals.delivery_succeeded)
    make_target()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("djwebhooks.events.enqueue_on_commit", lambda *a, **k: None)
        [delivery] = send_event("project.update", {}, owner=user)
    late = Delivery.objects.select_related("webhook_target__owner").get(pk=delivery.pk)
    hold([delivery], claimant="worker-a")
    from djwebhooks.senders.base import AttemptResult

    ok = AttemptResult(success=True, response_status=200, response_message="", error="",
                       response_content_type="", duration=1, notification="200 OK")
    down = AttemptResult(success=False, response_status=503, response_message="",
                         error="", response_content_type="", duration=1,
                         notification="503", retry_after="")
    record([(delivery, ok)], claimant="worker-b")  # B held it: it claimed after A's lease
    from djwebhooks import sending

    stored = sending.record("worker-a", [(late, down)])
    assert [item.moved for item in stored.recorded] == [False]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt) == ("succeeded", 2)
    assert list(delivery.attempts.values_list("attempt", "success")) == [(1, True), (2, False)]
    assert len(succeeded) == 1 and failed == []


def test_claims_and_due_times_follow_the_database_clock(monkeypatch, make_target, user,
                                                        receiver):
    # This host's clock is an hour fast: the database's clock still decides what is due.
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(hours=1))
    receiver.replies = [Reply(status=500)]
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    assert run_worker() == 1
    delivery.refresh_from_db()
    attempt = delivery.attempts.get()
    wait = (delivery.next_attempt_at - attempt.created).total_seconds()
    assert 3.9 <= wait <= 6.1  # 5 s after the attempt, by the database's clock
    assert abs((attempt.created - real_now()).total_seconds()) < 60
    assert run_worker() == 0  # an hour-fast host does not make the retry due early


def test_a_call_with_many_slow_targets_returns_within_its_budget(settings, make_target, user,
                                                                 receiver):
    # Inline: three receivers that take 0.8 s each; one call spends at most TOTAL_TIMEOUT
    # (1 s) and leaves the rest, due and unclaimed, to the worker.
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "TOTAL_TIMEOUT": 1.0, "READ_TIMEOUT": 1,
                           "BACKEND": "djwebhooks.backends.inline.InlineBackend"}
    receiver.default = Reply(delay=0.8)
    for n in range(3):
        make_target(target_url=f"{receiver.url}/slow{n}/")
    started = time.monotonic()
    deliveries = send_event("project.update", {}, owner=user)
    took = time.monotonic() - started
    assert took < 1.6, f"the call took {took:.2f} s"
    assert len(receiver.requests) == 1
    statuses = sorted(Delivery.objects.values_list("status", "claimed_by"))
    assert statuses == [("pending", ""), ("pending", ""), ("succeeded", "")]
    assert Delivery.objects.due().count() == 2
    assert run_worker(concurrency=2) == 2
    assert {d.status for d in Delivery.objects.filter(pk__in=[d.pk for d in deliveries])} \
        == {"succeeded"}


def test_the_worker_writes_a_heartbeat_row(make_target, user, receiver):
    from djwebhooks.models import WorkerHeartbeat

    make_target()
    for n in range(3):
        send_event("project.update", {"n": n}, owner=user)
    worker = Worker(burst=True, interval=0.02, worker_id="web-1:42")
    assert worker.run() == 3
    row = WorkerHeartbeat.objects.get()
    assert (row.claimant, row.worker_id, row.handled) == (worker.claimant, "web-1:42", 3)
    assert row.claimant.startswith("web-1:42:")
    assert row.stopped_at is not None and row.last_seen >= row.started_at
    assert abs((row.last_seen - timezone.now()).total_seconds()) < 60


def test_memory_stays_flat_in_the_number_of_targets(monkeypatch, make_target, user,
                                                    closed_port_url):
    # Targets remembered as failing are capped; nothing else is kept per target once its
    # deliveries are done.
    from djwebhooks import worker as worker_module

    monkeypatch.setattr(worker_module, "FAILING_TARGETS_KEPT", 5)
    for n in range(20):
        make_target(target_url=closed_port_url + f"{n}/")
    send_event("project.update", {}, owner=user)
    worker = Worker(burst=True, interval=0.02, concurrency=4)
    assert worker.run() == 20
    assert len(worker._failing) == 5
    assert not worker._sending and not worker._targets_in_flight
    assert not worker._held and not worker._lost


def test_the_sending_path_reads_from_the_database_it_writes_to(settings, make_target, user,
                                                               receiver):
    # A replica lags: nothing between a claim and its record may read from one.
    settings.DATABASE_ROUTERS = ["tests.test_hostile.ReadsFromAReplica"]
    receiver.replies = [Reply(status=500)]
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    assert run_worker() == 1
    assert Delivery.objects.using("default").get(pk=delivery.pk).attempt == 1


class ReadsFromAReplica:
    """A router that sends deliveries' reads to a replica this test setup does not have:
    any read of them through the router fails."""

    def db_for_read(self, model, **hints):
        if model._meta.app_label == "djwebhooks":
            return "replica-that-does-not-exist"
        return None
