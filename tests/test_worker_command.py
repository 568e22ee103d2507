"""``manage.py webhooks_worker``: options, output, and refusals."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from djwebhooks import send_event
from djwebhooks.models import Delivery
from tests.helpers import by_mode

pytestmark = pytest.mark.django_db(transaction=True)


def test_burst_sends_what_is_due_and_reports(settings, make_target, user, receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "BACKEND": "djwebhooks.backends.database.DatabaseBackend"}
    make_target()
    for n in range(3):
        send_event("project.update", {"n": n}, owner=user)
    out = StringIO()
    call_command("webhooks_worker", "--burst", "--concurrency", "2", "--interval", "0.05",
                 "--worker-id", "test-worker", stdout=out, stderr=StringIO())
    mode = by_mode(threads="threads", async_="async")
    assert f"Worker test-worker sending webhooks ({mode}, concurrency 2)." in out.getvalue()
    assert "Worker test-worker stopped after 3 deliveries." in out.getvalue()
    assert Delivery.objects.filter(status="succeeded").count() == 3


@pytest.mark.parametrize(("args", "message"), [
    (["--concurrency", "0"], "--concurrency must be at least 1"),
    (["--interval", "0"], "--interval must be a positive number"),
    (["--max-deliveries", "0"], "--max-deliveries must be a positive number"),
    (["--lease", "-1"], "--lease must be a positive number"),
    (["--mode", "threads", "--concurrency", "1001"], r"^--concurrency must be at most 1000 "
     r"\(threads in one process\); run more processes, or use --mode async, to send more at "
     r"once\.$"),
    (["--mode", "threads", "--concurrency", "99999999999999999999999"],
     "--concurrency must be at most 1000"),
    (["--mode", "async", "--concurrency", "10001"], r"^--concurrency must be at most 10000 "
     r"with --mode async; run more processes to send more at once\.$"),
    (["--mode", "sync"], "invalid choice: 'sync'"),
    (["--interval", "nan"], r"^--interval must be a positive number of seconds, at most 86400 "
     r"\(a day\); got nan\.$"),
    (["--interval", "inf"], "--interval must be a positive number of seconds"),
    (["--interval=-inf"], "--interval must be a positive number of seconds"),
    (["--interval", "1e308"], "--interval must be a positive number of seconds"),
    (["--interval", "86401"], "--interval must be a positive number of seconds"),
    (["--lease", "inf"], r"^--lease must be a positive number of seconds, at most 86400 "
     r"\(a day\); got inf\.$"),
    (["--lease", "nan"], "--lease must be a positive number of seconds"),
    (["--lease", "1e300"], "--lease must be a positive number of seconds"),
    (["--lease", "86401"], "--lease must be a positive number of seconds"),
    (["--worker-id", "w" * 247], r"^--worker-id must be at most 246 characters long; got 247\.$"),
    (["--worker-id", "a\x00b"], r"^--worker-id 'a\\x00b' contains a NUL character\.$"),
    (["--lease", "35"], r"--lease 35 is too short: .* Give at least 36 seconds."),
])
def test_bad_options_are_explained(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("webhooks_worker", "--burst", *args, stdout=StringIO())


def test_the_largest_values_are_accepted():
    out = StringIO()
    call_command("webhooks_worker", "--burst", "--interval", "86400", "--lease", "86400",
                 "--max-deliveries", "99999999999999999999999", "--worker-id", "w" * 246,
                 stdout=out, stderr=StringIO())
    assert "stopped after 0 deliveries." in out.getvalue()


def test_missing_tables_say_to_migrate(settings, monkeypatch):
    from django.db import connection

    tables = connection.introspection.table_names
    monkeypatch.setattr(type(connection.introspection), "table_names",
                        lambda self, cursor=None: [t for t in tables(cursor)
                                                   if not t.startswith("djwebhooks_")])
    # Every table of the app is named, not only those the worker uses.
    with pytest.raises(CommandError, match=r"The dj-webhooks tables djwebhooks_webhooktarget, "
                                           r"djwebhooks_delivery, djwebhooks_deliveryattempt, "
                                           r"djwebhooks_ratebucket, "
                                           r"djwebhooks_workerheartbeat, djwebhooks_apitoken do "
                                           r"not exist in database 'default': run 'manage.py "
                                           r"migrate'\."):
        call_command("webhooks_worker", "--burst", stdout=StringIO())


def test_a_burst_worker_gives_up_after_repeated_database_errors(monkeypatch, caplog):
    from django.db import OperationalError

    from djwebhooks import queue

    calls = []

    def unreachable(*args, **kwargs):
        calls.append(1)
        raise OperationalError("could not connect to server: Connection refused")

    monkeypatch.setattr(queue, "claim", unreachable)
    with pytest.raises(CommandError, match=r"The database failed 5 times in a row \(could "
                                           r"not connect to server"):
        call_command("webhooks_worker", "--burst", "--interval", "0.001", stdout=StringIO(),
                     stderr=StringIO())
    assert len(calls) == 5
