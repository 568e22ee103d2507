"""The RQ backend, through django-rq, on a real Redis (a database of the tests' own,
``REDIS_URL`` in tests/settings.py, emptied before and after each test).

The tests without a worker run on any database: they enqueue and read the queue and its
scheduled-job registry in Redis. The worker tests commit deliveries (``transaction=True``),
start ``python -m django rqworker`` (django-rq) on the test database, and compare what the
receiver got with the rows left behind; they need a database that processes share
(PostgreSQL).
"""

import json
import logging
import math
import os
import signal
import subprocess
import sys
import uuid
from contextlib import contextmanager
from datetime import timedelta

import pytest
import redis
from django.db import connection, transaction
from django.utils import timezone
from django_rq import get_queue
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry

from djwebhooks import send_event
from djwebhooks.backends import get_backend, load_backend
from djwebhooks.backends import rq as rq_backend
from djwebhooks.exceptions import WebhookImproperlyConfigured
from djwebhooks.models import Delivery, DeliveryAttempt, WorkerHeartbeat
from tests.processes import ServiceProcess, received_ids, statuses, wait_until
from tests.receiver import Reply
from tests.settings import REDIS_URL

RQ_BACKEND = "djwebhooks.backends.rq.RQBackend"
#: CI sets this: a Redis that does not answer is then a failure, not a skip.
BROKERS_REQUIRED = os.environ.get("DJWEBHOOKS_TEST_BROKERS_REQUIRED") == "1"

shared_database = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="starts rqworker processes that share the test database (rows committed across "
    "processes); run with DATABASE_URL=postgres://...",
)


@pytest.fixture
def redis_db():
    """The tests' Redis database, empty; emptied again after the test. One that holds
    keys other than RQ's is someone else's: it is left alone, and the test fails."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        message = f"Redis is not answering at {REDIS_URL} ({exc})"
        if BROKERS_REQUIRED:
            pytest.fail(message)
        pytest.skip(f"{message}; start it (CI does) to run the RQ backend tests")
    foreign = [key for key in client.scan_iter(count=1000) if not key.startswith(b"rq:")]
    if foreign:
        pytest.fail(f"{REDIS_URL} holds keys that are not RQ's ({foreign[0]!r} and "
                    f"{len(foreign) - 1} more), so it is not emptied; point "
                    "DJWEBHOOKS_TEST_REDIS_URL at a Redis database of the tests' own")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def queue_name(settings, redis_db):
    """A queue of this test's own, in RQ_QUEUES (and in a worker's, through the env)."""
    name = f"djwebhooks-test-{uuid.uuid4().hex[:8]}"
    settings.RQ_QUEUES = {name: {"URL": REDIS_URL}}
    return name


@pytest.fixture
def rq_settings(settings, queue_name):
    """dj-webhooks sends through the RQ backend, on the test's queue; returns the
    ``DJWEBHOOKS`` overrides for a worker."""
    overrides = {"BACKEND": RQ_BACKEND, "BACKEND_OPTIONS": {"queue": queue_name}}
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, **overrides}
    return overrides


def commit_deliveries(user, count):
    with transaction.atomic():
        return [delivery for number in range(count)
                for delivery in send_event("project.update", {"n": number}, owner=user)]


def rq_worker(tmp_path, name, queue_name, *args, overrides, scheduler=True):
    """A django-rq worker process on ``queue_name``, with its scheduler unless told not
    to. A burst worker needs none, and RQ 3.0 may start a scheduler process in a burst
    worker's maintenance (``run_maintenance_tasks``) and then wait for it at exit."""
    argv = [sys.executable, "-m", "django", "rqworker", queue_name,
            *(["--with-scheduler"] if scheduler else []),
            "--name", f"{name}-{uuid.uuid4().hex[:6]}", *args]
    env = {"DJWEBHOOKS_TEST_RQ_QUEUES": json.dumps({queue_name: {"URL": REDIS_URL}})}
    return ServiceProcess(tmp_path, name, argv, overrides, env=env)


@contextmanager
def stopped_after(process):
    """Run ``process`` for the block, then stop it with SIGTERM (a warm shutdown, which
    stops its scheduler process too), killing it only if that takes too long."""
    try:
        yield process
    finally:
        if process.process.poll() is None:
            process.process.send_signal(signal.SIGTERM)
            try:
                process.process.wait(15)
            except subprocess.TimeoutExpired:
                process.process.kill()
                process.process.wait(10)


# Without a worker
# ----------------

def test_options_are_checked_with_messages_that_say_what_is_wrong(settings):
    settings.RQ_QUEUES = {"default": {"URL": REDIS_URL}, "webhooks": {"URL": REDIS_URL}}
    for options, message in [
        ({"queue": ""}, "queue must be a queue name"),
        ({"queue": 5}, "queue must be a queue name"),
        ({"queue": "hooks"}, "queue 'hooks' is not in django-rq's RQ_QUEUES "
                             r"\(its queues: 'default', 'webhooks'\)"),
        ({"batch_size": 0}, "batch_size must be a whole number from 1 to 1000, got 0"),
        ({"batch_size": 1001}, "batch_size must be a whole number"),
        ({"batch_size": True}, "batch_size must be a whole number"),
        ({"qeue": "webhooks"}, "unexpected keyword argument 'qeue'"),
    ]:
        with pytest.raises(WebhookImproperlyConfigured, match=message):
            load_backend(RQ_BACKEND, options)
    backend = load_backend(RQ_BACKEND, {"queue": "webhooks", "batch_size": 10,
                                        "concurrency": 3})
    assert (backend.queue, backend.batch_size, backend.concurrency) == ("webhooks", 10, 3)
    assert backend.defers and backend.retries_failures and backend.defer_limit is None
    assert not backend.polls and not backend.sends_immediately
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "TOTAL_TIMEOUT": 12.5}
    # Ten requests three at a time: four rounds, each up to TOTAL_TIMEOUT.
    assert backend.job_timeout() == math.ceil(4 * 12.5) + 60
    assert load_backend(RQ_BACKEND, {"batch_size": 10}).job_timeout() == 13 + 60

    del settings.RQ_QUEUES
    with pytest.raises(WebhookImproperlyConfigured, match="needs django-rq's RQ_QUEUES"):
        load_backend(RQ_BACKEND, {})


def test_enqueue_puts_a_job_per_batch_on_the_queue(rq_settings, queue_name):
    backend = load_backend(RQ_BACKEND, {"queue": queue_name, "batch_size": 2,
                                        "concurrency": 1})
    backend.enqueue([1, 2, 3, 4, 5])
    queue = get_queue(queue_name)
    jobs = queue.get_jobs()
    assert [job.args for job in jobs] == [([1, 2],), ([3, 4],), ([5],)]
    assert {(job.func_name, job.timeout, job.result_ttl) for job in jobs} == {
        (rq_backend.SEND_JOB, 2 * 30 + 60, 0)}  # TOTAL_TIMEOUT is 30 s by default
    assert ScheduledJobRegistry(queue=queue).count == 0


def test_enqueue_with_run_after_schedules_the_jobs_no_sooner(rq_settings, queue_name):
    """A retry waits in the scheduled-job registry, until the whole second at or after
    its time (RQ's scheduler counts whole seconds); one already due is queued at once."""
    backend = get_backend()
    when = timezone.now().replace(microsecond=250_000) + timedelta(minutes=5)
    backend.enqueue([1], run_after=when)
    exact = when.replace(microsecond=0) + timedelta(minutes=1)
    backend.enqueue([2], run_after=exact)
    queue = get_queue(queue_name)
    scheduled = ScheduledJobRegistry(queue=queue)
    times = {tuple(queue.fetch_job(job_id).args[0]): scheduled.get_scheduled_time(job_id)
             for job_id in scheduled.get_job_ids()}
    assert times == {(1,): when.replace(microsecond=0) + timedelta(seconds=1), (2,): exact}
    assert queue.count == 0

    backend.enqueue([3], run_after=timezone.now() - timedelta(seconds=1))
    assert [job.args for job in queue.get_jobs()] == [([3],)]
    assert scheduled.count == 2


@pytest.mark.django_db
def test_a_retry_is_scheduled_once_its_attempt_is_recorded(
        rq_settings, queue_name, settings, receiver, make_target, user,
        django_capture_on_commit_callbacks):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RETRY_SCHEDULE": [60], "RETRY_JITTER": 0}
    receiver.default = Reply(status=500)
    make_target()
    with django_capture_on_commit_callbacks(execute=True):
        [delivery] = send_event("project.update", {"n": 1}, owner=user)
    queue = get_queue(queue_name)
    [job] = queue.get_jobs()
    assert job.args == ([delivery.pk],)
    with django_capture_on_commit_callbacks(execute=True):
        job.func(*job.args)  # as a worker runs it
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt, delivery.response_status) == ("pending", 1, 500)
    scheduled = ScheduledJobRegistry(queue=queue)
    [retry] = scheduled.get_job_ids()
    assert queue.fetch_job(retry).args == ([delivery.pk],)
    due = delivery.next_attempt_at
    assert scheduled.get_scheduled_time(retry) == (
        due.replace(microsecond=0) + timedelta(seconds=1 if due.microsecond else 0))


def test_the_job_ignores_an_argument_that_is_not_a_list_of_ids(caplog):
    with caplog.at_level(logging.ERROR, logger="djwebhooks.backends.rq"):
        for argument in ("1; DROP TABLE", [1, "2"], [False], (1, 2)):
            rq_backend.send(argument)
    assert caplog.text.count("not a list of delivery ids") == 4


@pytest.mark.django_db(transaction=True)
def test_a_redis_that_is_down_never_fails_the_request(settings, user, make_target, caplog,
                                                      closed_port_url):
    """Nothing listens on Redis's port: the caller's commit succeeds, and the deliveries
    are left for the sweep, marked as held by no queue."""
    url = closed_port_url.replace("http://", "redis://").replace("/hook/", "/0")
    settings.RQ_QUEUES = {"default": {"URL": url}}
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "BACKEND": RQ_BACKEND}
    make_target()
    with caplog.at_level(logging.ERROR, logger="djwebhooks.events"):
        [delivery] = commit_deliveries(user, 1)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.queued_at) == ("pending", None)
    assert "could not take deliveries" in caplog.text


# Real rqworker processes
# -----------------------

@shared_database
@pytest.mark.django_db(transaction=True)
def test_rq_workers_deliver_each_message_once(tmp_path, rq_settings, queue_name, receiver,
                                              user, make_target):
    """Every message is enqueued twice (a duplicate message) and a malformed job is
    queued among them; two burst workers share the jobs: each delivery is claimed, sent
    and recorded once, and the malformed job is logged and dropped."""
    make_target()
    deliveries = commit_deliveries(user, 20)
    for delivery in deliveries:  # each message again, as a broker may deliver it
        get_backend().enqueue([delivery.pk])
    queue = get_queue(queue_name)
    queue.enqueue_call(rq_backend.SEND_JOB, args=("1; DROP TABLE",), result_ttl=0)
    enqueued = queue.job_ids
    assert len(enqueued) == 41
    receiver.default = Reply(delay=0.1)  # so that both workers have work to take
    one = rq_worker(tmp_path, "one", queue_name, "--burst", overrides=rq_settings,
                    scheduler=False)
    two = rq_worker(tmp_path, "two", queue_name, "--burst", overrides=rq_settings,
                    scheduler=False)
    with stopped_after(one), stopped_after(two):
        assert one.wait(60) == 0, one.describe()
        assert two.wait(60) == 0, two.describe()

    assert statuses() == {Delivery.Status.SUCCEEDED: 20}
    got = received_ids(receiver)
    assert set(got) == {delivery.hash_value for delivery in deliveries}
    assert set(got.values()) == {1}
    assert DeliveryAttempt.objects.count() == 20
    logs = one.stderr + two.stderr
    assert logs.count("Ignoring a djwebhooks.backends.rq.send job whose argument is not a "
                      "list of delivery ids: '1; DROP TABLE'") == 1, logs
    # Both took part (RQ logs on stdout); no job failed, and none is kept after it ran.
    for worker in (one, two):
        assert "Job OK" in worker.stdout, worker.describe()
    assert queue.count == 0
    assert FailedJobRegistry(queue=queue).count == 0
    assert FinishedJobRegistry(queue=queue).count == 0
    assert not [job_id for job_id in enqueued if Job.exists(job_id, connection=queue.connection)]


@shared_database
@pytest.mark.django_db(transaction=True)
def test_retries_reach_the_receiver_through_enqueue_at(tmp_path, rq_settings, queue_name,
                                                       settings, receiver, user,
                                                       make_target):
    """The receiver fails twice, then succeeds: each retry is scheduled with enqueue_at by
    the job that recorded the failure, and moved to the queue by the worker's scheduler
    once due; no webhooks_worker is involved."""
    overrides = {**rq_settings, "RETRY_SCHEDULE": [1, 1], "RETRY_JITTER": 0}
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, **overrides}
    receiver.replies = [Reply(status=500), Reply(status=503)]
    make_target()
    [delivery] = commit_deliveries(user, 1)
    worker = rq_worker(tmp_path, "worker", queue_name, overrides=overrides)
    with stopped_after(worker):
        wait_until(lambda: statuses() == {Delivery.Status.SUCCEEDED: 1}, 30,
                   lambda: f"{statuses()}\n{worker.describe()}")
        worker.process.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0, worker.describe()

    attempts = list(delivery.attempts.order_by("attempt"))
    assert [attempt.response_status for attempt in attempts] == [500, 503, 200]
    assert received_ids(receiver) == {delivery.hash_value: 3}  # one message, sent 3 times
    # Each retry waited for its time, a second, rounded up to RQ's whole seconds, and
    # the scheduler's poll (every second).
    for before, after in zip(attempts, attempts[1:], strict=False):
        assert 1 <= (after.created - before.created).total_seconds() < 5
    assert "Scheduler for" in worker.stdout, worker.describe()
    queue = get_queue(queue_name)
    assert ScheduledJobRegistry(queue=queue).count == 0
    assert FailedJobRegistry(queue=queue).count == 0
    assert not WorkerHeartbeat.objects.exists()  # no webhooks_worker ran
