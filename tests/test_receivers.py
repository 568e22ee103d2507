"""Receiving webhooks: ``verify_webhook`` and ``@webhook_receiver`` against hostile requests."""

import json
import logging
import threading
import time
from datetime import datetime, timezone
from urllib.parse import urlencode

import pytest
from django.core.cache import caches
from django.core.exceptions import SuspiciousOperation
from django.test import Client

from djwebhooks import signing
from djwebhooks.exceptions import ReplayedWebhookError, SignatureVerificationError
from djwebhooks.receivers import verify_webhook, webhook_receiver
from djwebhooks.senders.base import FORM, JSON, Senderable
from tests import receiver_views
from tests.receiver_views import OTHER_SECRET, SECRET

ENVELOPE = {"type": "project.update", "timestamp": "2026-11-28T12:00:00Z", "data": {"n": 1}}
BODY = json.dumps(ENVELOPE, separators=(",", ":")).encode()


def signed(body=BODY, *, secret=SECRET, msg_id="msg_1", timestamp=None, signature=None,
           **overrides):
    """Standard Webhooks headers for ``body``; ``overrides`` replace (or, as None, drop) them."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    if signature is None:
        signature = signing.sign(secret, msg_id, timestamp, body)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
               "webhook-signature": signature}
    headers.update({name.replace("_", "-"): value for name, value in overrides.items()})
    return {name: value for name, value in headers.items() if value is not None}


def make_request(rf, body=BODY, headers=None, content_type=JSON, path="/hooks/"):
    return rf.post(path, data=body, content_type=content_type,
                   headers=signed(body) if headers is None else headers)


def refusal(rf, body=BODY, headers=None, content_type=JSON, secret=SECRET, **options):
    """The message of the ``SignatureVerificationError`` that the request gets."""
    request = make_request(rf, body, headers, content_type)
    with pytest.raises(SignatureVerificationError) as info:
        verify_webhook(request, secret, **options)
    return str(info.value)


@pytest.fixture(autouse=True)
def fresh_state():
    caches["default"].clear()
    receiver_views.calls.clear()
    receiver_views.while_running.clear()
    yield
    caches["default"].clear()


# verify_webhook
# --------------


def test_returns_the_envelope_of_a_valid_request(rf):
    assert verify_webhook(make_request(rf), SECRET) == ENVELOPE


def test_failures_are_suspicious_operations():
    # So that Django answers 400, and logs to django.security, when one is not caught.
    assert issubclass(SignatureVerificationError, SuspiciousOperation)
    assert issubclass(ReplayedWebhookError, SignatureVerificationError)


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_missing_header_is_named(rf, header):
    headers = signed(**{header: None})
    assert refusal(rf, headers=headers) == f"Missing webhook header: {header}."
    headers = signed(**{header: "  "})  # blank is as good as missing
    assert refusal(rf, headers=headers) == f"Missing webhook header: {header}."


def test_all_missing_headers_are_named(rf):
    assert refusal(rf, headers={}) == (
        "Missing webhook headers: webhook-id, webhook-timestamp, webhook-signature."
    )
    assert refusal(rf, headers=signed(webhook_id=None, webhook_signature=None)) == (
        "Missing webhook headers: webhook-id, webhook-signature."
    )


@pytest.mark.parametrize("signature", [
    "abc",  # no comma
    "v1",
    "v2," + signing.sign(SECRET, "msg_1", 1, BODY)[3:],  # another version
    "v1,not base64!",
    "v1,ñ",
    "v1,",
    "v1,bm9wZQ==",  # base64, but not the 32 bytes of a MAC
])
def test_malformed_signatures(rf, signature):
    assert refusal(rf, headers=signed(signature=signature)) == (
        "The webhook-signature header holds no v1 signature (expected 'v1,<base64>' entries "
        "separated by spaces)."
    )


def test_a_version_2_signature_is_ignored_beside_a_valid_v1(rf):
    valid = signed()["webhook-signature"]
    headers = signed(signature=f"v2,{valid[3:]} junk {valid}")
    assert verify_webhook(make_request(rf, headers=headers), SECRET) == ENVELOPE


def test_a_valid_signature_made_with_another_secret(rf):
    headers = signed(secret=OTHER_SECRET)
    assert refusal(rf, headers=headers) == (
        "No signature in the webhook-signature header matches the secret."
    )
    assert refusal(rf, headers=headers, secret=[SECRET, signing.generate_secret()]) == (
        "No signature in the webhook-signature header matches any of the 2 secrets."
    )


@pytest.mark.parametrize("index", [0, len(BODY) // 2, len(BODY) - 1])
def test_a_body_changed_by_one_byte(rf, index):
    changed = bytearray(BODY)
    changed[index] ^= 1
    message = refusal(rf, body=bytes(changed), headers=signed(BODY))
    assert message == "No signature in the webhook-signature header matches the secret."


def test_a_different_id_is_a_different_message(rf):
    headers = signed(msg_id="msg_1")
    headers["webhook-id"] = "msg_2"
    assert "matches the secret" in refusal(rf, headers=headers)


@pytest.mark.parametrize(("offset", "words"), [(-301, "old"), (301, "in the future"),
                                                (-86400, "old")])
def test_a_timestamp_outside_the_tolerance(rf, offset, words):
    timestamp = int(time.time()) + offset
    message = refusal(rf, headers=signed(timestamp=timestamp))
    assert message.startswith("The webhook-timestamp is ")
    assert f"seconds {words}; at most 300 are allowed." in message


@pytest.mark.parametrize("offset", [-290, 290])
def test_a_timestamp_inside_the_tolerance(rf, offset):
    headers = signed(timestamp=int(time.time()) + offset)
    assert verify_webhook(make_request(rf, headers=headers), SECRET) == ENVELOPE


def test_the_tolerance_can_be_changed(rf):
    headers = signed(timestamp=int(time.time()) - 120)
    assert verify_webhook(make_request(rf, headers=headers), SECRET, tolerance=150)
    message = refusal(rf, headers=headers, tolerance=60)
    assert "at most 60 are allowed" in message


@pytest.mark.parametrize("value", ["soon", "12.5", "1e9", "+1764331200", "-1", "0x10",
                                   "1" * 40])
def test_a_timestamp_that_is_not_an_integer(rf, value):
    message = refusal(rf, headers=signed(webhook_timestamp=value))
    assert message.startswith("The webhook-timestamp header is not an integer (Unix seconds): ")


def test_the_timestamp_is_shortened_in_the_message(rf):
    message = refusal(rf, headers=signed(webhook_timestamp="x" * 1000))
    assert len(message) < 120


def test_form_encoded_body(rf):
    body = urlencode({"payload": json.dumps(ENVELOPE)}).encode()
    request = make_request(rf, body, signed(body), content_type=FORM)
    assert verify_webhook(request, SECRET) == ENVELOPE


def test_a_form_body_is_verified_as_sent_not_as_parsed(rf):
    # The same form, encoded differently: what was signed is the raw body.
    body = urlencode({"payload": json.dumps(ENVELOPE)}).encode()
    other = body.replace(b"+", b"%20")
    assert other != body
    message = refusal(rf, body=other, headers=signed(body), content_type=FORM)
    assert "matches the secret" in message


@pytest.mark.parametrize(("body", "message"), [
    (b"title=x", "The form body must have one 'payload' field; it has 0."),
    (b"payload=%7B%7D&payload=%7B%7D", "The form body must have one 'payload' field; it has 2."),
    (b"payload=nope", "The payload form field is not JSON: "),
    (b"payload=%5B1%5D", "The payload form field is not a JSON object."),
])
def test_form_bodies_without_one_json_payload(rf, body, message):
    assert refusal(rf, body=body, headers=signed(body), content_type=FORM).startswith(message)


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "The body is not JSON: "),
    (b"", "The body is not JSON: "),
    (b"\xff\xfe\x00", "The body is not JSON: "),
    (b"[1, 2]", "The body is not a JSON object."),
    (b'"text"', "The body is not a JSON object."),
])
def test_bodies_that_are_not_a_json_object(rf, body, message):
    # Correctly signed: the body is only parsed once it is known to be the sender's.
    assert refusal(rf, body=body, headers=signed(body)).startswith(message)


def test_an_unsigned_body_is_not_parsed(rf):
    message = refusal(rf, body=b"not json", headers=signed(b"other"))
    assert "matches the secret" in message


def test_a_list_of_secrets(rf):
    request = make_request(rf, headers=signed(secret=OTHER_SECRET))
    assert verify_webhook(request, [SECRET, OTHER_SECRET]) == ENVELOPE
    assert verify_webhook(request, (OTHER_SECRET,)) == ENVELOPE


@pytest.mark.parametrize("secret", [[], None])
def test_no_secret_at_all_is_a_refusal(rf, secret):
    assert refusal(rf, secret=secret) == "There is no secret to verify this webhook with."


@pytest.mark.parametrize(("secret", "error"), [
    (b"whsec_abc", TypeError), (42, TypeError), ([SECRET, 1], TypeError),
    ("", ValueError), ("whsec_", ValueError), ("whsec_***", ValueError),
])
def test_an_unusable_secret_is_a_programming_error(rf, secret, error):
    with pytest.raises(error) as info:
        verify_webhook(make_request(rf), secret)
    assert not isinstance(info.value, SignatureVerificationError)


def test_signatures_from_the_reference_package_verify(rf):
    from standardwebhooks import Webhook

    moment = datetime.now(timezone.utc).replace(microsecond=0)
    headers = signed(signature=Webhook(SECRET).sign("msg_1", moment, BODY.decode()),
                     timestamp=int(moment.timestamp()))
    assert verify_webhook(make_request(rf, headers=headers), SECRET) == ENVELOPE


# webhook_receiver
# ----------------

pytestmark_urls = pytest.mark.urls("tests.receiver_views")


def post(client, path, body=BODY, headers=None, content_type=JSON):
    return client.post(path, data=body, content_type=content_type,
                       headers=signed(body) if headers is None else headers)


@pytestmark_urls
def test_the_view_gets_the_envelope(client):
    response = post(client, "/hooks/plain/")
    assert response.status_code == 200
    assert response.json() == {"type": "project.update"}
    assert receiver_views.calls == [("plain", ENVELOPE, {})]


@pytestmark_urls
@pytest.mark.parametrize("headers", [
    {},
    signed(secret=OTHER_SECRET),
    signed(signature="v2,abc"),
    signed(timestamp=int(time.time()) - 3600),
    signed(webhook_timestamp="soon"),
])
def test_a_request_that_does_not_verify_gets_400_and_the_view_is_not_called(client, headers,
                                                                           caplog):
    with caplog.at_level(logging.WARNING, logger="django.security"):
        response = post(client, "/hooks/plain/", headers=headers)
    assert response.status_code == 400
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    message = response.content.decode().strip()
    assert message  # says which check failed
    assert receiver_views.calls == []
    [record] = [r for r in caplog.records if r.name.startswith("django.security")]
    assert record.name == "django.security.SignatureVerificationError"
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"Webhook refused at /hooks/plain/: {message}"
    assert record.status_code == 400


@pytestmark_urls
def test_the_400_says_which_check_failed(client):
    response = post(client, "/hooks/plain/", headers=signed(webhook_id=None))
    assert response.content == b"Missing webhook header: webhook-id.\n"


@pytestmark_urls
@pytest.mark.parametrize("method", ["get", "put", "delete", "patch", "head", "options"])
def test_only_post_is_allowed(client, method):
    response = getattr(client, method)("/hooks/plain/")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert receiver_views.calls == []


@pytestmark_urls
def test_csrf_exempt():
    client = Client(enforce_csrf_checks=True)
    assert post(client, "/hooks/plain/").status_code == 200
    # Refused for its signature, not for CSRF.
    assert post(client, "/hooks/plain/", headers={}).status_code == 400


@pytestmark_urls
def test_without_replay_protection_a_webhook_is_accepted_twice(client):
    headers = signed()
    assert post(client, "/hooks/plain/", headers=headers).status_code == 200
    assert post(client, "/hooks/plain/", headers=headers).status_code == 200
    assert len(receiver_views.calls) == 2


ALREADY_RECEIVED = b"The webhook-id 'msg_1' was already received here.\n"
BEING_PROCESSED = (b"The webhook-id 'msg_1' is still being processed here; try again in 5 "
                   b"seconds.\n")


def assert_being_processed(response):
    assert response.status_code == 409
    assert response["Retry-After"] == "5"
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content == BEING_PROCESSED


@pytestmark_urls
def test_replay_protection_answers_200_to_a_webhook_id_accepted_before(client, caplog):
    # The sender did not see the first answer (a timeout, a lost connection) and retries:
    # it must get a 2xx, or it retries for hours, but the view must not run again.
    headers = signed()
    assert post(client, "/hooks/protected/", headers=headers).status_code == 200
    with caplog.at_level(logging.DEBUG):
        repeated = post(client, "/hooks/protected/", headers=headers)
    assert repeated.status_code == 200
    assert repeated["Content-Type"] == "text/plain; charset=utf-8"
    assert repeated.content == ALREADY_RECEIVED
    assert [r for r in caplog.records if r.name.startswith("django.security")] == []
    [record] = [r for r in caplog.records if r.name == "djwebhooks.receivers"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "Webhook 'msg_1' at /hooks/protected/ was already received; answered 200 without "
        "calling the view."
    )
    # The same id re-signed later, as a sender's retry is.
    resigned = signed(timestamp=int(time.time()) - 5)
    assert post(client, "/hooks/protected/", headers=resigned).content == ALREADY_RECEIVED
    # A query string does not make it another URL; the view does not run to answer it.
    repeated = post(client, "/hooks/protected/?status=500", headers=headers)
    assert repeated.status_code == 200
    assert repeated.content == ALREADY_RECEIVED
    assert len(receiver_views.calls) == 1
    # Other ids are processed.
    response = post(client, "/hooks/protected/", headers=signed(msg_id="msg_2"))
    assert response.status_code == 200
    assert response.content == b"ok"
    assert len(receiver_views.calls) == 2


@pytestmark_urls
def test_a_repeat_while_the_first_is_processed_gets_409(client):
    # Not 2xx: the first delivery may still fail, and then the message would be lost.
    headers = signed()
    during = []

    def deliver_again(request):
        during.append(post(Client(), "/hooks/protected/", headers=headers))
        during.append(post(Client(), "/hooks/protected/", headers=signed(secret=OTHER_SECRET)))
        during.append(post(Client(), "/hooks/also-protected/", headers=headers))

    receiver_views.while_running.append(deliver_again)
    response = post(client, "/hooks/protected/", headers=headers)
    assert response.status_code == 200
    assert response.content == b"ok"
    repeated, forged, other_path = during
    assert_being_processed(repeated)
    assert forged.status_code == 400
    assert forged.content == b"No signature in the webhook-signature header matches the secret.\n"
    assert other_path.status_code == 200
    assert other_path.content == b"ok"
    # The first delivery and the one to the other path.
    assert len(receiver_views.calls) == 2
    # Once the first has answered 2xx, a repeat gets 200.
    assert post(client, "/hooks/protected/", headers=headers).content == ALREADY_RECEIVED
    assert len(receiver_views.calls) == 2


@pytestmark_urls
@pytest.mark.parametrize(("query", "status"), [("", 200), ("?status=500", 500),
                                                ("?raise=1", 500)])
def test_two_deliveries_of_one_id_at_once_run_the_view_once(query, status):
    entered, release = threading.Event(), threading.Event()

    def block(request):
        entered.set()
        assert release.wait(10)

    receiver_views.while_running.append(block)
    headers = signed()
    first = []
    thread = threading.Thread(target=lambda: first.append(
        post(Client(raise_request_exception=False), f"/hooks/protected/{query}", headers=headers)
    ))
    thread.start()
    try:
        assert entered.wait(10)
        second = post(Client(), "/hooks/protected/", headers=headers)
    finally:
        release.set()
        thread.join(10)
    assert_being_processed(second)
    assert len(receiver_views.calls) == 1
    [first] = first
    assert first.status_code == status
    retry = post(Client(), "/hooks/protected/", headers=headers)
    assert retry.status_code == 200
    if status == 200:
        assert retry.content == ALREADY_RECEIVED
        assert len(receiver_views.calls) == 1
    else:
        # The first failed: the retry is processed.
        assert retry.content == b"ok"
        assert len(receiver_views.calls) == 2


@pytestmark_urls
def test_replay_protection_remembers_ids_per_path(client):
    # One message goes to every target of its event with the same id; two of them may be
    # URLs of this project.
    headers = signed()
    assert post(client, "/hooks/protected/", headers=headers).content == b"ok"
    assert post(client, "/hooks/also-protected/", headers=headers).content == b"ok"
    repeated = post(client, "/hooks/also-protected/", headers=headers)
    assert repeated.status_code == 200
    assert repeated.content == ALREADY_RECEIVED
    assert len(receiver_views.calls) == 2


@pytestmark_urls
def test_a_webhook_that_does_not_verify_is_not_remembered(client):
    assert post(client, "/hooks/protected/", headers=signed(secret=OTHER_SECRET)).status_code \
        == 400
    assert post(client, "/hooks/protected/").content == b"ok"


@pytestmark_urls
@pytest.mark.parametrize(("headers", "body", "message"), [
    (lambda: signed(secret=OTHER_SECRET), BODY,
     b"No signature in the webhook-signature header matches the secret.\n"),
    (signed, BODY.replace(b"12:00", b"13:00"),
     b"No signature in the webhook-signature header matches the secret.\n"),
    (lambda: signed(webhook_signature=None), BODY,
     b"Missing webhook header: webhook-signature.\n"),
    (lambda: signed(timestamp=int(time.time()) - 3600), BODY, None),
])
def test_a_forged_repeat_of_an_accepted_id_gets_400(client, caplog, headers, body, message):
    # Only a request that verifies learns that its id was received. (The headers are made
    # when the test runs: a timestamp made at collection could be too old by then.)
    assert post(client, "/hooks/protected/").status_code == 200
    with caplog.at_level(logging.WARNING, logger="django.security"):
        response = post(client, "/hooks/protected/", body=body, headers=headers())
    assert response.status_code == 400
    if message is not None:
        assert response.content == message
    assert b"already" not in response.content
    assert [r.name for r in caplog.records if r.name.startswith("django.security")] == [
        "django.security.SignatureVerificationError"]
    assert len(receiver_views.calls) == 1


@pytestmark_urls
@pytest.mark.parametrize("status", [500, 503, 404, 302])
def test_the_id_is_forgotten_when_the_view_does_not_answer_2xx(client, status):
    # The sender will retry: the retry must be processed.
    headers = signed()
    assert post(client, f"/hooks/protected/?status={status}", headers=headers).status_code \
        == status
    assert post(client, "/hooks/protected/", headers=headers).content == b"ok"
    assert post(client, "/hooks/protected/", headers=headers).content == ALREADY_RECEIVED
    assert len(receiver_views.calls) == 2


@pytestmark_urls
def test_the_id_is_forgotten_when_the_view_raises():
    client = Client(raise_request_exception=False)
    headers = signed()
    assert post(client, "/hooks/protected/?raise=1", headers=headers).status_code == 500
    assert post(client, "/hooks/protected/", headers=headers).content == b"ok"
    assert post(client, "/hooks/protected/", headers=headers).content == ALREADY_RECEIVED
    assert len(receiver_views.calls) == 2


def test_ids_are_remembered_for_twice_the_tolerance(rf, monkeypatch):
    stored = []
    cache = caches["default"]
    for method in ("add", "set"):
        original = getattr(cache, method)
        monkeypatch.setattr(cache, method, lambda key, value, timeout, method=method,
                            original=original: stored.append((method, value, timeout))
                            or original(key, value, timeout))

    @webhook_receiver(secret=SECRET, replay_protection=True, tolerance=60)
    def view(request, webhook):
        return receiver_views.HttpResponse("ok")

    assert view(make_request(rf)).status_code == 200
    # Claimed while the view runs, then marked as done once it answered 2xx.
    assert stored == [("add", "processing", 121), ("set", "done", 121)]


def test_the_cache_alias_is_used(rf, settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
        "replays": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                    "LOCATION": "replays"},
    }
    called = []

    def view(request, webhook):
        called.append(request.path)
        return receiver_views.HttpResponse("ok")

    remembering = webhook_receiver(secret=SECRET, replay_protection=True,
                                   cache_alias="replays")(view)
    forgetful = webhook_receiver(secret=SECRET, replay_protection=True)(view)
    headers = signed()
    assert forgetful(make_request(rf, headers=headers)).content == b"ok"
    assert forgetful(make_request(rf, headers=headers)).content == b"ok"  # DummyCache
    assert remembering(make_request(rf, headers=headers)).content == b"ok"
    assert len(called) == 3
    repeated = remembering(make_request(rf, headers=headers))
    assert repeated.status_code == 200
    assert repeated.content == b"The webhook-id 'msg_1' was already received here.\n"
    assert len(called) == 3


@pytestmark_urls
def test_a_callable_secret_gets_the_url_arguments(client):
    # Tenant "a" has two secrets (a rotation): either verifies.
    for secret in (SECRET, OTHER_SECRET):
        response = post(client, "/hooks/tenants/a/", headers=signed(secret=secret,
                                                                   msg_id=f"msg_{secret}"))
        assert response.status_code == 200
    assert post(client, "/hooks/tenants/b/", headers=signed(secret=OTHER_SECRET)).status_code \
        == 200
    assert post(client, "/hooks/tenants/b/", headers=signed(secret=SECRET)).status_code == 400
    assert [call[2] for call in receiver_views.calls] == [{"tenant": "a"}] * 2 + [
        {"tenant": "b"}]


@pytestmark_urls
def test_a_callable_secret_that_finds_none(client):
    response = post(client, "/hooks/tenants/unknown/")
    assert response.status_code == 400
    assert response.content == b"There is no secret to verify this webhook with.\n"


@pytestmark_urls
def test_the_debug_page_is_not_used_so_secrets_do_not_leak(client, settings):
    settings.DEBUG = True
    for path in ("/hooks/plain/", "/hooks/tenants/a/"):
        response = post(client, path, headers=signed(secret=signing.generate_secret()))
        assert response.status_code == 400
        assert SECRET.encode() not in response.content
        assert OTHER_SECRET.encode() not in response.content
        assert b"Traceback" not in response.content


@pytestmark_urls
def test_a_body_too_large_is_refused_without_the_debug_page(client, settings, caplog):
    settings.DEBUG = True
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = len(BODY) - 1
    with caplog.at_level(logging.WARNING, logger="django.security"):
        response = post(client, "/hooks/plain/")
    assert response.status_code == 400
    assert response.content == b"Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.\n"
    assert SECRET.encode() not in response.content
    assert "django.security.RequestDataTooBig" in [r.name for r in caplog.records]
    assert receiver_views.calls == []


def test_the_decorated_view_keeps_its_name():
    assert receiver_views.plain.__name__ == "plain"
    assert receiver_views.plain.csrf_exempt is True


@pytest.mark.parametrize(("secret", "options", "error"), [
    (None, {}, TypeError),
    ([], {}, TypeError),
    (b"whsec_x", {}, TypeError),
    ("", {}, ValueError),
    (SECRET, {"tolerance": -1}, TypeError),
    (SECRET, {"tolerance": "300"}, TypeError),
])
def test_options_are_checked_when_decorating(secret, options, error):
    with pytest.raises(error):
        webhook_receiver(secret=secret, **options)


def test_async_views_are_refused():
    async def view(request, webhook):
        pass

    with pytest.raises(TypeError, match="async views are not supported"):
        webhook_receiver(secret=SECRET)(view)


# A round trip
# ------------


@pytestmark_urls
@pytest.mark.parametrize("content_type", [JSON, FORM])
@pytest.mark.parametrize("secrets", [SECRET, [SECRET, OTHER_SECRET], [OTHER_SECRET, SECRET]])
def test_a_request_signed_by_djwebhooks_verifies(client, content_type, secrets):
    sender = Senderable(
        url="http://testserver/hooks/plain/", payload={"title": "Acme", "ü": [1, 2.5, None]},
        event="project.update", message_id="msg_roundtrip", secret=secrets,
        timestamp=datetime.now(timezone.utc), content_type=content_type,
        extra={"identifier": "acme", "owner": "audreyr"},
    )
    body = sender.get_body()
    headers = sender.get_headers(body, int(time.time()))
    content_type = headers.pop("Content-Type")
    headers.pop("User-Agent")
    response = client.post("/hooks/plain/", data=body, content_type=content_type,
                           headers=headers)
    assert response.status_code == 200, response.content
    [(_, webhook, _)] = receiver_views.calls
    assert webhook == json.loads(sender.jsonified_payload)
    assert webhook["data"] == {"title": "Acme", "ü": [1, 2.5, None]}
    assert webhook["identifier"] == "acme"
