"""The admin: targets with masked secrets, a read-only delivery log, the replay action."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from djwebhooks import send_event
from djwebhooks.models import Delivery, WebhookTarget
from tests.receiver import Reply

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(client, django_user_model):
    admin_user = django_user_model.objects.create_superuser("admin", "a@example.com", "pw")
    client.force_login(admin_user)
    return client


def test_target_changelist_masks_secrets(staff, make_target):
    target = make_target(identifier="acme")
    response = staff.get(reverse("admin:djwebhooks_webhooktarget_changelist"))
    html = response.content.decode()
    assert response.status_code == 200
    assert target.target_url in html and "acme" in html
    assert target.secret not in html
    assert target.masked_secret in html


def test_target_change_page_never_shows_the_secret(staff, make_target):
    target = make_target()
    url = reverse("admin:djwebhooks_webhooktarget_change", args=[target.pk])
    html = staff.get(url).content.decode()
    assert target.secret not in html
    assert target.masked_secret in html


def test_target_filters_and_search(staff, make_target):
    make_target(identifier="findme")
    url = reverse("admin:djwebhooks_webhooktarget_changelist")
    assert staff.get(url, {"is_active__exact": "1", "event": "project.update"}).status_code == 200
    response = staff.get(url, {"q": "findme"})
    assert response.context["cl"].result_count == 1


def test_adding_a_target_with_an_undeclared_event_is_refused(staff, user):
    url = reverse("admin:djwebhooks_webhooktarget_add")
    response = staff.post(url, {
        "owner": user.pk, "event": "project.exploded", "identifier": "",
        "target_url": "https://example.com/", "header_content_type": "application/json",
        "is_active": "on",
    })
    assert response.status_code == 200
    assert "project.exploded is not one of the available choices" in response.content.decode()
    assert WebhookTarget.objects.count() == 0


def test_adding_a_target(staff, user):
    url = reverse("admin:djwebhooks_webhooktarget_add")
    response = staff.post(url, {
        "owner": user.pk, "event": "project.update", "identifier": "acme",
        "target_url": "https://example.com/", "header_content_type": "application/json",
        "is_active": "on",
    })
    assert response.status_code == 302
    target = WebhookTarget.objects.get()
    assert target.secret.startswith("whsec_")


def test_delivery_log_is_read_only_with_attempts_inline(staff, make_target, user, receiver):
    receiver.replies = [Reply(status=500, body=b"receiver exploded")]
    make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    url = reverse("admin:djwebhooks_delivery_change", args=[delivery.pk])
    html = staff.get(url).content.decode()
    assert "receiver exploded" in html
    assert delivery.hash_value in html
    assert 'name="_save"' not in html  # nothing to save: the log is read-only
    assert staff.get(reverse("admin:djwebhooks_delivery_add")).status_code == 403


def test_delivery_changelist_filters_and_search(staff, make_target, user):
    make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    url = reverse("admin:djwebhooks_delivery_changelist")
    for params in ({"status__exact": "succeeded"}, {"event": "project.update"},
                   {"webhook_target__id__exact": str(delivery.webhook_target_id)}):
        response = staff.get(url, params)
        assert response.status_code == 200
        assert response.context["cl"].result_count == 1
    assert staff.get(url, {"q": delivery.hash_value}).context["cl"].result_count == 1
    assert staff.get(url, {"q": "msg_nope"}).context["cl"].result_count == 0


def test_replay_action(staff, make_target, user, receiver):
    receiver.replies = [Reply(status=500)]
    make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    url = reverse("admin:djwebhooks_delivery_changelist")
    response = staff.post(url, {"action": "replay_deliveries", "_selected_action": [delivery.pk]},
                          follow=True)
    assert "Replaying 1 delivery." in response.content.decode()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt) == (Delivery.Status.SUCCEEDED, 2)
    assert {r.headers["webhook-id"] for r in receiver.requests} == {delivery.hash_value}


def test_replay_action_needs_the_change_permission(client, django_user_model, make_target,
                                                   user):
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_delivery"))
    client.force_login(viewer)
    url = reverse("admin:djwebhooks_delivery_changelist")
    response = client.get(url)
    assert response.status_code == 200
    assert "replay_deliveries" not in response.content.decode()


def test_the_delivery_page_shows_the_payload_as_json(staff, make_target, user, receiver):
    make_target()
    [delivery] = send_event("project.update", {"title": "<b>Acme</b>", "ok": True, "n": None},
                            owner=user)
    html = staff.get(reverse("admin:djwebhooks_delivery_change", args=[delivery.pk])) \
        .content.decode()
    assert ('<pre style="white-space:pre-wrap;margin:0">{\n  &quot;title&quot;: '
            '&quot;&lt;b&gt;Acme&lt;/b&gt;&quot;,\n  &quot;ok&quot;: true,\n  &quot;n&quot;: '
            'null\n}</pre>') in html
