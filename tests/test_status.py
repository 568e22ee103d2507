"""The figures of ``djwebhooks.status`` and ``manage.py webhooks_status``."""

import json
import re
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from djwebhooks import _sql
from djwebhooks.management.commands.webhooks_status import WIDTH, duration
from djwebhooks.models import Delivery, WebhookTarget, WorkerHeartbeat
from djwebhooks.status import status
from tests.test_sql import overdue_plan, plan_nodes

pytestmark = pytest.mark.django_db


@pytest.fixture
def target(user):
    return WebhookTarget.objects.create(owner=user, event="project.update",
                                        target_url="https://a.example/")


def delivery(target, name, **fields):
    return Delivery.objects.create(webhook_target=target, event="project.update",
                                   hash_value=name, **fields)


@pytest.fixture
def queue_state(target, user):
    """Pending deliveries due 10 minutes and 1 minute ago, one claimed, one not yet due,
    finished ones; a failing target and a disabled one; a worker running, one stopped and
    one long gone."""
    now = _sql.db_now("default")
    oldest = delivery(target, "oldest", next_attempt_at=now - timedelta(minutes=10))
    delivery(target, "recent", next_attempt_at=now - timedelta(minutes=1))
    # Due for an hour but held by a live claim: being sent, not waiting.
    delivery(target, "claimed", next_attempt_at=now - timedelta(hours=1),
             claimed_by="w:1", claimed_until=now + timedelta(minutes=1))
    delivery(target, "later", next_attempt_at=now + timedelta(hours=1))
    delivery(target, "done", status="succeeded")
    delivery(target, "failed", status="failed")
    WebhookTarget.objects.filter(pk=target.pk).update(consecutive_failures=3)
    WebhookTarget.objects.create(owner=user, event="project.update",
                                 target_url="https://off.example/", is_active=False,
                                 consecutive_failures=20)
    WebhookTarget.objects.create(owner=user, event="project.update",
                                 target_url="https://fine.example/")
    worker = dict(hostname="web-1", concurrency=8, pid=4242)
    WorkerHeartbeat.objects.create(claimant="web-1:4242:aaaa", worker_id="web-1:4242",
                                   started_at=now - timedelta(seconds=100),
                                   last_seen=now - timedelta(seconds=2), handled=490,
                                   **worker)
    WorkerHeartbeat.objects.create(claimant="web-1:1:bbbb", worker_id="web-1:1",
                                   started_at=now - timedelta(seconds=100),
                                   last_seen=now - timedelta(seconds=5),
                                   stopped_at=now - timedelta(seconds=5), **worker)
    WorkerHeartbeat.objects.create(claimant="web-2:7:cccc", worker_id="web-2:7",
                                   started_at=now - timedelta(hours=1),
                                   last_seen=now - timedelta(minutes=2), **worker)
    return oldest


def test_status_reads_every_figure(queue_state):
    figures = status()
    assert (figures.pending, figures.due) == (4, 2)
    assert figures.oldest_due_id == queue_state.pk
    assert 600 <= figures.oldest_due_seconds < 630
    assert (figures.failing_targets, figures.disabled_targets) == (1, 1)
    [worker] = figures.workers
    assert (worker.worker_id, worker.hostname, worker.pid, worker.concurrency,
            worker.handled) == ("web-1:4242", "web-1", 4242, 8, 490)
    assert worker.per_second == pytest.approx(5.0)  # 490 in the 98 s between its beats


def test_status_of_an_empty_queue(db):
    figures = status()
    assert (figures.pending, figures.due, figures.oldest_due_seconds,
            figures.oldest_due_id, figures.workers) == (0, 0, None, None, ())


def test_a_worker_before_its_second_heartbeat_has_no_rate(db):
    now = _sql.db_now("default")
    WorkerHeartbeat.objects.create(claimant="w:1:a", worker_id="w:1", hostname="w", pid=1,
                                   concurrency=1, started_at=now, last_seen=now)
    assert status().workers[0].per_second is None


def run(*args):
    out, err = StringIO(), StringIO()
    call_command("webhooks_status", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_table(queue_state):
    out, _ = run()
    lines = out.splitlines()
    assert re.fullmatch(rf"Oldest due has waited {' ' * 12}10m 0\ds \(delivery "
                        rf"{queue_state.pk}\)", lines.pop(2))
    assert lines[:5] == [
        "Deliveries pending                4",
        "Due, waiting for a sender         2",
        "Failing targets (active)          1",
        "Disabled targets                  1",
        "Workers seen in the last 60 s     1",
    ]
    assert lines[6].split() == ["Worker", "Host", "PID", "Threads", "Running", "Handled",
                                "Per", "second"]
    assert lines[7].split() == ["web-1:4242", "web-1", "4242", "8", "1m", "38s", "490", "5.00"]
    assert max(len(line) for line in lines) <= WIDTH


def test_a_long_worker_id_is_cut_to_fit(db):
    now = _sql.db_now("default")
    WorkerHeartbeat.objects.create(claimant="x:1:a", worker_id="w" * 246, hostname="h" * 255,
                                   pid=2**31 - 1, concurrency=1000, started_at=now,
                                   last_seen=now, handled=10**15)
    out, _ = run()
    assert max(len(line) for line in out.splitlines()) <= WIDTH
    assert "w" * 28 + "…" in out


def test_json(queue_state):
    out, _ = run("--json")
    figures = json.loads(out)
    assert sorted(figures) == ["disabled_targets", "due", "failing_targets", "now",
                               "oldest_due_id", "oldest_due_seconds", "pending", "workers"]
    assert (figures["pending"], figures["due"], figures["oldest_due_id"]) == (
        4, 2, queue_state.pk)
    assert figures["now"].endswith("Z")
    [worker] = figures["workers"]
    assert worker == {
        "worker_id": "web-1:4242", "claimant": "web-1:4242:aaaa", "hostname": "web-1",
        "pid": 4242, "concurrency": 8, "handled": 490, "per_second": 5.0,
        "started_at": worker["started_at"], "last_seen": worker["last_seen"],
    }
    assert worker["started_at"].endswith("Z")


def test_max_age_passes_while_the_oldest_is_younger(queue_state):
    out, err = run("--max-age", "11m")
    assert "Deliveries pending" in out
    assert err == ""


def test_max_age_fails_when_the_oldest_is_older(queue_state):
    with pytest.raises(CommandError, match=rf"^The oldest due delivery \({queue_state.pk}\) "
                       r"has waited 10m \d\ds, longer than --max-age 5m: no worker is "
                       r"sending \(start webhooks_worker") as raised:
        run("--max-age", "5m", "--json")
    assert raised.value.returncode == 1


def test_max_age_with_nothing_due(db):
    out, _ = run("--max-age", "0s")
    assert "none due" in out


def test_a_bad_max_age_is_explained(db):
    with pytest.raises(CommandError, match=r"^--max-age 'soon' is not a duration such as "
                                           r"90s, 5m or 1h\.$"):
        run("--max-age", "soon")


@pytest.mark.django_db(transaction=True)
def test_the_health_check_exit_status(queue_state, tmp_path):
    """From a shell, --max-age fails with status 1 and one line on stderr."""
    if connection.vendor == "sqlite":
        pytest.skip("the subprocess needs a database it can share (PostgreSQL or MariaDB)")
    from tests.processes import ROOT, database_url

    def check(max_age):
        return subprocess.run(
            [sys.executable, "-m", "django", "webhooks_status", "--max-age", max_age],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
            env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT),
                 "DATABASE_URL": database_url(), "PATH": "/usr/bin:/bin"})

    passed, failed = check("1h"), check("5m")
    assert passed.returncode == 0, passed.stderr
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1
    assert failed.stderr.startswith("CommandError: The oldest due delivery")


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59.9, "59s"), (60, "1m 00s"), (3599, "59m 59s"), (3600, "1h 00m"),
    (86399, "23h 59m"), (86400 * 3 + 7200, "3d 02h"),
])
def test_durations_read_as_people_read_them(seconds, text):
    assert duration(seconds) == text


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql",
                    reason="reads the query plan with EXPLAIN ANALYZE; run with "
                    "DATABASE_URL=postgres://...")
def test_the_oldest_due_is_read_through_the_pending_index(target):
    Delivery.objects.bulk_create(
        Delivery(webhook_target=target, event="project.update", hash_value=f"done_{n}",
                 status="succeeded", next_attempt_at=None) for n in range(5000))
    for n in range(20):
        delivery(target, f"due_{n}", next_attempt_at=timezone.now() - timedelta(seconds=n))
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Delivery._meta.db_table}")
    now = _sql.db_now("default")
    rows = (Delivery.objects.due(now).in_turn(now).order_by("next_attempt_at", "pk")
            .values_list("pk", "next_attempt_at")[:1])
    sql, params = rows.query.sql_with_params()
    plan = overdue_plan(sql, params)
    # Those that ran on the deliveries: with no ordered target, the checks of an ordered
    # target's line (subplans on the line index) never do.
    scans = [node for node in plan_nodes(plan) if "Scan" in node["Node Type"]
             and node.get("Relation Name") == Delivery._meta.db_table
             and node.get("Actual Loops")]
    assert [node.get("Index Name") for node in scans] == ["djwebhooks_delivery_due"], plan
    assert sum(node["Actual Rows"] for node in scans) <= 1, plan
    assert status().oldest_due_seconds >= 19
