"""The Celery backend, with real Celery workers on real brokers (Redis and RabbitMQ).

Each worker test commits deliveries (``transaction=True``), starts
``celery -A tests.celery_app worker`` on the test database, and compares what the
receiver got with the rows left behind. The Celery app finds dj-webhooks' tasks with
``autodiscover_tasks()`` alone. Worker tests need a database that processes share
(PostgreSQL); the others run anywhere.
"""

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager, suppress
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from djwebhooks import send_event
from djwebhooks.backends import load_backend
from djwebhooks.backends.celery import BEAT_SCHEDULE, SWEEP_TASK, send
from djwebhooks.exceptions import WebhookImproperlyConfigured
from djwebhooks.models import Delivery, DeliveryAttempt
from tests.celery_app import app
from tests.processes import ServiceProcess, received_ids, running, statuses, wait_until
from tests.receiver import Reply

CELERY = "djwebhooks.backends.celery.CeleryBackend"
BROKERS = {
    "redis": os.environ.get("DJWEBHOOKS_TEST_REDIS", "redis://127.0.0.1:6379/9"),
    "rabbitmq": os.environ.get("DJWEBHOOKS_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//"),
}
#: CI sets this: a broker that does not answer is then a failure, not a skip.
BROKERS_REQUIRED = os.environ.get("DJWEBHOOKS_TEST_BROKERS_REQUIRED") == "1"
shared_database = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="starts Celery worker processes that share the test database; run with "
    "DATABASE_URL=postgres://...",
)


def reachable(url):
    """True if the broker at ``url`` accepts a connection."""
    with app.connection_for_write(url) as conn:
        try:
            conn.ensure_connection(max_retries=1, timeout=2)
        except Exception:
            return False
    return True


def use_broker(url):
    """Point the test project's Celery app (the producer) at ``url``."""
    app.conf.broker_url = url
    app._pool = None  # kombu keeps a pool per broker; the next send takes url's
    app.amqp._producer_pool = None


@pytest.fixture(scope="module", autouse=True)
def empty_redis_database():
    """Leave the tests' Redis database (queues, unacknowledged messages) empty."""
    yield
    import redis

    with suppress(redis.ConnectionError):  # not running: nothing was left in it
        redis.Redis.from_url(BROKERS["redis"]).flushdb()


@pytest.fixture(params=sorted(BROKERS))
def broker(request):
    """Each broker in turn; the app sends to it for the length of the test."""
    url = BROKERS[request.param]
    if not reachable(url):
        message = f"{request.param} is not answering at {url}"
        if BROKERS_REQUIRED:
            pytest.fail(message)
        pytest.skip(f"{message}; start it (CI does) to run the Celery worker tests")
    use_broker(url)
    yield url
    use_broker(BROKERS["redis"])


@pytest.fixture
def queue_name(broker):
    """A queue of this test's own, deleted after it."""
    name = f"djwebhooks-test-{uuid.uuid4().hex[:8]}"
    yield name
    with app.connection_for_write(broker) as conn:
        conn.default_channel.queue_delete(name)


@pytest.fixture
def celery_backend(settings, queue_name):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "BACKEND": CELERY,
                           "BACKEND_OPTIONS": {"queue": queue_name}}
    return {"BACKEND": CELERY, "BACKEND_OPTIONS": {"queue": queue_name}}


def celery_worker(tmp_path, name, broker, queue_name, overrides, *, concurrency=2,
                  transport=None):
    """A real Celery worker process of the test project's app, on ``queue_name``."""
    argv = [sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker",
            "-Q", queue_name, "-c", str(concurrency), "-P", "prefork", "-n",
            f"{name}-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-l", "INFO"]
    # Redis' scan for unacknowledged messages runs under a lock; one left by a worker
    # killed mid-scan lasts unacked_mutex_expire (300 s by default).
    transport = {"unacked_mutex_expire": 2, **(transport or {})}
    env = {"DJWEBHOOKS_TEST_CELERY_BROKER": broker,
           "DJWEBHOOKS_TEST_CELERY_TRANSPORT": json.dumps(transport)}
    return ServiceProcess(tmp_path, name, argv, overrides, env=env, new_session=True)


def commit_deliveries(user, count):
    with transaction.atomic():
        return [delivery for number in range(count)
                for delivery in send_event("project.update", {"n": number}, owner=user)]


# Without a worker: options, checks, import
# -----------------------------------------

def test_options_are_checked_with_messages_that_say_what_is_wrong():
    with pytest.raises(WebhookImproperlyConfigured, match="batch_size must be a whole number"):
        load_backend(CELERY, {"batch_size": 0})
    with pytest.raises(WebhookImproperlyConfigured, match="queue must be a queue name"):
        load_backend(CELERY, {"queue": ""})
    with pytest.raises(WebhookImproperlyConfigured, match="defer_limit must be"):
        load_backend(CELERY, {"defer_limit": float("nan")})
    with pytest.raises(WebhookImproperlyConfigured, match="unexpected keyword argument 'qeue'"):
        load_backend(CELERY, {"qeue": "webhooks"})
    backend = load_backend(CELERY, {"queue": "webhooks", "batch_size": 10})
    assert (backend.queue, backend.batch_size, backend.defer_limit) == ("webhooks", 10, 600)
    assert backend.defers and backend.retries_failures and not backend.polls


def test_the_module_and_beat_entry_import_before_django_is_set_up():
    code = ("from djwebhooks.backends.celery import BEAT_SCHEDULE; "
            "print(BEAT_SCHEDULE['djwebhooks-sweep']['task'])")
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == SWEEP_TASK == BEAT_SCHEDULE["djwebhooks-sweep"]["task"]


def test_autodiscovery_finds_both_tasks():
    app.loader.import_default_modules()
    assert {"djwebhooks.send", "djwebhooks.sweep"} <= set(app.tasks)
    assert app.tasks["djwebhooks.send"].acks_late
    assert app.tasks["djwebhooks.send"].reject_on_worker_lost


@pytest.mark.django_db
def test_a_task_with_a_malformed_argument_is_dropped_with_a_log_line(caplog):
    with caplog.at_level(logging.ERROR, logger="djwebhooks.backends.celery"):
        send.run("1; DROP TABLE")
        send.run([1, "2"])
    assert caplog.text.count("not a list of delivery ids") == 2


@pytest.mark.django_db(transaction=True)
def test_a_broker_that_is_down_never_fails_the_request(settings, user, make_target, caplog,
                                                       closed_port_url):
    """Nothing listens on the broker's port: the caller's commit still succeeds, and the
    deliveries are left for the sweep, marked as held by no queue."""
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "BACKEND": CELERY}
    use_broker(closed_port_url.replace("http://", "redis://").rstrip("/") + "/0")
    try:
        make_target()
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="djwebhooks.events"):
            [delivery] = commit_deliveries(user, 1)
        elapsed = time.monotonic() - started
    finally:
        use_broker(BROKERS["redis"])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.queued_at) == ("pending", None)
    assert "could not take deliveries" in caplog.text
    assert elapsed < 30, "the caller waited for the broker too long"


# Real workers
# ------------

@shared_database
@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_delivers_each_message_once(tmp_path, broker, queue_name,
                                                    celery_backend, receiver, user,
                                                    make_target):
    make_target()
    deliveries = commit_deliveries(user, 30)
    with running(celery_worker(tmp_path, "worker", broker, queue_name, celery_backend)) as w:
        wait_until(lambda: statuses() == {"succeeded": 30}, 60,
                   lambda: f"{statuses()}\n{w.describe()}")
    got = received_ids(receiver)
    assert set(got) == {d.hash_value for d in deliveries}
    assert set(got.values()) == {1}
    assert DeliveryAttempt.objects.count() == 30


@shared_database
@pytest.mark.django_db(transaction=True)
def test_retries_are_scheduled_through_celery(tmp_path, broker, queue_name, celery_backend,
                                              settings, receiver, user, make_target):
    """The receiver fails twice, then succeeds: the retries reach it through Celery tasks
    with an eta, with no webhooks_worker running."""
    overrides = {**celery_backend, "RETRY_SCHEDULE": [1, 1, 1], "RETRY_JITTER": 0}
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, **overrides}
    receiver.replies = [Reply(status=500), Reply(status=503)]
    make_target()
    [delivery] = commit_deliveries(user, 1)
    with running(celery_worker(tmp_path, "worker", broker, queue_name, overrides)) as w:
        wait_until(lambda: statuses() == {"succeeded": 1}, 60,
                   lambda: f"{statuses()}\n{w.describe()}")
    delivery.refresh_from_db()
    assert delivery.attempt == 3
    attempts = list(delivery.attempts.order_by("attempt"))
    assert [a.response_status for a in attempts] == [500, 503, 200]
    # Each retry waited for its time (a second), as an eta task, not at once.
    for before, after in zip(attempts, attempts[1:], strict=False):
        assert (after.created - before.created).total_seconds() >= 0.9
    assert len(receiver.requests) == 3


@shared_database
@pytest.mark.django_db(transaction=True)
def test_a_rate_limited_target_is_sent_at_its_rate_through_celery(
        tmp_path, broker, queue_name, celery_backend, receiver, user, make_target):
    """A task sends what the target's rate allows within a second of waiting and hands the
    rest back to the queue for when the rate has room, until every delivery is sent. (No
    webhooks_sweep runs: without the hand-over, the deliveries one task has no time for
    would stay pending.)"""
    make_target(rate_limit=2)
    arrivals = []
    receiver.respond = lambda request: arrivals.append(time.monotonic())
    deliveries = commit_deliveries(user, 10)
    with running(celery_worker(tmp_path, "worker", broker, queue_name, celery_backend)) as w:
        wait_until(lambda: statuses() == {"succeeded": 10}, 60,
                   lambda: f"{statuses()}\n{w.describe()}")
    assert set(received_ids(receiver)) == {d.hash_value for d in deliveries}
    assert len(arrivals) == 10
    # Two at once, then two a second: the other eight take about four seconds.
    assert arrivals[-1] - arrivals[0] >= 3.5


@shared_database
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_run_loses_nothing_and_sends_nothing_twice(
        tmp_path, broker, queue_name, celery_backend, receiver, user, make_target):
    """SIGKILL a worker (every process of it) while requests are in flight: its messages
    come back (acks_late), the deliveries its claims hold are handed back for when those
    claims end, and every delivery ends succeeded, recorded as succeeded once."""
    overrides = {**celery_backend, "LEASE": 4, "TOTAL_TIMEOUT": 2}
    receiver.default = Reply(delay=0.3)
    make_target()
    deliveries = commit_deliveries(user, 24)
    # Redis gives an unacknowledged message back after its visibility timeout (an hour by
    # default), looked for about every 100 s (interval times throttle); RabbitMQ gives it
    # back as soon as the connection drops.
    transport = {"visibility_timeout": 3, "unacked_restore_interval": 1,
                 "unacked_restore_throttle": 1}
    killed = celery_worker(tmp_path, "killed", broker, queue_name, overrides,
                           concurrency=4, transport=transport)
    with running(killed):
        wait_until(lambda: len(receiver.requests) >= 4, 60, killed.describe)
        killed.kill()
    in_flight = Delivery.objects.exclude(claimed_by="").count()
    with running(celery_worker(tmp_path, "next", broker, queue_name, overrides,
                               transport=transport)) as following:
        wait_until(lambda: statuses() == {"succeeded": 24}, 90,
                   lambda: f"{statuses()}\n{following.describe()}")
    assert in_flight > 0, "the worker was killed with nothing claimed: nothing was tested"
    for delivery in deliveries:
        assert DeliveryAttempt.objects.filter(delivery=delivery, success=True).count() == 1
    assert set(received_ids(receiver)) == {d.hash_value for d in deliveries}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def redis_server(port):
    """A Redis server of this test's own on ``port``, which keeps nothing on disk."""
    process = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(10)


@shared_database
@pytest.mark.skipif(shutil.which("redis-server") is None,
                    reason="needs redis-server on PATH, to stop and start a broker")
@pytest.mark.django_db(transaction=True)
def test_a_broker_down_at_enqueue_time_is_swept_once_it_is_back(
        tmp_path, settings, receiver, user, make_target, caplog):
    """The broker is stopped when the caller commits: the request succeeds, nothing is
    lost; once the broker is back, the sweep hands the deliveries over and a worker sends
    them. The sweep runs as the Celery task a beat entry sends."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    queue_name = f"djwebhooks-test-{uuid.uuid4().hex[:8]}"
    overrides = {"BACKEND": CELERY, "BACKEND_OPTIONS": {"queue": queue_name}}
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, **overrides}
    make_target()
    use_broker(url)
    try:
        with caplog.at_level(logging.ERROR, logger="djwebhooks.events"):
            deliveries = commit_deliveries(user, 5)  # nothing listens on the port
        assert "could not take deliveries" in caplog.text
        assert statuses() == {"pending": 5}
        with redis_server(port):
            use_broker(url)
            with running(celery_worker(tmp_path, "worker", url, queue_name,
                                       overrides)) as w:
                app.send_task(SWEEP_TASK, queue=queue_name)
                wait_until(lambda: statuses() == {"succeeded": 5}, 60,
                           lambda: f"{statuses()}\n{w.describe()}")
    finally:
        use_broker(BROKERS["redis"])
    got = received_ids(receiver)
    assert set(got) == {d.hash_value for d in deliveries} and set(got.values()) == {1}


@pytest.mark.django_db(transaction=True)
def test_the_sweep_command_hands_over_only_overdue_deliveries(settings, user, make_target,
                                                              broker, queue_name):
    """Through the real broker, without a worker: the sweep enqueues what no queue holds,
    and, run again at once, nothing more."""
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "BACKEND": CELERY,
                           "BACKEND_OPTIONS": {"queue": queue_name}}
    make_target()
    deliveries = commit_deliveries(user, 3)
    lost = deliveries[0]
    Delivery.objects.filter(pk=lost.pk).update(queued_at=None)  # an enqueue that failed
    for expected in ("Handed 1 overdue delivery to CeleryBackend.",
                     "Handed 0 overdue deliveries to CeleryBackend."):
        out = StringIO()
        call_command("webhooks_sweep", stdout=out)
        assert out.getvalue().strip() == expected
    # 3 at commit, 1 by the sweep. RabbitMQ counts a message published a moment ago only
    # once it has routed it, so the count may lag for a moment; it must reach 4, not pass it.
    wait_until(lambda: queued_messages(broker, queue_name) >= 4, 10,
               lambda: f"{queued_messages(broker, queue_name)} messages queued, not 4")
    assert queued_messages(broker, queue_name) == 4


def queued_messages(url, name):
    with app.connection_for_write(url) as conn:
        return conn.default_channel.queue_declare(name, passive=True).message_count
