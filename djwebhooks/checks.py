"""System checks for the ``DJWEBHOOKS`` setting. Ids are stable; docs/checks.rst lists them.

- ``djwebhooks.E001`` unknown key in ``DJWEBHOOKS``, or ``DJWEBHOOKS`` not a dict
- ``djwebhooks.E002`` a bad value for a known key
- ``djwebhooks.E003`` ``EVENTS`` is not a list or dict, or holds an invalid name
- ``djwebhooks.E004`` ``BACKEND`` cannot be imported
- ``djwebhooks.E005`` a ``@hook`` sends an event that is not declared
- ``djwebhooks.W001`` the inline backend with ``DEBUG = False``
- ``djwebhooks.W002`` no events are declared
- ``djwebhooks.W003`` ``LEASE`` is not longer than the connect and read timeouts
"""

from django.conf import settings
from django.core import checks

from djwebhooks import conf
from djwebhooks.exceptions import WebhookImproperlyConfigured


@checks.register()
def check_settings(app_configs=None, **kwargs):
    """Report unknown keys and bad values in ``DJWEBHOOKS``."""
    errors = []
    for key, message in conf.settings_problems():
        unknown = key is None or key not in conf.DEFAULTS
        errors.append(
            checks.Error(
                message,
                hint=(
                    f"Known keys: {', '.join(sorted(conf.DEFAULTS))}."
                    if unknown
                    else "See the settings reference in the dj-webhooks docs."
                ),
                id="djwebhooks.E001" if unknown else "djwebhooks.E002",
            )
        )
    return errors


@checks.register()
def check_lease(app_configs=None, **kwargs):
    """Warn when a claim may expire while its request is still running."""
    try:
        lease = conf.get_seconds("LEASE")
        longest = sum(conf.get_timeouts())
    except (WebhookImproperlyConfigured, TypeError, ValueError):
        return []  # reported by check_settings
    if lease <= longest:
        return [
            checks.Warning(
                f"DJWEBHOOKS['LEASE'] ({lease:g} s) is not longer than CONNECT_TIMEOUT + "
                f"READ_TIMEOUT ({longest:g} s): a delivery still being sent may be claimed "
                "by another worker and sent twice.",
                hint="Make LEASE several times the sum of the timeouts (the default is 300).",
                id="djwebhooks.W003",
            )
        ]
    return []


@checks.register()
def check_events(app_configs=None, **kwargs):
    """Check that ``EVENTS`` is well formed, and that every ``@hook`` event is declared."""
    if not isinstance(getattr(settings, "DJWEBHOOKS", None) or {}, dict):
        return []  # reported once, by check_settings (E001)
    try:
        events = conf.get_events()
    except WebhookImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="djwebhooks.E003")]
    errors = []
    for name, description in events.items():
        if not isinstance(name, str) or not conf.EVENT_NAME_RE.match(name):
            errors.append(
                checks.Error(
                    f"DJWEBHOOKS['EVENTS'] has an invalid event name {name!r}.",
                    hint=f"Event names are {conf.EVENT_NAME_HELP}.",
                    id="djwebhooks.E003",
                )
            )
        elif not isinstance(description, str):
            errors.append(
                checks.Error(
                    f"The description of event {name!r} in DJWEBHOOKS['EVENTS'] must be a "
                    f"string, got {type(description).__name__}.",
                    id="djwebhooks.E003",
                )
            )
    if not events:
        errors.append(
            checks.Warning(
                "No webhook events are declared, so nothing can be sent.",
                hint="Declare them in settings: DJWEBHOOKS = {'EVENTS': ['project.update']}.",
                id="djwebhooks.W002",
            )
        )
    from djwebhooks.decorators import registry

    for function, event in list(registry.items()):
        if event not in events:
            errors.append(
                checks.Error(
                    f"{function.__module__}.{function.__qualname__} is hooked to event "
                    f"{event!r}, which is not declared.",
                    hint=f"Add {event!r} to DJWEBHOOKS['EVENTS'].",
                    id="djwebhooks.E005",
                )
            )
    return errors


@checks.register()
def check_backend(app_configs=None, **kwargs):
    """Check that the backend imports, and warn about the inline backend in production."""
    from djwebhooks.backends import load_backend
    from djwebhooks.backends.inline import InlineBackend

    if not isinstance(getattr(settings, "DJWEBHOOKS", None) or {}, dict):
        return []  # reported once, by check_settings (E001)
    try:
        backend = load_backend(conf.get_setting("BACKEND"))
    except WebhookImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="djwebhooks.E004")]
    if isinstance(backend, InlineBackend) and not settings.DEBUG:
        return [
            checks.Warning(
                "dj-webhooks is using the inline backend with DEBUG = False: every request "
                "that sends a webhook waits for the receivers, and failed attempts are "
                "retried only if webhooks_worker runs.",
                hint="In production, set DJWEBHOOKS['BACKEND'] to "
                "'djwebhooks.backends.database.DatabaseBackend' and run "
                "'manage.py webhooks_worker'; or keep the inline backend, run the worker for "
                "its retries, and silence this check with "
                "SILENCED_SYSTEM_CHECKS = ['djwebhooks.W001'].",
                id="djwebhooks.W001",
            )
        ]
    return []
