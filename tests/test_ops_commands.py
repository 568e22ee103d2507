"""Operating it: the log line of every attempt, and ``webhooks_worker -v 2`` showing them."""

import logging
import os
import re
import subprocess
import sys
import textwrap
from io import StringIO

import pytest
from django.core.management import call_command

from djwebhooks import send_event
from djwebhooks.models import Delivery
from djwebhooks.sending import send_deliveries
from djwebhooks.worker import Worker
from tests.processes import ROOT
from tests.receiver import Reply

pytestmark = pytest.mark.django_db(transaction=True)

MOMENT = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@pytest.fixture
def database_backend(settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "BACKEND": "djwebhooks.backends.database.DatabaseBackend"}


def attempt_lines(caplog):
    return [record for record in caplog.records if record.name == "djwebhooks.sending"
            and " attempt 1: " in record.getMessage()]


def test_a_success_names_the_target_the_status_and_the_time_taken(make_target, user,
                                                                   receiver, caplog):
    target = make_target()
    with caplog.at_level(logging.INFO, logger="djwebhooks"):
        [delivery] = send_event("project.update", {}, owner=user)
    [line] = attempt_lines(caplog)
    assert line.levelno == logging.INFO
    assert re.fullmatch(
        rf"Delivery {delivery.pk} \(project.update, {delivery.hash_value}\) to target "
        rf"{target.pk} \({re.escape(target.target_url)}\) attempt 1: 200 OK, in \d+ ms; "
        r"succeeded\.", line.getMessage()), line.getMessage()


def test_an_inline_retry_says_a_worker_or_the_sweep_must_make_it(make_target, user,
                                                                  receiver, caplog):
    receiver.replies = [Reply(status=503)]
    target = make_target()
    with caplog.at_level(logging.INFO, logger="djwebhooks"):
        [delivery] = send_event("project.update", {}, owner=user)
    delivery.refresh_from_db()
    [line] = attempt_lines(caplog)
    assert line.levelno == logging.WARNING
    wait = round((delivery.next_attempt_at - delivery.modified).total_seconds())
    assert line.getMessage() == (
        f"Delivery {delivery.pk} (project.update, {delivery.hash_value}) to target "
        f"{target.pk} ({target.target_url}) attempt 1: 503 Service Unavailable, in "
        f"{line.getMessage().split(' in ')[1].split(' ms')[0]} ms; next attempt in {wait} s, "
        f"at {delivery.next_attempt_at:%Y-%m-%dT%H:%M:%SZ} (attempt 2 of 8: scheduled "
        "retry): this backend makes no retries itself; a running webhooks_worker, or "
        "webhooks_sweep run every minute, must send it.")


def test_a_last_failure_says_it_failed_for_good(settings, make_target, user, closed_port_url,
                                                caplog):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RETRY_SCHEDULE": []}
    make_target(target_url=closed_port_url)
    with caplog.at_level(logging.INFO, logger="djwebhooks"):
        send_event("project.update", {}, owner=user)
    [line] = attempt_lines(caplog)
    message = line.getMessage()
    port = closed_port_url.split(":")[2].split("/")[0]
    assert f" to target {Delivery.objects.get().webhook_target_id} ({closed_port_url}) " \
           f"attempt 1: Connection refused by 127.0.0.1:{port}, in " in message
    assert "Details" not in message  # the sentence only: the details are on the attempt
    assert message.endswith(" ms; failed for good: gave up after 1 attempt.")


def test_a_worker_retry_says_when_only(database_backend, make_target, user, receiver, caplog):
    receiver.replies = [Reply(status=500)]
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    with caplog.at_level(logging.INFO, logger="djwebhooks"):
        Worker(burst=True, interval=0.01).run()
    [line] = attempt_lines(caplog)
    assert re.search(rf"attempt 1: 500 Internal Server Error, in \d+ ms; next attempt "
                     rf"in \d+ s, at {MOMENT} \(attempt 2 of 8: scheduled retry\)\.$",
                     line.getMessage()), line.getMessage()
    assert line.getMessage().startswith(f"Delivery {delivery.pk} ")


def test_a_retry_handed_to_the_backend_says_so(database_backend, make_target, user, receiver,
                                               caplog):
    receiver.default = Reply(status=503)
    make_target()
    first, second = (send_event("project.update", {"n": n}, owner=user)[0] for n in (1, 2))
    handed = []
    with caplog.at_level(logging.INFO, logger="djwebhooks"):
        send_deliveries([first.pk], retry=lambda ids, run_after: handed.append(ids))
        send_deliveries([second.pk], retry=handed.append, retry_within=0)
    near, far = (line.getMessage() for line in attempt_lines(caplog))
    assert handed == [[first.pk]]
    assert near.endswith("(attempt 2 of 8: scheduled retry), handed to the backend for then.")
    assert far.endswith("(attempt 2 of 8: scheduled retry): too far ahead for the backend's "
                        "queue; webhooks_sweep hands it over once it is due.")


def test_the_target_url_is_logged_without_credentials(make_target, user, receiver, caplog):
    url = receiver.url.replace("http://", "http://alice:hunter2@") + "/hook/?token=abc123"
    target = make_target(target_url=url)
    with caplog.at_level(logging.INFO, logger="djwebhooks"):
        send_event("project.update", {}, owner=user)
    [line] = attempt_lines(caplog)
    assert f"to target {target.pk} ({receiver.url}/hook/?…) attempt 1: " in line.getMessage()
    assert "hunter2" not in caplog.text and "abc123" not in caplog.text


def test_worker_verbosity_2_shows_each_attempt(database_backend, make_target, user, receiver,
                                               caplog):
    make_target()
    send_event("project.update", {}, owner=user)
    send_event("project.update", {}, owner=user)
    logger = logging.getLogger("djwebhooks")
    # caplog's handler sits on the root logger: records reach it at the level the
    # djwebhooks loggers let through.
    call_command("webhooks_worker", "--burst", "--max-deliveries", "1", stdout=StringIO(),
                 stderr=StringIO())
    assert attempt_lines(caplog) == []
    call_command("webhooks_worker", "--burst", "-v", "2", stdout=StringIO(), stderr=StringIO())
    [line] = attempt_lines(caplog)
    assert line.levelno == logging.INFO and "attempt 1: 200 OK" in line.getMessage()
    assert logger.level == logging.NOTSET  # as it was


SETUP = textwrap.dedent("""
    import sys

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone

    from djwebhooks.models import Delivery, WebhookTarget

    call_command("migrate", verbosity=0)
    owner = get_user_model().objects.create_user("audreyr")
    for n, url in enumerate(sys.argv[1:]):
        target = WebhookTarget.objects.create(owner=owner, event="project.update",
                                              target_url=url)
        Delivery.objects.create(webhook_target=target, event="project.update",
                                hash_value=f"msg_{n}", next_attempt_at=timezone.now())
""")


def test_the_worker_command_at_verbosity_2_logs_to_stderr(tmp_path, receiver):
    """In a process of its own, with no logging configured: -v 2 writes a line per attempt
    on standard error, -v 1 only the failures (Python's last resort, WARNING and above)."""
    receiver.routes["/down/"] = Reply(status=503)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}

    def run(*args):
        return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=60, check=True)

    run("-c", SETUP, receiver.url + "/up/", receiver.url + "/down/", receiver.url + "/later/")
    worker = run("-m", "django", "webhooks_worker", "--burst", "--interval", "0.05",
                 "--max-deliveries", "2", "-v", "2")
    lines = [line for line in worker.stderr.splitlines() if " attempt 1: " in line]
    assert len(lines) == 2, worker.stderr
    up, down = sorted(lines, key=lambda line: "/down/" in line)
    assert re.search(rf"INFO djwebhooks.sending \[MainThread\] Delivery \d+ \(project.update, "
                     rf"msg_0\) to target 1 \({receiver.url}/up/\) attempt 1: 200 OK, in "
                     r"\d+ ms; succeeded\.$", up), up
    assert re.search(rf"WARNING djwebhooks.sending \[MainThread\] .* to target 2 "
                     rf"\({receiver.url}/down/\) attempt 1: 503 Service Unavailable, in "
                     rf"\d+ ms; next attempt in \d+ s, at {MOMENT} \(attempt 2 of 8: "
                     r"scheduled retry\)\.$", down), down
    # One more: msg_2, due since the start. (On a slow machine the failed one's retry, 5 s
    # on, may be due as well by now; it is due later, so it is claimed after.)
    quiet = run("-m", "django", "webhooks_worker", "--burst", "--interval", "0.05",
                "--max-deliveries", "1")
    assert " attempt 1: " not in quiet.stderr  # msg_2 succeeded: INFO, not shown at -v 1
    assert "Worker " in quiet.stdout and "stopped after 1 delivery." in quiet.stdout
