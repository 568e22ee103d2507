"""What reaches a real receiver on 127.0.0.1, and what is stored about it."""

import ipaddress
import json
import time
from datetime import datetime, timezone
from urllib.parse import parse_qs

import pytest
from django.db import transaction
from standardwebhooks import Webhook

from djwebhooks import __version__, send_event, transport
from djwebhooks.exceptions import DeliveryError
from djwebhooks.models import Delivery, WebhookTarget
from djwebhooks.senders.base import FORM
from djwebhooks.ssrf import URLPolicy
from tests.helpers import post_async
from tests.receiver import RawReceiver, Reply, read_request

pytestmark = pytest.mark.django_db(transaction=True)


def test_json_request_on_the_wire(make_target, user, receiver):
    target = make_target(identifier="acme")
    before = int(time.time())

    [delivery] = send_event("project.update", {"title": "Dj"}, owner=user, identifier="acme")

    [request] = receiver.requests
    assert request.method == "POST"
    assert request.path == "/hook/"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"dj-webhooks/{__version__}"
    assert request.headers["webhook-id"] == delivery.hash_value
    assert before <= int(request.headers["webhook-timestamp"]) <= int(time.time())
    # The reference implementation of the spec accepts the signature.
    assert Webhook(target.secret).verify(request.body, request.headers) == json.loads(
        request.body
    )
    envelope = json.loads(request.body)
    assert envelope["type"] == "project.update"
    assert envelope["data"] == {"title": "Dj"}
    assert envelope["identifier"] == "acme"
    assert envelope["owner"] == "audreyr"
    assert envelope["timestamp"].endswith("Z")


def test_only_the_webhook_headers_are_sent(make_target, user, receiver):
    make_target()
    send_event("project.update", {"n": 1}, owner=user)
    [request] = receiver.requests
    assert set(request.headers) == {
        "host", "content-length", "content-type", "user-agent", "webhook-id",
        "webhook-timestamp", "webhook-signature", "accept-encoding",
    }
    assert request.headers["accept-encoding"] == "identity"  # no compressed answers


def test_a_receivers_cookie_is_not_sent_back(make_target, user, receiver):
    receiver.default = Reply(headers={"Content-Type": "text/plain",
                                      "Set-Cookie": "session=abc; Path=/"})
    make_target()
    send_event("project.update", {"n": 1}, owner=user)
    send_event("project.update", {"n": 2}, owner=user)
    assert [r.headers.get("cookie") for r in receiver.requests] == [None, None]


def test_signature_made_with_another_secret_is_rejected(make_target, user, receiver):
    make_target()
    send_event("project.update", {"n": 1}, owner=user)
    [request] = receiver.requests
    other = WebhookTarget(secret=WebhookTarget._meta.get_field("secret").get_default())
    with pytest.raises(Exception, match="(?i)signature"):
        Webhook(other.secret).verify(request.body, request.headers)


def test_form_encoded_request(make_target, user, receiver):
    target = make_target(header_content_type=FORM)
    send_event("project.update", {"title": "Form"}, owner=user)

    [request] = receiver.requests
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    fields = parse_qs(request.body.decode())
    assert list(fields) == ["payload"]
    assert json.loads(fields["payload"][0])["data"] == {"title": "Form"}
    # The signature covers the exact body sent, form encoding included. (The reference
    # package's verify() also parses the body as JSON, so compare with its sign().)
    sent_at = datetime.fromtimestamp(int(request.headers["webhook-timestamp"]), tz=timezone.utc)
    expected = Webhook(target.secret).sign(
        request.headers["webhook-id"], sent_at, request.body.decode()
    )
    assert request.headers["webhook-signature"] == expected


def test_success_is_recorded(make_target, user, receiver):
    receiver.default = Reply(status=202, body=b'{"thanks": true}',
                             headers={"Content-Type": "application/json"})
    make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SUCCEEDED
    assert delivery.success is True
    assert delivery.attempt == 1
    assert delivery.response_status == 202
    assert delivery.next_attempt_at is None
    [attempt] = delivery.attempts.all()
    assert attempt.attempt == 1
    assert attempt.success is True
    assert attempt.response_status == 202
    assert attempt.response_message == '{"thanks": true}'
    assert attempt.response_content_type == "application/json"
    assert attempt.error == ""
    assert attempt.notification == "202 Accepted"
    assert attempt.duration >= 0


def assert_retry_scheduled(delivery, seconds=5):
    """The delivery waits for its second attempt, ``seconds`` (±20 %) after the first."""
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.PENDING
    assert delivery.reason == "attempt 2 of 8: " + (
        "scheduled retry" if seconds == 5 else "receiver overloaded, waiting longer"
    )
    wait = (delivery.next_attempt_at - delivery.attempts.get().created).total_seconds()
    assert seconds * 0.8 - 0.1 <= wait <= seconds * 1.2 + 0.1
    assert (delivery.claimed_by, delivery.claimed_until) == ("", None)


def test_server_error_is_a_recorded_failure(make_target, user, receiver):
    receiver.default = Reply(status=500, body=b"boom")
    make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)

    assert_retry_scheduled(delivery)
    assert delivery.success is False
    assert delivery.response_status == 500
    [attempt] = delivery.attempts.all()
    assert (attempt.success, attempt.response_status, attempt.response_message) == (
        False, 500, "boom"
    )


def test_redirect_is_not_followed_and_counts_as_failure(make_target, user, receiver):
    receiver.default = Reply(status=302, body=b"",
                             headers={"Location": receiver.url + "/elsewhere/"})
    make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)

    assert [r.path for r in receiver.requests] == ["/hook/"]
    assert_retry_scheduled(delivery)
    assert delivery.response_status == 302


def test_timeout_is_recorded(settings, make_target, user, receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "READ_TIMEOUT": 0.3}
    receiver.default = Reply(delay=1.5)
    make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)

    assert_retry_scheduled(delivery, seconds=10)  # twice as long after a timeout
    assert delivery.response_status is None
    [attempt] = delivery.attempts.all()
    assert attempt.error.startswith("Timed out after 0.3 s waiting for the response\n\n")
    assert attempt.response_status is None
    assert 250 <= attempt.duration < 1500


def test_refused_connection_is_recorded(make_target, user, closed_port_url):
    make_target(target_url=closed_port_url)
    [delivery] = send_event("project.update", {"n": 1}, owner=user)

    assert_retry_scheduled(delivery)
    [attempt] = delivery.attempts.all()
    port = closed_port_url.split(":")[2].split("/")[0]
    assert attempt.error.startswith(f"Connection refused by 127.0.0.1:{port}\n\nDetails: ")
    assert attempt.response_status is None


def test_only_the_first_bytes_of_a_response_are_read(settings, make_target, user, receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RESPONSE_BODY_LIMIT": 10}
    receiver.default = Reply(body=b"0123456789" * 100_000)
    make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)

    [attempt] = Delivery.objects.get(pk=delivery.pk).attempts.all()
    assert attempt.success is True
    assert attempt.response_message == "0123456789"


def test_invalid_utf8_in_a_response_is_stored_safely(make_target, user, receiver):
    receiver.default = Reply(body=b"ok \xff\xfe done")
    make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    [attempt] = delivery.attempts.all()
    assert attempt.response_message == "ok \ufffd\ufffd done"


def test_fan_out_to_every_matching_target(make_target, user, other_user, receiver):
    first = make_target(target_url=receiver.url + "/a/")
    second = make_target(target_url=receiver.url + "/b/")
    make_target(target_url=receiver.url + "/inactive/", is_active=False)
    make_target(target_url=receiver.url + "/other-event/", event="invoice.paid")
    make_target(target_url=receiver.url + "/other-identifier/", identifier="acme")
    make_target(target_url=receiver.url + "/other-owner/", owner=other_user)

    deliveries = send_event("project.update", {"n": 1}, owner=user)

    assert {d.webhook_target_id for d in deliveries} == {first.pk, second.pk}
    assert sorted(r.path for r in receiver.requests) == ["/a/", "/b/"]
    # One message, one id: every target of a call receives the same webhook-id.
    assert {r.headers["webhook-id"] for r in receiver.requests} == {deliveries[0].hash_value}
    assert Delivery.objects.filter(status="succeeded").count() == 2


def test_user_agent_setting(settings, make_target, user, receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "USER_AGENT": "acme-hooks/2"}
    make_target()
    send_event("project.update", {"n": 1}, owner=user)
    assert receiver.requests[0].headers["user-agent"] == "acme-hooks/2"


@pytest.mark.parametrize(
    ("owner_field", "expected"),
    [(None, {"owner": "audreyr"}), ("email", {"owner": "audrey@example.com"}), (False, {})],
)
def test_owner_field_setting(settings, make_target, user, receiver, owner_field, expected):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "OWNER_FIELD": owner_field}
    make_target()
    send_event("project.update", {"n": 1}, owner=user)
    envelope = json.loads(receiver.requests[0].body)
    assert {k: v for k, v in envelope.items() if k == "owner"} == expected


def test_target_deactivated_before_commit_gets_nothing(make_target, user, receiver):
    target = make_target()
    with transaction.atomic():
        [delivery] = send_event("project.update", {"n": 1}, owner=user)
        WebhookTarget.objects.filter(pk=target.pk).update(is_active=False)
    assert receiver.requests == []
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED
    assert delivery.attempt == 0


def test_sender_options_given_without_owner_field_read_it_from_settings(make_target, user,
                                                                        settings):
    from djwebhooks.senders.orm import DjangoSenderable

    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "OWNER_FIELD": "email"}
    target = make_target()
    delivery = Delivery.objects.create(webhook_target=target, event="project.update",
                                       hash_value="msg_o", payload={"n": 1})
    options = DjangoSenderable.settings_options()
    del options["owner_field"]
    sender = DjangoSenderable(delivery, options=options)
    assert json.loads(sender.jsonified_payload)["owner"] == "audrey@example.com"


LOOPBACK = URLPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"


@pytest.fixture(params=["threads", "async"])
def post_raw(request):
    """POST to a raw receiver's port with either client."""
    def post(port):
        url, limits = f"http://127.0.0.1:{port}/hook/", {
            "timeout": (5, 5), "body_limit": 100, "policy": LOOPBACK}
        if request.param == "async":
            return post_async(url, b"{}", {}, **limits)
        with transport.new_session() as session:
            return transport.post(url, b"{}", {}, session=session, **limits)

    return post


@pytest.mark.parametrize("informational", [
    [EARLY_HINTS],
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 102 Processing\r\n\r\n", EARLY_HINTS,
     EARLY_HINTS],
])
def test_informational_responses_are_skipped_for_the_answer(informational, post_raw):
    def answer(connection):
        read_request(connection)
        connection.sendall(b"".join(informational) + b"HTTP/1.1 200 OK\r\nContent-Type: "
                           b"text/plain\r\nContent-Length: 5\r\n\r\nhello")

    with RawReceiver(answer) as raw:
        response = post_raw(raw.port)
    assert (response.status, response.reason, response.body) == (200, "OK", b"hello")
    assert response.content_type == "text/plain"


def test_informational_responses_without_end_are_cut_off(post_raw):
    def answer(connection):
        read_request(connection)
        while True:  # until the client hangs up
            connection.sendall(EARLY_HINTS)

    with RawReceiver(answer) as raw, pytest.raises(DeliveryError) as info:
        post_raw(raw.port)
    assert type(info.value) is DeliveryError
    assert str(info.value) == (f"The receiver sent more than "
                               f"{transport.MAX_INFORMATIONAL_RESPONSES} informational (1xx) "
                               "responses without a final one.")
