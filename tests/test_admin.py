"""The admin: targets with masked secrets, a read-only delivery log, the replay action."""

import re
from datetime import timedelta
from html import escape as html_escape
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import dateformat, timezone
from django.utils.timezone import localtime

from djwebhooks import queue, replay, send_event
from djwebhooks.models import Delivery, WebhookTarget
from djwebhooks.senders.base import AttemptResult
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


# Finding a customer's deliveries ----------------------------------------------------------

DELIVERIES = "admin:djwebhooks_delivery_changelist"


def results(response):
    """The primary keys of the rows a changelist shows."""
    assert response.status_code == 200, response
    return sorted(row.pk for row in response.context["cl"].result_list)


@pytest.fixture
def two_owners(make_target, user, other_user, receiver):
    """One delivery for ``user`` (audreyr) and one for ``other_user`` (pydanny)."""
    make_target()
    make_target(owner=other_user, target_url=receiver.url + "/danny/")
    [mine] = send_event("project.update", {"n": 1}, owner=user)
    [theirs] = send_event("project.update", {"n": 2}, owner=other_user)
    return mine, theirs


def test_search_by_owner_username_finds_only_their_deliveries(staff, two_owners):
    mine, theirs = two_owners
    url = reverse(DELIVERIES)
    assert results(staff.get(url, {"q": "audreyr"})) == [mine.pk]
    assert results(staff.get(url, {"q": "PYDANNY"})) == [theirs.pk]
    assert results(staff.get(url, {"q": "/danny/"})) == [theirs.pk]  # part of the URL
    assert results(staff.get(url, {"q": "project.update"})) == sorted([mine.pk, theirs.pk])
    assert results(staff.get(url, {"q": "project.upd"})) == []  # events are exact


def test_the_owner_column_links_to_the_owner_filter(staff, two_owners, user, other_user):
    mine, _ = two_owners
    url = reverse(DELIVERIES)
    html = staff.get(url).content.decode()
    assert f'href="{url}?owner={user.pk}"' in html
    # Unfiltered, the filter lists no users at all.
    assert "By owner" not in html

    response = staff.get(url, {"owner": user.pk})
    assert results(response) == [mine.pk]
    filtered = response.content.decode()
    assert "By owner" in filtered
    sidebar = filtered[filtered.index('id="changelist-filter"'):]
    assert "audreyr" in sidebar and "pydanny" not in sidebar

    assert results(staff.get(url, {"owner": 999_999})) == []
    assert "e=1" in staff.get(url, {"owner": "not-an-id"})["Location"]


def test_the_target_filter_lists_only_the_chosen_target(staff, two_owners):
    mine, theirs = two_owners
    response = staff.get(reverse(DELIVERIES),
                         {"webhook_target__id__exact": theirs.webhook_target_id})
    assert results(response) == [theirs.pk]
    sidebar = response.content.decode().split('id="changelist-filter"')[1]
    assert "/danny/" in sidebar and mine.webhook_target.target_url not in sidebar


def test_times_are_shown_to_the_second_with_the_zone(staff, settings, make_target, user):
    settings.TIME_ZONE = "America/New_York"
    make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    delivery.refresh_from_db()
    shown = dateformat.format(localtime(delivery.created, ZoneInfo("America/New_York")),
                              "Y-m-d H:i:s T")
    assert shown.endswith((" EST", " EDT")) and len(shown) == 23
    assert shown in staff.get(reverse(DELIVERIES)).content.decode()
    page = staff.get(reverse("admin:djwebhooks_delivery_change", args=[delivery.pk]))
    assert page.content.decode().count(shown) >= 2  # the delivery and its attempt


def test_the_delivery_page_shows_the_headers_sent_but_no_secret(staff, make_target, user):
    target = make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    html = staff.get(reverse("admin:djwebhooks_delivery_change", args=[delivery.pk])) \
        .content.decode()
    assert f"webhook-id: {delivery.hash_value}\n" in html
    assert "Content-Type: application/json" in html
    assert "webhook-signature: v1,… (made at each attempt" in html
    assert target.secret not in html and target.secret[6:] not in html


def test_long_urls_are_cut_with_the_whole_url_in_the_title(staff, make_target, user, receiver):
    long_url = receiver.url + "/hook/" + "x" * 80
    target = make_target(target_url=long_url)
    send_event("project.update", {"n": 1}, owner=user)
    for name in (DELIVERIES, "admin:djwebhooks_webhooktarget_changelist"):
        html = staff.get(reverse(name)).content.decode()
        assert f'title="{long_url}"' in html
        assert f">{long_url}<" not in html, name
    assert target.pk


# Replaying --------------------------------------------------------------------------------


@pytest.fixture
def failed_once(make_target, user, receiver):
    """A delivery whose first attempt got a 500; the receiver then answers 200."""
    receiver.replies = [Reply(status=500)]
    make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    return delivery


def replay_url(delivery):
    return reverse("admin:djwebhooks_delivery_replay", args=[delivery.pk])


def test_the_delivery_page_has_a_replay_button(staff, failed_once):
    html = staff.get(reverse("admin:djwebhooks_delivery_change", args=[failed_once.pk])) \
        .content.decode()
    form = html[html.index(f'action="{replay_url(failed_once)}"') - 40:]
    form = form[:form.index("</form>")]
    assert 'method="post"' in form and 'name="csrfmiddlewaretoken"' in form
    assert ">Replay</button>" in form


def test_the_replay_button_replays_logs_and_names_who_replayed(staff, failed_once, receiver):
    response = staff.post(replay_url(failed_once), follow=True)
    assert "Replaying 1 delivery." in response.content.decode()
    assert response.redirect_chain[-1][0] == reverse("admin:djwebhooks_delivery_change",
                                                     args=[failed_once.pk])
    failed_once.refresh_from_db()
    assert (failed_once.status, failed_once.attempt) == (Delivery.Status.SUCCEEDED, 2)
    assert failed_once.replayed_by is None  # cleared by the attempt that followed
    admin_user = User.objects.get(username="admin")
    attempts = list(failed_once.attempts.order_by("attempt"))
    assert [a.replayed_by for a in attempts] == [None, admin_user]
    assert len(receiver.requests) == 2
    [entry] = LogEntry.objects.filter(object_id=str(failed_once.pk))
    assert (entry.user, entry.action_flag, entry.get_change_message()) == (
        admin_user, CHANGE, "Replayed (Replay button).")
    # The attempt's row says who replayed it.
    html = response.content.decode()
    cells = [re.sub(r"<[^>]+>|\s", "", html[m.end():html.index("</td>", m.end())])
             for m in re.finditer('<td class="field-replayed_by">', html)]
    assert cells == ["-", "admin"]


def test_the_replay_button_needs_a_post_with_a_csrf_token(failed_once, django_user_model,
                                                           receiver):
    admin_user = django_user_model.objects.create_superuser("admin", "a@example.com", "pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post(replay_url(failed_once)).status_code == 403
    assert client.get(replay_url(failed_once)).status_code == 405
    failed_once.refresh_from_db()
    assert failed_once.attempt == 1 and len(receiver.requests) == 1


def test_the_replay_button_needs_the_change_permission(client, django_user_model, failed_once,
                                                       receiver):
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_delivery"))
    client.force_login(viewer)
    page = client.get(reverse("admin:djwebhooks_delivery_change", args=[failed_once.pk]))
    assert page.status_code == 200
    assert replay_url(failed_once) not in page.content.decode()
    assert client.post(replay_url(failed_once)).status_code == 403
    assert len(receiver.requests) == 1 and not LogEntry.objects.exists()


def test_the_replay_action_logs_each_delivery(staff, failed_once):
    staff.post(reverse(DELIVERIES), {"action": "replay_deliveries",
                                     "_selected_action": [failed_once.pk]})
    [entry] = LogEntry.objects.all()
    assert (entry.object_id, entry.get_change_message()) == (str(failed_once.pk),
                                                            "Replayed (action).")
    assert failed_once.attempts.get(attempt=2).replayed_by.username == "admin"


def test_replaying_for_a_disabled_target_warns_and_does_nothing(staff, failed_once, receiver):
    target = failed_once.webhook_target
    target.is_active = False
    target.save()
    for send in (lambda: staff.post(replay_url(failed_once), follow=True),
                 lambda: staff.post(reverse(DELIVERIES), {
                     "action": "replay_deliveries", "_selected_action": [failed_once.pk]},
                     follow=True)):
        html = send().content.decode()
        assert ("1 delivery was not replayed, because its target is disabled "
                f"({html_escape(str(target))}). Enable the target first") in html
        assert "Replaying" not in html
    failed_once.refresh_from_db()
    assert failed_once.attempt == 1 and failed_once.reason != "replayed"
    assert failed_once.replayed_by is None
    assert len(receiver.requests) == 1 and not LogEntry.objects.exists()


def test_a_late_outcome_does_not_take_the_replayer(user, make_target):
    """The replayer goes onto the attempt that moves the delivery, not one whose claim was
    lost meanwhile (which moves nothing)."""
    target = make_target()
    delivery = Delivery.objects.create(webhook_target=target, event="project.update",
                                       hash_value="msg_late", status="failed")
    assert queue.make_due([delivery.pk], replayed_by=user) == [delivery.pk]
    assert queue.claim("a", limit=1).ids == [delivery.pk]
    [loaded] = queue.load("a", [delivery.pk])
    Delivery.objects.filter(pk=delivery.pk).update(claimed_by="b")  # taken over
    result = AttemptResult(success=True, response_status=200, response_message="",
                           response_content_type="", error="", duration=1,
                           notification="200 OK")
    [late] = queue.record("a", [(loaded, result)]).recorded
    assert late.attempt.replayed_by_id is None
    [loaded] = queue.load("b", [delivery.pk])
    [moved] = queue.record("b", [(loaded, result)]).recorded
    assert moved.attempt.replayed_by_id == user.pk
    delivery.refresh_from_db()
    assert delivery.replayed_by_id is None
    assert list(delivery.attempts.order_by("attempt").values_list("replayed_by", flat=True)) \
        == [None, user.pk]


def test_a_failed_replay_names_the_replayer_and_clears_it(user, make_target, receiver):
    receiver.replies = [Reply(status=500), Reply(status=500)]
    target = make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    replay([delivery], replayed_by=user)
    delivery.refresh_from_db()
    assert (delivery.attempt, delivery.success, delivery.replayed_by_id) == (2, False, None)
    assert delivery.attempts.get(attempt=2).replayed_by == user
    assert target.pk


# Targets ----------------------------------------------------------------------------------


def test_the_add_form_shows_only_what_a_person_sets(staff):
    html = staff.get(reverse("admin:djwebhooks_webhooktarget_add")).content.decode()
    names = set(re.findall(r'<(?:input|select|textarea)[^>]* name="([^"]+)"', html))
    assert names - {"csrfmiddlewaretoken", "_save", "_addanother", "_continue"} == {
        "owner", "event", "identifier", "target_url", "header_content_type", "is_active",
        "headers", "timeout", "retry_schedule", "ordered", "max_in_flight", "rate_limit"}
    for hidden in ("whsec_", "signing secret", "consecutive failures", "failing since",
                   "disabled because", "last success", "Health"):
        assert hidden.lower() not in html.lower(), hidden


def test_the_target_page_links_to_its_deliveries_with_last_success_and_failure(
        staff, make_target, user, receiver):
    receiver.replies = [Reply(status=500)]
    target = make_target()
    [failed] = send_event("project.update", {"n": 1}, owner=user)
    [succeeded] = send_event("project.update", {"n": 2}, owner=user)
    html = staff.get(reverse("admin:djwebhooks_webhooktarget_change", args=[target.pk])) \
        .content.decode()
    link = f'{reverse(DELIVERIES)}?webhook_target__id__exact={target.pk}'
    assert f'href="{link}"' in html
    assert results(staff.get(link)) == sorted([failed.pk, succeeded.pk])
    last_failure = html[html.index("field-last_failure"):]
    last_failure = last_failure[:last_failure.index("</div>\n\n")]
    assert "500" in last_failure and failed.hash_value in last_failure
    last_success = html[html.index("field-last_success"):]
    last_success = last_success[:last_success.index("</div>\n\n")]
    assert "200" in last_success and succeeded.hash_value in last_success
    assert 'id="disabled-banner"' not in html


def test_a_disabled_target_says_why_on_its_page(staff, make_target, user, receiver):
    receiver.replies = [Reply(status=410)]
    target = make_target()
    send_event("project.update", {"n": 1}, owner=user)
    target.refresh_from_db()
    assert not target.is_active
    html = staff.get(reverse("admin:djwebhooks_webhooktarget_change", args=[target.pk])) \
        .content.decode()
    banner = html[html.index('id="disabled-banner"'):]
    banner = banner[:banner.index("</p>")]
    assert "Disabled because the receiver answered 410 Gone (since " in banner
    assert "tick “Active” and save" in banner


def test_health_changes_move_modified(make_target, user, receiver):
    receiver.replies = [Reply(status=500), Reply(status=200)]
    target = make_target()
    long_ago = timezone.now() - timedelta(days=30)
    WebhookTarget.objects.filter(pk=target.pk).update(modified=long_ago)
    [delivery] = send_event("project.update", {"n": 1}, owner=user)  # a failure is counted
    target.refresh_from_db()
    assert target.consecutive_failures == 1
    assert target.modified > long_ago + timedelta(days=29)

    WebhookTarget.objects.filter(pk=target.pk).update(modified=long_ago)
    replay([delivery])  # a success resets the count
    target.refresh_from_db()
    assert target.consecutive_failures == 0
    assert target.modified > long_ago + timedelta(days=29)


def test_an_automatic_disable_moves_modified(make_target, user, receiver):
    receiver.replies = [Reply(status=410)]
    target = make_target()
    long_ago = timezone.now() - timedelta(days=30)
    WebhookTarget.objects.filter(pk=target.pk).update(modified=long_ago)
    send_event("project.update", {"n": 1}, owner=user)
    target.refresh_from_db()
    assert not target.is_active and target.modified > long_ago + timedelta(days=29)


def test_the_target_page_has_a_chart_of_deliveries_per_hour(staff, make_target, user,
                                                            receiver):
    receiver.replies = [Reply(status=500)]
    target = make_target()
    send_event("project.update", {"n": 1}, owner=user)
    send_event("project.update", {"n": 2}, owner=user)
    html = staff.get(reverse("admin:djwebhooks_webhooktarget_change", args=[target.pk])) \
        .content.decode()
    svg = html[html.index("<svg xmlns="):]
    svg = svg[:svg.index("</svg>") + len("</svg>")]
    root = ElementTree.fromstring(svg)
    ns = {"svg": "http://www.w3.org/2000/svg"}
    bars = root.findall("svg:g[@class='bar']", ns)
    assert len(bars) == 48
    parts = [rect.get("class") for bar in bars for rect in bar.findall("svg:rect", ns)]
    assert sorted(parts) == ["pending", "succeeded"]  # one retrying, one sent
    assert "1 succeeded, 0 failed, 1 pending" in root.find("svg:desc", ns).text
    assert "http://" not in svg.replace("http://www.w3.org/2000/svg", "").replace(
        html_escape(target.target_url), "")  # nothing loaded from elsewhere


# Who did this? ----------------------------------------------------------------------------


def test_target_actions_write_log_entries(staff, make_target):
    target = make_target()
    url = reverse("admin:djwebhooks_webhooktarget_changelist")
    for action in ("disable_targets", "enable_targets", "rotate_secrets"):
        response = staff.post(url, {"action": action, "_selected_action": [target.pk]},
                              follow=True)
        assert response.status_code == 200
    assert [(entry.user.username, entry.object_id, entry.get_change_message())
            for entry in LogEntry.objects.order_by("pk")] == [
        ("admin", str(target.pk), "Disabled (action)."),
        ("admin", str(target.pk), "Enabled (action); its health was reset."),
        ("admin", str(target.pk), "Rotated the signing secret."),
    ]


def test_disabling_says_who_did_it(staff, make_target):
    target = make_target()
    response = staff.post(reverse("admin:djwebhooks_webhooktarget_changelist"), {
        "action": "disable_targets", "_selected_action": [target.pk]}, follow=True)
    assert "Disabled 1 target." in response.content.decode()
    target.refresh_from_db()
    assert (target.is_active, target.disabled_reason) == (False, "admin disabled it in the admin")
    html = staff.get(reverse("admin:djwebhooks_webhooktarget_change", args=[target.pk])) \
        .content.decode()
    assert "Disabled because admin disabled it in the admin (since " in html
