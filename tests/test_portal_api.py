"""The REST Hooks API (djwebhooks.portal.api): the subscribe / unsubscribe cycle with real
webhooks, authentication, every error, pagination, and its OpenAPI description, validated
and fuzzed."""

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
import schemathesis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.wsgi import get_wsgi_application
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from openapi_spec_validator import validate
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from djwebhooks import send_event
from djwebhooks.models import ApiToken, Delivery, DeliveryAttempt, WebhookTarget
from djwebhooks.portal import api, openapi

API = "/webhooks/api"


def nobody(user):
    """A MANAGE_PERMISSION that refuses everyone."""
    return False


@pytest.fixture
def key(user):
    """An API key of ``user``'s."""
    return ApiToken.create(user, "tests")[1]


@pytest.fixture
def client(key):
    """A client that sends ``user``'s API key."""
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def post(client, path, data, **extra):
    """POST ``data`` as JSON."""
    return client.post(API + path, data, content_type="application/json", **extra)


def patch(client, path, data, **extra):
    """PATCH ``data`` as JSON."""
    return client.patch(API + path, data, content_type="application/json", **extra)


def subscription(receiver, **fields):
    """The body of a subscription to ``project.update`` at the receiver."""
    return {"event": "project.update", "target_url": receiver.url + "/hook/", **fields}


@pytest.fixture
def delivery(make_target):
    """A failed delivery to a target of ``user``'s, with one attempt."""
    target = make_target()
    row = Delivery.objects.create(webhook_target=target, event="project.update",
                                  payload_json='{"n": 1}', hash_value="msg_1",
                                  status=Delivery.Status.FAILED, attempt=1,
                                  response_status=500, reason="gave up")
    DeliveryAttempt.objects.create(delivery=row, attempt=1, response_status=500,
                                   response_message="boom", duration=12)
    return row


# The REST Hooks cycle


@pytest.mark.django_db(transaction=True)
def test_subscribe_receive_unsubscribe(client, user, receiver):
    response = post(client, "/targets/", subscription(receiver, identifier="acme"))
    assert response.status_code == 201
    created = response.json()
    assert created["secret"].startswith("whsec_")
    assert response["Location"] == f"http://testserver{API}/targets/{created['id']}/"
    target = WebhookTarget.objects.get(pk=created["id"])
    assert (target.owner, target.identifier, target.secret) == (user, "acme", created["secret"])

    send_event("project.update", {"title": "Dj"}, owner=user, identifier="acme")
    [request] = receiver.requests
    assert request.path == "/hook/"
    assert json.loads(request.body)["data"] == {"title": "Dj"}

    response = client.delete(f"{API}/targets/{created['id']}/")
    assert response.status_code == 204
    assert response.content == b""
    assert not WebhookTarget.objects.filter(pk=created["id"]).exists()
    assert send_event("project.update", {"title": "Gone"}, owner=user, identifier="acme") == []
    assert len(receiver.requests) == 1


def test_a_new_target_shows_every_field_and_its_secret_only_once(client, receiver):
    created = post(client, "/targets/", subscription(receiver)).json()
    assert set(created) == {"id", "event", "identifier", "target_url", "header_content_type",
                            "is_active", "created", "modified", "disabled_reason",
                            "secret_hint", "headers", "timeout", "retry_schedule", "ordered",
                            "max_in_flight", "rate_limit", "health", "secret"}
    assert (created["identifier"], created["header_content_type"], created["is_active"]) == (
        "", "application/json", True)
    assert created["health"]["success_rate"]["24h"] == {"attempts": 0, "succeeded": 0,
                                                        "percent": None}
    shown = client.get(f"{API}/targets/{created['id']}/").json()
    assert "secret" not in shown
    assert shown["secret_hint"] == f"{created['secret'][:6]}…{created['secret'][-4:]}"
    [listed] = client.get(f"{API}/targets/").json()["results"]
    assert "secret" not in listed
    assert listed == shown


def test_patch_changes_only_the_fields_given(client, make_target):
    target = make_target(identifier="acme")
    response = patch(client, f"/targets/{target.pk}/", {"is_active": False})
    assert response.status_code == 200
    assert response.json()["is_active"] is False
    target.refresh_from_db()
    assert (target.is_active, target.identifier, target.event) == (False, "acme",
                                                                   "project.update")
    response = patch(client, f"/targets/{target.pk}/", {"event": "project.delete",
                                                        "header_content_type":
                                                        "application/x-www-form-urlencoded"})
    assert response.json()["event"] == "project.delete"
    target.refresh_from_db()
    assert target.header_content_type == "application/x-www-form-urlencoded"
    assert "secret" not in response.json()


def test_turning_a_disabled_target_back_on_clears_its_reason(client, make_target):
    target = make_target(is_active=False, disabled_reason="10 failures in a row")
    response = patch(client, f"/targets/{target.pk}/", {"is_active": True})
    assert response.json()["disabled_reason"] == ""
    assert response.json()["health"]["disabled"] is False


# Deliveries


def test_a_delivery_with_its_payload_headers_and_attempts(client, delivery):
    response = client.get(f"{API}/deliveries/{delivery.pk}/")
    assert response.status_code == 200
    shown = response.json()
    assert shown["payload"] == {"n": 1}
    assert shown["message_id"] == "msg_1"
    assert shown["status"] == "failed"
    assert shown["target"] == delivery.webhook_target_id
    assert shown["headers"]["webhook-id"] == "msg_1"
    assert shown["headers"]["webhook-signature"].startswith("v1,…")
    assert delivery.webhook_target.secret not in json.dumps(shown)
    [attempt] = shown["attempts"]
    assert attempt["response_status"] == 500
    assert attempt["response_message"] == "boom"
    assert attempt["duration_ms"] == 12


def test_deliveries_are_filtered(client, delivery, make_target):
    other = make_target(event="invoice.paid")
    Delivery.objects.create(webhook_target=other, event="invoice.paid", hash_value="msg_2")

    def ids(query):
        """The message ids listed for ``query``."""
        response = client.get(f"{API}/deliveries/?{query}")
        assert response.status_code == 200
        return [row["message_id"] for row in response.json()["results"]]

    assert ids("") == ["msg_2", "msg_1"]
    assert ids("status=failed") == ["msg_1"]
    assert ids("status=pending") == ["msg_2"]
    assert ids("event=invoice.paid") == ["msg_2"]
    assert ids(f"target={delivery.webhook_target_id}") == ["msg_1"]
    assert ids(f"target={other.pk}&status=failed") == []


@pytest.mark.parametrize(("query", "field", "message"), [
    ("status=lost", "status", "Must be one of: pending, succeeded, failed, cancelled."),
    ("target=abc", "target", "Must be an integer id."),
    ("target=-1", "target", "Must be an integer id."),
    ("limit=0", "limit", "Must be an integer from 1 to 100."),
    ("limit=101", "limit", "Must be an integer from 1 to 100."),
    ("limit=ten", "limit", "Must be an integer from 1 to 100."),
    ("state=failed", "state", "Not a parameter here. The parameters are: status, event, "
                              "target, limit, cursor."),
])
def test_bad_delivery_filters_are_400(client, query, field, message):
    response = client.get(f"{API}/deliveries/?{query}")
    assert response.status_code == 400
    assert response.json()["fields"] == {field: [message]}


def test_replay_makes_the_delivery_pending_again(client, delivery):
    response = client.post(f"{API}/deliveries/{delivery.pk}/replay/")
    assert response.status_code == 202
    assert response.json() == {"replayed": True}
    delivery.refresh_from_db()
    assert (delivery.status, delivery.reason) == ("pending", "replayed")


def test_replay_is_rate_limited(client, delivery, settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RATE_LIMITS": {"replay": "1/minute"}}
    assert client.post(f"{API}/deliveries/{delivery.pk}/replay/").status_code == 202
    response = client.post(f"{API}/deliveries/{delivery.pk}/replay/")
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response.json()["error"].startswith("Too many replays: at most 1 per minute.")


# Pagination


def test_cursor_pagination_walks_every_target_once(client, user):
    WebhookTarget.objects.bulk_create(
        WebhookTarget(owner=user, event="project.update",
                      target_url=f"https://example.com/{n}/") for n in range(120))
    expected = list(WebhookTarget.objects.order_by("-pk").values_list("pk", flat=True))
    seen, sizes, url = [], [], f"{API}/targets/?limit=50"
    while url:
        response = client.get(url)
        assert response.status_code == 200
        results = response.json()["results"]
        sizes.append(len(results))
        seen += [row["id"] for row in results]
        url = response.json()["next"]
        if url:
            assert url.startswith(f"http://testserver{API}/targets/?")
            assert "limit=50" in url
    assert sizes == [50, 50, 20]
    assert seen == expected


def test_the_default_page_is_50(client, user):
    WebhookTarget.objects.bulk_create(
        WebhookTarget(owner=user, event="project.update",
                      target_url=f"https://example.com/{n}/") for n in range(51))
    page = client.get(f"{API}/targets/").json()
    assert len(page["results"]) == 50
    assert page["next"] is not None
    last = client.get(page["next"]).json()
    assert len(last["results"]) == 1
    assert last["next"] is None


def test_deliveries_are_paged_and_keep_their_filters(client, make_target):
    target = make_target()
    for n in range(5):
        Delivery.objects.create(webhook_target=target, event="project.update",
                                hash_value=f"msg_{n}", status="failed")
    Delivery.objects.create(webhook_target=target, event="project.update",
                            hash_value="msg_ok", status="succeeded")
    first = client.get(f"{API}/deliveries/?status=failed&limit=3").json()
    second = client.get(first["next"]).json()
    assert [row["message_id"] for row in first["results"] + second["results"]] == [
        f"msg_{n}" for n in reversed(range(5))]
    assert second["next"] is None


@pytest.mark.parametrize("cursor", ["junk", "MQ:tampered", "", "Ünïcode", "a" * 300])
def test_a_tampered_cursor_is_400(client, user, cursor):
    WebhookTarget.objects.bulk_create(
        WebhookTarget(owner=user, event="project.update",
                      target_url=f"https://example.com/{n}/") for n in range(3))
    real = client.get(f"{API}/targets/?limit=1").json()["next"].split("cursor=")[1]
    assert client.get(f"{API}/targets/?cursor={real}").status_code == 200
    response = client.get(f"{API}/targets/", {"cursor": cursor})
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["cursor"]


def test_a_cursor_re_signed_with_another_value_is_400(client):
    from django.core import signing
    response = client.get(f"{API}/targets/",
                          {"cursor": signing.dumps("1", salt=api.CURSOR_SALT)})
    assert response.status_code == 400
    response = client.get(f"{API}/targets/", {"cursor": signing.dumps(1, salt="other")})
    assert response.status_code == 400


# Input errors


@pytest.mark.parametrize(("body", "status", "error"), [
    (b"{not json", 400, "The body is not valid JSON."),
    (b"\xff\xfe\x00", 400, "The body is not valid JSON."),
    (b'{"event": NaN}', 400, "The body is not valid JSON."),
    # Too deep for Python 3.11's parser (not valid JSON), parsed by 3.13's (then a list):
    # a 400 either way, never a 500.
    (b"[" * 5000 + b"]" * 5000, 400,
     ("The body is not valid JSON.", "The body must be a JSON object.")),
    (b"[]", 400, "The body must be a JSON object."),
    (b'"text"', 400, "The body must be a JSON object."),
    (b"", 400, "The body is not valid JSON."),
])
def test_bodies_that_are_not_json_objects_are_400(client, body, status, error):
    # The test client sends no Content-Type with an empty body unless told.
    response = client.post(f"{API}/targets/", body, content_type="application/json",
                           CONTENT_TYPE="application/json")
    assert response.status_code == status
    assert response.json() in [{"error": text} for text in (
        error if isinstance(error, tuple) else (error,))]


def test_unknown_fields_are_named(client, receiver):
    response = post(client, "/targets/", subscription(receiver, secret="x", owner=2))
    assert response.status_code == 400
    assert response.json()["error"] == "Unknown fields: owner, secret."
    assert set(response.json()["fields"]) == {"owner", "secret"}
    assert not WebhookTarget.objects.exists()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("event", 1, "Must be a string."),
    ("target_url", None, "Must be a string."),
    ("identifier", ["a"], "Must be a string."),
    ("identifier", "\ud800", "Must be a string."),
    ("is_active", "yes", "Must be true or false."),
    ("is_active", 1, "Must be true or false."),
])
def test_fields_of_the_wrong_type_are_400(client, receiver, field, value, message):
    response = post(client, "/targets/", subscription(receiver, **{field: value}))
    assert response.status_code == 400
    assert response.json()["fields"] == {field: [message]}


def test_a_lone_surrogate_escape_in_the_body_is_400(client, receiver):
    body = json.dumps(subscription(receiver))[:-1] + ', "identifier": "\\udc00"}'
    response = client.post(f"{API}/targets/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["fields"] == {"identifier": ["Must be a string."]}


@pytest.mark.parametrize(("fields", "errors"), [
    ({"event": "nope"}, {"event": ["Select a valid choice. nope is not one of the available "
                                   "choices."]}),
    ({"target_url": "ftp://example.com/"}, {"target_url": [
        "The URL's scheme must be http or https, not 'ftp'."]}),
    ({"target_url": "http://10.0.0.1/hook/"}, "target_url"),
    ({"identifier": "x" * 256}, {"identifier": [
        "Ensure this value has at most 255 characters (it has 256)."]}),
    ({"identifier": "a\x00b"}, {"identifier": ["Null characters are not allowed."]}),
    ({"header_content_type": "text/xml"}, {"header_content_type": [
        "Select a valid choice. text/xml is not one of the available choices."]}),
])
def test_invalid_values_are_400_with_the_forms_messages(client, receiver, fields, errors):
    response = post(client, "/targets/", subscription(receiver, **fields))
    assert response.status_code == 400
    if isinstance(errors, str):
        assert list(response.json()["fields"]) == [errors]
        assert response.json()["fields"][errors][0]
    else:
        assert response.json()["fields"] == errors


def test_required_fields(client):
    response = post(client, "/targets/", {})
    assert response.status_code == 400
    assert response.json()["fields"] == {"event": ["This field is required."],
                                         "target_url": ["This field is required."]}


def test_a_second_identical_subscription_is_400(client, receiver):
    assert post(client, "/targets/", subscription(receiver)).status_code == 201
    response = post(client, "/targets/", subscription(receiver))
    assert response.status_code == 400
    message = "You already have a webhook for this event, identifier and URL."
    assert response.json() == {
        "error": "The webhook was not saved: see the messages for each field.",
        "fields": {"target_url": [message]}}


def test_patch_is_validated_too(client, make_target):
    target = make_target()
    response = patch(client, f"/targets/{target.pk}/", {"target_url": "not a url",
                                                        "colour": "red"})
    assert response.status_code == 400
    assert response.json()["fields"] == {"colour": [
        "This field is not known. The fields are: event, identifier, target_url, "
        "header_content_type, is_active, headers, timeout, retry_schedule, ordered, "
        "max_in_flight, rate_limit."]}
    response = patch(client, f"/targets/{target.pk}/", {"target_url": "not a url"})
    assert response.json()["fields"] == {"target_url": ["Enter a valid URL."]}
    assert WebhookTarget.objects.get(pk=target.pk).target_url == target.target_url


def test_a_body_over_64_kib_is_413(client, receiver):
    body = subscription(receiver, identifier="x" * (64 * 1024))
    response = post(client, "/targets/", body)
    assert response.status_code == 413
    assert response.json() == {"error": "The body is too large: at most 65536 bytes."}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_a_body_that_is_not_sent_as_json_is_415(client, make_target, content_type):
    target = make_target()
    for response in (
        client.post(f"{API}/targets/", "{}", content_type=content_type),
        client.patch(f"{API}/targets/{target.pk}/", "{}", content_type=content_type),
    ):
        assert response.status_code == 415
        assert "application/json" in response.json()["error"]


def test_json_with_a_charset_is_json(client, receiver):
    response = post(client, "/targets/", subscription(receiver))
    assert response.status_code == 201
    response = client.post(f"{API}/targets/", json.dumps(subscription(receiver, identifier="b")),
                           content_type="application/json; charset=utf-8")
    assert response.status_code == 201


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("put", "/targets/", "GET, POST"),
    ("delete", "/targets/", "GET, POST"),
    ("post", "/targets/1/", "GET, PATCH, DELETE"),
    ("post", "/deliveries/", "GET"),
    ("get", "/deliveries/1/replay/", "POST"),
    ("post", "/openapi.json", "GET"),
])
def test_other_methods_are_405_with_allow(client, method, path, allow):
    response = getattr(client, method)(API + path)
    assert response.status_code == 405
    assert response["Allow"] == allow
    assert response.json()["error"] == f"The method {method.upper()} is not allowed here."


# Authentication and permission


def test_anonymous_requests_are_401(make_target, delivery):
    anonymous = Client()
    for method, path in [("get", "/targets/"), ("post", "/targets/"),
                         ("get", f"/targets/{delivery.webhook_target_id}/"),
                         ("patch", f"/targets/{delivery.webhook_target_id}/"),
                         ("delete", f"/targets/{delivery.webhook_target_id}/"),
                         ("get", "/deliveries/"), ("get", f"/deliveries/{delivery.pk}/"),
                         ("post", f"/deliveries/{delivery.pk}/replay/")]:
        response = getattr(anonymous, method)(API + path)
        assert response.status_code == 401, (method, path)
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert "Authentication credentials were not provided" in response.json()["error"]
    assert WebhookTarget.objects.filter(pk=delivery.webhook_target_id).exists()


def test_the_openapi_document_needs_no_credentials():
    response = Client().get(f"{API}/openapi.json")
    assert response.status_code == 200
    assert response.json()["servers"] == [{"url": f"http://testserver{API}"}]


@pytest.mark.parametrize("header", ["Bearer djwh_wrong", "Bearer", "Basic dXNlcjpwdw==",
                                    "djwh_nothing", "Bearer " + "djwh_" + "x" * 300])
def test_bad_credentials_are_401(db, header):
    response = Client(HTTP_AUTHORIZATION=header).get(f"{API}/targets/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="webhooks"'


def test_a_token_acts_for_its_user_and_records_its_use(client, key, user, make_target):
    make_target()
    token = ApiToken.objects.get()
    assert token.last_used is None
    assert len(client.get(f"{API}/targets/").json()["results"]) == 1
    token.refresh_from_db()
    first = token.last_used
    assert first is not None
    client.get(f"{API}/targets/")
    token.refresh_from_db()
    assert token.last_used == first  # not written again within the minute


def test_last_used_is_written_again_after_a_minute(client):
    token = ApiToken.objects.get()
    long_ago = timezone.now() - timedelta(minutes=2)
    ApiToken.objects.filter(pk=token.pk).update(last_used=long_ago)
    client.get(f"{API}/targets/")
    token.refresh_from_db()
    assert token.last_used > long_ago + timedelta(minutes=1)


def test_a_revoked_token_is_401(client):
    assert client.get(f"{API}/targets/").status_code == 200
    ApiToken.objects.all().delete()
    response = client.get(f"{API}/targets/")
    assert response.status_code == 401
    assert response.json()["error"] == "This API key is not valid: it may have been revoked."


def test_an_inactive_users_token_is_401(client, user):
    user.is_active = False
    user.save()
    assert client.get(f"{API}/targets/").status_code == 401


def test_an_inactive_users_session_is_401(user):
    browser = Client()
    browser.force_login(user)
    user.is_active = False
    user.save()
    assert browser.get(f"{API}/targets/").status_code == 401


def test_a_user_manage_permission_refuses_is_403(client, settings, user, delivery):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "MANAGE_PERMISSION": "tests.test_portal_api.nobody"}
    for response in (client.get(f"{API}/targets/"), client.get(f"{API}/deliveries/"),
                     client.post(f"{API}/deliveries/{delivery.pk}/replay/")):
        assert response.status_code == 403
        assert response.json() == {"error": "You do not have permission to manage webhooks."}
    session = Client()
    session.force_login(user)
    assert session.get(f"{API}/targets/").status_code == 403


def test_session_requests_must_pass_the_csrf_check(user, receiver):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert browser.get(f"{API}/targets/").status_code == 200  # safe methods need no token
    body = json.dumps(subscription(receiver))
    response = browser.post(f"{API}/targets/", body, content_type="application/json")
    assert response.status_code == 403
    assert response.json()["error"].startswith("CSRF check failed")
    assert not WebhookTarget.objects.exists()

    token = "CsrfSecretOf32CharactersForTests"  # what a page's {% csrf_token %} sets
    browser.cookies[settings.CSRF_COOKIE_NAME] = token
    response = browser.post(f"{API}/targets/", body, content_type="application/json",
                            HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 201
    target_id = response.json()["id"]
    assert browser.delete(f"{API}/targets/{target_id}/").status_code == 403
    assert browser.delete(f"{API}/targets/{target_id}/",
                          HTTP_X_CSRFTOKEN=token).status_code == 204


def test_a_bearer_token_needs_no_csrf_token(key, receiver):
    browser = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {key}")
    response = post(browser, "/targets/", subscription(receiver))
    assert response.status_code == 201


def test_another_users_objects_are_404_everywhere(client, other_user, receiver):
    theirs = WebhookTarget.objects.create(owner=other_user, event="project.update",
                                          target_url=receiver.url + "/theirs/")
    their_delivery = Delivery.objects.create(webhook_target=theirs, event="project.update",
                                             hash_value="msg_theirs", status="failed")
    for response in (
        client.get(f"{API}/targets/{theirs.pk}/"),
        patch(client, f"/targets/{theirs.pk}/", {"is_active": False}),
        client.delete(f"{API}/targets/{theirs.pk}/"),
        client.get(f"{API}/deliveries/{their_delivery.pk}/"),
        client.post(f"{API}/deliveries/{their_delivery.pk}/replay/"),
    ):
        assert response.status_code == 404
        assert response.json()["error"].startswith("No ")
    assert client.get(f"{API}/targets/").json()["results"] == []
    assert client.get(f"{API}/deliveries/?target={theirs.pk}").json()["results"] == []
    theirs.refresh_from_db()
    their_delivery.refresh_from_db()
    assert theirs.is_active is True
    assert their_delivery.status == "failed"


@pytest.mark.parametrize("path", ["/targets/0/", "/targets/99999999999999999999999/",
                                  "/deliveries/12345/", "/deliveries/12345/replay/"])
def test_missing_objects_are_404_json(client, path):
    method = client.post if path.endswith("replay/") else client.get
    response = method(API + path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


def test_api_answers_are_not_cached(client):
    assert "no-store" in client.get(f"{API}/targets/")["Cache-Control"]


# The OpenAPI description


def test_the_openapi_document_is_valid_openapi_3_1(client):
    document = client.get(f"{API}/openapi.json").json()
    validate(document)
    assert document["openapi"] == "3.1.0"
    validate(json.loads(json.dumps(openapi.document())))


def test_the_openapi_document_describes_every_route():
    document = openapi.document("https://example.com")
    assert document["servers"] == [{"url": f"https://example.com{API}"}]
    operations = {(path, method) for path, item in document["paths"].items()
                  for method in item if method != "parameters"}
    assert operations == {
        ("/openapi.json", "get"), ("/targets/", "get"), ("/targets/", "post"),
        ("/targets/{id}/", "get"), ("/targets/{id}/", "patch"), ("/targets/{id}/", "delete"),
        ("/deliveries/", "get"), ("/deliveries/{id}/", "get"),
        ("/deliveries/{id}/replay/", "post")}
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http",
                                     "scheme": "bearer"}
    assert schemes["sessionAuth"]["in"] == "cookie"
    assert set(document["components"]["schemas"]) >= {
        "Target", "TargetInput", "Delivery", "Attempt", "Error", "TargetPage",
        "DeliveryPage"}
    inputs = document["components"]["schemas"]["TargetInput"]["properties"]
    assert set(inputs) == set(api.FIELD_TYPES)
    assert inputs["event"]["enum"] == ["project.update", "project.delete", "invoice.paid"]


# Fuzzing against the description


@pytest.fixture
def fuzz_data(transactional_db):
    """A fuzzing user's API key and the ids of their targets and deliveries, committed."""
    owner = get_user_model().objects.create_user("fuzzer", "fuzz@example.com", "pw")
    ids = {"targets": [], "deliveries": []}
    for n in range(3):
        target = WebhookTarget.objects.create(owner=owner, event="project.update",
                                              target_url=f"https://example.com/{n}/")
        ids["targets"].append(target.pk)
        for status in ("failed", "succeeded"):
            row = Delivery.objects.create(webhook_target=target, event="project.update",
                                          hash_value=f"msg_{n}_{status}", status=status,
                                          payload_json='{"n": [1, "two"]}', attempt=1)
            DeliveryAttempt.objects.create(delivery=row, attempt=1, response_status=500,
                                           success=status == "succeeded")
            ids["deliveries"].append(row.pk)
    return ApiToken.create(owner, "fuzz")[1], ids


def existing_ids(case, ids):
    """Point an even generated id at an object of the fuzzing user's (not only 404s)."""
    value = (case.path_parameters or {}).get("id")
    if isinstance(value, int) and value % 2 == 0:
        rows = ids["targets" if case.path.startswith("/targets/") else "deliveries"]
        case.path_parameters["id"] = rows[value // 2 % len(rows)]


# Loaded from the WSGI application as the module is collected (schemathesis's fixture
# loader does not work with this pytest).
schema = schemathesis.openapi.from_wsgi(f"{API}/openapi.json", get_wsgi_application())


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
# Derandomized, with no example database: the same cases on every run and every machine,
# so that a failure in CI can be run again here (vary them with --hypothesis-seed).
@hypothesis_settings(max_examples=25, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))
def test_the_api_keeps_to_its_description(case, fuzz_data):
    key, ids = fuzz_data
    existing_ids(case, ids)
    case.call_and_validate(
        headers={"Authorization": f"Bearer {key}"},
        checks=[not_a_server_error, response_schema_conformance, status_code_conformance,
                content_type_conformance, response_headers_conformance])


def test_the_docs_route_table_is_the_openapi_document_s():
    """docs/portal.rst lists every route the OpenAPI document describes, and no other."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "portal.rst").read_text()
    documented = set(re.findall(r"^``(GET|POST|PATCH|DELETE) api(/\S*)``", text, re.M))
    described = {(method.upper(), re.sub(r"\{(\w+)\}", r"<\1>", path))
                 for path, operations in openapi.document()["paths"].items()
                 for method in operations if method in ("get", "post", "patch", "delete")}
    assert documented == described
