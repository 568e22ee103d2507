"""Who may manage webhooks, what of theirs they see, and how often they may do costly
things.

Every page and API view asks ``may_manage(user)`` (the ``MANAGE_PERMISSION`` setting), and
reads only through ``targets_of(user)`` and ``deliveries_of(user)``: another user's target
or delivery is never found, so it is a 404 wherever it is asked for.
"""

import math
import time

from django.core.cache import caches

from djwebhooks import conf
from djwebhooks.models import ApiToken, Delivery, WebhookTarget

#: What each rate-limited action is called in a message.
ACTIONS = {
    "send_test": "test events",
    "replay": "replays",
    "rotate_secret": "secret rotations",
}


def active_user(user):
    """The default ``MANAGE_PERMISSION``: any signed-in, active user."""
    return bool(user.is_authenticated and user.is_active)


def may_manage(user):
    """True when ``user`` may use the webhook pages and API (anonymous users never may)."""
    return bool(user is not None and user.is_authenticated and
                conf.get_manage_permission()(user))


def targets_of(user):
    """``user``'s targets, newest first."""
    return WebhookTarget.objects.filter(owner=user)


def deliveries_of(user):
    """The deliveries to ``user``'s targets, newest first, with their targets."""
    return Delivery.objects.filter(webhook_target__owner=user).select_related(
        "webhook_target")


def tokens_of(user):
    """``user``'s API tokens, newest first."""
    return ApiToken.objects.filter(user=user)


class RateLimited(Exception):
    """``user`` has done ``action`` as often as ``RATE_LIMITS`` allows for now."""

    def __init__(self, action, count, seconds, retry_after):
        self.action, self.count, self.seconds = action, count, seconds
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            f"Too many {ACTIONS.get(action, action)}: at most {count} per "
            f"{_period(seconds)}. Try again in {_duration(self.retry_after)}.")


def rate_limit(user, action):
    """Count one ``action`` for ``user``; raise ``RateLimited`` when it is one too many.

    Counted in fixed windows in the ``RATE_LIMIT_CACHE`` cache (shared by every process
    when that cache is: Redis or Memcached, not the per-process local-memory one).
    """
    limit = conf.get_rate_limit(action)
    if limit is None:
        return
    count, seconds = limit
    now = time.time()
    window = int(now // seconds)
    key = f"djwebhooks:rate:{action}:{user.pk}:{window}"
    cache = caches[conf.get_setting("RATE_LIMIT_CACHE")]
    cache.add(key, 0, timeout=seconds + 1)
    try:
        done = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=seconds + 1)
        done = 1
    if done > count:
        raise RateLimited(action, count, seconds, (window + 1) * seconds - now)


def _period(seconds):
    for name, length in reversed(conf.RATE_PERIODS.items()):
        if seconds == length:
            return name
    return f"{seconds} seconds"


def _duration(seconds):
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours = math.ceil(minutes / 60)
    return f"{hours} hour{'s' if hours != 1 else ''}"
