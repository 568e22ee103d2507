"""What a newcomer meets first: the checks that catch a half-done setup, the messages of a
missing app or migration, and the assertions' tracebacks."""

import pytest
from django.core import checks
from django.core.management import call_command
from django.test import override_settings

from djwebhooks import checks as djwebhooks_checks
from djwebhooks.models import WebhookTarget


def test_the_new_checks_are_registered():
    assert djwebhooks_checks.check_legacy_settings in checks.registry.registry.get_checks()
    database_checks = checks.registry.registry.get_checks(include_deployment_checks=True)
    assert djwebhooks_checks.check_target_events in database_checks
    assert checks.Tags.database in djwebhooks_checks.check_target_events.tags


# djwebhooks.E001: did you mean ...?

def unknown_key_hint(key):
    with override_settings(DJWEBHOOKS={"EVENTS": ["a"], key: 3}):
        [error] = [m for m in djwebhooks_checks.check_settings() if m.id == "djwebhooks.E001"]
    assert error.msg == f"Unknown key {key!r} in settings.DJWEBHOOKS."
    return error.hint


def test_a_misspelt_key_is_named_with_the_key_meant():
    hint = unknown_key_hint("CONECT_TIMEOUT")
    assert hint.startswith("Did you mean 'CONNECT_TIMEOUT'? Known keys: ALLOWED_NETWORKS, ")


def test_a_key_close_to_several_names_them_all():
    assert unknown_key_hint("TIMEOUT").startswith(
        "Did you mean 'READ_TIMEOUT' or 'TOTAL_TIMEOUT'? Known keys: ")


def test_a_02_name_inside_djwebhooks_gets_its_new_key():
    assert unknown_key_hint("WEBHOOK_EVENTS").startswith("Did you mean 'EVENTS'? ")


def test_a_key_like_no_other_gets_the_list_only():
    assert unknown_key_hint("XYZZY").startswith("Known keys: ALLOWED_NETWORKS, ")


# djwebhooks.W005: the 0.2 settings

def test_02_settings_are_reported_with_their_new_keys(settings):
    settings.WEBHOOK_EVENTS = ["project.update"]
    settings.WEBHOOK_OWNER_FIELD = "username"
    warnings = djwebhooks_checks.check_legacy_settings()
    assert [w.id for w in warnings] == ["djwebhooks.W005", "djwebhooks.W005"]
    assert [w.msg for w in warnings] == [
        "settings.WEBHOOK_EVENTS is a dj-webhooks 0.2 setting; this version does not read it.",
        "settings.WEBHOOK_OWNER_FIELD is a dj-webhooks 0.2 setting; this version does not "
        "read it.",
    ]
    assert warnings[0].hint == ("Move its value to DJWEBHOOKS['EVENTS'] and remove "
                                "WEBHOOK_EVENTS (see docs/migrating.rst, 'Settings').")
    assert "DJWEBHOOKS['OWNER_FIELD']" in warnings[1].hint


def test_no_02_settings_no_warning():
    assert djwebhooks_checks.check_legacy_settings() == []


# djwebhooks.W004: targets of events that are not declared

@pytest.mark.django_db
def test_targets_of_undeclared_events_are_counted_per_event(user):
    for n, event in enumerate(["project.updated", "project.updated", "old.event",
                               "project.update"]):
        WebhookTarget.objects.create(owner=user, event=event,
                                     target_url=f"https://{n}.example/")
    WebhookTarget.objects.create(owner=user, event="old.event", is_active=False,
                                 target_url="https://off.example/")
    assert djwebhooks_checks.check_target_events(databases=None) == []  # only --database
    [warning] = djwebhooks_checks.check_target_events(databases=["default"])
    assert warning.id == "djwebhooks.W004"
    assert warning.msg == ("3 active webhook targets are subscribed to events that are not "
                           "declared, so nothing is sent to them: 'project.updated' (2), "
                           "'old.event' (1).")
    assert warning.hint.startswith("Declare the events in DJWEBHOOKS['EVENTS']")
    with override_settings(DJWEBHOOKS={"EVENTS": ["project.update", "project.updated",
                                                  "old.event"]}):
        assert djwebhooks_checks.check_target_events(databases=["default"]) == []


@pytest.mark.django_db
def test_the_database_checks_run_with_check_database(user, capsys):
    WebhookTarget.objects.create(owner=user, event="gone.event",
                                 target_url="https://a.example/")
    call_command("check", databases=["default"])
    assert "(djwebhooks.W004) 1 active webhook target is subscribed" in capsys.readouterr().err


# A missing app, a missing migrate

NOT_INSTALLED = """
import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    USE_TZ=True,
)
django.setup()
from djwebhooks.exceptions import WebhookImproperlyConfigured
try:
    from djwebhooks import {name}
except WebhookImproperlyConfigured as exc:
    print(exc)
"""


@pytest.mark.parametrize("name", ["send_event", "hook"])
def test_forgetting_installed_apps_says_to_add_it(name):
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", NOT_INSTALLED.replace("{name}", name)],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.stdout.strip() == (
        "dj-webhooks is not installed: add 'djwebhooks' to INSTALLED_APPS in your settings, "
        "then run 'manage.py migrate' to create its tables."), done.stderr


@pytest.fixture
def unmigrated(transactional_db):
    """The djwebhooks tables dropped (its migrations unapplied) for the test, then made
    again."""
    call_command("migrate", "djwebhooks", "zero", verbosity=0)
    try:
        yield
    finally:
        call_command("migrate", "djwebhooks", verbosity=0)


def test_sending_before_migrate_says_to_run_it(user, unmigrated):
    from djwebhooks import send_event
    from djwebhooks.exceptions import WebhookImproperlyConfigured

    with pytest.raises(WebhookImproperlyConfigured) as raised:
        send_event("project.update", {"n": 1}, owner=user)
    message = str(raised.value)
    assert message.startswith("The dj-webhooks tables ")
    assert "djwebhooks_webhooktarget" in message and "djwebhooks_delivery" in message
    assert message.endswith("do not exist in database 'default': run 'manage.py migrate'.")
    assert raised.value.__cause__ is not None  # the database's own error, kept


def test_a_hook_before_migrate_says_to_run_it(user, unmigrated):
    from djwebhooks import hook
    from djwebhooks.exceptions import WebhookImproperlyConfigured

    @hook(event="project.update")
    def send_update(owner):
        return {"n": 1}

    with pytest.raises(WebhookImproperlyConfigured, match=r"run 'manage\.py migrate'\.$"):
        send_update(owner=user)


def test_the_worker_before_migrate_says_to_run_it(unmigrated):
    from djwebhooks.exceptions import WebhookImproperlyConfigured
    from djwebhooks.worker import Worker

    with pytest.raises(WebhookImproperlyConfigured, match=r"run 'manage\.py migrate'\.$"):
        Worker(burst=True).run()


@pytest.mark.django_db
def test_other_database_errors_are_raised_as_they_are(user, monkeypatch):
    from django.db import OperationalError

    from djwebhooks import _sql, send_event

    def broken(*args, **kwargs):
        raise OperationalError("disk I/O error")

    WebhookTarget.objects.create(owner=user, event="project.update",
                                 target_url="https://a.example/")
    monkeypatch.setattr(_sql, "insert_deliveries", broken)
    with pytest.raises(OperationalError, match="disk I/O error"):
        send_event("project.update", {"n": 1}, owner=user)


# The assertions' failures point at the test

def test_a_failing_assertion_shows_the_tests_own_line(pytester):
    pytester.makepyfile(
        test_mine="""
        from djwebhooks.testing import (
            WebhookTestMixin, assert_no_webhooks_sent, assert_webhook_sent)

        def test_expects_a_webhook():
            assert_webhook_sent(event="project.update", sent=[])  # the test's line A

        def test_expects_none():
            assert_no_webhooks_sent(["a webhook"])  # the test's line B

        class Mixed(WebhookTestMixin):  # its methods only, without a TestCase
            pass

        def test_the_mixins_methods():
            Mixed().assertWebhookSent(event="project.update", sent=[])  # the test's line C
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:django", "-p", "no:randomly")
    result.assert_outcomes(failed=3)
    output = result.stdout.str()
    for line in ("A", "B", "C"):
        result.stdout.fnmatch_lines([f">*# the test's line {line}"])
    result.stdout.fnmatch_lines([
        "E   *AssertionError: Expected event='project.update' to be sent at least once, "
        "found 0. No webhook was sent.",
        "test_mine.py:5: AssertionError",
        "E   *AssertionError: Expected no webhook to be sent. 1 webhook was sent:",
        "test_mine.py:8: AssertionError",
    ])
    # No frame of the helpers is shown: the last line of each traceback is the test's.
    assert "testing/__init__.py" not in output
    assert "raise AssertionError" not in output


# The pages a newcomer reads first name only settings that exist

@pytest.mark.parametrize("page", ["quickstart.rst", "checks.rst"])
def test_every_djwebhooks_key_named_in_the_page_exists(page):
    import re
    from pathlib import Path

    from djwebhooks import conf

    text = (Path(__file__).resolve().parent.parent / "docs" / page).read_text()
    named = set(re.findall(r"DJWEBHOOKS\[['\"]([A-Z_]+)['\"]\]", text))
    named |= set(re.findall(r"<setting-([A-Z_]+)>", text))
    named |= set(re.findall(r"[\"']([A-Z][A-Z_]+)[\"']\s*:", text))  # keys in dict literals
    assert named  # the patterns still find the keys
    assert named - set(conf.DEFAULTS) == set()
