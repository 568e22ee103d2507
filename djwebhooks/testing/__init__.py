"""Testing your webhooks: an outbox like ``django.core.mail.outbox``, scripted answers,
``capture_webhooks()``, assertions, and a unittest mixin.

The pytest fixtures live in ``djwebhooks.pytest_plugin``, loaded by pytest on its own.
"""

import contextlib
from datetime import timedelta

from django.db.models import F
from django.test import TestCase, override_settings

from djwebhooks import conf, transport
from djwebhooks.testing.outbox import (
    OutboxSession,
    SentWebhook,
    outbox,
    outbox_session,
    reset,
    respond,
)

__all__ = [
    "OutboxSession",
    "SentWebhook",
    "WebhookTestMixin",
    "assert_no_webhooks_sent",
    "assert_webhook_sent",
    "capture_webhooks",
    "fast_forward",
    "outbox",
    "override_webhooks",
    "reset",
    "respond",
]

LOCMEM_BACKEND = "djwebhooks.backends.locmem.LocmemBackend"


@contextlib.contextmanager
def override_webhooks():
    """Inside the block, send every webhook to the outbox instead of the network.

    The locmem backend sends first attempts; anything else that sends (a ``Worker`` run in
    the test, a replay) goes through the outbox too. Usable as a decorator.
    """
    webhook_settings = {**conf.user_settings(), "BACKEND": LOCMEM_BACKEND}
    with override_settings(DJWEBHOOKS=webhook_settings), \
            transport.override_session(outbox_session):
        yield outbox


@contextlib.contextmanager
def capture_webhooks(using="default"):
    """Capture what is sent inside the block, in a list filled when the block ends.

    On-commit callbacks registered inside the block are run at its end, so deliveries made
    inside a ``TestCase`` (whose transaction never commits) are sent, and captured.
    """
    captured = []
    start = len(outbox)
    with override_webhooks(), TestCase.captureOnCommitCallbacks(using=using, execute=True):
        yield captured
    captured.extend(outbox[start:])


def fast_forward(seconds):
    """Make every pending delivery's next attempt (and any claim on it) ``seconds`` earlier,
    as if that long had passed: run a ``Worker`` afterwards to see the retries made.

    dj-webhooks goes by the database's clock, so time is moved by moving the deliveries,
    not the clock. Returns how many deliveries were moved.
    """
    # Here, not at the top: the testing tools import before Django's apps are ready.
    from djwebhooks.models import Delivery

    delta = timedelta(seconds=seconds)
    pending = Delivery.objects.filter(status=Delivery.Status.PENDING)
    pending.filter(claimed_until__isnull=False).update(
        claimed_until=F("claimed_until") - delta)
    return pending.filter(next_attempt_at__isnull=False).update(
        next_attempt_at=F("next_attempt_at") - delta)


def _describe(sent):
    if not sent:
        return "No webhook was sent."
    lines = [f"{len(sent)} webhook{'s were' if len(sent) != 1 else ' was'} sent:"]
    lines += [f"  {number}. {item}" for number, item in enumerate(sent, 1)]
    return "\n".join(lines)


def _contains(data, expected):
    return isinstance(data, dict) and all(
        key in data and data[key] == value for key, value in expected.items()
    )


def assert_webhook_sent(*, event=None, to=None, data_contains=None, count=None, sent=None):
    """Assert that a webhook matching every criterion given was sent; return the matches.

    ``to`` is the URL; ``data_contains`` a dict whose items must all be in ``data``;
    ``count`` the exact number of matches expected (at least one when not given). ``sent``
    is the list to look in (the whole outbox by default). The failure message lists what
    was sent instead.
    """
    __tracebackhide__ = True  # pytest shows the failing test's line, not this one's
    sent = outbox if sent is None else sent
    matches = [
        item for item in sent
        if (event is None or item.event == event)
        and (to is None or item.url == to)
        and (data_contains is None or _contains(item.data, data_contains))
    ]
    if (count is None and not matches) or (count is not None and len(matches) != count):
        wanted = ", ".join(
            f"{name}={value!r}"
            for name, value in (("event", event), ("to", to), ("data_contains", data_contains))
            if value is not None
        ) or "any webhook"
        times = f"exactly {count} time{'s' if count != 1 else ''}" if count is not None \
            else "at least once"
        raise AssertionError(
            f"Expected {wanted} to be sent {times}, found {len(matches)}. {_describe(sent)}"
        )
    return matches


def assert_no_webhooks_sent(sent=None):
    """Assert that nothing was sent (to the outbox, or in ``sent``)."""
    __tracebackhide__ = True
    sent = outbox if sent is None else sent
    if sent:
        raise AssertionError(f"Expected no webhook to be sent. {_describe(sent)}")


class WebhookTestMixin:
    """For unittest-style tests: each test starts with an empty outbox and sends to it.

    Wrap the code under test in ``capture_webhooks()`` when it runs inside a ``TestCase``
    transaction: sending happens on commit.
    """

    def setUp(self):
        super().setUp()
        reset()
        override = override_webhooks()
        override.__enter__()
        self.addCleanup(override.__exit__, None, None, None)
        self.addCleanup(reset)

    def assertWebhookSent(self, **criteria):  # noqa: N802 (unittest's naming)
        """``assert_webhook_sent()`` as a method."""
        __tracebackhide__ = True
        return assert_webhook_sent(**criteria)

    def assertNoWebhooksSent(self, sent=None):  # noqa: N802
        """``assert_no_webhooks_sent()`` as a method."""
        __tracebackhide__ = True
        assert_no_webhooks_sent(sent)
