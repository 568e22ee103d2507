"""Run the example project the way its README does, each command in a subprocess."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "example_project" / "manage.py"


def manage(tmp_path, *args, timeout=120):
    """Run ``example_project/manage.py *args`` on a throwaway database; return the result."""
    env = {**os.environ, "EXAMPLE_DB": str(tmp_path / "example.sqlite3")}
    # This suite's own settings module must not leak into the example project.
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def delivery_rows(output):
    """Return the delivery log's rows as lists of cells."""
    section = output.split("Delivery log", 1)[1].split("What the receivers got", 1)[0]
    return [line.split() for line in section.splitlines() if re.match(r"\s+\d+\s", line)]


@pytest.mark.example
def test_webhooks_demo_runs_and_can_run_again(tmp_path):
    for run in (1, 2):
        result = manage(tmp_path, "webhooks_demo", timeout=60)
        assert_ok(result)
        output = result.stdout

        assert "Backend:   djwebhooks.backends.database.DatabaseBackend" in output
        rows = delivery_rows(output)
        assert len(rows) == 3, output
        # id, event, url, status, attempts, HTTP per attempt, webhook-id, reason
        assert all(row[3] == "succeeded" for row in rows), output
        flaky = [row for row in rows if row[2].endswith("/webhooks/flaky/")]
        assert len(flaky) == 1, output
        assert flaky[0][4:6] == ["2", "503,200"], output
        others = [row for row in rows if row is not flaky[0]]
        assert all(row[4:6] == ["1", "200"] for row in others), output
        update_ids = {row[6] for row in rows if row[1] == "project.update"}
        assert len(update_ids) == 1, "both targets of one event share its webhook-id"

        # The requests only recorded the deliveries; the worker sent them afterwards.
        before_worker = output.split("3. Run the worker", 1)[0]
        for row in rows:
            assert f"delivery #{row[0]} to " in before_worker, output
        assert before_worker.count(": pending, 0 attempts") == 3, output
        assert "python example_project/manage.py webhooks_worker" in output
        assert re.search(r"attempt 1 answered 503 Service Unavailable\n\s+still pending, "
                         r"attempt 2 of \d+: Retry-After 1 \(the worker tries again in 1\.\d s\)",
                         output), output
        assert "attempt 2 answered 200 OK" in output
        assert "Finished: 4 attempts for 3 deliveries" in output
        retried = re.search(r"Delivery #(\d+) got 503 \(Retry-After: 1\) on attempt 1; the worker "
                            r"retried it (\d+\.\d) s later\nwith the same webhook-id (\S+), and "
                            r"attempt 2 succeeded\.", output)
        assert retried, output
        # The tables show the start of each webhook-id, the last lines all of it.
        assert retried[1] == flaky[0][0] and retried[3].startswith(flaky[0][6]), output
        assert 0.9 <= float(retried[2]) < 5, output

        assert "4 requests, 4 with a valid signature, 0 rejected." in output
        assert_one_request_shown(output)
        too_wide = [line for line in output.splitlines() if len(line) > 100]
        assert too_wide == [], "every line fits 100 columns"
        assert "All 3 deliveries succeeded" in output
        if run == 2:
            assert "project of an earlier run was deleted first" in output


def assert_one_request_shown(output):
    """The demo prints one request as the receiver got it: its line, headers and body."""
    shown = output.split("One request, as the receiver got it (POST /webhooks/receive/)\n", 1)
    assert len(shown) == 2, output
    head, _, rest = shown[1].partition("\n\n")
    lines = head.splitlines()
    assert lines[0] == "  POST /webhooks/receive/ HTTP/1.1", output
    headers = dict(line.strip().split(": ", 1) for line in lines[1:])
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("dj-webhooks/")
    assert re.fullmatch(r"msg_[0-9a-f]{32}", headers["webhook-id"])
    assert headers["webhook-timestamp"].isdigit()
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", headers["webhook-signature"])
    folded = rest.split("\n  (", 1)[0]
    body = "".join(line[2:] for line in folded.splitlines())
    assert len(body.encode()) == int(headers["Content-Length"]), output
    envelope = json.loads(body)
    assert envelope["type"] in {"project.create", "project.update"}
    assert envelope["data"]["slug"] == "webhooks-demo"
    assert f"({headers['Content-Length']} bytes; folded at 96 characters here" in rest


@pytest.mark.example
def test_example_project_tests_pass(tmp_path):
    result = manage(tmp_path, "test", "projects", "--noinput")
    assert_ok(result)
    assert re.search(r"Ran \d+ tests", result.stderr), result.stderr


@pytest.mark.example
def test_example_project_checks_and_migrations(tmp_path):
    assert_ok(manage(tmp_path, "check", timeout=60))
    assert_ok(manage(tmp_path, "makemigrations", "--check", "--dry-run", "projects", timeout=60))
