"""What the queue backends (Celery, Tasks, RQ) share: batches of ``batch_size`` delivery ids
per task, each batch's requests made ``concurrency`` at a time, and the connection
housekeeping around every task."""

import os
import threading
import time

import pytest
from django.db import connection

from djwebhooks import send_event, sending
from djwebhooks.backends import load_backend, run_queued
from djwebhooks.backends.base import QueueBackend
from djwebhooks.exceptions import WebhookImproperlyConfigured
from djwebhooks.models import Delivery
from tests.receiver import Reply

HERE = "tests.test_queue_backends"


class ListBackend(QueueBackend):
    """Keeps the batches it is given; its ``run()`` is the queue backends' own."""

    enqueued = []

    def enqueue(self, delivery_ids, *, run_after=None):
        for batch in self.batches(delivery_ids):
            self.enqueued.append((batch, run_after))


@pytest.fixture(autouse=True)
def fresh_pool():
    """Each test starts without this thread's pool of sending threads."""
    pool = getattr(sending._local, "pool", None)
    if pool is not None:
        pool.shutdown()
        sending._local.pool = None
    yield


@pytest.fixture
def backend(settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "BACKEND": f"{HERE}.ListBackend"}
    ListBackend.enqueued.clear()
    yield
    ListBackend.enqueued.clear()


def fan_out(make_target, receiver, user, count):
    for number in range(count):
        make_target(target_url=f"{receiver.url}/{number}/")
    return [delivery.pk for delivery in send_event("project.update", {}, owner=user)]


def statuses(ids):
    return sorted(Delivery.objects.filter(pk__in=ids).values_list("status", flat=True))


# Options
# -------

@pytest.mark.parametrize("options, message", [
    ({"batch_size": 0}, "batch_size must be a whole number from 1 to 1000, got 0"),
    ({"batch_size": 1001}, "batch_size must be a whole number"),
    ({"batch_size": 2.5}, "batch_size must be a whole number"),
    ({"concurrency": 0}, "concurrency must be a whole number from 1 to batch_size (20)"),
    ({"batch_size": 5, "concurrency": 6}, "from 1 to batch_size (5), or None"),
    ({"concurrency": True}, "concurrency must be a whole number"),
])
@pytest.mark.parametrize("path", [
    f"{HERE}.ListBackend",
    "djwebhooks.backends.celery.CeleryBackend",
    "djwebhooks.backends.tasks.TasksBackend",
    "djwebhooks.backends.rq.RQBackend",
])
def test_batch_options_are_checked_alike_by_every_queue_backend(path, options, message):
    with pytest.raises(WebhookImproperlyConfigured) as raised:
        load_backend(path, options)
    assert message in str(raised.value)


def test_a_batch_is_twenty_deliveries_sent_at_once_unless_the_options_say_otherwise():
    backend = load_backend(f"{HERE}.ListBackend", {})
    assert (backend.batch_size, backend.concurrency, backend.rounds()) == (20, 20, 1)
    backend = load_backend(f"{HERE}.ListBackend", {"batch_size": 10, "concurrency": 3})
    assert (backend.batch_size, backend.concurrency, backend.rounds()) == (10, 3, 4)
    assert backend.batches(range(23)) == [list(range(10)), list(range(10, 20)), [20, 21, 22]]
    assert backend.batches([]) == []


# A batch's requests, at once
# ---------------------------

@pytest.mark.django_db
def test_a_batch_s_requests_are_made_at_once(backend, make_target, receiver, user):
    # Each request waits at the receiver until all four are in flight: one after the other,
    # the barrier would break (after 10 s) and every delivery would fail.
    receiver.default = Reply(barrier=threading.Barrier(4, timeout=10))
    ids = fan_out(make_target, receiver, user, 4)
    outcomes = load_backend(f"{HERE}.ListBackend", {"batch_size": 4}).run(ids)
    assert [result.success for _, result in outcomes] == [True] * 4
    assert statuses(ids) == ["succeeded"] * 4
    assert receiver.most_in_flight == 4


@pytest.mark.django_db
def test_no_more_than_concurrency_requests_are_made_at_once(make_target, receiver, user,
                                                            backend):
    # Five deliveries two at a time: three rounds, the last of one request (which has no
    # partner at the barrier). A barrier of two trips once per round.
    receiver.default = Reply(barrier=threading.Barrier(2, timeout=10))
    receiver.routes["/4/"] = Reply()  # the last, sent on its own
    ids = fan_out(make_target, receiver, user, 5)
    runner = load_backend(f"{HERE}.ListBackend", {"batch_size": 5, "concurrency": 2})
    outcomes = runner.run(sorted(ids))
    assert len(outcomes) == 5
    assert statuses(ids) == ["succeeded"] * 5
    assert receiver.most_in_flight == 2


@pytest.mark.django_db
def test_the_pool_is_kept_and_with_it_each_thread_s_connection_to_the_receiver(
        backend, make_target, receiver, user):
    receiver.default = Reply(barrier=threading.Barrier(3, timeout=10))
    first = sending.send_deliveries(fan_out(make_target, receiver, user, 3), concurrency=3)
    again = [delivery.pk for delivery in send_event("project.update", {}, owner=user)]
    second = sending.send_deliveries(again, concurrency=3)
    assert len(first) == len(second) == 3
    clients = [request.client for request in receiver.requests]
    assert len(set(clients[:3])) == 3
    assert set(clients[3:]) == set(clients[:3])  # the same three connections, kept


# Python 3.12+ warns that a fork of a process with threads may deadlock in the child: the
# point here is that the child never waits on the parent's threads.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_pool_made_before_a_fork_is_not_used_in_the_child():
    parent = sending._pool(2)
    assert parent.submit(os.getpid).result(timeout=10) == os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: a pool with threads of its own, or a hang (killed below)
        try:
            child = sending._pool(2)
            ok = child is not parent and child.submit(os.getpid).result(timeout=10) == \
                os.getpid()
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the child hung on the parent's pool")
    assert os.waitstatus_to_exitcode(status) == 0
    assert sending._pool(2) is parent  # the parent keeps its own


@pytest.mark.django_db
def test_concurrency_must_be_at_least_one():
    with pytest.raises(ValueError, match="concurrency must be a whole number of at least 1"):
        sending.send_deliveries([1], concurrency=0)


# Connections around a task
# -------------------------

@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("max_age, closed", [(0, True), (None, False)])
def test_a_queued_task_closes_connections_as_django_does_around_a_request(
        backend, make_target, user, max_age, closed):
    # A worker that keeps connections between tasks (Celery with CELERY_DB_REUSE_MAX)
    # keeps them only for CONN_MAX_AGE, as a web process would.
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip("SQLite's in-memory test database ignores close(), which would lose it; "
                    "CI runs this on PostgreSQL and MariaDB")
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    previous = connection.settings_dict["CONN_MAX_AGE"]
    connection.settings_dict["CONN_MAX_AGE"] = max_age
    try:
        connection.close()
        connection.ensure_connection()
        run_queued([delivery.pk], name="a test task", logger=None)
        assert (connection.connection is None) is closed
        assert statuses([delivery.pk]) == ["succeeded"]
    finally:
        connection.settings_dict["CONN_MAX_AGE"] = previous
