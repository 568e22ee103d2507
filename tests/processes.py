"""Processes started by tests on the test database: workers of dj-webhooks and of the
queues it sends through, each with its output in files, and what to check them with.

Only a database that several processes share can be used (PostgreSQL, MariaDB): each
process connects to the test database pytest-django created, through DATABASE_URL.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection, transaction

from djwebhooks import send_event
from djwebhooks.models import Delivery

ROOT = Path(__file__).resolve().parent.parent


def database_url():
    """Return a DATABASE_URL (as tests/settings.py reads it) for the current test database."""
    db = connection.settings_dict
    scheme = {"postgresql": "postgres", "mysql": "mysql"}[connection.vendor]
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    port = f":{db['PORT']}" if db["PORT"] else ""
    return (f"{scheme}://{quote(db['USER'] or '', safe='')}{password}@{db['HOST']}{port}/"
            f"{quote(db['NAME'], safe='')}")


class ServiceProcess:
    """A subprocess running ``argv`` with the test settings for subprocesses
    (``tests.settings_worker``, ``DJWEBHOOKS`` updated by ``overrides``) on the test
    database; its stdout and stderr go to files in ``directory``."""

    def __init__(self, directory, name, argv, overrides=None, env=None, new_session=False):
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings_worker",
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": database_url(),
            "DJWEBHOOKS_OVERRIDES": json.dumps(overrides or {}),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.name = name
        self.stdout_path = directory / f"{name}.stdout"
        self.stderr_path = directory / f"{name}.stderr"
        # Files, not pipes: a chatty worker can never block on a full pipe.
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            # A session of its own (new_session) lets stop() and kill() reach the children of
            # a process that forks (Celery's prefork pool).
            self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err,
                                            start_new_session=new_session)
        self.new_session = new_session

    @property
    def stdout(self):
        return self.stdout_path.read_text()

    @property
    def stderr(self):
        return self.stderr_path.read_text()

    def describe(self):
        """Return everything the process printed, for assertion messages."""
        return f"--- {self.name} stdout\n{self.stdout}--- {self.name} stderr\n{self.stderr}"

    def wait(self, timeout):
        """Return the exit code; fail the test if it is still running after ``timeout``."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} still running after {timeout} s\n{self.describe()}")

    def kill(self):
        """SIGKILL the process (and, in a session of its own, every process of it)."""
        if self.new_session:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        elif self.process.poll() is None:
            self.process.kill()

    def stop(self, grace=10):
        """Stop the process if it still runs: SIGTERM (to every process of its session, in
        one of its own), up to ``grace`` seconds to exit, then SIGKILL; and reap it.

        A worker that is stopped, not killed, leaves its broker tidy: a Celery worker
        killed while it scans Redis for unacknowledged messages holds the scan's lock for
        minutes, and no other worker gets such messages back meanwhile."""
        if self.process.poll() is None:
            if self.new_session:
                with suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGTERM)
            else:
                self.process.terminate()
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        if self.process.poll() is None or self.new_session:
            self.kill()
        self.process.wait(10)


class WorkerProcess(ServiceProcess):
    """A ``webhooks_worker`` subprocess."""

    def __init__(self, directory, name, args, overrides=None):
        super().__init__(directory, name,
                         [sys.executable, "-m", "django", "webhooks_worker", *args], overrides)

    def processed(self):
        """Return N from the worker's last line, "stopped after N deliveries"."""
        found = re.search(r"stopped after (\d+) deliver", self.stdout)
        assert found, self.describe()
        return int(found[1])


@contextmanager
def running(process):
    """Run ``process`` (a ``ServiceProcess``) for the block; kill it after."""
    try:
        yield process
    finally:
        process.stop()


def worker(tmp_path, name, *args, overrides=None):
    """Run a worker (``DJWEBHOOKS`` updated by ``overrides``) for the block; kill it after."""
    return running(WorkerProcess(tmp_path, name, args, overrides))


def wait_until(predicate, timeout, message):
    """Poll ``predicate`` until it is true; fail with ``message()`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout} s: {message()}")
        time.sleep(0.01)


def create_deliveries(user, count, targets=1):
    """Commit ``count`` distinct messages, each delivered to the user's ``targets`` targets."""
    with transaction.atomic():
        deliveries = [
            delivery
            for number in range(count)
            for delivery in send_event("project.update", {"number": number}, owner=user)
        ]
    assert len(deliveries) == count * targets
    return deliveries


def received_ids(receiver):
    """Count the requests the receiver got, by their ``webhook-id`` header."""
    return Counter(request.headers["webhook-id"] for request in list(receiver.requests))


def statuses():
    """Count the deliveries by status."""
    return Counter(Delivery.objects.values_list("status", flat=True))
