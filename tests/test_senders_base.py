"""``Senderable`` on its own: no settings, no models, one attempt per ``send()``."""

import ipaddress
import json
import subprocess
import sys
from datetime import datetime, timezone

from standardwebhooks import Webhook

from djwebhooks.senders.base import FORM, AttemptResult, Senderable
from djwebhooks.signing import generate_secret
from djwebhooks.ssrf import URLPolicy
from tests.receiver import Reply

#: The test receivers listen on loopback, which senders refuse unless allowed.
LOOPBACK = URLPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))


def make(url, **options):
    options.setdefault("payload", {"a": 1})
    options.setdefault("policy", LOOPBACK)
    return Senderable(
        url=url,
        event="thing.happened",
        message_id="msg_base",
        secret=options.pop("secret", generate_secret()),
        timestamp=datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc),
        **options,
    )


def test_send_makes_one_signed_attempt_and_notifies(receiver):
    notified = []

    class Recording(Senderable):
        def notify(self, result):
            notified.append(result)

    secret = generate_secret()
    sender = Recording(url=receiver.url + "/x/", payload={"a": 1}, event="thing.happened",
                       message_id="msg_base", secret=secret,
                       timestamp=datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc),
                       extra={"tenant": "t1"}, user_agent="tests/1", policy=LOOPBACK)
    result = sender.send()

    assert notified == [result]
    assert isinstance(result, AttemptResult)
    assert (result.success, result.response_status, result.notification) == (True, 200, "200 OK")
    [request] = receiver.requests
    assert json.loads(request.body) == {
        "type": "thing.happened", "timestamp": "2026-11-28T12:00:00Z", "tenant": "t1",
        "data": {"a": 1},
    }
    assert request.headers["user-agent"] == "tests/1"
    Webhook(secret).verify(request.body, request.headers)


def test_cached_properties_and_overridable_getters(receiver):
    class Upper(Senderable):
        def get_payload(self):
            return {k.upper(): v for k, v in self._payload.items()}

    sender = Upper(url=receiver.url, payload={"a": 1}, event="e", message_id="m",
                   secret=generate_secret(),
                   timestamp=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert sender.url == receiver.url
    assert sender.payload == {"A": 1}
    assert json.loads(sender.jsonified_payload)["data"] == {"A": 1}


def test_private_addresses_are_refused_by_default(receiver):
    result = make(receiver.url, policy=None).send()
    assert (result.success, result.notification) == (False, "Refused")
    assert result.error.startswith("127.0.0.1 is not a public address")
    assert receiver.requests == []


def test_form_body():
    sender = make("http://127.0.0.1:9/", content_type=FORM)
    assert sender.get_body().startswith(b"payload=%7B%22type%22")


def test_failure_result(closed_port_url):
    result = make(closed_port_url).send()
    assert result.success is False
    assert result.response_status is None
    assert result.error.startswith("Connection refused by 127.0.0.1:")
    assert result.notification == "Connection failed"


def test_server_error_result(receiver):
    receiver.default = Reply(status=503, body=b"later")
    result = make(receiver.url).send()
    assert (result.success, result.response_status, result.response_message) == (
        False, 503, "later"
    )


def test_pure_modules_need_no_django_settings_or_models():
    code = (
        "import sys\n"
        "import djwebhooks.senders.base, djwebhooks.signing, djwebhooks.transport\n"
        "loaded = [m for m in ('django.conf', 'django.db', 'djwebhooks.models') "
        "if m in sys.modules]\n"
        "print(loaded)\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout
    assert out.strip() == "[]"
