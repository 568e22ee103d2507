"""The models: secrets, uniqueness, event validation, querysets."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from djwebhooks.forms import WebhookTargetForm
from djwebhooks.models import Delivery, WebhookTarget
from djwebhooks.senders.base import JSON

pytestmark = pytest.mark.django_db


def test_target_defaults(user):
    target = WebhookTarget.objects.create(owner=user, event="project.update",
                                          target_url="https://example.com/hook")
    assert target.identifier == ""
    assert target.header_content_type == JSON
    assert target.is_active is True
    assert target.secret.startswith("whsec_")
    other = WebhookTarget.objects.create(owner=user, event="invoice.paid",
                                         target_url="https://example.com/hook")
    assert other.secret != target.secret  # one secret per target
    assert str(target) == "project.update → https://example.com/hook"
    assert target.created is not None and target.modified is not None


def test_masked_secret(user):
    target = WebhookTarget(owner=user, event="a", target_url="https://x", secret="whsec_ABCDEFGHIJ")
    assert target.masked_secret == "whsec_…GHIJ"
    assert "ABCDEF" not in target.masked_secret


def test_unique_subscription(user):
    fields = {"owner": user, "event": "project.update", "identifier": "acme",
              "target_url": "https://example.com/hook"}
    WebhookTarget.objects.create(**fields)
    with pytest.raises(IntegrityError):
        WebhookTarget.objects.create(**fields)


def test_unique_subscription_is_reported_by_validation(user):
    fields = {"owner": user, "event": "project.update", "target_url": "https://example.com/h"}
    WebhookTarget.objects.create(**fields)
    with pytest.raises(ValidationError, match="already exists"):
        WebhookTarget(**fields).full_clean()


def test_clean_refuses_an_undeclared_event(user):
    target = WebhookTarget(owner=user, event="project.exploded", target_url="https://x.org/")
    with pytest.raises(ValidationError) as info:
        target.full_clean()
    assert "event" in info.value.message_dict
    assert "project.exploded is not a declared event" in info.value.message_dict["event"][0]
    assert "project.update" in info.value.message_dict["event"][0]


def test_changing_declared_events_needs_no_migration(settings, user):
    settings.DJWEBHOOKS = {"EVENTS": ["brand.new"]}
    WebhookTarget(owner=user, event="brand.new", target_url="https://x.org/").full_clean()


def test_form_offers_declared_events(user):
    form = WebhookTargetForm()
    values = [value for value, label in form.fields["event"].choices]
    assert values == ["", "project.update", "project.delete", "invoice.paid"]
    labels = dict(form.fields["event"].choices)
    assert labels["project.update"] == "project.update — A project was changed."
    assert "secret" not in form.fields


def test_form_validates(user):
    data = {"owner": user.pk, "event": "project.update", "identifier": "",
            "target_url": "example.com/hook", "header_content_type": JSON, "is_active": True}
    form = WebhookTargetForm(data=data)
    assert form.is_valid(), form.errors
    assert form.cleaned_data["target_url"] == "https://example.com/hook"
    bad = WebhookTargetForm(data={**data, "event": "nope", "target_url": "ftp://x"})
    assert not bad.is_valid()
    assert set(bad.errors) == {"event", "target_url"}


def test_form_keeps_an_undeclared_event_visible(settings, user):
    target = WebhookTarget.objects.create(owner=user, event="project.update",
                                          target_url="https://x.org/")
    settings.DJWEBHOOKS = {"EVENTS": ["other"]}
    form = WebhookTargetForm(instance=target, data={
        "owner": user.pk, "event": "project.update", "target_url": "https://x.org/",
        "header_content_type": JSON,
    })
    assert not form.is_valid()
    assert "not a declared event" in form.errors["event"][0]


def test_delivery_querysets(user):
    target = WebhookTarget.objects.create(owner=user, event="a", target_url="https://x.org/")
    made = {
        status: Delivery.objects.create(webhook_target=target, event="a", hash_value=status,
                                        status=status)
        for status in Delivery.Status.values
    }
    assert list(Delivery.objects.failed()) == [made["failed"]]
    assert list(Delivery.objects.pending()) == [made["pending"]]
    assert str(made["failed"]) == "a failed (failed)"


def test_one_delivery_per_message_and_target(user):
    target = WebhookTarget.objects.create(owner=user, event="a", target_url="https://x.org/")
    Delivery.objects.create(webhook_target=target, event="a", hash_value="msg_1")
    with pytest.raises(IntegrityError):
        Delivery.objects.create(webhook_target=target, event="a", hash_value="msg_1")
