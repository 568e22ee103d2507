"""Standard Webhooks signing, checked against the spec's vector and the reference package."""

import base64
from datetime import datetime, timezone

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

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


def test_spec_vector_matches_the_reference_package():
    moment = datetime.fromtimestamp(SPEC_TIMESTAMP, timezone.utc)
    assert Webhook(SPEC_SECRET).sign(SPEC_ID, moment, SPEC_BODY) == SPEC_SIGNATURE


@pytest.mark.parametrize("junk", [
    "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",  # another version, a right MAC
    "v1",  # no comma
    "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",  # no version
    "v1,not-base64!",
    "v1,",
    ",",
    "v1,g0hM9SsE",  # base64, but too short
    "v1,ünïcode",
    "V1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",  # versions are case-sensitive
])
def test_verify_skips_other_versions_and_malformed_entries(junk):
    now = SPEC_TIMESTAMP
    verify = signing.verify
    assert not verify(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, junk, now=now)
    # Beside a valid signature, in any position, junk is ignored rather than fatal.
    for header in (f"{junk} {SPEC_SIGNATURE}", f"{SPEC_SIGNATURE} {junk}"):
        assert verify(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, header, now=now)


@pytest.mark.parametrize("header", [None, b"v1,abc", 42, "   "])
def test_verify_is_false_for_headers_that_are_not_text(header):
    assert not signing.verify(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, header,
                              now=SPEC_TIMESTAMP)


@pytest.mark.parametrize("value", ["+1614265330", " 1614265330", "1614265330 ", "1_614_265_330",
                                   "1614265330.0", "-5", "", "١٦١٤٢٦٥٣٣٠", "9" * 5000, None,
                                   True, 1614265330.0])
def test_timestamps_must_be_whole_seconds_in_ascii_digits(value):
    assert signing.parse_timestamp(value) is None
    assert not signing.verify(SPEC_SECRET, SPEC_ID, value, SPEC_BODY, SPEC_SIGNATURE,
                              now=SPEC_TIMESTAMP)


def test_parse_timestamp():
    assert signing.parse_timestamp("1614265330") == 1614265330
    assert signing.parse_timestamp(1614265330) == 1614265330


def test_parse_signatures_keeps_only_v1_macs():
    other = base64.b64encode(bytes(range(32))).decode()
    header = f"v2,{other} v1,bm9wZQ== junk v1,{other} {SPEC_SIGNATURE}"
    assert signing.parse_signatures(header) == [
        bytes(range(32)), base64.b64decode(SPEC_SIGNATURE[3:])
    ]


def test_secrets_without_base64_padding_are_accepted_like_the_reference_does():
    key = b"twenty-five bytes of key!"
    padded = "whsec_" + base64.b64encode(key).decode()
    assert padded.endswith("=")
    unpadded = padded.rstrip("=")
    moment = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    ours = signing.sign(unpadded, "msg_1", int(moment.timestamp()), "{}")
    assert ours == signing.sign(padded, "msg_1", int(moment.timestamp()), "{}")
    assert ours == Webhook(unpadded).sign("msg_1", moment, "{}")


@pytest.mark.parametrize("secret", ["", "whsec_"])
def test_an_empty_secret_is_refused(secret):
    # With an empty key anyone could make the signature.
    with pytest.raises(ValueError, match="must not be empty"):
        signing.sign(secret, "msg_1", 1, "{}")


def test_signature_made_by_the_reference_package_verifies_here():
    secret = signing.generate_secret()
    moment = datetime.now(timezone.utc).replace(microsecond=0)
    body = '{"type":"project.update","data":{"ü":1}}'
    header = Webhook(secret).sign("msg_3", moment, body)
    timestamp = int(moment.timestamp())
    assert signing.verify(secret, "msg_3", timestamp, body, header)
    assert signing.verify(secret, "msg_3", str(timestamp), body.encode(), header)
    assert not signing.verify(signing.generate_secret(), "msg_3", timestamp, body, header)


def test_two_secrets_during_a_rotation_agree_with_the_reference_package():
    new, old, stranger = (signing.generate_secret() for _ in range(3))
    moment = datetime.now(timezone.utc).replace(microsecond=0)
    timestamp = int(moment.timestamp())
    body = '{"a":1}'

    # Ours, signed with both secrets (as sent during a grace period): the reference
    # package accepts it with either secret, and only with those.
    ours = " ".join(signing.sign(secret, "msg_4", timestamp, body) for secret in (new, old))
    headers = {"webhook-id": "msg_4", "webhook-timestamp": str(timestamp),
               "webhook-signature": ours}
    assert Webhook(new).verify(body, headers) == {"a": 1}
    assert Webhook(old).verify(body, headers) == {"a": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, headers)

    # The reference package's, signed with both: ours accepts it with either.
    theirs = " ".join(Webhook(secret).sign("msg_4", moment, body) for secret in (new, old))
    assert theirs == ours
    assert signing.verify(new, "msg_4", timestamp, body, theirs)
    assert signing.verify(old, "msg_4", timestamp, body, theirs)
    assert not signing.verify(stranger, "msg_4", timestamp, body, theirs)
