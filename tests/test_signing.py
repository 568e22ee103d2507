"""Standard Webhooks signing, checked against the spec's vector and the reference package."""

import base64
from datetime import datetime, timezone

import pytest
from standardwebhooks import Webhook

from djwebhooks import signing

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_spec_vector():
    assert signing.sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    assert signing.sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.encode()) == (
        SPEC_SIGNATURE
    )


def test_generated_secret_format():
    secret = signing.generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[len("whsec_"):])) == 24
    assert signing.generate_secret() != secret


def test_reference_package_agrees():
    secret = signing.generate_secret()
    moment = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    body = '{"type":"project.update","data":{"ü":1}}'
    ours = signing.sign(secret, "msg_1", int(moment.timestamp()), body)
    assert ours == Webhook(secret).sign("msg_1", moment, body)


def test_verify():
    now = SPEC_TIMESTAMP + 10
    verify = signing.verify
    assert verify(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, SPEC_SIGNATURE, now=now)
    # Several signatures, as sent while a secret is rotated: any match is enough.
    assert verify(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY,
                  f"v1,bm9wZQ== {SPEC_SIGNATURE}", now=now)
    assert not verify(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY + " ", SPEC_SIGNATURE,
                      now=now)
    assert not verify(signing.generate_secret(), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY,
                      SPEC_SIGNATURE, now=now)
    assert not verify(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, "", now=now)
    assert not verify(SPEC_SECRET, SPEC_ID, "soon", SPEC_BODY, SPEC_SIGNATURE, now=now)


@pytest.mark.parametrize("offset", [-301, 301])
def test_verify_refuses_timestamps_outside_the_tolerance(offset):
    assert not signing.verify(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, SPEC_SIGNATURE,
                              now=SPEC_TIMESTAMP + offset)
    assert signing.verify(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, SPEC_SIGNATURE,
                          now=SPEC_TIMESTAMP + offset, tolerance=400)


def test_signature_made_here_verifies_with_the_reference_package():
    secret = signing.generate_secret()
    timestamp = int(datetime.now(timezone.utc).timestamp())
    body = '{"a":1}'
    headers = {
        "webhook-id": "msg_2",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signing.sign(secret, "msg_2", timestamp, body),
    }
    assert Webhook(secret).verify(body, headers) == {"a": 1}
