"""A target's own options: static headers (sent, masked wherever shown, refused when they
would replace the sender's or break the request), a timeout within the sender's, a retry
schedule of its own, whether its deliveries are ordered, the most requests sent to it at
once and its rate limit; through the model, the admin, the pages and the API."""

import json
import logging
import re
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from standardwebhooks import Webhook

from djwebhooks import options, replay, send_event
from djwebhooks.models import ApiToken, Delivery, DeliveryAttempt, WebhookTarget
from djwebhooks.portal import display
from djwebhooks.sending import send_deliveries
from tests.receiver import Reply

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "Bearer abcdefghijklmnopqrstuvwxyz0123"  # long enough to show its last four


# The rules


@pytest.mark.parametrize("name", ["webhook-signature", "Webhook-Id", "WEBHOOK-TIMESTAMP",
                                  "Host", "content-length", "Content-Type",
                                  "Transfer-Encoding", "Connection"])
def test_headers_that_would_replace_the_senders_own_are_refused(name):
    with pytest.raises(options.OptionError, match="set by the sender itself"):
        options.check_headers({name: "x"})


@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\nb", "a\rb", "a\x00b", "a\x7fb",
                                   "caf\u00e9", "a••••••"])
def test_values_that_could_end_the_header_or_are_not_ascii_are_refused(value):
    with pytest.raises(options.OptionError, match="printable ASCII"):
        options.check_headers({"X-Api-Key": value})


@pytest.mark.parametrize("headers, message", [
    ({"X Api": "1"}, "is not a header name"),
    ({"X-Api:": "1"}, "is not a header name"),
    ({"": "1"}, "is not a header name"),
    ({"X-" + "a" * 64: "1"}, "is not a header name"),
    ({"X-A": "1", "x-a": "2"}, "given twice"),
    ({"X-A": "   "}, "has no value"),
    ({"X-A": 1}, "must be text"),
    ({"X-A": "a" * 2049}, "longer than 2048"),
    ({f"X-{n}": "1" for n in range(21)}, "at most 20 headers"),
    ({f"X-{n}": "a" * 2000 for n in range(5)}, "longer than 8192"),
    (["X-A", "1"], "must be a mapping"),
])
def test_header_rules_say_what_is_wrong(headers, message):
    with pytest.raises(options.OptionError, match=message):
        options.check_headers(headers)


def test_a_masked_value_typed_back_keeps_the_stored_one_and_nothing_else_does():
    stored = {"Authorization": TOKEN, "X-Short": "s3cret"}
    shown = options.masked(stored)
    assert shown == {"Authorization": "••••••0123", "X-Short": "••••••"}
    assert options.unmask({"authorization": "••••••0123", "X-Short": "new"}, stored) == {
        "authorization": TOKEN, "X-Short": "new"}
    # A mask typed for a header that has no stored value is refused, not sent.
    with pytest.raises(options.OptionError):
        options.check_headers(options.unmask({"X-Other": "••••••"}, stored))


def test_schedules_and_timeouts_are_bounded():
    assert options.parse_schedule("5s, 5m, 2h, 1d, 30") == (5, 300, 7200, 86400, 30)
    assert options.format_schedule((5, 300, 7200, 86400, 1.5)) == "5s, 5m, 2h, 1d, 1.5s"
    for text, message in [("5x", "not a wait"), ("5s,,5m", "not a wait"),
                          ("8d", "1 second to 7 days"), ("0", "1 second to 7 days"),
                          (",".join(["5s"] * 31), "at most 30")]:
        with pytest.raises(options.OptionError, match=message):
            options.parse_schedule(text)
    for value in [float("nan"), float("inf"), True, "5", 0.5, 31]:
        with pytest.raises(options.OptionError):
            options.check_timeout(value, 30)
    assert options.bounded_timeout(45, 30) == 30  # a TOTAL_TIMEOUT lowered since


def test_the_model_validates_every_option(make_target):
    target = make_target()
    target.headers = {"Host": "evil.example"}
    target.timeout = 31
    target.retry_schedule = [0]
    with pytest.raises(ValidationError) as caught:
        target.full_clean()
    assert set(caught.value.message_dict) == {"headers", "timeout", "retry_schedule"}
    assert "TOTAL_TIMEOUT" in caught.value.message_dict["timeout"][0]


# On the wire


def test_a_targets_headers_are_sent_beside_a_valid_signature(make_target, user, receiver):
    target = make_target(headers={"Authorization": TOKEN, "X-Api-Key": "k1"})
    send_event("project.update", {"n": 1}, owner=user)
    [request] = receiver.requests
    assert request.headers["authorization"] == TOKEN
    assert request.headers["x-api-key"] == "k1"
    assert request.headers["content-type"] == "application/json"
    assert Webhook(target.secret).verify(request.body, request.headers)


def test_a_header_saved_from_code_unchecked_fails_the_attempt_and_nothing_else(
        make_target, user, receiver):
    # .save() does not validate: the sender checks again, before sending anything.
    bad = make_target(headers={"X-Api-Key": "a\r\nX-Injected: 1"})
    good = make_target(identifier="", target_url=receiver.url + "/other/")
    deliveries = send_event("project.update", {"n": 1}, owner=user)
    assert [r.path for r in receiver.requests] == ["/other/"]
    failed = Delivery.objects.get(webhook_target=bad)
    [attempt] = failed.attempts.all()
    assert attempt.notification == "Error before sending"
    assert "The value of X-Api-Key may hold only printable ASCII" in attempt.error
    assert failed.status == Delivery.Status.PENDING  # retried: the owner can fix it
    assert Delivery.objects.get(webhook_target=good).status == Delivery.Status.SUCCEEDED
    assert len(deliveries) == 2


def test_a_targets_timeout_cuts_its_requests_short(make_target, user, receiver):
    receiver.default = Reply(delay=4)
    make_target(timeout=1)
    send_event("project.update", {"n": 1}, owner=user)
    attempt = DeliveryAttempt.objects.get()
    assert (attempt.notification, attempt.response_status) == ("Timed out", None)
    assert "its total deadline (1 s)" in attempt.error
    # The sender's own limit is 30 s; the receiver would have answered after 4.
    assert attempt.duration < 3000


def test_a_timeout_above_a_lowered_total_timeout_is_cut_to_it(make_target, user, receiver,
                                                              settings):
    receiver.default = Reply(delay=4)
    make_target(timeout=20)  # valid when saved, under a TOTAL_TIMEOUT of 30
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "TOTAL_TIMEOUT": 2}
    send_event("project.update", {"n": 1}, owner=user)
    attempt = DeliveryAttempt.objects.get()
    assert (attempt.notification, attempt.response_status) == ("Timed out", None)
    assert "its total deadline (2 s)" in attempt.error


# The retry schedule


def test_a_targets_own_schedule_decides_its_retries(make_target, user, receiver):
    receiver.default = Reply(status=500)
    make_target(retry_schedule=[60])
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.PENDING
    assert delivery.reason == "attempt 2 of 2: scheduled retry"
    wait = (delivery.next_attempt_at - delivery.attempts.get().created).total_seconds()
    assert 60 * 0.8 - 1 <= wait <= 60 * 1.2 + 1

    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=delivery.created)
    send_deliveries([delivery.pk])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.reason) == (Delivery.Status.FAILED,
                                                  "gave up after 2 attempts")


def test_an_empty_schedule_means_no_retries(make_target, user, receiver):
    receiver.default = Reply(status=500)
    make_target(retry_schedule=[])
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.reason) == (Delivery.Status.FAILED,
                                                  "gave up after 1 attempt")


def test_an_unusable_schedule_saved_from_code_falls_back_to_the_senders(
        make_target, user, receiver, caplog):
    receiver.default = Reply(status=500)
    target = make_target(retry_schedule=["soon"])
    with caplog.at_level(logging.WARNING, logger="djwebhooks.queue"):
        [delivery] = send_event("project.update", {"n": 1}, owner=user)
    delivery.refresh_from_db()
    assert delivery.reason == "attempt 2 of 8: scheduled retry"
    assert f"Webhook target {target.pk} has a retry schedule that cannot be used" in \
        caplog.text


# Where they are shown and edited


@pytest.fixture
def staff(django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("admin", "a@x.org", "pw"))
    return client


def change_form(staff, target):
    return staff.get(reverse("admin:djwebhooks_webhooktarget_change", args=[target.pk]))


def form_data(html):
    """The values of a change form's fields, as a browser would submit them."""
    data = {}
    for name, value in re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html):
        data[name] = value
    for name, text in re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', html,
                                 re.S):
        data[name] = text.strip("\n").replace("&quot;", '"').replace("&#x27;", "'")
    for name, body in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', html,
                                 re.S):
        chosen = re.search(r'<option value="([^"]*)"[^>]*selected', body)
        data[name] = chosen[1] if chosen else ""
    for box in ("is_active", "ordered"):  # a browser sends a ticked box only
        data.pop(box, None)
        if re.search(rf'<input[^>]*name="{box}"[^>]*checked', html):
            data[box] = "on"
    data.pop("csrfmiddlewaretoken", None)
    return data


def test_the_admin_masks_header_values_and_keeps_them_when_saved_unchanged(
        staff, make_target):
    target = make_target(headers={"Authorization": TOKEN, "X-Api-Key": "k1"}, timeout=5,
                         retry_schedule=[5, 300])
    html = change_form(staff, target).content.decode()
    assert TOKEN not in html
    data = form_data(html)
    # In any order: PostgreSQL's jsonb keeps keys in an order of its own.
    assert set(data["headers"].splitlines()) == {"Authorization: ••••••0123",
                                                 "X-Api-Key: ••••••"}
    assert data["retry_schedule"] == "5s, 5m"
    data["headers"] += "\nX-New: added"
    response = staff.post(reverse("admin:djwebhooks_webhooktarget_change", args=[target.pk]),
                          data)
    assert response.status_code == 302, response.content.decode()[:2000]
    target.refresh_from_db()
    assert target.headers == {"Authorization": TOKEN, "X-Api-Key": "k1", "X-New": "added"}
    assert (target.timeout, target.retry_schedule) == (5, [5, 300])


def test_the_admin_refuses_a_reserved_header_and_says_why(staff, make_target):
    target = make_target()
    data = form_data(change_form(staff, target).content.decode())
    data["headers"] = "webhook-signature: v1,forged"
    response = staff.post(reverse("admin:djwebhooks_webhooktarget_change", args=[target.pk]),
                          data)
    assert response.status_code == 200
    assert "set by the sender itself" in response.content.decode()
    target.refresh_from_db()
    assert target.headers == {}


def test_the_secret_pages_show_header_values_whole(staff, make_target, user):
    target = make_target(headers={"Authorization": TOKEN})
    page = staff.get(reverse("admin:djwebhooks_webhooktarget_secret", args=[target.pk]))
    assert f"Authorization: {TOKEN}" in page.content.decode()
    owner = Client()
    owner.force_login(user)
    page = owner.post(reverse("djwebhooks:target-secret", args=[target.pk]))
    assert f"Authorization: {TOKEN}" in page.content.decode()


def test_the_owners_pages_show_and_edit_the_options(make_target, user):
    target = make_target(headers={"Authorization": TOKEN})
    owner = Client()
    owner.force_login(user)
    detail = owner.get(reverse("djwebhooks:target", args=[target.pk])).content.decode()
    assert TOKEN not in detail and "Authorization: ••••••0123" in detail
    assert "30 s (the sender's)" in detail
    assert "5s, 5m, 30m, 2h, 5h, 10h, 10h (the sender&#x27;s)" in detail
    edit = owner.get(reverse("djwebhooks:target-edit", args=[target.pk])).content.decode()
    assert TOKEN not in edit
    data = form_data(edit)
    data.update(timeout="2.5", retry_schedule="none")
    response = owner.post(reverse("djwebhooks:target-edit", args=[target.pk]), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    target.refresh_from_db()
    assert (target.headers, target.timeout, target.retry_schedule) == (
        {"Authorization": TOKEN}, 2.5, [])
    detail = owner.get(reverse("djwebhooks:target", args=[target.pk])).content.decode()
    assert "2.5 s" in detail and "none: no retries" in detail


def test_a_deliverys_page_shows_the_targets_headers_masked(make_target, user):
    target = make_target(headers={"Authorization": TOKEN})
    delivery = Delivery.objects.create(webhook_target=target, event="project.update",
                                       payload_json="{}", hash_value="msg_1")
    shown = dict(display.request_headers(delivery))
    assert shown["Authorization"] == "••••••0123"
    owner = Client()
    owner.force_login(user)
    page = owner.get(reverse("djwebhooks:delivery", args=[delivery.pk])).content.decode()
    assert TOKEN not in page and "••••••0123" in page


# The API


@pytest.fixture
def api(user):
    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiToken.create(user, 'tests')[1]}")


def api_patch(api, target, body):
    return api.patch(f"/webhooks/api/targets/{target.pk}/", json.dumps(body),
                     content_type="application/json")


def test_the_api_shows_headers_masked_and_keeps_a_masked_value_sent_back(api, make_target):
    target = make_target(headers={"Authorization": TOKEN, "X-Api-Key": "k1"})
    shown = api.get(f"/webhooks/api/targets/{target.pk}/").json()
    assert shown["headers"] == {"Authorization": "••••••0123", "X-Api-Key": "••••••"}
    assert (shown["timeout"], shown["retry_schedule"]) == (None, None)
    headers = {**shown["headers"], "X-Api-Key": "k2"}
    response = api_patch(api, target, {"headers": headers, "timeout": 3,
                                       "retry_schedule": [10, 60]})
    assert response.status_code == 200, response.json()
    target.refresh_from_db()
    assert target.headers == {"Authorization": TOKEN, "X-Api-Key": "k2"}
    assert (target.timeout, target.retry_schedule) == (3, [10, 60])
    assert response.json()["headers"] == {"Authorization": "••••••0123",
                                          "X-Api-Key": "••••••"}


@pytest.mark.parametrize("body, field, message", [
    ({"headers": {"Content-Length": "0"}}, "headers", "set by the sender itself"),
    ({"headers": {"X-A": "a\nb"}}, "headers", "printable ASCII"),
    ({"headers": ["X-A: 1"]}, "headers", "Must be an object"),
    ({"timeout": True}, "timeout", "Must be a number"),
    ({"timeout": 0.2}, "timeout", "greater than or equal to 1"),
    ({"timeout": 300}, "timeout", "TOTAL_TIMEOUT"),
    ({"retry_schedule": "5s"}, "retry_schedule", "Must be a list"),
    ({"retry_schedule": [5, "x"]}, "retry_schedule", "1 second to 7 days"),
    ({"retry_schedule": [1e308]}, "retry_schedule", "1 second to 7 days"),
])
def test_the_api_refuses_bad_options_and_keeps_the_target(api, make_target, body, field,
                                                           message):
    target = make_target(headers={"X-Api-Key": "k1"})
    response = api_patch(api, target, body)
    assert response.status_code == 400
    assert message in response.json()["fields"][field][0]
    target.refresh_from_db()
    assert (target.headers, target.timeout, target.retry_schedule) == (
        {"X-Api-Key": "k1"}, None, None)


def test_replayed_options_are_the_targets_current_ones(make_target, user, receiver):
    # Options belong to the target, not the delivery: a replay uses what is set now.
    receiver.default = Reply(status=500)
    target = make_target(retry_schedule=[])
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    receiver.default = Reply()
    target.headers = {"X-Api-Key": "rotated"}
    target.save()
    replay(Delivery.objects.filter(pk=delivery.pk))
    assert receiver.requests[-1].headers["x-api-key"] == "rotated"
    assert Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.SUCCEEDED


# Ordered targets


def pending(target, hash_value, **fields):
    """A delivery to ``target``, pending unless told, made now (so later ones have larger
    ids)."""
    fields.setdefault("status", Delivery.Status.PENDING)
    return Delivery.objects.create(webhook_target=target, event="project.update",
                                   payload_json="{}", hash_value=hash_value, **fields)


def test_the_admin_sets_ordered_and_filters_by_it(staff, make_target):
    target = make_target()
    other = make_target(identifier="other")
    html = change_form(staff, target).content.decode()
    assert re.search(r'<input type="checkbox" name="ordered"[^>]*>', html)
    assert "checked" not in re.search(r'<input[^>]*name="ordered"[^>]*>', html)[0]
    assert "head of the line" not in html.lower()  # only an ordered target has a line
    data = form_data(html)
    data["ordered"] = "on"
    response = staff.post(reverse("admin:djwebhooks_webhooktarget_change", args=[target.pk]),
                          data)
    assert response.status_code == 302, response.content.decode()[:2000]
    target.refresh_from_db()
    assert target.ordered is True
    assert re.search(r'<input[^>]*name="ordered"[^>]*checked',
                     change_form(staff, target).content.decode())

    changelist = reverse("admin:djwebhooks_webhooktarget_changelist")
    # The list offers the filter (the admin would take the lookup in the URL without it).
    assert "By ordered" in staff.get(changelist).content.decode()
    page = staff.get(changelist, {"ordered__exact": "1"})
    assert [row.pk for row in page.context["cl"].result_list] == [target.pk]
    page = staff.get(changelist, {"ordered__exact": "0"})
    assert [row.pk for row in page.context["cl"].result_list] == [other.pk]

    # Unticked again (a browser sends no value at all for it), it is saved as off.
    data = form_data(change_form(staff, target).content.decode())
    del data["ordered"]
    staff.post(reverse("admin:djwebhooks_webhooktarget_change", args=[target.pk]), data)
    target.refresh_from_db()
    assert target.ordered is False


def test_the_admin_shows_which_delivery_heads_an_ordered_targets_line(staff, make_target):
    from djwebhooks.admin import format_time

    target = make_target(ordered=True)
    html = change_form(staff, target).content.decode()
    assert "Head of the line" in html and "nothing waiting" in html

    pending(target, "msg_done", status=Delivery.Status.SUCCEEDED)
    head = pending(target, "msg_head", reason="attempt 3 of 8: scheduled retry",
                   next_attempt_at=timezone.now() + timedelta(minutes=5))
    pending(target, "msg_behind")
    pending(make_target(identifier="other"), "msg_elsewhere")  # another target's line
    html = change_form(staff, target).content.decode()
    line = re.search(r'<a href="([^"]+)" id="line-head">([^<]+)</a>([^<]*)', html)
    assert line, html
    assert line[1] == reverse("admin:djwebhooks_delivery_change", args=[head.pk])
    assert line[2] == "msg_head"
    assert line[3] == (f" — pending: attempt 3 of 8: scheduled retry; next attempt at "
                       f"{format_time(head.next_attempt_at)}")
    assert "nothing waiting" not in html

    # Once the head is done (here: skipped), the next one heads the line.
    Delivery.objects.filter(pk=head.pk).update(status=Delivery.Status.CANCELLED)
    html = change_form(staff, target).content.decode()
    assert re.search(r'id="line-head">msg_behind</a>', html)


def test_the_owners_pages_show_and_edit_ordered(make_target, user):
    target = make_target()
    owner = Client()
    owner.force_login(user)
    detail = owner.get(reverse("djwebhooks:target", args=[target.pk])).content.decode()
    assert re.search(r'<dt>Ordered</dt><dd id="ordered">no</dd>', detail)
    edit = owner.get(reverse("djwebhooks:target-edit", args=[target.pk])).content.decode()
    box = re.search(r'<input[^>]*name="ordered"[^>]*>', edit)[0]
    assert 'type="checkbox"' in box and "checked" not in box
    assert 'aria-describedby="id_ordered_help"' in box
    assert re.search(r'<p class="help" id="id_ordered_help">Send its deliveries one at a '
                     r'time, in the order they were created', edit)
    data = form_data(edit)
    data["ordered"] = "on"
    response = owner.post(reverse("djwebhooks:target-edit", args=[target.pk]), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    target.refresh_from_db()
    assert target.ordered is True
    detail = owner.get(reverse("djwebhooks:target", args=[target.pk])).content.decode()
    assert re.search(r'<dt>Ordered</dt><dd id="ordered">yes</dd>', detail)
    assert "First in line" not in detail  # nothing is pending


def test_an_ordered_targets_page_names_the_delivery_the_others_wait_on(make_target, user):
    target = make_target(ordered=True)
    pending(target, "msg_failed", status=Delivery.Status.FAILED)
    head = pending(target, "msg_head", reason="attempt 2 of 8: scheduled retry",
                   next_attempt_at=timezone.now() + timedelta(minutes=5))
    pending(target, "msg_behind")
    owner = Client()
    owner.force_login(user)
    detail = owner.get(reverse("djwebhooks:target", args=[target.pk])).content.decode()
    line = re.search(r'<dd id="line-head">(.*?)</dd>', detail, re.S)
    assert line, detail
    assert f'href="{reverse("djwebhooks:delivery", args=[head.pk])}"' in line[1]
    assert "<code>msg_head</code></a>: pending, attempt 2 of 8: scheduled retry" in line[1]
    assert "next attempt" in line[1] and "msg_behind" not in line[1]

    # The same target unordered: its deliveries do not wait on one another.
    WebhookTarget.objects.filter(pk=target.pk).update(ordered=False)
    detail = owner.get(reverse("djwebhooks:target", args=[target.pk])).content.decode()
    assert 'id="line-head"' not in detail


def test_the_api_shows_and_sets_ordered(api, make_target, receiver):
    target = make_target()
    assert api.get(f"/webhooks/api/targets/{target.pk}/").json()["ordered"] is False
    response = api_patch(api, target, {"ordered": True})
    assert response.status_code == 200, response.json()
    assert response.json()["ordered"] is True
    target.refresh_from_db()
    assert target.ordered is True
    # A PATCH that leaves it out keeps it.
    assert api_patch(api, target, {"timeout": 3}).json()["ordered"] is True
    target.refresh_from_db()
    assert target.ordered is True

    def create(**fields):
        body = {"event": "project.update", "target_url": receiver.url + "/new/", **fields}
        response = api.post("/webhooks/api/targets/", json.dumps(body),
                            content_type="application/json")
        assert response.status_code == 201, response.json()
        return response.json()

    made = create(ordered=True, identifier="a")
    assert made["ordered"] is True and WebhookTarget.objects.get(pk=made["id"]).ordered
    made = create(identifier="b")
    assert made["ordered"] is False
    assert WebhookTarget.objects.get(pk=made["id"]).ordered is False


@pytest.mark.parametrize("value", [1, 0, "true", "false", "on", "", None, [True]])
def test_the_api_takes_ordered_only_as_a_json_boolean(api, make_target, receiver, value):
    # Each stored value is the opposite of what a loose reading of the bad one would give.
    for stored in (False, True):
        target = make_target(identifier=f"stored-{stored}", ordered=stored)
        response = api_patch(api, target, {"ordered": value})
        assert response.status_code == 400
        assert response.json()["fields"] == {"ordered": ["Must be true or false."]}
        target.refresh_from_db()
        assert target.ordered is stored
    response = api.post("/webhooks/api/targets/", json.dumps(
        {"event": "project.update", "target_url": receiver.url + "/new/", "ordered": value}),
        content_type="application/json")
    assert response.status_code == 400
    assert response.json()["fields"] == {"ordered": ["Must be true or false."]}
    assert not WebhookTarget.objects.filter(target_url=receiver.url + "/new/").exists()


def test_the_openapi_document_describes_ordered():
    from djwebhooks.portal import openapi

    components = openapi.document("https://example.com")["components"]["schemas"]
    for name in ("Target", "NewTarget", "TargetInput", "TargetPatch"):
        assert components[name]["properties"]["ordered"]["type"] == "boolean", name
        assert "one at a time" in components[name]["properties"]["ordered"]["description"]
    assert "ordered" in components["Target"]["required"]
    assert "ordered" not in components["TargetInput"]["required"]


# Most requests at once and the rate limit

#: What the forms say of a value each field cannot have.
FORM_MESSAGES = {
    "max_in_flight": "Give a whole number from 1 to 1000, or leave it blank for the "
                     "sender&#x27;s default.",
    "rate_limit": "Give a whole number from 1 to 10000, or leave it blank for no limit.",
}
#: What the API says of them.
API_MESSAGES = {
    "max_in_flight": "max_in_flight must be a whole number from 1 to 1000, or null for the "
                     "sender's default.",
    "rate_limit": "rate_limit must be a whole number from 1 to 10000, or null for no limit.",
}
#: Values each field refuses, typed into a form.
TYPED_BADLY = [("max_in_flight", value) for value in ("0", "-1", "1001", "abc", "true", "2.5")
               ] + [("rate_limit", value) for value in ("0", "-1", "10001", "abc", "true")]


def test_the_model_bounds_max_in_flight_and_the_rate_limit(make_target):
    target = make_target()
    for most, rate in [(0, 0), (options.MAX_IN_FLIGHT + 1, options.MAX_RATE_LIMIT + 1)]:
        target.max_in_flight, target.rate_limit = most, rate
        with pytest.raises(ValidationError) as caught:
            target.full_clean()
        assert set(caught.value.message_dict) == {"max_in_flight", "rate_limit"}
    target.max_in_flight, target.rate_limit = options.MAX_IN_FLIGHT, options.MAX_RATE_LIMIT
    target.full_clean()
    target.max_in_flight = target.rate_limit = None
    target.full_clean()


def test_the_admin_shows_and_sets_max_in_flight_and_the_rate_limit(staff, make_target):
    target = make_target()
    url = reverse("admin:djwebhooks_webhooktarget_change", args=[target.pk])
    html = change_form(staff, target).content.decode()
    for name, most in [("max_in_flight", 1000), ("rate_limit", 10000)]:
        field = re.search(rf'<input[^>]*name="{name}"[^>]*>', html)[0]
        assert 'type="number"' in field and 'min="1"' in field and f'max="{most}"' in field
        assert "value=" not in field  # empty
    assert '<label for="id_max_in_flight">most requests at once:</label>' in html
    assert '<label for="id_rate_limit">rate limit:</label>' in html
    assert "Blank: the sender's default." in html and "Blank: no limit." in html

    data = {**form_data(html), "max_in_flight": "4", "rate_limit": "20"}
    response = staff.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    target.refresh_from_db()
    assert (target.max_in_flight, target.rate_limit) == (4, 20)
    html = change_form(staff, target).content.decode()
    assert re.search(r'<input[^>]*name="max_in_flight"[^>]*value="4"', html)
    assert re.search(r'<input[^>]*name="rate_limit"[^>]*value="20"', html)

    # Emptied, both are saved as None: the sender's default, and no limit.
    data = {**form_data(html), "max_in_flight": "", "rate_limit": ""}
    assert staff.post(url, data).status_code == 302
    target.refresh_from_db()
    assert (target.max_in_flight, target.rate_limit) == (None, None)


@pytest.mark.parametrize("name, value", TYPED_BADLY)
def test_the_admin_refuses_a_bad_max_in_flight_or_rate_limit_and_says_why(
        staff, make_target, name, value):
    target = make_target(max_in_flight=3, rate_limit=7)
    data = {**form_data(change_form(staff, target).content.decode()), name: value}
    response = staff.post(reverse("admin:djwebhooks_webhooktarget_change", args=[target.pk]),
                          data)
    assert response.status_code == 200
    assert FORM_MESSAGES[name] in response.content.decode()
    target.refresh_from_db()
    assert (target.max_in_flight, target.rate_limit) == (3, 7)


def test_the_owners_pages_show_and_edit_max_in_flight_and_the_rate_limit(
        make_target, user, settings):
    target = make_target()
    owner = Client()
    owner.force_login(user)
    page = reverse("djwebhooks:target", args=[target.pk])
    edit_page = reverse("djwebhooks:target-edit", args=[target.pk])
    detail = owner.get(page).content.decode()
    assert re.search(r"<dt>Most requests at once</dt><dd id=\"max-in-flight\">the "
                     r"sender&#x27;s default</dd>", detail)
    assert re.search(r'<dt>Rate limit</dt><dd id="rate-limit">none</dd>', detail)
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "MAX_IN_FLIGHT": 8}
    detail = owner.get(page).content.decode()
    assert re.search(r'<dd id="max-in-flight">8 \(the sender&#x27;s default\)</dd>', detail)

    edit = owner.get(edit_page).content.decode()
    for name in ("max_in_flight", "rate_limit"):
        field = re.search(rf'<input[^>]*name="{name}"[^>]*>', edit)[0]
        assert 'type="number"' in field and "value=" not in field
        assert f'aria-describedby="id_{name}_help"' in field
    assert re.search(r'<p class="help" id="id_max_in_flight_help">The most requests each '
                     r'sending process makes to it at once', edit)
    assert re.search(r'<p class="help" id="id_rate_limit_help">The most requests a second',
                     edit)
    data = {**form_data(edit), "max_in_flight": "4", "rate_limit": "20"}
    response = owner.post(edit_page, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    target.refresh_from_db()
    assert (target.max_in_flight, target.rate_limit) == (4, 20)
    detail = owner.get(page).content.decode()
    assert re.search(r'<dd id="max-in-flight">4</dd>', detail)
    assert re.search(r'<dd id="rate-limit">20 a second</dd>', detail)

    data = {**form_data(owner.get(edit_page).content.decode()), "max_in_flight": "",
            "rate_limit": ""}
    assert owner.post(edit_page, data).status_code == 302
    target.refresh_from_db()
    assert (target.max_in_flight, target.rate_limit) == (None, None)


@pytest.mark.parametrize("name, value", TYPED_BADLY)
def test_the_owners_pages_refuse_a_bad_max_in_flight_or_rate_limit_beside_the_field(
        make_target, user, name, value):
    target = make_target(max_in_flight=3, rate_limit=7)
    owner = Client()
    owner.force_login(user)
    edit_page = reverse("djwebhooks:target-edit", args=[target.pk])
    data = {**form_data(owner.get(edit_page).content.decode()), name: value}
    response = owner.post(edit_page, data)
    assert response.status_code == 200
    html = response.content.decode()
    assert re.search(rf'<ul class="errors" id="id_{name}_errors"><li>'
                     rf'{re.escape(FORM_MESSAGES[name])}</li></ul>', html), html
    assert re.search(rf'<input[^>]*name="{name}"[^>]*aria-invalid="true"', html)
    target.refresh_from_db()
    assert (target.max_in_flight, target.rate_limit) == (3, 7)


def test_the_api_shows_and_sets_max_in_flight_and_the_rate_limit(api, make_target, receiver):
    target = make_target()
    shown = api.get(f"/webhooks/api/targets/{target.pk}/").json()
    assert (shown["max_in_flight"], shown["rate_limit"]) == (None, None)
    response = api_patch(api, target, {"max_in_flight": 4, "rate_limit": 20})
    assert response.status_code == 200, response.json()
    assert (response.json()["max_in_flight"], response.json()["rate_limit"]) == (4, 20)
    target.refresh_from_db()
    assert (target.max_in_flight, target.rate_limit) == (4, 20)
    # A PATCH that leaves them out keeps them; null sets them back to the defaults.
    assert api_patch(api, target, {"timeout": 3}).json()["max_in_flight"] == 4
    response = api_patch(api, target, {"max_in_flight": None, "rate_limit": None})
    assert response.status_code == 200, response.json()
    target.refresh_from_db()
    assert (target.max_in_flight, target.rate_limit) == (None, None)
    response = api_patch(api, target, {"max_in_flight": 1000, "rate_limit": 10000})
    assert response.status_code == 200, response.json()

    body = {"event": "project.update", "target_url": receiver.url + "/new/",
            "max_in_flight": 1, "rate_limit": 1}
    response = api.post("/webhooks/api/targets/", json.dumps(body),
                        content_type="application/json")
    assert response.status_code == 201, response.json()
    made = WebhookTarget.objects.get(pk=response.json()["id"])
    assert (made.max_in_flight, made.rate_limit) == (1, 1)
    body = {"event": "project.update", "target_url": receiver.url + "/other/"}
    made = api.post("/webhooks/api/targets/", json.dumps(body),
                    content_type="application/json").json()
    assert (made["max_in_flight"], made["rate_limit"]) == (None, None)


@pytest.mark.parametrize("name, value", [
    *[("max_in_flight", value) for value in (0, -1, 1001, 2**70, "abc", "4", True, False,
                                             2.5, 4.0, [4], {})],
    *[("rate_limit", value) for value in (0, -1, 10001, "abc", True, 2.5)],
])
def test_the_api_refuses_a_bad_max_in_flight_or_rate_limit_and_says_why(
        api, make_target, receiver, name, value):
    target = make_target(max_in_flight=3, rate_limit=7)
    response = api_patch(api, target, {name: value})
    assert response.status_code == 400
    assert response.json()["fields"] == {name: [API_MESSAGES[name]]}
    target.refresh_from_db()
    assert (target.max_in_flight, target.rate_limit) == (3, 7)
    response = api.post("/webhooks/api/targets/", json.dumps(
        {"event": "project.update", "target_url": receiver.url + "/new/", name: value}),
        content_type="application/json")
    assert response.status_code == 400
    assert response.json()["fields"] == {name: [API_MESSAGES[name]]}
    assert not WebhookTarget.objects.filter(target_url=receiver.url + "/new/").exists()


def test_the_openapi_document_describes_max_in_flight_and_the_rate_limit():
    from djwebhooks.portal import openapi

    components = openapi.document("https://example.com")["components"]["schemas"]
    for name in ("Target", "NewTarget", "TargetInput", "TargetPatch"):
        properties = components[name]["properties"]
        assert properties["max_in_flight"]["type"] == ["integer", "null"], name
        assert properties["rate_limit"]["type"] == ["integer", "null"], name
        assert "at once" in properties["max_in_flight"]["description"]
        assert "a second" in properties["rate_limit"]["description"]
    for name in ("TargetInput", "TargetPatch"):
        properties = components[name]["properties"]
        assert (properties["max_in_flight"]["minimum"],
                properties["max_in_flight"]["maximum"]) == (1, options.MAX_IN_FLIGHT)
        assert (properties["rate_limit"]["minimum"],
                properties["rate_limit"]["maximum"]) == (1, options.MAX_RATE_LIMIT)
        assert "max_in_flight" not in components[name]["required"]
    assert {"max_in_flight", "rate_limit"} <= set(components["Target"]["required"])
