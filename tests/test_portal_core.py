"""The ground the pages and the API stand on: the permission setting, rate limits, the
owner's target form, a target's health and chart data, a delivery's headers as shown, test
events and API tokens."""

import json
from datetime import timedelta

import pytest
from django.core.checks import run_checks
from django.db import transaction
from django.utils import timezone

from djwebhooks import conf, send_event
from djwebhooks.events import TEST_PAYLOAD, send_test_event
from djwebhooks.exceptions import WebhookImproperlyConfigured
from djwebhooks.models import ApiToken, Delivery, DeliveryAttempt
from djwebhooks.portal import access, display, stats
from djwebhooks.portal.forms import OwnerTargetForm


def nobody(user):
    return False


# Who may manage webhooks
# -----------------------

@pytest.mark.django_db
def test_by_default_any_active_signed_in_user_may_manage(user):
    from django.contrib.auth.models import AnonymousUser

    assert access.may_manage(user)
    assert not access.may_manage(AnonymousUser())
    assert not access.may_manage(None)
    user.is_active = False
    assert not access.may_manage(user)


@pytest.mark.django_db
def test_the_permission_setting_names_a_function_or_is_one(settings, user):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "MANAGE_PERMISSION": "tests.test_portal_core.nobody"}
    assert not access.may_manage(user)
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "MANAGE_PERMISSION": lambda user: True}
    assert access.may_manage(user)


@pytest.mark.parametrize("value, message", [
    ("tests.nowhere.may", "which cannot be imported"),
    ("tests.test_portal_core.TEST_PAYLOAD", "which is not a function"),
    ("not a path", "which cannot be imported"),
])
def test_a_permission_that_cannot_be_loaded_is_e009_and_says_what_to_name(settings, value,
                                                                          message):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "MANAGE_PERMISSION": value}
    [error] = [e for e in run_checks() if e.id == "djwebhooks.E009"]
    assert message in error.msg and "takes a user" in error.msg
    with pytest.raises(WebhookImproperlyConfigured, match=message):
        conf.get_manage_permission()


def test_a_permission_that_is_not_a_path_is_e002(settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "MANAGE_PERMISSION": 5}
    errors = [e for e in run_checks() if e.id == "djwebhooks.E002"]
    assert any("MANAGE_PERMISSION" in error.msg for error in errors)
    assert not [e for e in run_checks() if e.id == "djwebhooks.E009"]


# Rate limits
# -----------

@pytest.mark.parametrize("rates, message", [
    ({"send_test": "ten a minute"}, "is not a rate such as '10/minute'"),
    ({"send_test": "10/fortnight"}, "is not a rate"),
    ({"sned_test": "1/minute"}, "'sned_test', which is not one of send_test, replay"),
    ("10/minute", "must be a dict of action -> rate"),
])
def test_bad_rate_limits_are_e002_with_what_is_wrong(settings, rates, message):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RATE_LIMITS": rates}
    errors = [e.msg for e in run_checks() if e.id == "djwebhooks.E002"]
    assert any(message in text for text in errors), errors


def test_a_rate_limit_cache_must_be_one_of_caches(settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RATE_LIMIT_CACHE": "shared"}
    errors = [e.msg for e in run_checks() if e.id == "djwebhooks.E002"]
    assert any("must be an alias of CACHES, got 'shared'" in text for text in errors)


def test_rates_parse_and_unset_actions_keep_their_default(settings):
    assert conf.parse_rate(" 5 / hour ") == (5, 3600)
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RATE_LIMITS": {"replay": None}}
    assert conf.get_rate_limit("replay") is None
    assert conf.get_rate_limit("send_test") == (10, 60)


@pytest.mark.django_db
def test_a_rate_limit_counts_per_user_and_action_and_says_when_to_try_again(
        settings, user, other_user, monkeypatch):
    # Half a minute into an hour's window, so that no window ends during the test.
    monkeypatch.setattr(access.time, "time", lambda: 3600 * 500_000 + 30.0)
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RATE_LIMITS": {"send_test": "2/hour"}}
    access.rate_limit(user, "send_test")
    access.rate_limit(user, "send_test")
    with pytest.raises(access.RateLimited) as raised:
        access.rate_limit(user, "send_test")
    assert str(raised.value).startswith("Too many test events: at most 2 per hour. Try "
                                        "again in ")
    assert raised.value.retry_after == 3570
    assert str(raised.value).endswith("Try again in 1 hour.")
    access.rate_limit(other_user, "send_test")  # another user's own count
    for _ in range(30):
        access.rate_limit(user, "replay")  # another action's count, and limit (30/minute)
    with pytest.raises(access.RateLimited, match="Too many replays: at most 30 per minute"):
        access.rate_limit(user, "replay")


@pytest.mark.django_db
def test_no_limit_when_the_rate_is_none(settings, user):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RATE_LIMITS": {"rotate_secret": None}}
    for _ in range(20):
        access.rate_limit(user, "rotate_secret")


# What an owner may set
# ---------------------

@pytest.mark.django_db
def test_the_owner_form_offers_the_declared_events_with_their_descriptions(settings, user):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "EVENTS": {"project.update": "A project changed."}}
    form = OwnerTargetForm(owner=user)
    assert ("project.update", "project.update — A project changed.") in \
        form.fields["event"].choices
    assert "owner" not in form.fields and "secret" not in form.fields


@pytest.mark.django_db
@pytest.mark.parametrize("data, field, message", [
    ({"event": "nope", "target_url": "https://example.com/"}, "event",
     "Select a valid choice"),
    ({"event": "project.update", "target_url": "http://10.0.0.1/hook"}, "target_url",
     "10.0.0.1"),
    ({"event": "project.update", "target_url": "not a url"}, "target_url",
     "Enter a valid URL"),
])
def test_the_owner_form_refuses_with_the_reason_beside_the_field(user, data, field, message):
    form = OwnerTargetForm({"header_content_type": "application/json", **data}, owner=user)
    assert not form.is_valid()
    assert message in " ".join(form.errors[field])


@pytest.mark.django_db
def test_the_owner_form_refuses_a_second_identical_subscription(user, other_user,
                                                                receiver):
    data = {"event": "project.update", "target_url": receiver.url + "/hook/",
            "header_content_type": "application/json", "is_active": "on"}
    first = OwnerTargetForm(data, owner=user)
    assert first.is_valid(), first.errors
    target = first.save()
    assert target.owner == user
    again = OwnerTargetForm(data, owner=user)
    assert not again.is_valid()
    assert "You already have a webhook for this event" in str(again.errors)
    assert OwnerTargetForm(data, owner=other_user).is_valid()  # theirs is another's
    edit = OwnerTargetForm(data, owner=user, instance=target)
    assert edit.is_valid(), edit.errors  # saving it unchanged is no duplicate


# Health and the chart's numbers
# ------------------------------

@pytest.mark.django_db
def test_health_counts_attempts_over_a_day_and_a_week(make_target, user):
    target = make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    now = timezone.now()
    for number, (age, success) in enumerate([(1, True), (2, False), (30, True), (200, False)],
                                            start=1):
        attempt = DeliveryAttempt.objects.create(delivery=delivery, attempt=number,
                                                 success=success, response_status=200)
        DeliveryAttempt.objects.filter(pk=attempt.pk).update(
            created=now - timedelta(hours=age))
    health = stats.health(target, now=now)
    assert (health.rates["24h"].attempts, health.rates["24h"].succeeded) == (2, 1)
    assert health.rates["24h"].percent == 50.0
    assert (health.rates["7d"].attempts, health.rates["7d"].succeeded) == (3, 2)
    assert health.last_attempt.attempt == 1
    assert json.loads(json.dumps(health.as_json()))["success_rate"]["7d"]["percent"] == 66.7
    assert not health.disabled


@pytest.mark.django_db
def test_health_with_no_attempts_has_no_rate(make_target):
    health = stats.health(make_target())
    assert health.rates["24h"].percent is None and health.last_attempt is None


@pytest.mark.django_db
def test_hourly_buckets_every_hour_by_status(make_target, user):
    target = make_target()
    now = timezone.now().replace(minute=30)
    made = send_event("project.update", {}, owner=user) + \
        send_event("project.update", {}, owner=user)
    Delivery.objects.filter(pk=made[0].pk).update(created=now - timedelta(hours=3),
                                                  status="failed")
    Delivery.objects.filter(pk=made[1].pk).update(created=now, status="succeeded")
    buckets = stats.hourly(target, hours=24, now=now)
    assert len(buckets) == 24
    assert [hour for hour, _ in buckets] == sorted(hour for hour, _ in buckets)
    assert buckets[-1][1]["succeeded"] == 1 and buckets[-4][1]["failed"] == 1
    assert sum(sum(counts.values()) for _, counts in buckets) == 2


# How a delivery is shown
# -----------------------

@pytest.mark.django_db
def test_the_headers_shown_never_hold_a_secret_or_a_signature(make_target, user):
    target = make_target()
    [delivery] = send_event("project.update", {"b": 1, "a": 2}, owner=user)
    delivery = Delivery.objects.select_related("webhook_target").get(pk=delivery.pk)
    headers = dict(display.request_headers(delivery))
    assert headers["webhook-id"] == delivery.hash_value
    assert headers["Content-Type"] == "application/json"
    assert headers["webhook-signature"] == display.SIGNATURE_SHOWN
    shown = json.dumps(headers)
    assert target.secret not in shown and target.secret[6:] not in shown
    assert display.pretty_payload(delivery) == '{\n  "b": 1,\n  "a": 2\n}'


# Test events
# -----------

@pytest.mark.django_db(transaction=True)
def test_a_test_event_goes_to_one_target_only_and_says_it_is_a_test(make_target, user,
                                                                    receiver):
    target = make_target()
    make_target(target_url=receiver.url + "/other/")
    with transaction.atomic():
        delivery = send_test_event(target)
        assert receiver.requests == []  # sent once the transaction commits
    [request] = receiver.requests
    assert request.path == "/hook/"
    assert request.headers["webhook-id"] == delivery.hash_value
    assert delivery.hash_value.startswith("msg_test_")
    assert json.loads(request.body)["data"] == TEST_PAYLOAD
    delivery.refresh_from_db()
    assert delivery.status == "succeeded" and delivery.event == target.event


@pytest.mark.django_db
def test_a_disabled_target_gets_no_test_event(make_target):
    target = make_target(is_active=False)
    with pytest.raises(ValueError, match="enable it before sending it a test event"):
        send_test_event(target)
    assert not Delivery.objects.exists()


# API tokens
# ----------

@pytest.mark.django_db
def test_a_token_key_is_shown_once_and_only_its_digest_is_kept(user):
    token, key = ApiToken.create(user, "zapier")
    assert key.startswith("djwh_") and len(key) > 40
    assert token.digest == ApiToken.digest_of(key) and key not in token.digest
    assert token.key_start == key[:12]
    assert ApiToken.find(key) == token
    assert ApiToken.find(key + "x") is None
    assert ApiToken.find("whsec_" + key) is None
    assert ApiToken.find(None) is None
    assert ApiToken.find("djwh_" + "x" * 500) is None
    assert str(token) == f"zapier ({key[:12]}…)"
    other, other_key = ApiToken.create(user, "zapier")
    assert other_key != key and other.digest != token.digest
