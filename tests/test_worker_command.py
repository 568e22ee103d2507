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
])
def test_bad_options_are_explained(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("webhooks_worker", "--burst", *args, stdout=StringIO())
