"""``manage.py webhooks_worker``: options, output, and refusals."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from djwebhooks import send_event
from djwebhooks.models import Delivery

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
    assert "Worker test-worker sending webhooks (concurrency 2)." in out.getvalue()
    assert "Worker test-worker stopped after 3 deliveries." in out.getvalue()
    assert Delivery.objects.filter(status="succeeded").count() == 3


@pytest.mark.parametrize(("args", "message"), [
    (["--concurrency", "0"], "--concurrency must be at least 1"),
    (["--interval", "0"], "--interval must be a positive number"),
    (["--max-deliveries", "0"], "--max-deliveries must be a positive number"),
    (["--lease", "-1"], "--lease must be a positive number"),
    (["--concurrency", "1001"], r"^--concurrency must be at most 1000 \(threads in one "
     r"process\); run more processes to send more at once\.$"),
    (["--concurrency", "99999999999999999999999"], "--concurrency must be at most 1000"),
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
    (["--worker-id", "w" * 256], r"^--worker-id must be at most 255 characters long; got 256\.$"),
    (["--worker-id", "a\x00b"], r"^--worker-id 'a\\x00b' contains a NUL character\.$"),
])
def test_bad_options_are_explained(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("webhooks_worker", "--burst", *args, stdout=StringIO())


def test_the_largest_values_are_accepted():
    out = StringIO()
    call_command("webhooks_worker", "--burst", "--interval", "86400", "--lease", "86400",
                 "--max-deliveries", "99999999999999999999999", "--worker-id", "w" * 255,
                 stdout=out, stderr=StringIO())
    assert "stopped after 0 deliveries." in out.getvalue()
