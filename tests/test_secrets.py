"""Secrets are shown whole only on the admin's secret page, to users who may change the
target; never in list views or on the change page, and never logged."""

import ast
import logging
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

import djwebhooks
from djwebhooks import send_event
from djwebhooks.models import WebhookTarget
from tests.receiver import Reply


def staff_with(django_user_model, username, *codenames, superuser=False):
    """A staff user with these permissions on webhook targets."""
    if superuser:
        return django_user_model.objects.create_superuser(username, f"{username}@x.org", "pw")
    user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def target(user):
    target = WebhookTarget.objects.create(owner=user, event="project.update",
                                          target_url="https://example.com/hook")
    target.rotate_secret(3600)  # so there is a previous secret too
    return target


def secret_url(target):
    return reverse("admin:djwebhooks_webhooktarget_secret", args=[target.pk])


@pytest.mark.django_db
class TestSecretPage:
    def test_shows_both_secrets_to_users_who_may_change_the_target(self, client, target,
                                                                 django_user_model):
        client.force_login(staff_with(django_user_model, "editor", "view_webhooktarget",
                                      "change_webhooktarget"))
        response = client.get(secret_url(target))
        assert response.status_code == 200
        html = response.content.decode()
        assert f'<code id="current-secret">{target.secret}</code>' in html
        assert f'<code id="previous-secret">{target.previous_secret}</code>' in html
        assert "Still valid, and still signed with, until" in html
        assert "(UTC)" in html
        assert "no-store" in response["Cache-Control"]
        assert "private" in response["Cache-Control"]

    def test_superusers_see_it(self, client, target, django_user_model):
        client.force_login(staff_with(django_user_model, "root", superuser=True))
        assert target.secret in client.get(secret_url(target)).content.decode()

    def test_no_previous_secret_once_its_grace_period_is_over(self, client, target,
                                                            django_user_model):
        WebhookTarget.objects.filter(pk=target.pk).update(
            previous_secret_expires=timezone.now() - timedelta(seconds=1))
        client.force_login(staff_with(django_user_model, "root", superuser=True))
        html = client.get(secret_url(target)).content.decode()
        assert target.secret in html
        assert target.previous_secret not in html
        assert "previous-secret" not in html

    @pytest.mark.parametrize("codenames", [("view_webhooktarget",), ()])
    def test_forbidden_without_the_change_permission(self, client, target, django_user_model,
                                                     codenames):
        client.force_login(staff_with(django_user_model, "viewer", *codenames))
        response = client.get(secret_url(target))
        assert response.status_code == 403
        assert target.secret not in response.content.decode()

    def test_anonymous_and_non_staff_users_are_sent_to_the_login_page(self, client, target,
                                                                     user):
        response = client.get(secret_url(target))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
        client.force_login(user)  # not staff
        assert client.get(secret_url(target)).status_code == 302

    def test_unknown_target(self, client, django_user_model, db):
        client.force_login(staff_with(django_user_model, "root", superuser=True))
        url = reverse("admin:djwebhooks_webhooktarget_secret", args=[999])
        assert client.get(url).status_code == 404

    def test_the_change_page_links_to_it_only_for_users_who_may_see_it(self, client, target,
                                                                      django_user_model):
        change_url = reverse("admin:djwebhooks_webhooktarget_change", args=[target.pk])
        client.force_login(staff_with(django_user_model, "editor", "view_webhooktarget",
                                      "change_webhooktarget"))
        assert f'href="{secret_url(target)}"' in client.get(change_url).content.decode()
        client.force_login(staff_with(django_user_model, "viewer", "view_webhooktarget"))
        html = client.get(change_url).content.decode()
        assert secret_url(target) not in html
        assert target.masked_secret in html  # the masked form is still shown

    def test_list_and_change_pages_never_show_a_whole_secret(self, client, target,
                                                             django_user_model):
        client.force_login(staff_with(django_user_model, "root", superuser=True))
        pages = [
            reverse("admin:djwebhooks_webhooktarget_changelist"),
            reverse("admin:djwebhooks_webhooktarget_change", args=[target.pk]),
            reverse("admin:djwebhooks_webhooktarget_history", args=[target.pk]),
        ]
        for url in pages:
            response = client.get(url)
            assert response.status_code == 200
            html = response.content.decode()
            assert target.secret not in html, url
            assert target.previous_secret not in html, url
        assert target.masked_secret in client.get(pages[0]).content.decode()

    def test_viewing_is_logged_without_the_secret(self, client, target, django_user_model,
                                                  caplog):
        editor = staff_with(django_user_model, "root", superuser=True)
        client.force_login(editor)
        with caplog.at_level(logging.INFO, logger="djwebhooks"):
            client.get(secret_url(target))
        assert (f"User {editor.pk} viewed the signing secret of webhook target {target.pk}."
                in caplog.messages)
        assert target.secret not in caplog.text


# Logs
# ----


def logged_text(caplog):
    """Everything logged: formatted messages, raw arguments, and any tracebacks."""
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
    return "\n".join(parts)


@pytest.mark.django_db(transaction=True)
def test_no_secret_is_logged_while_sending_or_rotating(make_target, user, receiver, caplog,
                                                       client, django_user_model):
    target = make_target()
    seen = [target.secret]
    receiver.replies = [Reply(status=500, body=b"boom")]  # a failure logs a warning too
    with caplog.at_level(logging.DEBUG):  # every logger, urllib3's included
        send_event("project.update", {"n": 1}, owner=user)
        send_event("project.update", {"n": 2}, owner=user)
        seen.append(target.rotate_secret())
        send_event("project.update", {"n": 3}, owner=user)  # signed with both secrets
        call_command("webhooks_rotate_secret", "--all", "--force", stdout=StringIO(),
                     stderr=StringIO())
        client.force_login(staff_with(django_user_model, "root", superuser=True))
        client.post(reverse("admin:djwebhooks_webhooktarget_changelist"), {
            "action": "rotate_secrets", "_selected_action": [target.pk]})
        client.get(secret_url(target))
    target.refresh_from_db()
    seen += [target.secret, target.previous_secret]
    assert len(receiver.requests) == 3
    assert any("attempt 1: 500" in m for m in caplog.messages)
    assert any(m.startswith("Rotated the signing secret of webhook target") for m in
               caplog.messages)
    text = logged_text(caplog)
    for secret in seen:
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text


def logging_calls(tree):
    """Yield each ``logger.<level>(...)`` call in a module's syntax tree."""
    levels = {"debug", "info", "warning", "error", "exception", "critical", "log"}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in levels and isinstance(node.func.value, ast.Name)
                and "log" in node.func.value.id):
            yield node


def test_no_logging_call_in_djwebhooks_is_given_a_secret():
    """A static guard: no argument of a logging call names anything called *secret*."""
    offenders, checked = [], 0
    for path in Path(djwebhooks.__file__).parent.rglob("*.py"):
        for call in logging_calls(ast.parse(path.read_text(), str(path))):
            checked += 1
            arguments = [*call.args[1:], *(k.value for k in call.keywords)]
            for argument in arguments:
                for node in ast.walk(argument):
                    name = getattr(node, "id", None) or getattr(node, "attr", None) or ""
                    if "secret" in name.lower():
                        offenders.append(f"{path.name}:{call.lineno}")
    assert checked > 10  # the walk does find the logging calls
    assert offenders == []
