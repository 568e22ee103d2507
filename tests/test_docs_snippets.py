"""The verification snippets in docs/snippets/ accept what dj-webhooks sends, and nothing
else: they are run here against real signed requests."""

import importlib.util
import json
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from djwebhooks.senders.base import Senderable
from djwebhooks.signing import generate_secret

SNIPPETS = Path(__file__).resolve().parent.parent / "docs" / "snippets"


def signed_request(secret, *, secrets=None):
    """Headers and body exactly as dj-webhooks would send them now."""
    sender = Senderable(url="https://hooks.example/", payload={"title": "Dj"},
                        event="project.update", message_id="msg_snippet",
                        secret=secrets or secret,
                        timestamp=datetime(2026, 11, 28, tzinfo=timezone.utc))
    body = sender.get_body()
    return sender.get_headers(body, int(time.time())), body


NODE_RUNNER = """
const { verifyWebhook } = require(process.argv[process.argv.length - 1]);
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
try {
  const envelope = verifyWebhook(input.secret, input.headers, Buffer.from(input.body, "utf8"));
  console.log(JSON.stringify({ ok: true, envelope }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: error.message }));
}
"""


def run_node(secret, headers, body):
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed, so docs/snippets/verify.js cannot be run")
    result = subprocess.run(
        [node, "-e", NODE_RUNNER, str(SNIPPETS / "verify.js")],
        input=json.dumps({"secret": secret, "headers": headers, "body": body.decode()}),
        capture_output=True, text=True, timeout=30, check=True,
    )
    return json.loads(result.stdout)


def test_node_snippet_verifies_a_real_request():
    secret = generate_secret()
    headers, body = signed_request(secret)
    outcome = run_node(secret, headers, body)
    assert outcome == {"ok": True, "envelope": json.loads(body)}


def test_node_snippet_accepts_either_secret_during_a_rotation():
    old, new = generate_secret(), generate_secret()
    headers, body = signed_request(new, secrets=[new, old])
    assert run_node(old, headers, body)["ok"]
    assert run_node(new, headers, body)["ok"]


@pytest.mark.parametrize("tamper", ["body", "secret", "timestamp", "signature"])
def test_node_snippet_refuses_tampering(tamper):
    secret = generate_secret()
    headers, body = signed_request(secret)
    if tamper == "body":
        body = body.replace(b"Dj", b"DJ")
    elif tamper == "secret":
        secret = generate_secret()
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(int(time.time()) - 3600)
    else:
        headers["webhook-signature"] = "v2," + headers["webhook-signature"][3:]
    assert not run_node(secret, headers, body)["ok"]


def test_python_snippet_verifies_a_real_request():
    spec = importlib.util.spec_from_file_location("verify_snippet", SNIPPETS / "verify.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    secret = generate_secret()
    headers, body = signed_request(secret)
    assert module.verify_webhook(secret, headers, body) == json.loads(body)
    with pytest.raises(Exception, match="(?i)signature"):
        module.verify_webhook(generate_secret(), headers, body)


@pytest.mark.django_db(transaction=True)
def test_the_backend_example_sends_in_background_threads(settings, make_target, user,
                                                         receiver):
    # The example of docs/backends.rst, as written, against a real receiver.
    import sys

    from django.db import connection

    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip("SQLite's shared in-memory test database refuses a second writer at "
                    "once (shared-cache locking) where a database file waits its turn; CI "
                    "runs this on PostgreSQL and MariaDB")
    import time as clock

    from djwebhooks import send_event
    from djwebhooks.models import Delivery

    spec = importlib.util.spec_from_file_location("threadpool_backend",
                                                  SNIPPETS / "threadpool_backend.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["threadpool_backend"] = module
    try:
        spec.loader.exec_module(module)
        settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                               "BACKEND": "threadpool_backend.ThreadPoolBackend"}
        make_target()
        deliveries = [send_event("project.update", {"n": n}, owner=user)[0]
                      for n in range(5)]
        deadline = clock.monotonic() + 10
        while Delivery.objects.filter(status="succeeded").count() < 5:
            assert clock.monotonic() < deadline, list(Delivery.objects.values("status"))
            clock.sleep(0.02)
    finally:
        from djwebhooks.backends import get_backend

        get_backend().pool.shutdown(wait=True)
        del sys.modules["threadpool_backend"]
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(
        d.hash_value for d in deliveries)
