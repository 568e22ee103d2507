"""The self-service pages (djwebhooks.portal.views), through Django's test client."""

import re
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.contrib.messages import get_messages
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from djwebhooks.models import ApiToken, Delivery, DeliveryAttempt, WebhookTarget

SVG = "{http://www.w3.org/2000/svg}"
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"

#: Every page that names an object, and whether it takes only POST.
OBJECT_URLS = [
    ("target", False), ("target-edit", False), ("target-delete", False),
    ("target-active", True), ("target-secret", True), ("target-rotate", True),
    ("target-test", True), ("target-chart", False),
    ("delivery", False), ("delivery-replay", True), ("token-revoke", True),
]


def nobody(user):
    """A MANAGE_PERMISSION that refuses everyone."""
    return False


@pytest.fixture
def owner(client, user):
    """The test client, signed in as ``user``."""
    client.force_login(user)
    return client


@pytest.fixture
def objects(user, make_target):
    """One of ``user``'s targets, a failed delivery to it with one attempt, and a token."""
    target = make_target()
    delivery = make_delivery(target, status=Delivery.Status.FAILED, attempt=1,
                             reason="HTTP 500")
    DeliveryAttempt.objects.create(delivery=delivery, attempt=1, response_status=500,
                                   response_message="it broke", duration=42)
    token, _ = ApiToken.create(user, "ci")
    return {"target": target, "delivery": delivery, "token": token}


def make_delivery(target, hash_value="msg_1", **fields):
    """A delivery to ``target``, written without being sent."""
    fields.setdefault("event", target.event)
    fields.setdefault("payload_json", '{"id":7,"name":"Ada"}')
    return Delivery.objects.create(webhook_target=target, hash_value=hash_value, **fields)


def url_of(name, objects):
    """The URL ``name`` of the object in ``objects`` it is about."""
    kind = {"delivery": "delivery", "token": "token"}.get(name.split("-")[0], "target")
    return reverse(f"djwebhooks:{name}", args=[objects[kind].pk])


def page_text(response):
    """The response's HTML with its tags removed and its spaces squeezed."""
    text = re.sub(r"<[^>]+>", " ", response.content.decode())
    return re.sub(r"\s+", " ", text)


def messages_of(response):
    """The texts of the messages shown on the (followed) response."""
    return [str(message) for message in get_messages(response.wsgi_request)]


# Who may see what


def test_every_page_renders_for_its_owner(owner, objects):
    target, delivery = objects["target"], objects["delivery"]
    expected = {
        reverse("djwebhooks:targets"): ["Your webhooks", "Add a webhook", target.target_url],
        reverse("djwebhooks:target-add"): ["Add a webhook", "Save"],
        reverse("djwebhooks:target", args=[target.pk]): [target.target_url, "Rotate secret"],
        reverse("djwebhooks:target-edit", args=[target.pk]): ["Edit webhook", "Save"],
        reverse("djwebhooks:target-delete", args=[target.pk]): ["Delete webhook"],
        reverse("djwebhooks:deliveries"): ["Your deliveries", "msg_1"],
        reverse("djwebhooks:delivery", args=[delivery.pk]): ["Delivery msg_1", "Attempts"],
        reverse("djwebhooks:tokens"): ["API tokens", "ci", "Create token"],
    }
    for url, texts in expected.items():
        response = owner.get(url)
        assert response.status_code == 200, url
        text = page_text(response)
        for wanted in texts:
            assert wanted in text, (url, wanted)
        # The nav shared by every page.
        page = response.content.decode()
        assert re.search(r'<a href="/webhooks/deliveries/"[^>]*>Deliveries</a>', page)
        assert re.search(r'<a href="/webhooks/tokens/"[^>]*>API tokens</a>', page)
        assert '<html lang="' in page
        assert '<link rel="stylesheet" href="/static/djwebhooks/portal.css">' in page


def test_the_stylesheet_is_a_static_file():
    assert finders.find("djwebhooks/portal.css")


def test_anonymous_users_are_sent_to_log_in(client, objects):
    names = [(name, False) for name in ("targets", "target-add", "deliveries", "tokens")]
    for name, _ in names + OBJECT_URLS:
        url = reverse(f"djwebhooks:{name}") if (name, False) in names else url_of(name, objects)
        for method in (client.get, client.post):
            response = method(url)
            assert response.status_code == 302, (name, method)
            assert response["Location"].startswith(
                f"{django_settings.LOGIN_URL}?next=/webhooks/"), name
    assert WebhookTarget.objects.filter(pk=objects["target"].pk).exists()
    assert ApiToken.objects.filter(pk=objects["token"].pk).exists()


def test_users_refused_by_manage_permission_get_403(owner, objects, settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "MANAGE_PERMISSION": "tests.test_portal_pages.nobody"}
    for name in ("targets", "target-add", "deliveries", "tokens"):
        assert owner.get(reverse(f"djwebhooks:{name}")).status_code == 403, name
    for name, _ in OBJECT_URLS:
        assert owner.get(url_of(name, objects)).status_code == 403, name
        assert owner.post(url_of(name, objects)).status_code == 403, name
    assert WebhookTarget.objects.filter(pk=objects["target"].pk).exists()


def test_another_users_objects_are_404_whatever_the_method(client, other_user, objects):
    client.force_login(other_user)
    for name, _ in OBJECT_URLS:
        assert client.get(url_of(name, objects)).status_code == 404, name
        assert client.post(url_of(name, objects), {"active": "0"}).status_code == 404, name
    target = WebhookTarget.objects.get(pk=objects["target"].pk)
    assert target.is_active and target.secret == objects["target"].secret
    assert ApiToken.objects.filter(pk=objects["token"].pk).exists()
    assert other_user.username not in page_text(client.get(reverse("djwebhooks:targets")))
    assert objects["target"].target_url not in page_text(
        client.get(reverse("djwebhooks:targets")))
    assert "msg_1" not in page_text(client.get(reverse("djwebhooks:deliveries")))


def test_views_that_change_things_refuse_get(owner, objects):
    for name, post_only in OBJECT_URLS:
        if post_only:
            assert owner.get(url_of(name, objects)).status_code == 405, name
    assert WebhookTarget.objects.get(pk=objects["target"].pk).secret == \
        objects["target"].secret


def test_posts_need_the_csrf_token(user, objects):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    response = browser.post(url_of("target-rotate", objects))
    assert response.status_code == 403
    assert WebhookTarget.objects.get(pk=objects["target"].pk).previous_secret == ""
    page = browser.get(url_of("target", objects)).content.decode()
    assert page.count('name="csrfmiddlewaretoken"') == 4  # active, secret, rotate, test


# The list of targets


def test_the_list_shows_state_last_attempt_and_success_rates(owner, objects, make_target):
    DeliveryAttempt.objects.create(delivery=objects["delivery"], attempt=2,
                                   response_status=200, success=True, duration=5)
    make_target(event="project.delete", is_active=False, disabled_reason="Failing for 3 days")
    make_target(event="invoice.paid", is_active=False)
    text = page_text(owner.get(reverse("djwebhooks:targets")))
    assert "Active" in text
    assert "Disabled: Failing for 3 days" in text
    assert re.search(r"invoice\.paid \S+ Disabled —", text)
    assert re.search(rf"Succeeded \(200\), {TIME}", text)
    assert text.count("50.0 %") == 2  # 24 h and 7 days: one of two attempts
    assert text.count("—") >= 6  # the two targets with no attempts


# Adding, editing, deleting


def test_adding_a_webhook(owner, user, receiver):
    response = owner.post(reverse("djwebhooks:target-add"), {
        "event": "project.delete", "identifier": "p1",
        "target_url": receiver.url + "/new/", "header_content_type": "application/json",
        "is_active": "on"}, follow=True)
    target = WebhookTarget.objects.get(owner=user)
    assert (target.event, target.identifier, target.target_url) == (
        "project.delete", "p1", receiver.url + "/new/")
    assert response.redirect_chain == [(reverse("djwebhooks:target", args=[target.pk]), 302)]
    assert messages_of(response) == ["Webhook saved."]
    assert f"<h1 class=\"url\">{target.target_url}</h1>" in response.content.decode()


@pytest.mark.parametrize("case", ["undeclared event", "private URL", "malformed URL",
                                  "duplicate"])
def test_a_refused_webhook_is_shown_again_with_the_error_beside_its_field(
        case, owner, user, make_target, receiver, settings):
    url = receiver.url + "/hook/"
    data = {"event": "project.update", "identifier": "", "target_url": url,
            "header_content_type": "application/json", "is_active": "on"}
    if case == "undeclared event":
        data["event"] = "project.exploded"
        field, error = "event", "Select a valid choice"
    elif case == "private URL":
        settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "ALLOWED_NETWORKS": []}
        data["target_url"] = "http://127.0.0.1:8000/hook/"
        field, error = "target_url", "127.0.0.1"
    elif case == "malformed URL":
        data["target_url"] = "http//no scheme"
        field, error = "target_url", "Enter a valid URL"
    else:
        make_target()
        field, error = ("target_url",
                        "You already have a webhook for this event, identifier and URL.")
    before = WebhookTarget.objects.count()
    response = owner.post(reverse("djwebhooks:target-add"), data)
    assert response.status_code == 200
    assert WebhookTarget.objects.count() == before
    page = response.content.decode()
    errors = re.search(rf'<ul class="errors" id="id_{field}_errors">(.*?)</ul>', page, re.S)
    assert errors and error in errors[1]
    assert re.search(rf'aria-describedby="[^"]*id_{field}_errors"[^>]*id="id_{field}"', page)
    assert f'<div class="field has-errors">\n  \n    <label for="id_{field}">' in page
    # What was typed is kept.
    assert data["target_url"] in page


def test_editing_a_webhook(owner, objects):
    target = objects["target"]
    response = owner.post(reverse("djwebhooks:target-edit", args=[target.pk]), {
        "event": "invoice.paid", "identifier": "x", "target_url": target.target_url,
        "header_content_type": "application/x-www-form-urlencoded"}, follow=True)
    target.refresh_from_db()
    assert (target.event, target.identifier, target.is_active) == ("invoice.paid", "x", False)
    assert target.header_content_type == "application/x-www-form-urlencoded"
    assert messages_of(response) == ["Webhook saved."]


def test_deleting_a_webhook_asks_first(owner, objects):
    url = reverse("djwebhooks:target-delete", args=[objects["target"].pk])
    page = owner.get(url).content.decode()
    assert '<button type="submit" class="danger">Delete</button>' in page
    assert WebhookTarget.objects.filter(pk=objects["target"].pk).exists()
    response = owner.post(url, follow=True)
    assert response.redirect_chain == [(reverse("djwebhooks:targets"), 302)]
    assert messages_of(response) == ["Webhook deleted."]
    assert not WebhookTarget.objects.filter(pk=objects["target"].pk).exists()


def test_disabling_and_enabling(owner, objects):
    target = objects["target"]
    url = reverse("djwebhooks:target-active", args=[target.pk])
    owner.post(url, {"active": "0"})
    target.refresh_from_db()
    assert not target.is_active
    page = page_text(owner.get(reverse("djwebhooks:target", args=[target.pk])))
    assert "State Disabled " in page and "Enable" in page
    WebhookTarget.objects.filter(pk=target.pk).update(
        consecutive_failures=9, disabled_reason="Failing", disabled_at=timezone.now())
    response = owner.post(url, {"active": "1"}, follow=True)
    target.refresh_from_db()
    assert target.is_active and target.consecutive_failures == 0
    assert target.disabled_reason == "" and target.disabled_at is None
    assert messages_of(response) == ["Webhook enabled."]
    assert owner.post(url, {"active": "yes"}).status_code == 400


# The secret


def test_the_secret_is_masked_and_shown_whole_only_on_a_post(owner, objects):
    target = objects["target"]
    page = owner.get(reverse("djwebhooks:target", args=[target.pk])).content.decode()
    assert target.masked_secret in page and target.secret not in page
    assert "The current one keeps working for 24 hours after that" in page  # the grace
    response = owner.post(reverse("djwebhooks:target-secret", args=[target.pk]))
    assert f'<code id="secret" class="secret">{target.secret}</code>' in \
        response.content.decode()
    assert "no-cache" in response["Cache-Control"]
    assert "previous secret keeps working" not in page_text(response)


def test_rotating_the_secret(owner, objects):
    target = objects["target"]
    old = target.secret
    response = owner.post(reverse("djwebhooks:target-rotate", args=[target.pk]), follow=True)
    target.refresh_from_db()
    assert target.previous_secret == old and target.secret != old
    until = timezone.localtime(target.previous_secret_expires).strftime("%Y-%m-%d %H:%M:%S")
    assert messages_of(response) == [
        f"Secret rotated. The previous secret keeps working until {until} UTC."]
    assert response.status_code == 200
    secret_page = page_text(owner.post(reverse("djwebhooks:target-secret", args=[target.pk])))
    assert f"the previous secret keeps working until {until} UTC" in secret_page
    assert old not in secret_page  # the previous secret is not shown


def test_times_are_shown_in_the_current_time_zone(owner, objects, settings):
    settings.TIME_ZONE = "America/New_York"
    target = objects["target"]
    response = owner.post(reverse("djwebhooks:target-rotate", args=[target.pk]), follow=True)
    target.refresh_from_db()
    local = timezone.localtime(target.previous_secret_expires)
    assert local.utcoffset() != timedelta(0)
    shown = local.strftime("%Y-%m-%d %H:%M:%S ") + local.tzname()
    assert messages_of(response) == [
        f"Secret rotated. The previous secret keeps working until {shown}."]
    assert re.search(r"\d\d:\d\d:\d\d E[SD]T", page_text(response))  # the delivery's time


def test_rotating_with_no_grace_says_the_old_secret_stops_working(owner, objects, settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "SECRET_ROTATION_GRACE": 0}
    target = objects["target"]
    response = owner.post(reverse("djwebhooks:target-rotate", args=[target.pk]), follow=True)
    target.refresh_from_db()
    assert target.previous_secret == ""
    assert messages_of(response) == ["Secret rotated. The previous secret no longer works."]


# Test events and rate limits


@pytest.mark.django_db(transaction=True)
def test_a_test_event_reaches_the_receiver_and_its_outcome_is_shown(owner, make_target,
                                                                     receiver):
    target = make_target()
    response = owner.post(reverse("djwebhooks:target-test", args=[target.pk]), follow=True)
    assert messages_of(response) == ["Test event sent."]
    assert len(receiver.requests) == 1
    message_id = receiver.requests[0].headers["webhook-id"]
    assert message_id.startswith("msg_test_")
    delivery = Delivery.objects.get(webhook_target=target)
    assert delivery.status == Delivery.Status.SUCCEEDED
    page = page_text(response)
    assert re.search(rf"{message_id} test succeeded \(200\) {TIME}", page)
    assert "Refresh" not in page
    assert re.search(r"Succeeded \(200\)", page)  # the health section's last attempt


def test_a_pending_test_event_offers_a_refresh_link(owner, objects):
    # Outside a transactional test the delivery is never sent: it stays pending.
    url = reverse("djwebhooks:target-test", args=[objects["target"].pk])
    response = owner.post(url, follow=True)
    page = response.content.decode()
    assert re.search(r"msg_test_\w+ test pending", page_text(response))
    assert f'<a href="{reverse("djwebhooks:target", args=[objects["target"].pk])}">Refresh</a>' \
        in page
    assert 'http-equiv="refresh"' not in page


def test_a_disabled_target_gets_no_test_event(owner, make_target):
    target = make_target(is_active=False)
    response = owner.post(reverse("djwebhooks:target-test", args=[target.pk]), follow=True)
    assert messages_of(response) == [
        "This target is disabled: enable it before sending it a test event."]
    assert not Delivery.objects.exists()


def test_test_events_are_rate_limited(owner, objects, settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RATE_LIMITS": {"send_test": "1/minute"}}
    url = reverse("djwebhooks:target-test", args=[objects["target"].pk])
    owner.post(url)
    assert Delivery.objects.filter(hash_value__startswith="msg_test_").count() == 1
    response = owner.post(url, follow=True)
    assert response.status_code == 200
    message = messages_of(response)[-1]  # after the first POST's "Test event sent."
    assert message.startswith("Too many test events: at most 1 per minute. Try again in ")
    assert "Too many test events" in page_text(response)
    assert Delivery.objects.filter(hash_value__startswith="msg_test_").count() == 1


def test_rotations_are_rate_limited(owner, objects, settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RATE_LIMITS": {"rotate_secret": "1/hour"}}
    url = reverse("djwebhooks:target-rotate", args=[objects["target"].pk])
    owner.post(url)
    secret = WebhookTarget.objects.get(pk=objects["target"].pk).secret
    response = owner.post(url, follow=True)
    assert messages_of(response)[-1].startswith("Too many secret rotations: at most 1 per hour.")
    assert WebhookTarget.objects.get(pk=objects["target"].pk).secret == secret


# The chart


def test_the_chart_is_an_svg_with_a_bar_group_per_hour(owner, make_target, receiver):
    target = make_target(target_url=receiver.url + "/hook/?a=1&b=<2>")
    make_delivery(target, status=Delivery.Status.SUCCEEDED)
    make_delivery(target, "msg_2", status=Delivery.Status.FAILED)
    response = owner.get(reverse("djwebhooks:target-chart", args=[target.pk]))
    assert response["Content-Type"] == "image/svg+xml"
    root = ET.fromstring(response.content)
    assert root.tag == f"{SVG}svg"
    assert "b=<2>" in root.find(f"{SVG}title").text
    assert "1 succeeded, 1 failed" in root.find(f"{SVG}desc").text
    bars = root.findall(f"{SVG}g[@class='bar']")
    assert len(bars) == 24
    last = bars[-1]
    assert [rect.get("class") for rect in last.findall(f"{SVG}rect")] == ["succeeded", "failed"]
    assert "1 succeeded, 1 failed, 0 pending" in last.find(f"{SVG}title").text
    assert not re.search(rb"(href|src)=", response.content)  # nothing external

    week = ET.fromstring(owner.get(
        reverse("djwebhooks:target-chart", args=[target.pk]) + "?range=7d").content)
    assert len(week.findall(f"{SVG}g[@class='bar']")) == 168


def test_the_chart_refuses_an_unknown_range(owner, objects):
    url = reverse("djwebhooks:target-chart", args=[objects["target"].pk])
    assert owner.get(url + "?range=bogus").status_code == 400
    assert owner.get(url + "?range=24h").status_code == 200


def test_the_target_page_shows_the_chart_with_a_text_alternative(owner, objects):
    target = objects["target"]
    page = owner.get(reverse("djwebhooks:target", args=[target.pk])).content.decode()
    chart = reverse("djwebhooks:target-chart", args=[target.pk])
    assert re.search(rf'<img src="{re.escape(chart)}"[^>]*\salt="Bar chart of the deliveries',
                     page)


# Deliveries


def test_deliveries_are_filtered(owner, user, make_target, receiver):
    first = make_target()
    second = make_target(event="invoice.paid", target_url=receiver.url + "/other/")
    make_delivery(first, "msg_ok", status=Delivery.Status.SUCCEEDED)
    old = make_delivery(first, "msg_old", status=Delivery.Status.FAILED)
    Delivery.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(days=10))
    make_delivery(second, "msg_paid", status=Delivery.Status.FAILED)
    url = reverse("djwebhooks:deliveries")

    def listed(**query):
        response = owner.get(url, query)
        assert response.status_code == 200
        return sorted(re.findall(r"<code>(msg_\w+)</code>", response.content.decode()))

    assert listed() == ["msg_ok", "msg_old", "msg_paid"]
    assert listed(status="failed") == ["msg_old", "msg_paid"]
    assert listed(target=second.pk) == ["msg_paid"]
    assert listed(event="project.update") == ["msg_ok", "msg_old"]
    today = timezone.localdate()
    assert listed(date_from=str(today - timedelta(days=1))) == ["msg_ok", "msg_paid"]
    assert listed(date_to=str(today - timedelta(days=5))) == ["msg_old"]
    assert listed(status="failed", target=first.pk) == ["msg_old"]


def test_bad_filters_show_errors_not_a_500(owner, objects, other_user):
    url = reverse("djwebhooks:deliveries")
    response = owner.get(url, {"date_from": "2024-13-45"})
    assert response.status_code == 200
    assert re.search(r'id="id_date_from_errors"><li>Enter a valid date.',
                     response.content.decode())
    assert "msg_1" not in response.content.decode()
    response = owner.get(url, {"date_from": "2024-05-02", "date_to": "2024-05-01"})
    assert "This day is before the day in From." in page_text(response)
    # Another user's target is not a choice.
    theirs = WebhookTarget.objects.create(owner=other_user, event="project.update",
                                          target_url="http://127.0.0.1:1/x/")
    response = owner.get(url, {"target": theirs.pk})
    assert "Select a valid choice" in page_text(response)
    assert owner.get(url, {"status": "lost"}).status_code == 200


def test_deliveries_are_paginated_by_50(owner, objects):
    for number in range(2, 53):
        make_delivery(objects["target"], f"msg_{number}")
    url = reverse("djwebhooks:deliveries")
    first = owner.get(url).content.decode()
    assert len(re.findall(r"<code>msg_\d+</code>", first)) == 50
    assert "Page 1 of 2" in first and 'href="?page=2"' in first
    second = owner.get(url, {"page": 2, "status": "pending"}).content.decode()
    assert "Page" not in page_text(owner.get(url, {"status": "failed"}))
    assert re.findall(r"<code>(msg_\d+)</code>", second) == ["msg_2"]
    assert 'href="?page=1&amp;status=pending"' in second
    beyond = owner.get(url, {"page": 999})
    assert beyond.status_code == 200 and "Page 2 of 2" in beyond.content.decode()


def test_a_delivery_page_shows_payload_headers_and_attempts(owner, objects):
    delivery, target = objects["delivery"], objects["target"]
    response = owner.get(reverse("djwebhooks:delivery", args=[delivery.pk]))
    page = response.content.decode()
    assert "<h1>Delivery msg_1</h1>" in page
    assert '<pre class="payload" tabindex="0">{\n  &quot;id&quot;: 7,' in page
    assert "<code>webhook-id</code></th><td><code>msg_1</code>" in page
    assert target.secret not in page
    attempts = page.split('<h2 id="attempts">Attempts</h2>')[1]
    headings = re.findall(r'<th scope="col">([^<]+)</th>', attempts)
    assert headings == ["Attempt", "Time", "Status", "Duration", "Response", "Error"]
    assert re.search(rf"1 {TIME} 500 42 ms it broke —", page_text(response))
    assert "HTTP 500" in page_text(response)  # the reason
    assert ">Replay</button>" in page


def test_a_succeeded_delivery_has_no_replay_button(owner, objects):
    make_delivery(objects["target"], "msg_ok", status=Delivery.Status.SUCCEEDED)
    delivery = Delivery.objects.get(hash_value="msg_ok")
    page = owner.get(reverse("djwebhooks:delivery", args=[delivery.pk])).content.decode()
    assert "Replay" not in page


@pytest.mark.django_db(transaction=True)
def test_replaying_a_failed_delivery_sends_it_again(owner, objects, receiver):
    delivery = objects["delivery"]
    response = owner.post(reverse("djwebhooks:delivery-replay", args=[delivery.pk]),
                          follow=True)
    assert messages_of(response) == ["Replay queued."]
    assert [request.headers["webhook-id"] for request in receiver.requests] == ["msg_1"]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt) == (Delivery.Status.SUCCEEDED, 2)
    assert re.search(rf"2 {TIME} 200 \d+ ms ok —", page_text(response))


def test_a_delivery_a_worker_holds_is_not_replayed(owner, objects):
    delivery = objects["delivery"]
    Delivery.objects.filter(pk=delivery.pk).update(
        claimed_by="worker-1", claimed_until=timezone.now() + timedelta(minutes=5))
    response = owner.post(reverse("djwebhooks:delivery-replay", args=[delivery.pk]),
                          follow=True)
    assert messages_of(response) == [
        "This delivery is being sent right now, so it was not replayed. Try again in a moment."]
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED


def test_replays_are_rate_limited(owner, objects, settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RATE_LIMITS": {"replay": "1/minute"}}
    url = reverse("djwebhooks:delivery-replay", args=[objects["delivery"].pk])
    owner.post(url)
    Delivery.objects.filter(pk=objects["delivery"].pk).update(status=Delivery.Status.FAILED)
    response = owner.post(url, follow=True)
    assert messages_of(response)[-1].startswith("Too many replays")
    assert Delivery.objects.get(pk=objects["delivery"].pk).status == Delivery.Status.FAILED


# API tokens


def test_a_new_token_is_shown_once(owner, user):
    response = owner.post(reverse("djwebhooks:tokens"), {"name": "deploy bot"})
    assert response.status_code == 200
    page = response.content.decode()
    key = re.search(r'<code id="new-token">([^<]+)</code>', page)[1]
    assert "Copy this key now: it is not shown again." in page
    token = ApiToken.objects.get(user=user)
    assert token.name == "deploy bot"
    assert token.digest == ApiToken.digest_of(key)
    assert f"<code>{token.key_start}…</code>" in page
    assert "no-cache" in response["Cache-Control"]
    again = owner.get(reverse("djwebhooks:tokens")).content.decode()
    assert key not in again and 'id="new-token"' not in again
    assert "never" in page_text(owner.get(reverse("djwebhooks:tokens")))


def test_a_token_needs_a_name(owner, user):
    response = owner.post(reverse("djwebhooks:tokens"), {"name": ""})
    assert 'id="id_name_errors"><li>This field is required.' in response.content.decode()
    assert not ApiToken.objects.exists()


def test_revoking_a_token(owner, objects):
    response = owner.post(reverse("djwebhooks:token-revoke", args=[objects["token"].pk]),
                          follow=True)
    assert messages_of(response) == ["Token revoked."]
    assert not ApiToken.objects.exists()
    assert "You have no API tokens." in page_text(response)
