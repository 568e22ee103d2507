"""The Tasks backend, on Django's Tasks framework (the django-tasks backport on Django 5.2)
with django-tasks-db's DatabaseBackend, its table and its ``db_worker``.

The tests without a worker run on any database: they enqueue into the real table and
read the rows. The worker tests commit deliveries (``transaction=True``), start
``python -m django db_worker`` on the test database, and compare what the receiver got
with the rows left behind; they need a database that processes share (PostgreSQL).
"""

import logging
import signal
import sys
from datetime import timedelta
from importlib.util import find_spec

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from django_tasks_db.compat import Task
from django_tasks_db.models import DBTaskResult, get_date_max

from djwebhooks import send_event
from djwebhooks.backends import get_backend, load_backend
from djwebhooks.backends import tasks as tasks_backend
from djwebhooks.checks import check_backend
from djwebhooks.exceptions import WebhookImproperlyConfigured
from djwebhooks.models import Delivery, DeliveryAttempt, WorkerHeartbeat
from tests.processes import ServiceProcess, received_ids, running, statuses, wait_until
from tests.receiver import Reply

TASKS_BACKEND = "djwebhooks.backends.tasks.TasksBackend"
FRAMEWORK = "django.tasks" if find_spec("django.tasks") else "django_tasks"
DATABASE_TASKS = {"BACKEND": "django_tasks_db.DatabaseBackend"}

shared_database = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="starts db_worker processes that share the test database (rows committed "
    "across processes); run with DATABASE_URL=postgres://...",
)


class NoDeferBackend(import_string(f"{FRAMEWORK}.backends.dummy.DummyBackend")):
    """A Tasks backend that keeps what it is given, and cannot defer."""

    supports_defer = False


def use(settings, **options):
    """Make the Tasks backend, with ``options``, the one dj-webhooks sends through."""
    overrides = {"BACKEND": TASKS_BACKEND, "BACKEND_OPTIONS": options}
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, **overrides}
    return overrides


def commit_deliveries(user, count):
    with transaction.atomic():
        return [delivery for number in range(count)
                for delivery in send_event("project.update", {"n": number}, owner=user)]


def db_worker(tmp_path, name, *args, overrides):
    """A django-tasks-db worker process on the test database."""
    argv = [sys.executable, "-m", "django", "db_worker", "--no-startup-delay", "--no-reload",
            *args]
    return ServiceProcess(tmp_path, name, argv, overrides)


# Without a worker
# ----------------

def test_options_are_checked_with_messages_that_say_what_is_wrong():
    for options, message in [
        ({"backend": ""}, "backend must be the alias of a Tasks backend"),
        ({"backend": "webhooks"}, "backend 'webhooks' is not a Tasks backend in the TASKS "
                                  r"setting \(its backends: 'default'\)"),
        ({"queue_name": None}, "queue_name must be a queue name"),
        ({"queue_name": "webhooks"}, "the Tasks backend 'default' refuses the task with "
                                     "queue_name 'webhooks' and priority 0: Queue 'webhooks' "
                                     r"is not valid for backend\.$"),
        ({"priority": "high"}, "priority must be a whole number from -100 to 100"),
        ({"priority": 101}, "priority must be a whole number between -100 and 100"),
        ({"batch_size": 0}, "batch_size must be a whole number from 1 to 1000, got 0"),
        ({"batch_size": True}, "batch_size must be a whole number"),
        ({"qeue_name": "webhooks"}, "unexpected keyword argument 'qeue_name'"),
    ]:
        with pytest.raises(WebhookImproperlyConfigured, match=message):
            load_backend(TASKS_BACKEND, options)
    backend = load_backend(TASKS_BACKEND, {"priority": 5, "batch_size": 10})
    assert (backend.backend, backend.queue_name, backend.priority, backend.batch_size) == (
        "default", "default", 5, 10)
    assert backend.defers and backend.retries_failures
    assert not backend.polls and not backend.sends_immediately


def test_a_tasks_backend_that_cannot_load_is_e004(settings):
    settings.TASKS = {"default": {"BACKEND": "tests.nowhere.Backend"}}
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "BACKEND": TASKS_BACKEND}
    [error] = check_backend()
    assert error.id == "djwebhooks.E004"
    assert "the Tasks backend 'default' cannot be loaded: Could not find backend " \
        "'tests.nowhere.Backend'" in error.msg


def test_the_task_is_the_one_django_tasks_db_runs():
    """A worker finds the task by its path, and it is a Task of the framework
    django-tasks-db uses (django.tasks on Django 6, even with the backport installed)."""
    found = import_string(tasks_backend.SEND_TASK)
    assert isinstance(found, Task)
    assert found.module_path == tasks_backend.SEND_TASK == "djwebhooks.backends.tasks.send"
    assert type(found).__module__.startswith(FRAMEWORK)


def test_with_another_backend_configured_the_task_runs_on_the_default_tasks_backend():
    """Tasks left in a queue after a site moves to another backend still run."""
    assert get_backend().__class__.__name__ == "InlineBackend"
    task = tasks_backend.send
    assert (task.backend, task.queue_name, task.module_path) == (
        "default", "default", tasks_backend.SEND_TASK)
    with pytest.raises(AttributeError, match="has no attribute 'sned'"):
        tasks_backend.sned  # noqa: B018


def test_a_site_without_a_default_tasks_backend_or_queue(settings, db):
    """The Task is made on first use, for the configured Tasks backend: nothing needs the
    alias "default", nor its queue "default"."""
    settings.TASKS = {"webhooks": {**DATABASE_TASKS, "QUEUES": ["hooks"]}}
    use(settings, backend="webhooks", queue_name="hooks")
    assert check_backend() == []
    get_backend().enqueue([7])
    assert tasks_backend.send.backend == "webhooks"
    [row] = DBTaskResult.objects.all()
    assert (row.backend_name, row.queue_name, row.task_path, row.args_kwargs) == (
        "webhooks", "hooks", tasks_backend.SEND_TASK, {"args": [[7]], "kwargs": {}})


@pytest.mark.django_db
def test_enqueue_writes_a_task_per_batch_and_passes_run_after():
    backend = load_backend(TASKS_BACKEND, {"batch_size": 2, "priority": 3})
    backend.enqueue([1, 2, 3, 4, 5])
    when = timezone.now() + timedelta(minutes=5)
    backend.enqueue([6], run_after=when)
    rows = list(DBTaskResult.objects.order_by("enqueued_at", "id"))
    assert sorted(row.args_kwargs["args"][0] for row in rows) == [[1, 2], [3, 4], [5], [6]]
    assert {(row.task_path, row.queue_name, row.backend_name, row.priority, row.status)
            for row in rows} == {(tasks_backend.SEND_TASK, "default", "default", 3, "READY")}
    assert {row.args_kwargs["args"][0][0]: row.run_after for row in rows} == {
        1: get_date_max(), 3: get_date_max(), 5: get_date_max(), 6: when}
    # Only the deferred one is held back.
    assert sorted(row.args_kwargs["args"][0][0] for row in DBTaskResult.objects.ready()) == [
        1, 3, 5]


@pytest.mark.django_db
def test_a_tasks_backend_that_cannot_defer_is_never_given_run_after(settings):
    """W003 warns, ``defers`` is False, and a retry in the future is refused (the caller
    leaves it for the sweep) instead of being sent early; one already due goes at once."""
    settings.TASKS = {"default": {"BACKEND": "tests.test_tasks_backend.NoDeferBackend"}}
    use(settings)
    backend = get_backend()
    assert not backend.defers and not backend.retries_failures
    [warning] = check_backend()
    assert warning.id == "djwebhooks.W003"
    assert "TasksBackend cannot hold a delivery back" in warning.msg
    with pytest.raises(ValueError, match="cannot defer tasks .* webhooks_sweep hands them over"):
        backend.enqueue([1], run_after=timezone.now() + timedelta(minutes=1))
    backend.enqueue([2], run_after=timezone.now() - timedelta(seconds=1))
    [result] = tasks_backend.task_backends["default"].results
    assert (result.args, result.task.run_after) == ([[2]], None)

    # Django's ImmediateBackend cannot defer either; django-tasks-db's can. ``defers``
    # follows the Tasks backend, not the class.
    settings.TASKS = {"default": {"BACKEND": f"{FRAMEWORK}.backends.immediate.ImmediateBackend"}}
    assert not backend.defers
    assert [message.id for message in check_backend()] == ["djwebhooks.W003"]
    settings.TASKS = {"default": DATABASE_TASKS}
    assert backend.defers
    assert check_backend() == []


@pytest.mark.django_db
def test_a_retry_is_enqueued_with_run_after_once_its_attempt_is_recorded(
        settings, receiver, make_target, user, django_capture_on_commit_callbacks):
    """The first task sends; the receiver fails; the retry becomes a task held until the
    delivery is due again, and no sooner."""
    use(settings)
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RETRY_SCHEDULE": [60], "RETRY_JITTER": 0}
    receiver.default = Reply(status=500)
    make_target()
    with django_capture_on_commit_callbacks(execute=True):
        [delivery] = send_event("project.update", {"n": 1}, owner=user)
    [first] = DBTaskResult.objects.all()
    assert first.args_kwargs["args"] == [[delivery.pk]]
    with django_capture_on_commit_callbacks(execute=True):
        first.task.call(*first.task_result.args)  # as db_worker runs it
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt, delivery.response_status) == ("pending", 1, 500)
    [retry] = DBTaskResult.objects.exclude(pk=first.pk)
    assert retry.run_after == delivery.next_attempt_at == delivery.queued_at
    assert retry.args_kwargs["args"] == [[delivery.pk]]
    assert not DBTaskResult.objects.ready().filter(pk=retry.pk).exists()


@pytest.mark.django_db
def test_a_task_run_before_its_delivery_is_due_hands_it_back_for_its_time(
        settings, receiver, make_target, user, django_capture_on_commit_callbacks):
    use(settings)
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RETRY_SCHEDULE": [60], "RETRY_JITTER": 0}
    receiver.default = Reply(status=500)
    make_target()
    with django_capture_on_commit_callbacks(execute=True):
        [delivery] = send_event("project.update", {"n": 1}, owner=user)
    with django_capture_on_commit_callbacks(execute=True):
        DBTaskResult.objects.get().task.call([delivery.pk])
    retry = DBTaskResult.objects.latest("enqueued_at")
    with django_capture_on_commit_callbacks(execute=True):
        retry.task.call([delivery.pk])  # run a minute early: nothing to send yet
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt) == ("pending", 1)
    assert DBTaskResult.objects.filter(run_after=delivery.next_attempt_at).count() == 2


@pytest.mark.django_db
def test_the_task_ignores_an_argument_that_is_not_a_list_of_ids(caplog):
    with caplog.at_level(logging.ERROR, logger="djwebhooks.backends.tasks"):
        for argument in ("1; DROP TABLE", [1, "2"], [True], {"ids": [1]}):
            tasks_backend.send.call(argument)
    assert caplog.text.count("not a list of delivery ids") == 4
    assert not DeliveryAttempt.objects.exists()


# Real db_worker processes
# ------------------------

@shared_database
@pytest.mark.django_db(transaction=True)
def test_db_workers_deliver_each_message_once(tmp_path, settings, receiver, user,
                                              make_target):
    """Every message is enqueued twice (a duplicate message), and two workers share the
    tasks: each delivery is claimed, sent and recorded once."""
    overrides = use(settings)
    make_target()
    deliveries = commit_deliveries(user, 20)
    for delivery in deliveries:  # each message again, as a broker may deliver it
        get_backend().enqueue([delivery.pk])
    enqueued = set(DBTaskResult.objects.values_list("pk", flat=True))
    assert len(enqueued) == 40
    receiver.default = Reply(delay=0.1)  # so that both workers have work to take
    with running(db_worker(tmp_path, "one", "--batch", overrides=overrides)) as one, \
            running(db_worker(tmp_path, "two", "--batch", overrides=overrides)) as two:
        assert one.wait(60) == 0, one.describe()
        assert two.wait(60) == 0, two.describe()
    assert statuses() == {Delivery.Status.SUCCEEDED: 20}
    got = received_ids(receiver)
    assert set(got) == {delivery.hash_value for delivery in deliveries}
    assert set(got.values()) == {1}
    assert DeliveryAttempt.objects.count() == 20
    ran = DBTaskResult.objects.filter(pk__in=enqueued)
    assert set(ran.values_list("status", flat=True)) == {"SUCCESSFUL"}
    assert not DBTaskResult.objects.filter(status="FAILED").exists()
    # Both took part: each worker records its id on the tasks it ran.
    workers = {tuple(ids) for ids in ran.values_list("worker_ids", flat=True)}
    assert len(workers) == 2, workers


@shared_database
@pytest.mark.django_db(transaction=True)
def test_retries_reach_the_receiver_through_tasks_with_run_after(tmp_path, settings, receiver,
                                                                 user, make_target):
    """The receiver fails twice, then succeeds: each retry is a task enqueued with
    run_after by the worker that recorded the failure, run once it is due; no
    webhooks_worker is involved."""
    overrides = {**use(settings), "RETRY_SCHEDULE": [1, 1], "RETRY_JITTER": 0}
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, **overrides}
    receiver.replies = [Reply(status=500), Reply(status=503)]
    make_target()
    [delivery] = commit_deliveries(user, 1)
    worker = db_worker(tmp_path, "worker", "--interval", "0.05", overrides=overrides)
    with running(worker):
        wait_until(lambda: statuses() == {Delivery.Status.SUCCEEDED: 1}, 30,
                   lambda: f"{statuses()}\n{worker.describe()}")
        worker.process.send_signal(signal.SIGTERM)
        assert worker.wait(10) == 0, worker.describe()

    attempts = list(delivery.attempts.order_by("attempt"))
    assert [attempt.response_status for attempt in attempts] == [500, 503, 200]
    assert len(receiver.requests) == 3
    assert received_ids(receiver) == {delivery.hash_value: 3}  # one message, sent 3 times
    rows = list(DBTaskResult.objects.order_by("enqueued_at"))
    assert [row.args_kwargs["args"] for row in rows] == [[[delivery.pk]]] * 3
    assert {row.status for row in rows} == {"SUCCESSFUL"}
    assert rows[0].run_after == get_date_max()  # the first, at commit: due at once
    # Each retry was enqueued, with run_after a second after the failure, by the worker
    # that recorded it; and it ran no sooner.
    for failed, row, sent in zip(attempts, rows[1:], attempts[1:], strict=False):
        waited = (row.run_after - failed.created).total_seconds()
        assert 0.9 < waited < 1.5, waited
        assert row.enqueued_at >= failed.created
        assert sent.created >= row.run_after
    assert not WorkerHeartbeat.objects.exists()  # no webhooks_worker ran
