"""``TasksBackend``: deliveries sent by Django's Tasks framework, retries with ``run_after``.

Uses ``django.tasks`` where it exists (Django 6.0 and later), and otherwise the
``django-tasks`` backport (``pip install "dj-webhooks[tasks]"``): the same choice
django-tasks-db makes, so that its ``db_worker`` runs the tasks enqueued here. The task
(``djwebhooks.backends.tasks.send``) carries delivery ids, never model instances, and runs
the one send path, which claims each delivery before sending it: a task run twice never
sends a delivery that another worker holds or that has already succeeded.

Retries are handed to the Tasks backend with ``run_after`` only if it supports that
(``supports_defer``: django-tasks-db's ``DatabaseBackend`` does, Django's
``ImmediateBackend`` does not). Otherwise they wait in the database for ``webhooks_sweep``,
as ``djwebhooks.W003`` says.
"""

import logging
from importlib.util import find_spec

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from djwebhooks.backends import get_backend, run_queued
from djwebhooks.backends.base import QueueBackend

if find_spec("django.tasks"):
    from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, DEFAULT_TASK_QUEUE_NAME, task_backends
    from django.tasks import task as make_task
    from django.tasks.exceptions import InvalidTask
else:
    from django_tasks import DEFAULT_TASK_BACKEND_ALIAS, DEFAULT_TASK_QUEUE_NAME, task_backends
    from django_tasks import task as make_task
    from django_tasks.exceptions import InvalidTaskError as InvalidTask

logger = logging.getLogger("djwebhooks.backends.tasks")

#: The task's path, as the Tasks framework stores it and a worker imports it.
SEND_TASK = f"{__name__}.send"


class TasksBackend(QueueBackend):
    """Send deliveries from the workers of a Django Tasks backend (django-tasks-db's
    ``db_worker``, for instance).

    Options (``DJWEBHOOKS["BACKEND_OPTIONS"]``):

    ``backend``
        The alias of the Tasks backend in ``TASKS`` (default ``"default"``).
    ``queue_name``
        The queue the tasks go to (default ``"default"``, the framework's default); it
        must be one of the Tasks backend's ``QUEUES``.
    ``priority``
        The tasks' priority, from -100 to 100 (default 0), for Tasks backends that
        support priorities.
    ``batch_size``
        Deliveries per task (default 20): the deliveries one ``send_event()`` (or one
        retry time) makes are split into tasks of this many. A task costs the Tasks
        backend and the database about as much for one delivery as for twenty.
    ``concurrency``
        Requests a task makes at once (default ``batch_size``), each on a thread.

    The Tasks backend and the task are checked when this backend is created, so a
    mistake is reported by ``djwebhooks.E004``.
    """

    def __init__(self, *, backend=DEFAULT_TASK_BACKEND_ALIAS,
                 queue_name=DEFAULT_TASK_QUEUE_NAME, priority=0,
                 batch_size=QueueBackend.BATCH_SIZE, concurrency=None):
        if not isinstance(backend, str) or not backend:
            raise TypeError(f"backend must be the alias of a Tasks backend in TASKS (a "
                            f"string), got {backend!r}")
        if not isinstance(queue_name, str) or not queue_name:
            raise TypeError(f"queue_name must be a queue name (a string), got {queue_name!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be a whole number from -100 to 100, got "
                            f"{priority!r}")
        super().__init__(batch_size=batch_size, concurrency=concurrency)
        self.backend = backend
        self.queue_name = queue_name
        self.priority = priority
        aliases = _aliases()
        if backend not in aliases:
            known = ", ".join(repr(alias) for alias in aliases) or "none"
            raise TypeError(f"backend {backend!r} is not a Tasks backend in the TASKS setting "
                            f"(its backends: {known})")
        try:
            self.task()
        except ImproperlyConfigured as exc:
            raise TypeError(f"the Tasks backend {backend!r} cannot be loaded: "
                            f"{str(exc).rstrip('.')}") from exc
        except InvalidTask as exc:
            raise TypeError(f"the Tasks backend {backend!r} refuses the task with "
                            f"queue_name {queue_name!r} and priority {priority}: "
                            f"{str(exc).rstrip('.')}") from exc

    @property
    def defers(self):
        """True when the Tasks backend supports ``run_after`` (its ``supports_defer``)."""
        return bool(task_backends[self.backend].supports_defer)

    def task(self):
        """Return the ``send`` Task on this backend's Tasks backend, queue and priority."""
        return make_task(backend=self.backend, queue_name=self.queue_name,
                         priority=self.priority)(_send)

    def enqueue(self, delivery_ids, *, run_after=None):
        """Enqueue one ``send`` task per ``batch_size`` ids, to run from ``run_after`` when
        given (and the Tasks backend can defer)."""
        ids = list(delivery_ids)
        task = self.task()
        if run_after is not None:
            if task_backends[self.backend].supports_defer:
                task = task.using(run_after=run_after)
            elif run_after > timezone.now():
                raise ValueError(
                    f"The Tasks backend {self.backend!r} cannot defer tasks (it does not "
                    f"support run_after), so deliveries {ids} due at "
                    f"{run_after.isoformat()} are not enqueued; webhooks_sweep hands them "
                    "over once they are due.")
        for batch in self.batches(ids):
            task.enqueue(batch)


def send(delivery_ids):
    """Send the deliveries ``delivery_ids`` that are due, through the configured backend's
    send path (so its retries are scheduled through it)."""
    run_queued(delivery_ids, name=f"a {SEND_TASK} task", logger=logger)


# The module's ``send`` is the Task made from the function above, as a worker finds it by
# its path. It is made on first use (``__getattr__`` below), not at import: making a Task
# validates it against a Tasks backend, and which one, and which queue, only the settings
# say (the default alias may not exist, or may not have the default queue).
_send = send
del send


def __getattr__(name):
    if name == "send":
        backend = get_backend()
        if isinstance(backend, TasksBackend):
            return backend.task()
        # dj-webhooks now uses another backend; run the tasks left from before on the
        # default Tasks backend (a worker sets the backend each task was enqueued on).
        return make_task(_send)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _aliases():
    """The aliases of the ``TASKS`` setting."""
    return list(task_backends)
