"""System checks for the ``DJWEBHOOKS`` setting. Ids are stable; docs/checks.rst lists them.

- ``djwebhooks.E001`` unknown key in ``DJWEBHOOKS`` (the hint says which key was meant),
  or ``DJWEBHOOKS`` not a dict
- ``djwebhooks.E002`` a bad value for a known key
- ``djwebhooks.E003`` ``EVENTS`` is not a list or dict, or holds an invalid name
- ``djwebhooks.E004`` ``BACKEND`` cannot be imported
- ``djwebhooks.E005`` a ``@hook`` sends an event that is not declared
- ``djwebhooks.W001`` the inline backend with ``DEBUG = False``
- ``djwebhooks.W002`` no events are declared
- ``djwebhooks.W003`` the backend can neither defer retries nor find due deliveries itself
- ``djwebhooks.E006`` ``LEASE`` is too short for a request of ``TOTAL_TIMEOUT`` to start
- ``djwebhooks.E007`` ``USE_TZ = False``
- ``djwebhooks.E008`` a target's signing secret cannot sign (run with ``--database``)
- ``djwebhooks.E009`` ``MANAGE_PERMISSION`` cannot be imported or called
- ``djwebhooks.W004`` active targets are subscribed to events that are not declared (run
  with ``--database``)
- ``djwebhooks.W005`` a dj-webhooks 0.2 setting (``WEBHOOK_EVENTS``...) is still set
"""

from django.conf import settings
from django.core import checks
from django.db import DatabaseError, router
from django.db.models import Count

from djwebhooks import conf
from djwebhooks.backends import load_backend
from djwebhooks.backends.inline import InlineBackend
from djwebhooks.decorators import registry
from djwebhooks.exceptions import WebhookImproperlyConfigured
from djwebhooks.models import WebhookTarget
from djwebhooks.signing import secret_key


@checks.register()
def check_settings(app_configs=None, **kwargs):
    """Report unknown keys and bad values in ``DJWEBHOOKS``."""
    errors = []
    for key, message in conf.settings_problems():
        unknown = key is None or key not in conf.DEFAULTS
        if not unknown:
            hint = "See the settings reference in the dj-webhooks docs."
        else:
            hint = f"Known keys: {', '.join(sorted(conf.DEFAULTS))}."
            suggestions = conf.suggest_keys(key)
            if suggestions:
                hint = f"Did you mean {' or '.join(map(repr, suggestions))}? {hint}"
        errors.append(checks.Error(message, hint=hint,
                                   id="djwebhooks.E001" if unknown else "djwebhooks.E002"))
    return errors


@checks.register()
def check_legacy_settings(app_configs=None, **kwargs):
    """Warn about dj-webhooks 0.2 settings, which 0.3 does not read."""
    return [
        checks.Warning(
            f"settings.{old} is a dj-webhooks 0.2 setting; this version does not read it.",
            hint=f"Move its value to DJWEBHOOKS['{new}'] and remove {old} (see "
            "docs/migrating.rst, 'Settings').",
            id="djwebhooks.W005",
        )
        for old, new in conf.legacy_settings()
    ]


@checks.register()
def check_manage_permission(app_configs=None, **kwargs):
    """Report a ``MANAGE_PERMISSION`` that cannot be imported or called."""
    if not isinstance(conf.get_setting("MANAGE_PERMISSION"), str) and not callable(
            conf.get_setting("MANAGE_PERMISSION")):
        return []  # reported by check_settings
    try:
        conf.get_manage_permission()
    except WebhookImproperlyConfigured as exc:
        return [checks.Error(str(exc), hint="For example 'myapp.permissions.may_manage_"
                             "webhooks', a function of the user.", id="djwebhooks.E009")]
    return []


@checks.register()
def check_lease(app_configs=None, **kwargs):
    """Refuse a lease under which no request could start: a request starts only if its
    claim outlasts its deadline (``TOTAL_TIMEOUT``), and claims are renewed every few
    seconds."""
    try:
        lease = conf.get_seconds("LEASE")
        total = conf.get_seconds("TOTAL_TIMEOUT")
    except (WebhookImproperlyConfigured, TypeError, ValueError):
        return []  # reported by check_settings
    shortest = conf.shortest_lease(total)
    if lease < shortest:
        return [
            checks.Error(
                f"DJWEBHOOKS['LEASE'] ({lease:g} s) is too short for TOTAL_TIMEOUT "
                f"({total:g} s): a request is started only while its claim outlasts its "
                "deadline, and claims are renewed every few seconds, so no delivery would "
                "ever be sent.",
                hint=f"Make LEASE at least {shortest:g} seconds, or TOTAL_TIMEOUT shorter "
                "(the defaults are 45 and 30).",
                id="djwebhooks.E006",
            )
        ]
    return []


@checks.register()
def check_time_zone(app_configs=None, **kwargs):
    """dj-webhooks compares times with the database's clock, in UTC: it needs USE_TZ."""
    if not settings.USE_TZ:
        return [
            checks.Error(
                "dj-webhooks needs USE_TZ = True: claims, retries and due times are "
                "compared with the database's clock, in UTC, and signatures carry UTC "
                "timestamps.",
                hint="Set USE_TZ = True in your settings (Django's default since 5.0).",
                id="djwebhooks.E007",
            )
        ]
    return []


@checks.register(checks.Tags.database)
def check_secrets(app_configs=None, databases=None, **kwargs):
    """Report targets whose secret (or previous secret) cannot sign a request.

    Runs where Django runs database checks (``migrate``, ``check --database default``): it
    reads every target's secrets.
    """
    using = router.db_for_read(WebhookTarget)
    if not databases or using not in databases:
        return []
    bad = []
    try:
        rows = WebhookTarget.objects.using(using).order_by("pk").values_list(
            "pk", "secret", "previous_secret").iterator(chunk_size=2000)
        for pk, secret, previous in rows:
            for value in (secret, previous) if previous else (secret,):
                try:
                    secret_key(value)
                except (TypeError, ValueError):
                    bad.append(pk)
                    break
    except DatabaseError:
        return []  # no tables yet: migrate makes them
    if not bad:
        return []
    shown = ", ".join(map(str, bad[:20])) + (f" and {len(bad) - 20} more" if len(bad) > 20
                                             else "")
    return [
        checks.Error(
            f"{len(bad)} webhook target{'s have' if len(bad) != 1 else ' has'} a signing "
            f"secret that cannot sign requests (not whsec_ and base64): {shown}. Their "
            "deliveries fail with 'Error before sending'.",
            hint="Give them new secrets: manage.py webhooks_rotate_secret --target <id> "
            "--grace 0s (or set a valid secret in the admin).",
            id="djwebhooks.E008",
        )
    ]


@checks.register(checks.Tags.database)
def check_target_events(app_configs=None, databases=None, **kwargs):
    """Warn about active targets subscribed to events that are not declared: they get
    nothing. Runs with the database checks, as ``check_secrets`` does."""
    using = router.db_for_read(WebhookTarget)
    if not databases or using not in databases:
        return []
    try:
        declared = conf.get_events()
    except WebhookImproperlyConfigured:
        return []  # reported by check_events (E003)
    try:
        counts = list(
            WebhookTarget.objects.using(using).filter(is_active=True)
            .exclude(event__in=list(declared)).values_list("event")
            .annotate(count=Count("pk")).order_by("-count", "event"))
    except DatabaseError:
        return []  # no tables yet: migrate makes them
    if not counts:
        return []
    total = sum(count for _, count in counts)
    shown = ", ".join(f"{event!r} ({count})" for event, count in counts[:20]) + (
        f" and {len(counts) - 20} more events" if len(counts) > 20 else "")
    return [
        checks.Warning(
            f"{total} active webhook target{'s are' if total != 1 else ' is'} subscribed "
            f"to events that are not declared, so nothing is sent to them: {shown}.",
            hint="Declare the events in DJWEBHOOKS['EVENTS'] if they are still sent; if "
            "they were renamed or retired, move the targets to the new event or delete "
            "them (in the admin, or WebhookTarget.objects.filter(event=...)).",
            id="djwebhooks.W004",
        )
    ]


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
    if not isinstance(getattr(settings, "DJWEBHOOKS", None) or {}, dict):
        return []  # reported once, by check_settings (E001)
    try:
        backend = load_backend(conf.get_setting("BACKEND"),
                               conf.get_setting("BACKEND_OPTIONS"))
    except WebhookImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="djwebhooks.E004")]
    if isinstance(backend, InlineBackend) and not settings.DEBUG:
        return [
            checks.Warning(
                "dj-webhooks is using the inline backend with DEBUG = False: every request "
                "that sends a webhook waits for the receivers, and failed attempts are "
                "retried only if webhooks_sweep or webhooks_worker runs.",
                hint="In production, set DJWEBHOOKS['BACKEND'] to "
                "'djwebhooks.backends.database.DatabaseBackend' and run "
                "'manage.py webhooks_worker'; or keep the inline backend, run "
                "'manage.py webhooks_sweep' every minute for its retries, and silence this "
                "check with SILENCED_SYSTEM_CHECKS = ['djwebhooks.W001'].",
                id="djwebhooks.W001",
            )
        ]
    if not (backend.sends_immediately or backend.retries_failures):
        name = type(backend).__name__
        return [
            checks.Warning(
                f"The webhook backend {name} cannot hold a delivery back until its retry is "
                "due, and no worker of its own finds due deliveries: failed attempts are "
                "retried only when webhooks_sweep runs.",
                hint="Run 'manage.py webhooks_sweep' every minute (cron, or a periodic task), "
                "or use a backend that can defer (for the Tasks backend: a Tasks backend that "
                "supports run_after, such as django-tasks-db's).",
                id="djwebhooks.W003",
            )
        ]
    return []
