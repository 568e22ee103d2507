"""The DJWEBHOOKS setting and the system checks that guard it."""

import pytest
from django.core import checks
from django.test import override_settings

from djwebhooks import checks as djwebhooks_checks
from djwebhooks import conf
from djwebhooks.decorators import hook, registry
from djwebhooks.exceptions import WebhookImproperlyConfigured


def run_checks():
    """Run the app's own checks (Django's full run also needs a database on Django 6)."""
    return [
        *djwebhooks_checks.check_settings(),
        *djwebhooks_checks.check_events(),
        *djwebhooks_checks.check_backend(),
        *djwebhooks_checks.check_lease(),
        *djwebhooks_checks.check_time_zone(),
    ]


def test_checks_are_registered():
    registered = checks.registry.registry.get_checks()
    for check in (djwebhooks_checks.check_settings, djwebhooks_checks.check_events,
                  djwebhooks_checks.check_backend, djwebhooks_checks.check_lease,
                  djwebhooks_checks.check_time_zone):
        assert check in registered
    database_checks = checks.registry.registry.get_checks(include_deployment_checks=True)
    assert djwebhooks_checks.check_secrets in database_checks
    assert checks.Tags.database in djwebhooks_checks.check_secrets.tags


def ids(settings_value=None, debug=False, hooks=False):
    """The ids of the djwebhooks checks that fire (E005 only when ``hooks`` is set: other
    tests declare hooks for events that these settings do not have)."""
    with override_settings(DJWEBHOOKS=settings_value, DEBUG=debug):
        return sorted(
            message.id
            for message in run_checks()
            if message.id.startswith("djwebhooks") and (hooks or message.id != "djwebhooks.E005")
        )


def test_defaults_are_clean():
    assert ids({"EVENTS": ["a.b"]}, debug=True) == []


def test_unknown_key():
    with override_settings(DJWEBHOOKS={"EVENTS": ["a"], "TIMEOUT": 3}):
        [error] = [m for m in run_checks() if m.id == "djwebhooks.E001"]
    assert "Unknown key 'TIMEOUT'" in error.msg
    assert "CONNECT_TIMEOUT" in error.hint


def test_not_a_dict():
    assert "djwebhooks.E001" in ids(["EVENTS"])


@pytest.mark.parametrize(
    "bad",
    [
        {"CONNECT_TIMEOUT": 0},
        {"READ_TIMEOUT": "10"},
        {"READ_TIMEOUT": True},
        {"RESPONSE_BODY_LIMIT": -1},
        {"RESPONSE_BODY_LIMIT": 1.5},
        {"USER_AGENT": "a\nb"},
        {"OWNER_FIELD": 3},
        {"BACKEND": None},
        {"RETRY_SCHEDULE": 5},
        {"RETRY_SCHEDULE": [5, -1]},
        {"RETRY_JITTER": 1},
        {"RETRY_AFTER_MAX": 0},
        {"LEASE": "5m"},
        {"LEASE": float("inf")},
        {"LEASE": float("nan")},
        {"TOTAL_TIMEOUT": float("inf")},
        {"RETRY_SCHEDULE": [5, float("inf")]},
        {"RETENTION": 1e300},
        {"DISABLE_AFTER": 0},
        {"RETENTION": None},
        {"TOTAL_TIMEOUT": 0},
        {"MAX_PAYLOAD_BYTES": 0},
        {"MAX_PAYLOAD_BYTES": "1MB"},
        {"ALLOWED_NETWORKS": "10.0.0.0/8"},
        {"ALLOWED_NETWORKS": ["10.0.0.0/33"]},
        {"ALLOWED_NETWORKS": ["intranet"]},
        {"HTTPS_ONLY": "yes"},
        {"ALLOWED_PORTS": 443},
        {"ALLOWED_PORTS": [443, 70000]},
        {"SECRET_ROTATION_GRACE": 8 * 86400},
        {"SECRET_ROTATION_GRACE": -1},
        {"SECRET_ROTATION_GRACE": "1d"},
        {"MAX_IN_FLIGHT": 0},
        {"MAX_IN_FLIGHT": True},
        {"MAX_IN_FLIGHT": 2.5},
        {"MAX_IN_FLIGHT": "4"},
        {"MAX_IN_FLIGHT": 1001},
    ],
)
def test_bad_values(bad):
    assert "djwebhooks.E002" in ids({"EVENTS": ["a"], **bad}, debug=True)


@pytest.mark.parametrize(
    "events",
    ["project.update", ["ok", "has space"], ["", "x"], {"ok": 1}, [".starts.with.dot"]],
)
def test_bad_events(events):
    assert "djwebhooks.E003" in ids({"EVENTS": events}, debug=True)


def test_backend_that_does_not_import():
    with override_settings(DJWEBHOOKS={"EVENTS": ["a"], "BACKEND": "nope.Backend"}):
        [error] = [m for m in run_checks() if m.id == "djwebhooks.E004"]
    assert "'nope.Backend', which could not be imported" in error.msg


def test_hook_for_an_undeclared_event():
    @hook(event="never.declared")
    def send(owner):
        return {}

    with override_settings(DJWEBHOOKS={"EVENTS": ["a"]}):
        [error] = [m for m in run_checks() if m.id == "djwebhooks.E005"
                   and "never.declared" in m.msg]
    assert "test_hook_for_an_undeclared_event.<locals>.send is hooked to event" in error.msg
    assert error.hint == "Add 'never.declared' to DJWEBHOOKS['EVENTS']."
    del registry[send.__wrapped__]


def test_inline_backend_in_production():
    assert "djwebhooks.W001" in ids({"EVENTS": ["a"]}, debug=False)
    assert "djwebhooks.W001" not in ids({"EVENTS": ["a"]}, debug=True)


def test_a_lease_too_short_for_any_request_to_start():
    # A request starts only while its claim outlasts TOTAL_TIMEOUT, and claims are renewed
    # every LEASE / 4 seconds (at most 5): 30 s needs a lease of at least 36 s.
    assert "djwebhooks.E006" in ids({"EVENTS": ["a"], "LEASE": 35.9}, debug=True)
    assert "djwebhooks.E006" not in ids({"EVENTS": ["a"], "LEASE": 36}, debug=True)
    short = {"EVENTS": ["a"], "TOTAL_TIMEOUT": 0.5}
    assert "djwebhooks.E006" in ids({**short, "LEASE": 1.9}, debug=True)
    assert "djwebhooks.E006" not in ids({**short, "LEASE": 2}, debug=True)
    assert "djwebhooks.E006" not in ids({"EVENTS": ["a"], "LEASE": "bad"}, debug=True)
    with override_settings(DJWEBHOOKS={"EVENTS": ["a"], "LEASE": 30}):
        [error] = djwebhooks_checks.check_lease()
    assert "Make LEASE at least 36 seconds" in error.hint


def test_use_tz_false_is_an_error():
    with override_settings(USE_TZ=False):
        [error] = djwebhooks_checks.check_time_zone()
    assert error.id == "djwebhooks.E007"
    assert "USE_TZ = True" in error.hint
    assert djwebhooks_checks.check_time_zone() == []


@pytest.mark.django_db
def test_targets_whose_secret_cannot_sign_are_reported(user):
    from djwebhooks.models import WebhookTarget

    good = WebhookTarget.objects.create(owner=user, event="a", target_url="https://a.example/")
    WebhookTarget.objects.filter(pk=good.pk).update(previous_secret="")
    bad = [WebhookTarget.objects.create(owner=user, event="a",
                                        target_url=f"https://{n}.example/")
           for n in range(2)]
    WebhookTarget.objects.filter(pk=bad[0].pk).update(secret="whsec_not base64!")
    WebhookTarget.objects.filter(pk=bad[1].pk).update(previous_secret="whsec_")
    assert djwebhooks_checks.check_secrets(databases=None) == []  # only with --database
    [error] = djwebhooks_checks.check_secrets(databases=["default"])
    assert error.id == "djwebhooks.E008"
    assert error.msg.startswith("2 webhook targets have a signing secret that cannot sign "
                                "requests (not whsec_ and base64): ")
    assert f": {bad[0].pk}, {bad[1].pk}. " in error.msg
    assert "webhooks_rotate_secret --target" in error.hint
    WebhookTarget.objects.filter(pk__in=[t.pk for t in bad]).delete()
    assert djwebhooks_checks.check_secrets(databases=["default"]) == []


def test_no_events():
    assert ids({}, debug=True) == ["djwebhooks.W002"]
    assert ids(None, debug=True) == ["djwebhooks.W002"]


def test_rotation_grace_may_be_zero():
    assert ids({"EVENTS": ["a"], "SECRET_ROTATION_GRACE": 0}, debug=True) == []


def test_durations_accept_timedeltas(settings):
    from datetime import timedelta

    value = {"EVENTS": ["a"], "LEASE": timedelta(minutes=2),
             "RETRY_SCHEDULE": [timedelta(seconds=1), 2], "DISABLE_AFTER": None}
    assert ids(value, debug=True) == []
    settings.DJWEBHOOKS = value
    assert conf.get_seconds("LEASE") == 120
    assert conf.get_seconds("DISABLE_AFTER") is None
    assert conf.get_retry_policy().schedule == (1.0, 2.0)


def test_get_setting_and_defaults(settings):
    settings.DJWEBHOOKS = {"READ_TIMEOUT": 30}
    assert conf.get_setting("READ_TIMEOUT") == 30
    assert conf.get_setting("CONNECT_TIMEOUT") == conf.DEFAULTS["CONNECT_TIMEOUT"]
    assert conf.get_timeouts() == (5.0, 30.0)
    with pytest.raises(KeyError):
        conf.get_setting("NOT_A_SETTING")


def test_events_as_list_or_dict(settings):
    settings.DJWEBHOOKS = {"EVENTS": ["a", "b"]}
    assert conf.get_events() == {"a": "", "b": ""}
    settings.DJWEBHOOKS = {"EVENTS": {"a": "Described"}}
    assert conf.get_events() == {"a": "Described"}
    settings.DJWEBHOOKS = {"EVENTS": "a"}
    with pytest.raises(WebhookImproperlyConfigured, match=r"DJWEBHOOKS\['EVENTS'\] must be"):
        conf.get_events()


def test_settings_must_be_a_dict(settings):
    settings.DJWEBHOOKS = ["oops"]
    with pytest.raises(WebhookImproperlyConfigured, match="must be a dict"):
        conf.get_setting("EVENTS")


def test_user_agent_default():
    from djwebhooks import __version__

    assert conf.get_user_agent() == f"dj-webhooks/{__version__}"
