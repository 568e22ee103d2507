"""The ``DJWEBHOOKS`` setting: every key, its default, and how it is read.

This is the only module that reads ``django.conf.settings`` for dj-webhooks. Values are
read when used, never at import time, so ``override_settings`` works everywhere.
"""

import difflib
import ipaddress
import re
from datetime import timedelta
from numbers import Real

from django.conf import settings as django_settings
from django.utils.module_loading import import_string

from djwebhooks import __version__, retry
from djwebhooks import options as target_options
from djwebhooks.exceptions import WebhookImproperlyConfigured
from djwebhooks.retry import RetryPolicy
from djwebhooks.ssrf import URLPolicy

#: Every key of ``DJWEBHOOKS`` with its default. ``docs/settings.rst`` documents each one,
#: and a test keeps the two in step.
DEFAULTS = {
    # Event names a hook may send: a list of names, or a dict of name -> description.
    "EVENTS": {},
    # Dotted path of the class that decides when and where deliveries are sent.
    "BACKEND": "djwebhooks.backends.inline.InlineBackend",
    # Keyword arguments for the backend class (a queue name, say), as CACHES' OPTIONS.
    "BACKEND_OPTIONS": {},
    # Seconds a due delivery may wait, unclaimed, after it was handed to the backend before
    # ``webhooks_sweep`` hands it over again (a broker lost it, an enqueue failed).
    "REQUEUE_AFTER": 300,
    # Seconds to wait for the TCP (and TLS) connection to the receiver.
    "CONNECT_TIMEOUT": 5.0,
    # Seconds to wait for the receiver between bytes of its response.
    "READ_TIMEOUT": 15.0,
    # How many bytes of a response body are read, and stored on the attempt.
    "RESPONSE_BODY_LIMIT": 4096,
    # The User-Agent header; None means "dj-webhooks/<version>".
    "USER_AGENT": None,
    # Attribute of the owner sent as the envelope's "owner"; None means the user model's
    # USERNAME_FIELD, False leaves "owner" out of the envelope.
    "OWNER_FIELD": None,
    # Seconds to wait before each retry of a failed delivery; [] never retries.
    "RETRY_SCHEDULE": list(retry.DEFAULT_SCHEDULE),
    # Each wait is randomised by up to this fraction either way (0.2 = ±20 %).
    "RETRY_JITTER": retry.DEFAULT_JITTER,
    # The longest wait a receiver's Retry-After header can ask for, in seconds.
    "RETRY_AFTER_MAX": retry.DEFAULT_RETRY_AFTER_MAX,
    # Seconds a claim on a delivery lasts unless its worker renews it (it does so every
    # few seconds while it runs); after that another worker may take the delivery. Must be
    # longer than TOTAL_TIMEOUT: a request is only started if its claim outlasts it.
    "LEASE": 45,
    # Seconds of failures without a single success after which a target is disabled when
    # one more delivery to it fails for good; None never disables.
    "DISABLE_AFTER": 5 * 86400,
    # Seconds a finished delivery is kept before ``webhooks_prune`` deletes it.
    "RETENTION": 30 * 86400,
    # Seconds a whole request may take, from the DNS lookup to the last byte read, whatever
    # the receiver does (a response that never ends, headers sent a byte at a time).
    "TOTAL_TIMEOUT": 30.0,
    # The largest payload, in bytes of JSON, that a hook may send.
    "MAX_PAYLOAD_BYTES": 256 * 1024,
    # Networks (CIDR strings) that targets may reach although they are not public.
    "ALLOWED_NETWORKS": [],
    # Refuse target URLs that are not https://.
    "HTTPS_ONLY": False,
    # Ports target URLs may use; None allows any.
    "ALLOWED_PORTS": None,
    # Seconds an old secret stays valid (and signed with) after a rotation; at most 7 days.
    "SECRET_ROTATION_GRACE": 24 * 3600,
    # Dotted path of a callable(user) -> bool: who may use the webhook pages and API.
    "MANAGE_PERMISSION": "djwebhooks.portal.access.active_user",
    # How often each user may do each costly thing from the pages and the API.
    "RATE_LIMITS": {"send_test": "10/minute", "replay": "30/minute",
                    "rotate_secret": "5/hour"},
    # The cache (an alias of CACHES) the rate limits count in.
    "RATE_LIMIT_CACHE": "default",
    # How requests are made: "threads" (a thread per request in flight) or "async" (one
    # event loop for every request in flight).
    "SEND_MODE": "threads",
    # The most requests a sending process makes to one target at once, for targets that
    # set no max_in_flight of their own; None: as many as the process sends at once. The
    # cap halves while a target answers 429, 502, 503 or 504 or times out.
    "MAX_IN_FLIGHT": None,
}

#: The sending modes ``SEND_MODE`` and ``webhooks_worker --mode`` take.
SEND_MODES = ("threads", "async")

#: The settings of dj-webhooks 0.2, each with the ``DJWEBHOOKS`` key that replaced it
#: (docs/migrating.rst).
LEGACY_SETTINGS = {
    "WEBHOOK_EVENTS": "EVENTS",
    "WEBHOOK_OWNER_FIELD": "OWNER_FIELD",
    "WEBHOOK_ATTEMPTS": "RETRY_SCHEDULE",
}

#: The periods a rate may be given in, and their seconds.
RATE_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
RATE_RE = re.compile(r"^\s*(\d{1,9})\s*/\s*(second|minute|hour|day)\s*$")

#: Settings given in seconds; a ``datetime.timedelta`` is accepted too.
DURATION_KEYS = ("CONNECT_TIMEOUT", "READ_TIMEOUT", "RETRY_AFTER_MAX", "LEASE",
                 "DISABLE_AFTER", "RETENTION", "TOTAL_TIMEOUT", "SECRET_ROTATION_GRACE",
                 "REQUEUE_AFTER")
#: The longest grace period a rotated secret may have.
MAX_ROTATION_GRACE = 7 * 86400

EVENT_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$")
EVENT_NAME_HELP = (
    "1 to 128 characters: letters, digits, '_', '.', ':' or '-', not starting with "
    "punctuation other than '_'"
)


def user_settings():
    """Return the ``DJWEBHOOKS`` dict from Django's settings (``{}`` when unset)."""
    value = getattr(django_settings, "DJWEBHOOKS", None)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebhookImproperlyConfigured(
            f"settings.DJWEBHOOKS must be a dict, got {type(value).__name__}."
        )
    return value


def get_setting(key):
    """Return ``DJWEBHOOKS[key]``, or its default."""
    if key not in DEFAULTS:
        raise KeyError(f"{key!r} is not a dj-webhooks setting")
    return user_settings().get(key, DEFAULTS[key])


def get_events():
    """Return the declared events as a dict of name -> description."""
    events = get_setting("EVENTS")
    if isinstance(events, dict):
        return events
    if isinstance(events, (list, tuple, set, frozenset)):
        return dict.fromkeys(events, "")
    raise WebhookImproperlyConfigured(
        "DJWEBHOOKS['EVENTS'] must be a list of event names or a dict of "
        f"name -> description, got {type(events).__name__}."
    )


def get_seconds(key):
    """Return a duration setting in seconds (a float), or None where None is allowed."""
    value = get_setting(key)
    if isinstance(value, timedelta):
        return value.total_seconds()
    return None if value is None else float(value)


def heartbeat_interval(lease):
    """Seconds between a worker's heartbeats (renewing its claims), for a ``lease``."""
    return min(5.0, lease / 4)


def shortest_lease(total_timeout):
    """The shortest lease under which a request of ``total_timeout`` seconds can start
    between two heartbeats: the total timeout, one heartbeat and a second to spare."""
    return min((total_timeout + 1) * 4 / 3, total_timeout + 6)


def get_send_mode(mode=None):
    """Return ``mode``, or ``SEND_MODE`` when None, checked: one of ``SEND_MODES``."""
    if mode is None:
        mode = get_setting("SEND_MODE")
    problem = send_mode_problem(mode)
    if problem:
        raise WebhookImproperlyConfigured(problem)
    return mode


def send_mode_problem(mode, name="DJWEBHOOKS['SEND_MODE']"):
    """What is wrong with the sending mode ``mode``, in a sentence; "" when nothing is."""
    if mode not in SEND_MODES:
        return f"{name} must be 'threads' or 'async', got {mode!r}."
    return ""


def get_max_in_flight():
    """``MAX_IN_FLIGHT``: a whole number of requests, or None (no cap of its own)."""
    most = get_setting("MAX_IN_FLIGHT")
    problem = max_in_flight_problem(most)
    if problem:
        raise WebhookImproperlyConfigured(problem)
    return most


def max_in_flight_problem(most):
    """What is wrong with ``most`` as ``MAX_IN_FLIGHT``, or "" when nothing is."""
    if most is not None and (isinstance(most, bool) or not isinstance(most, int)
                             or not 1 <= most <= target_options.MAX_IN_FLIGHT):
        return (f"DJWEBHOOKS['MAX_IN_FLIGHT'] must be a whole number from 1 to "
                f"{target_options.MAX_IN_FLIGHT}, or None for no cap but the sender's "
                f"concurrency, got {most!r}.")
    return ""


def get_timeouts():
    """Return ``(connect, read)`` timeouts in seconds, as requests expects them."""
    return (get_seconds("CONNECT_TIMEOUT"), get_seconds("READ_TIMEOUT"))


def get_allowed_networks():
    """Return ``ALLOWED_NETWORKS`` as ``ipaddress`` network objects."""
    return [ipaddress.ip_network(network, strict=False)
            for network in get_setting("ALLOWED_NETWORKS")]


def get_url_policy():
    """Return the ``ssrf.URLPolicy`` built from the URL settings."""
    ports = get_setting("ALLOWED_PORTS")
    return URLPolicy(
        allowed_networks=tuple(get_allowed_networks()),
        https_only=get_setting("HTTPS_ONLY"),
        allowed_ports=None if ports is None else frozenset(ports),
    )


def get_retry_policy():
    """Return the ``RetryPolicy`` built from the retry settings."""
    schedule = [
        delay.total_seconds() if isinstance(delay, timedelta) else delay
        for delay in get_setting("RETRY_SCHEDULE")
    ]
    return RetryPolicy(schedule, jitter=get_setting("RETRY_JITTER"),
                       retry_after_max=get_seconds("RETRY_AFTER_MAX"))


def get_user_agent():
    """Return the User-Agent header sent with every delivery."""
    return get_setting("USER_AGENT") or f"dj-webhooks/{__version__}"


def parse_rate(text):
    """Return ``(count, seconds)`` for a rate such as ``"10/minute"``; raise ValueError."""
    match = RATE_RE.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a rate such as '10/minute' (a whole number, '/', "
                         f"and one of {', '.join(RATE_PERIODS)})")
    return int(match[1]), RATE_PERIODS[match[2]]


def get_rate_limit(action):
    """Return ``(count, seconds)`` for ``action`` in ``RATE_LIMITS``, or None: no limit."""
    defaults = DEFAULTS["RATE_LIMITS"]
    rates = {**defaults, **get_setting("RATE_LIMITS")}
    rate = rates.get(action)
    return None if rate is None else parse_rate(rate)


def get_manage_permission():
    """Return the ``MANAGE_PERMISSION`` callable; ``WebhookImproperlyConfigured`` when its
    dotted path cannot be imported or names something that cannot be called."""
    value = get_setting("MANAGE_PERMISSION")
    if callable(value):
        return value
    try:
        function = import_string(value)
    except (ImportError, TypeError, ValueError) as exc:
        raise WebhookImproperlyConfigured(
            f"DJWEBHOOKS['MANAGE_PERMISSION'] is {value!r}, which cannot be imported "
            f"({exc}). It must be the dotted path of a function that takes a user and "
            "returns True or False.") from exc
    if not callable(function):
        raise WebhookImproperlyConfigured(
            f"DJWEBHOOKS['MANAGE_PERMISSION'] is {value!r}, which is not a function: it must "
            "name a function that takes a user and returns True or False.")
    return function


def legacy_settings():
    """Return ``[(old name, new key)]`` for the 0.2 settings still in the project's settings."""
    return [(old, new) for old, new in LEGACY_SETTINGS.items()
            if hasattr(django_settings, old)]


def suggest_keys(key):
    """The known ``DJWEBHOOKS`` keys an unknown ``key`` was probably meant to be, closest
    first (at most three; none when nothing is close)."""
    if not isinstance(key, str):
        return []
    if key.upper() in LEGACY_SETTINGS:
        return [LEGACY_SETTINGS[key.upper()]]
    scored = sorted(((difflib.SequenceMatcher(None, key.upper(), known).ratio(), known)
                     for known in DEFAULTS), reverse=True)
    # Only those about as close as the closest: a clear typo gets one suggestion.
    return [known for score, known in scored[:3] if score >= 0.6 and score >= scored[0][0] - 0.1]


def settings_problems():
    """Yield ``(key, message)`` for every unknown key or bad value in ``DJWEBHOOKS``.

    Used by the system checks; kept here so the rules live next to the defaults.
    """
    raw = getattr(django_settings, "DJWEBHOOKS", None)
    if raw is None:
        return
    if not isinstance(raw, dict):
        yield None, f"settings.DJWEBHOOKS must be a dict, got {type(raw).__name__}."
        return
    for key in raw:
        if key not in DEFAULTS:
            yield key, f"Unknown key {key!r} in settings.DJWEBHOOKS."
    for key in DURATION_KEYS:
        value = raw.get(key, DEFAULTS[key])
        if value is None and key == "DISABLE_AFTER":
            continue
        if key == "SECRET_ROTATION_GRACE" and _is_duration(value) and _seconds(value) == 0:
            continue  # no grace: a rotated secret stops working at once
        if not _is_positive_duration(value):
            yield key, (
                f"DJWEBHOOKS[{key!r}] must be a positive number of seconds (or a timedelta), "
                f"at most ten years, got {value!r}."
            )
    schedule = raw.get("RETRY_SCHEDULE", DEFAULTS["RETRY_SCHEDULE"])
    if not isinstance(schedule, (list, tuple)) or not all(
        _is_positive_duration(delay) for delay in schedule
    ):
        yield "RETRY_SCHEDULE", (
            "DJWEBHOOKS['RETRY_SCHEDULE'] must be a list of positive numbers of seconds (or "
            f"timedeltas), each at most ten years, got {schedule!r}."
        )
    grace = raw.get("SECRET_ROTATION_GRACE", DEFAULTS["SECRET_ROTATION_GRACE"])
    if _is_positive_duration(grace) and _seconds(grace) > MAX_ROTATION_GRACE:
        yield "SECRET_ROTATION_GRACE", (
            "DJWEBHOOKS['SECRET_ROTATION_GRACE'] must be at most 7 days, got "
            f"{_seconds(grace):g} seconds."
        )
    size = raw.get("MAX_PAYLOAD_BYTES", DEFAULTS["MAX_PAYLOAD_BYTES"])
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        yield "MAX_PAYLOAD_BYTES", (
            f"DJWEBHOOKS['MAX_PAYLOAD_BYTES'] must be a positive whole number, got {size!r}."
        )
    problem = max_in_flight_problem(raw.get("MAX_IN_FLIGHT", DEFAULTS["MAX_IN_FLIGHT"]))
    if problem:
        yield "MAX_IN_FLIGHT", problem
    problem = send_mode_problem(raw.get("SEND_MODE", DEFAULTS["SEND_MODE"]))
    if problem:
        yield "SEND_MODE", problem
    for key in ("HTTPS_ONLY",):
        if not isinstance(raw.get(key, DEFAULTS[key]), bool):
            yield key, f"DJWEBHOOKS[{key!r}] must be True or False, got {raw[key]!r}."
    networks = raw.get("ALLOWED_NETWORKS", DEFAULTS["ALLOWED_NETWORKS"])
    if not isinstance(networks, (list, tuple)):
        yield "ALLOWED_NETWORKS", (
            "DJWEBHOOKS['ALLOWED_NETWORKS'] must be a list of CIDR strings such as "
            f"'10.0.0.0/8', got {networks!r}."
        )
    else:
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except (TypeError, ValueError):
                yield "ALLOWED_NETWORKS", (
                    f"DJWEBHOOKS['ALLOWED_NETWORKS'] has {network!r}, which is not a network "
                    "such as '10.0.0.0/8' or '::1/128'."
                )
    ports = raw.get("ALLOWED_PORTS", DEFAULTS["ALLOWED_PORTS"])
    if ports is not None and (
        not isinstance(ports, (list, tuple, set, frozenset))
        or not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536
                   for p in ports)
    ):
        yield "ALLOWED_PORTS", (
            "DJWEBHOOKS['ALLOWED_PORTS'] must be None or a list of port numbers, got "
            f"{ports!r}."
        )
    jitter = raw.get("RETRY_JITTER", DEFAULTS["RETRY_JITTER"])
    if isinstance(jitter, bool) or not isinstance(jitter, Real) or not 0 <= jitter < 1:
        yield "RETRY_JITTER", (
            f"DJWEBHOOKS['RETRY_JITTER'] must be a fraction from 0 to below 1, got {jitter!r}."
        )
    limit = raw.get("RESPONSE_BODY_LIMIT", DEFAULTS["RESPONSE_BODY_LIMIT"])
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        yield (
            "RESPONSE_BODY_LIMIT",
            f"DJWEBHOOKS['RESPONSE_BODY_LIMIT'] must be a whole number of bytes >= 0, "
            f"got {limit!r}.",
        )
    for key in ("BACKEND",):
        value = raw.get(key, DEFAULTS[key])
        if not isinstance(value, str) or not value:
            yield key, f"DJWEBHOOKS[{key!r}] must be a dotted import path, got {value!r}."
    options = raw.get("BACKEND_OPTIONS", DEFAULTS["BACKEND_OPTIONS"])
    if not isinstance(options, dict) or not all(
        isinstance(name, str) and name.isidentifier() for name in options
    ):
        yield "BACKEND_OPTIONS", (
            "DJWEBHOOKS['BACKEND_OPTIONS'] must be a dict of keyword arguments for the "
            f"backend, such as {{'queue': 'webhooks'}}, got {options!r}."
        )
    permission = raw.get("MANAGE_PERMISSION", DEFAULTS["MANAGE_PERMISSION"])
    if not callable(permission) and (not isinstance(permission, str) or not permission):
        yield "MANAGE_PERMISSION", (
            "DJWEBHOOKS['MANAGE_PERMISSION'] must be the dotted path of a function that "
            f"takes a user and returns True or False, got {permission!r}."
        )
    rates = raw.get("RATE_LIMITS", DEFAULTS["RATE_LIMITS"])
    if not isinstance(rates, dict):
        yield "RATE_LIMITS", (
            "DJWEBHOOKS['RATE_LIMITS'] must be a dict of action -> rate, such as "
            f"{{'send_test': '10/minute'}}, got {rates!r}."
        )
    else:
        for action, rate in rates.items():
            if action not in DEFAULTS["RATE_LIMITS"]:
                yield "RATE_LIMITS", (
                    f"DJWEBHOOKS['RATE_LIMITS'] has {action!r}, which is not one of "
                    f"{', '.join(DEFAULTS['RATE_LIMITS'])}."
                )
                continue
            if rate is None:
                continue
            try:
                parse_rate(rate)
            except ValueError as exc:
                yield "RATE_LIMITS", (
                    f"DJWEBHOOKS['RATE_LIMITS'][{action!r}]: {exc}; or None for no limit."
                )
    cache = raw.get("RATE_LIMIT_CACHE", DEFAULTS["RATE_LIMIT_CACHE"])
    if not isinstance(cache, str) or cache not in getattr(django_settings, "CACHES",
                                                          {"default": {}}):
        yield "RATE_LIMIT_CACHE", (
            f"DJWEBHOOKS['RATE_LIMIT_CACHE'] must be an alias of CACHES, got {cache!r}."
        )
    user_agent = raw.get("USER_AGENT")
    if user_agent is not None and (not isinstance(user_agent, str) or "\n" in user_agent):
        yield "USER_AGENT", "DJWEBHOOKS['USER_AGENT'] must be a one-line string or None."
    owner_field = raw.get("OWNER_FIELD")
    if owner_field not in (None, False) and not isinstance(owner_field, str):
        yield "OWNER_FIELD", (
            "DJWEBHOOKS['OWNER_FIELD'] must be an attribute name, None or False, "
            f"got {owner_field!r}."
        )


def _seconds(value):
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _is_duration(value):
    return isinstance(value, timedelta) or (
        isinstance(value, Real) and not isinstance(value, bool)
    )


#: The longest duration a setting may give: a time this far ahead is still a valid date.
MAX_DURATION = 10 * 365 * 86400


def _is_positive_duration(value):
    # NaN compares false with everything, so it fails here too.
    return _is_duration(value) and 0 < _seconds(value) <= MAX_DURATION
