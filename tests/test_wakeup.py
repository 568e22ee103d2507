"""Waking an idle worker: PostgreSQL's notifications of due deliveries, the listener that
waits for them, and polling everywhere else.

The worker waits 30 seconds between looks in most of these tests: a delivery that arrives
within a few seconds was sent because a notification woke the worker, not because it
looked again. No test here measures how fast (bench/ does).
"""

import importlib
import logging
import select
import threading
import time
from contextlib import contextmanager
from io import StringIO

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection, transaction

from djwebhooks import queue, replay, send_event, wakeup
from djwebhooks import worker as worker_module
from djwebhooks.models import Delivery
from djwebhooks.worker import Worker
from tests.helpers import by_mode
from tests.receiver import Reply

pytestmark = pytest.mark.django_db(transaction=True)

on_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="LISTEN/NOTIFY is PostgreSQL's; run with DATABASE_URL=postgres://...",
)
#: Far longer than any wait below: a polling worker would not look again in time.
LONG_INTERVAL = 30


@pytest.fixture(autouse=True)
def database_backend(settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "BACKEND": "djwebhooks.backends.database.DatabaseBackend"}


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@contextmanager
def running(worker):
    """Run ``worker`` in a thread for the block; stop it after."""
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(10)
        assert not thread.is_alive()


def listening(worker):
    return wait_until(lambda: worker._listener is not None and worker._listener.listening,
                      timeout=10)


@contextmanager
def notifications():
    """A connection of the test's own listening on the channel; the block gets a function
    that returns the payloads received within ``seconds``."""
    raw = connection.Database.connect(**connection.get_connection_params())
    raw.autocommit = True
    raw.execute(f"LISTEN {connection.ops.quote_name(wakeup.channel())}")

    def received(seconds=0.5):
        payloads, deadline = [], time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            payloads += [n.payload for n in raw.notifies(timeout=0)]
            select.select([raw.fileno()], [], [], remaining)
        return payloads + [n.payload for n in raw.notifies(timeout=0)]

    try:
        yield received
    finally:
        raw.close()


def triggers():
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(%s)",
                       [connection.ops.quote_name(Delivery._meta.db_table)])
        names = {name for (name,) in cursor.fetchall()}
        cursor.execute("SELECT count(*) FROM pg_proc WHERE proname = 'djwebhooks_delivery_due'")
        (functions,) = cursor.fetchone()
    return names & set(wakeup.TRIGGERS), functions


@on_postgres
def test_an_idle_worker_is_woken_by_a_new_delivery(make_target, user, receiver):
    make_target()
    with running(Worker(interval=LONG_INTERVAL)) as worker:
        assert listening(worker)
        time.sleep(0.2)  # its look at the start, and the one the listener's start asks for
        [delivery] = send_event("project.update", {}, owner=user)
        assert wait_until(lambda: len(receiver.requests) == 1)
    assert receiver.requests[0].headers["webhook-id"] == delivery.hash_value


@on_postgres
def test_a_request_that_hangs_does_not_hold_up_what_is_committed_meanwhile(
        make_target, user, receiver, settings, monkeypatch):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "READ_TIMEOUT": 4, "TOTAL_TIMEOUT": 4}
    # Results are let gather far longer than any wait below: only the notification can
    # end the wait while the hanging request is in flight.
    monkeypatch.setattr(worker_module, "GATHER_SECONDS", LONG_INTERVAL)
    receiver.replies.append(Reply(delay=4.5))  # the first request: past its deadline
    # Another target for the second delivery: a worker sends one request at a time to a
    # target that has not answered yet, so the hanging one's own would wait for it.
    make_target(identifier="first", target_url=receiver.url + "/first/")
    make_target(identifier="second", target_url=receiver.url + "/second/")
    with running(Worker(interval=LONG_INTERVAL)) as worker:
        assert listening(worker)
        send_event("project.update", {"n": 1}, owner=user, identifier="first")
        assert wait_until(lambda: len(receiver.requests) == 1)
        time.sleep(0.2)
        started = time.monotonic()
        [second] = send_event("project.update", {"n": 2}, owner=user, identifier="second")
        assert wait_until(lambda: len(receiver.requests) == 2, timeout=2)
        assert time.monotonic() - started < 2  # not when the first one timed out (4 s)
    assert receiver.requests[1].headers["webhook-id"] == second.hash_value


@on_postgres
def test_replays_and_claims_given_back_wake_the_worker(make_target, user, receiver):
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    [other] = send_event("project.update", {}, owner=user)
    assert queue.claim("someone-else", limit=1, lease=60, ids=[other.pk]).ids == [other.pk]
    with running(Worker(interval=LONG_INTERVAL)) as worker:
        assert listening(worker)
        assert wait_until(lambda: len(receiver.requests) == 1)
        time.sleep(0.2)
        replay([delivery])
        assert wait_until(lambda: len(receiver.requests) == 2)
        time.sleep(0.2)
        # Claimed elsewhere and given back unsent: due again, and the worker is told.
        queue.release("someone-else", [other.pk])
        assert wait_until(lambda: len(receiver.requests) == 3)
    assert [r.headers["webhook-id"] for r in receiver.requests] == [
        delivery.hash_value, delivery.hash_value, other.hash_value]


@on_postgres
def test_the_listener_comes_back_after_its_connection_is_killed(make_target, user, receiver,
                                                                caplog):
    make_target()
    caplog.set_level(logging.WARNING, logger="djwebhooks.wakeup")
    with running(Worker(interval=LONG_INTERVAL)) as worker:
        assert listening(worker)
        killed = worker._listener.backend_pid
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [killed])
        assert wait_until(lambda: worker._listener.backend_pid != killed
                          and worker._listener.listening, timeout=15)
        time.sleep(0.2)
        send_event("project.update", {}, owner=user)
        assert wait_until(lambda: len(receiver.requests) == 1)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Lost the connection listening" in m for m in messages) == 1, messages
    assert sum("on channel 'djwebhooks_delivery' again" in m for m in messages) == 1, messages


@on_postgres
def test_one_notification_per_transaction_not_per_row(make_target, user, receiver):
    for n in range(3):
        make_target(target_url=f"{receiver.url}/hook/{n}")
    with notifications() as received:
        with transaction.atomic():
            for n in range(4):  # four statements, three rows each
                send_event("project.update", {"n": n}, owner=user)
        assert received() == [""]
        with transaction.atomic():
            send_event("project.update", {}, owner=user)
            transaction.set_rollback(True)
        assert received() == []


@on_postgres
def test_only_writes_that_leave_deliveries_due_and_free_notify(make_target, user, receiver):
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    with notifications() as received:
        claimed = queue.claim("tester", limit=5, lease=60)
        assert claimed.ids == [delivery.pk]
        queue.renew("tester", claimed.ids, lease=60)
        Worker(burst=True, interval=0.05).run()  # nothing to claim
        assert received() == []
        queue.release("tester", claimed.ids)
        assert received() == [""]
        Worker(burst=True, interval=0.05).run()  # sends it: claimed, then succeeded
        assert received() == []
        receiver.default = Reply(status=500)
        [failing] = send_event("project.update", {}, owner=user)
        assert received() == [""]
        Worker(burst=True, interval=0.05).run()  # a retry in a few seconds: not due now
        assert received() == []
        assert replay([failing]) == [failing.pk]
        assert received() == [""]


@on_postgres
def test_the_worker_still_polls_for_retries(make_target, user, receiver, settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RETRY_SCHEDULE": [0.5], "RETRY_JITTER": 0}
    receiver.replies = [Reply(status=500)]
    make_target()
    with running(Worker(interval=0.2)) as worker:
        assert listening(worker)
        with notifications() as received:
            [delivery] = send_event("project.update", {}, owner=user)
            assert wait_until(lambda: len(receiver.requests) == 2)
            # Nothing notified the retry: the worker found it by looking.
            assert received(0) == [""]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt) == ("succeeded", 2)


@on_postgres
def test_the_triggers_come_and_go_with_their_migration():
    assert triggers() == (set(wakeup.TRIGGERS), 1)
    try:
        call_command("migrate", "djwebhooks", "0004", verbosity=0)
        assert triggers() == (set(), 0)
    finally:
        call_command("migrate", "djwebhooks", verbosity=0)
    assert triggers() == (set(wakeup.TRIGGERS), 1)


@on_postgres
def test_without_the_triggers_the_worker_says_so_and_polls(make_target, user, receiver,
                                                             caplog):
    make_target()
    caplog.set_level(logging.WARNING, logger="djwebhooks.wakeup")
    # The triggers alone are dropped: migrating back to before them would also take away
    # the later migrations' columns, which the worker reads.
    migration = importlib.import_module("djwebhooks.migrations.0005_delivery_due_notify")
    with connection.schema_editor() as editor:
        migration.drop_triggers(apps, editor)
    try:
        assert triggers() == (set(), 0)
        with running(Worker(interval=0.1)) as worker:
            assert wait_until(lambda: "no notification triggers" in caplog.text)
            send_event("project.update", {}, owner=user)
            assert wait_until(lambda: len(receiver.requests) == 1)
            assert not worker._listener.listening
    finally:
        with connection.schema_editor() as editor:
            migration.create_triggers(apps, editor)
    assert triggers() == (set(wakeup.TRIGGERS), 1)
    assert [r.getMessage() for r in caplog.records] == [
        "Cannot wake on new deliveries: the delivery table has no notification triggers (run "
        "migrate: djwebhooks' migration 0005 adds them). Polling instead."]


@on_postgres
def test_notifications_that_never_arrive_fall_back_to_polling(monkeypatch, make_target, user,
                                                                receiver, caplog):
    # As through pgbouncer in transaction mode, which cannot be run here: LISTEN succeeds,
    # and the listener's own test notification never comes back.
    monkeypatch.setattr(wakeup, "PROBE_TIMEOUT", 0.3)
    monkeypatch.setattr(wakeup, "_psycopg_notifications", lambda raw: [])
    monkeypatch.setattr(wakeup, "_psycopg2_notifications", lambda raw: [])
    make_target()
    caplog.set_level(logging.WARNING, logger="djwebhooks.wakeup")
    with running(Worker(interval=0.1)) as worker:
        assert wait_until(lambda: "did not come back" in caplog.text)
        send_event("project.update", {}, owner=user)
        assert wait_until(lambda: len(receiver.requests) == 1)
        assert not worker._listener.listening
    [message] = [r.getMessage() for r in caplog.records]
    assert "pgbouncer's pool_mode = transaction" in message and "--no-listen" in message


@on_postgres
def test_no_listen_only_polls(make_target, user, receiver):
    make_target()
    with running(Worker(interval=0.1, listen=False)) as worker:
        send_event("project.update", {}, owner=user)
        assert wait_until(lambda: len(receiver.requests) == 1)
        assert worker._listener is None


@pytest.mark.skipif(connection.vendor == "postgresql",
                    reason="the databases without LISTEN/NOTIFY (SQLite, MariaDB)")
def test_other_databases_poll(make_target, user, receiver):
    assert not wakeup.can_listen("default")
    make_target()
    with running(Worker(interval=0.1)) as worker:
        send_event("project.update", {}, owner=user)
        assert wait_until(lambda: len(receiver.requests) == 1)
        assert worker._listener is None


@pytest.mark.parametrize("options, words", [
    ([], "looking for due deliveries every 1 s"),
    (["--no-listen", "--interval", "0.5"], "looking for due deliveries every 0.5 s"),
])
def test_the_command_says_how_it_wakes(options, words, make_target, user, receiver):
    make_target()
    send_event("project.update", {}, owner=user)
    out = StringIO()
    call_command("webhooks_worker", "--max-deliveries", "1", *options, stdout=out)
    if connection.vendor == "postgresql" and not options:
        words = ("woken by notifications on channel 'djwebhooks_delivery', looking for "
                 "retries every 1 s")
    mode = by_mode(threads="threads", async_="async")
    assert f"({mode}, concurrency 4; {words})" in out.getvalue()
    assert len(receiver.requests) == 1
