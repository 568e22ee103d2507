"""Real ``webhooks_worker`` processes on one PostgreSQL database, checked on the wire.

Each test commits deliveries (``transaction=True``), starts workers with
``python -m django webhooks_worker`` on the test database pytest-django created, and
compares what the receiver got (its ``webhook-id`` headers) with the rows left behind.
"""

import os
import signal
import subprocess
import time
from collections import Counter

import pytest
from django.db import connection, connections
from django.utils import timezone

from djwebhooks.models import Delivery, DeliveryAttempt, WebhookTarget
from tests.processes import (
    WorkerProcess,
    create_deliveries,
    received_ids,
    statuses,
    wait_until,
    worker,
)
from tests.receiver import Reply

DATABASE_BACKEND = "djwebhooks.backends.database.DatabaseBackend"
RESTART_POSTGRES = os.environ.get("DJWEBHOOKS_TEST_RESTART_POSTGRES") == "1"

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="starts worker processes that share the test database (SKIP LOCKED, rows "
        "committed across processes); run with DATABASE_URL=postgres://...",
    ),
]


@pytest.fixture(autouse=True)
def database_backend(settings):
    """Leave deliveries in the table, so only the worker processes send them."""
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "BACKEND": DATABASE_BACKEND}


def test_two_workers_share_one_table_without_duplicates(tmp_path, receiver, user, make_target):
    """Two workers drain one table together; each message goes out exactly once."""
    make_target()
    total = 200
    deliveries = create_deliveries(user, total)
    receiver.default = Reply(delay=0.02)
    args = ("--concurrency", "4", "--burst")

    with worker(tmp_path, "one", *args) as one, worker(tmp_path, "two", *args) as two:
        assert one.wait(30) == 0, one.describe()
        # Both drain the same table, so the second is done soon after the first.
        assert two.wait(10) == 0, two.describe()

    assert statuses() == {Delivery.Status.SUCCEEDED: total}
    assert set(Delivery.objects.values_list("attempt", flat=True)) == {1}
    assert DeliveryAttempt.objects.count() == total
    got = received_ids(receiver)
    assert set(got) == {delivery.hash_value for delivery in deliveries}
    assert set(got.values()) == {1}, got.most_common(3)
    # Claims are counted per worker; both must have taken part, and together claimed each once.
    assert one.processed() > 0, one.describe()
    assert two.processed() > 0, two.describe()
    assert one.processed() + two.processed() == total


def test_killed_worker_deliveries_are_sent_again_after_the_lease(tmp_path, receiver, user,
                                                                  make_target):
    """A SIGKILLed worker's claims expire; the next worker sends them with the same id."""
    make_target()
    total = 10
    deliveries = create_deliveries(user, total)
    # The first is answered at once (a target is sent one request at a time until it has
    # answered), then four at once, one a thread, take a second each.
    receiver.replies.append(Reply())
    receiver.default = Reply(delay=1.0)
    short = {"TOTAL_TIMEOUT": 2, "READ_TIMEOUT": 2}

    with worker(tmp_path, "killed", "--lease", "4", "--concurrency", "4",
                overrides=short) as killed:
        wait_until(lambda: receiver.in_flight == 4 and DeliveryAttempt.objects.exists(), 20,
                   lambda: f"receiver got {len(receiver.requests)}\n{killed.describe()}")
        killed.process.send_signal(signal.SIGKILL)
        assert killed.wait(10) == -signal.SIGKILL

    # Killed mid-request: every row but the first claimed (the worker claims ahead of its
    # threads), four of them sent, nothing recorded but the first.
    [first] = Delivery.objects.filter(status=Delivery.Status.SUCCEEDED)
    claimed = Delivery.objects.exclude(claimed_until=None)
    assert claimed.count() == total - 1
    assert statuses() == {Delivery.Status.SUCCEEDED: 1, Delivery.Status.PENDING: total - 1}
    assert DeliveryAttempt.objects.count() == 1
    in_flight = set(received_ids(receiver)) - {first.hash_value}
    assert len(in_flight) == 4
    assert in_flight <= set(claimed.values_list("hash_value", flat=True))

    receiver.default = Reply()
    # Start the next worker only once the claims are free, or --burst would exit past them.
    expires = max(claimed.values_list("claimed_until", flat=True))
    time.sleep(max(0.0, (expires - timezone.now()).total_seconds()) + 0.2)
    with worker(tmp_path, "next", "--burst", overrides=short) as following:
        assert following.wait(20) == 0, following.describe()
    assert following.processed() == total - 1  # all but the first, recorded before

    assert statuses() == {Delivery.Status.SUCCEEDED: total}
    assert set(Delivery.objects.values_list("attempt", flat=True)) == {1}
    got = received_ids(receiver)
    assert set(got) == {delivery.hash_value for delivery in deliveries}
    # The duplicates are exactly the killed worker's requests, sent again with their ids.
    assert {message for message, count in got.items() if count > 1} == in_flight
    assert set(got.values()) == {1, 2}


def test_a_killed_workers_deliveries_go_out_within_a_minute(tmp_path, receiver, user,
                                                            make_target):
    """Default settings: of two workers sharing 1,000 deliveries, one is killed with
    SIGKILL mid-run. The survivor renews its own claims; the dead one's expire within one
    lease (45 s), and the survivor sends them: every delivery has succeeded within 60 s of
    the kill, and each is recorded as succeeded exactly once."""
    make_target()
    total = 1000
    deliveries = create_deliveries(user, total)
    receiver.default = Reply(delay=0.01)

    with worker(tmp_path, "killed", "--concurrency", "4") as killed, \
            worker(tmp_path, "survivor", "--concurrency", "4") as survivor:
        wait_until(lambda: len(receiver.requests) >= 300, 30,
                   lambda: f"receiver got {len(receiver.requests)}\n{killed.describe()}")
        killed.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        assert killed.wait(10) == -signal.SIGKILL
        held = Delivery.objects.filter(status=Delivery.Status.PENDING).exclude(claimed_by="")
        assert held.exists(), "the killed worker held nothing: kill it earlier"
        wait_until(lambda: statuses() == {Delivery.Status.SUCCEEDED: total}, 60,
                   lambda: f"{statuses()}\n{survivor.describe()}")
        took = time.monotonic() - killed_at
        survivor.process.send_signal(signal.SIGTERM)
        assert survivor.wait(10) == 0, survivor.describe()

    assert took < 60, f"the last delivery succeeded {took:.1f} s after the kill"
    succeeded = Counter(DeliveryAttempt.objects.filter(success=True)
                        .values_list("delivery_id", flat=True))
    assert set(succeeded) == {delivery.pk for delivery in deliveries}
    assert set(succeeded.values()) == {1}
    assert set(received_ids(receiver)) == {delivery.hash_value for delivery in deliveries}
    assert "Traceback" not in survivor.stderr, survivor.describe()


def test_four_workers_record_failures_of_many_targets_without_deadlocks(tmp_path, receiver,
                                                                        user, make_target):
    """Every attempt fails, so every batch updates the health of several targets, in the
    order their results came back; four workers recording at once must never wait for
    each other's target rows in a circle."""
    targets = [make_target(target_url=f"{receiver.url}/t{n}/") for n in range(8)]
    receiver.default = Reply(status=500, body=b"down")
    events = 150
    create_deliveries(user, events, targets=len(targets))
    total = events * len(targets)
    no_retries = {"RETRY_SCHEDULE": []}
    args = ("--concurrency", "8", "--burst")

    workers = [WorkerProcess(tmp_path, f"w{n}", args, no_retries) for n in range(4)]
    try:
        for process in workers:
            assert process.wait(120) == 0, process.describe()
    finally:
        for process in workers:
            if process.process.poll() is None:
                process.process.kill()

    for process in workers:
        assert "deadlock" not in process.stderr.lower(), process.describe()
        assert "could not record" not in process.stderr, process.describe()
    assert statuses() == {Delivery.Status.FAILED: total}
    assert DeliveryAttempt.objects.count() == total
    assert set(Delivery.objects.values_list("attempt", flat=True)) == {1}
    assert sum(WebhookTarget.objects.values_list("consecutive_failures", flat=True)) == total


def test_sigterm_finishes_in_flight_deliveries_and_claims_no_more(tmp_path, receiver, user,
                                                                  make_target):
    """SIGTERM lets the requests in flight finish and be recorded, then exits 0."""
    make_target()
    total = 10
    create_deliveries(user, total)
    # One answered at once (the target is then heard from), then four in flight a second.
    receiver.replies.append(Reply())
    receiver.default = Reply(delay=1.0)

    with worker(tmp_path, "stopped", "--concurrency", "4") as stopped:
        wait_until(lambda: receiver.in_flight == 4, 20,
                   lambda: f"receiver got {len(receiver.requests)}\n{stopped.describe()}")
        signalled = time.monotonic()
        stopped.process.send_signal(signal.SIGTERM)
        code = stopped.wait(10)
        took = time.monotonic() - signalled
    assert code == 0, stopped.describe()
    # The one-second replies still in flight are the only thing worth waiting for.
    assert took < 3, f"SIGTERM took {took:.1f} s\n{stopped.describe()}"
    assert "SIGTERM: finishing the deliveries in flight" in stopped.stderr
    assert stopped.processed() == 5

    got = received_ids(receiver)
    assert len(receiver.requests) == 5 and set(got.values()) == {1}
    sent = Delivery.objects.filter(hash_value__in=got)
    assert set(sent.values_list("status", flat=True)) == {Delivery.Status.SUCCEEDED}
    assert DeliveryAttempt.objects.filter(delivery__in=sent, success=True).count() == 5
    assert DeliveryAttempt.objects.count() == 5
    unsent = Delivery.objects.exclude(hash_value__in=got)
    assert unsent.count() == total - 5
    assert set(unsent.values_list("status", "attempt", "claimed_by", "claimed_until")) == {
        (Delivery.Status.PENDING, 0, "", None)
    }


def pg_ctlcluster(action):
    """Run ``pg_ctlcluster <action>`` on the local cluster (the newest installed version)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
                   check=True, capture_output=True, timeout=60)


def restart_postgres(survivor):
    """Stop PostgreSQL until ``survivor`` notices, start it again, wait until it is ready."""
    # Stop and start rather than "restart": a restart is down for only ~0.2 s here, which a
    # worker polling every 0.2 s can miss, so its "cannot reach" log would be luck.
    pg_ctlcluster("stop")
    try:
        wait_until(lambda: "cannot reach the database" in survivor.stderr, 10,
                   survivor.describe)
    finally:
        pg_ctlcluster("start")
        db = connection.settings_dict
        ready = ["pg_isready", "-h", db["HOST"] or "127.0.0.1", "-p", db["PORT"] or "5432"]
        wait_until(lambda: subprocess.run(ready, capture_output=True, timeout=10).returncode == 0,
                   30, lambda: "PostgreSQL did not come back")
    # The restart broke this process's connection too.
    connections.close_all()


needs_restart = pytest.mark.skipif(
    not RESTART_POSTGRES,
    reason="restarts the local PostgreSQL server (pg_ctlcluster --skip-systemctl-redirect "
    "<version> main stop, then start); set DJWEBHOOKS_TEST_RESTART_POSTGRES=1 to run it",
)


@needs_restart
def test_worker_survives_a_postgres_restart(tmp_path, receiver, user, make_target):
    """A running worker loses the database, says so, reconnects and sends what comes next."""
    make_target()

    with worker(tmp_path, "survivor", "--interval", "0.2") as survivor:
        create_deliveries(user, 8)
        wait_until(lambda: statuses() == {Delivery.Status.SUCCEEDED: 8}, 20,
                   lambda: f"{statuses()}\n{survivor.describe()}")
        restart_postgres(survivor)
        create_deliveries(user, 8)
        # Well under the default lease (300 s): no delivery may wait for a claim to expire,
        # as one would if a sending thread kept its dead connection.
        wait_until(lambda: statuses() == {Delivery.Status.SUCCEEDED: 16}, 15,
                   lambda: f"{statuses()}\n{survivor.describe()}")
        survivor.process.send_signal(signal.SIGTERM)
        assert survivor.wait(10) == 0, survivor.describe()

    assert "the database is back" in survivor.stderr, survivor.describe()
    assert survivor.processed() == 16, survivor.describe()
    got = received_ids(receiver)
    assert set(got) == set(Delivery.objects.values_list("hash_value", flat=True))
    assert len(got) == 16 and set(got.values()) == {1}
    assert set(Delivery.objects.values_list("attempt", flat=True)) == {1}
