"""Testing your webhooks: an outbox like ``django.core.mail.outbox``, scripted answers,
``capture_webhooks()``, assertions, and a unittest mixin.

The pytest fixtures live in ``djwebhooks.pytest_plugin``, loaded by pytest on its own.
"""

import contextlib
import copy
import json
import threading
from dataclasses import dataclass, field
from functools import cached_property
from io import BytesIO
from urllib.parse import parse_qs

import requests
import urllib3
from django.test import TestCase, override_settings

from djwebhooks import conf, transport

__all__ = [
    "SentWebhook",
    "WebhookTestMixin",
    "assert_no_webhooks_sent",
    "assert_webhook_sent",
    "capture_webhooks",
    "outbox",
    "override_webhooks",
    "reset",
    "respond",
]

LOCMEM_BACKEND = "djwebhooks.backends.locmem.LocmemBackend"

#: Every request that would have been sent, oldest first, as ``SentWebhook`` items.
outbox = []


@dataclass
class SentWebhook:
    """One request that would have gone out, as it would have been on the wire."""

    url: str
    headers: dict
    body: bytes
    #: A deep copy of the ``Delivery`` as it was when sent (its ``attempt`` counts the
    #: attempts made before this one).
    delivery: object
    #: The status the scripted receiver answered; None for a scripted timeout or
    #: connection error.
    status: int | None

    @cached_property
    def envelope(self):
        """The JSON envelope sent (read from the ``payload`` field in form mode)."""
        if self.headers.get("Content-Type") == "application/x-www-form-urlencoded":
            return json.loads(parse_qs(self.body.decode("ascii"))["payload"][0])
        return json.loads(self.body)

    @property
    def event(self):
        """The envelope's ``type``."""
        return self.envelope["type"]

    @property
    def data(self):
        """The envelope's ``data``: what the hooked function returned."""
        return self.envelope["data"]

    @property
    def webhook_id(self):
        """The ``webhook-id`` header: the message id."""
        return self.headers["webhook-id"]

    def __str__(self):
        answer = self.status if self.status is not None else "no answer"
        return f"{self.event} to {self.url} ({answer}): data={self.data!r}"


@dataclass
class _Answer:
    url: str | None
    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    error: type | None = None
    times: int = 1


class OutboxSession:
    """A stand-in for ``requests.Session``: each POST lands in ``outbox`` and is answered
    as scripted with ``respond()`` (200 by default). Safe to share between threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._answers = []

    def respond(self, answer):
        with self._lock:
            self._answers.append(answer)

    def reset(self):
        with self._lock:
            self._answers.clear()

    def _next_answer(self, url):
        for answer in self._answers:
            if answer.url is None or answer.url == url:
                answer.times -= 1
                if answer.times <= 0:
                    self._answers.remove(answer)
                return answer
        return _Answer(url=None)

    def post(self, url, data=None, headers=None, **kwargs):
        headers = dict(headers or {})
        delivery = _find_delivery(headers.get("webhook-id"), url)
        with self._lock:
            answer = self._next_answer(url)
            outbox.append(SentWebhook(
                url=url, headers=headers, body=bytes(data or b""), delivery=delivery,
                status=None if answer.error else answer.status,
            ))
        if answer.error is not None:
            raise answer.error(f"scripted for {url}")
        response = requests.Response()
        response.status_code = answer.status
        response.reason = _reason(answer.status)
        response.url = url
        response.headers.update({"Content-Type": "text/plain", **answer.headers})
        response.raw = urllib3.HTTPResponse(
            body=BytesIO(answer.body), status=answer.status, headers=response.headers,
            preload_content=False,
        )
        return response

    def close(self):
        """Nothing to close: there are no connections."""


def _reason(status):
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _find_delivery(message_id, url):
    from django.db import router

    from djwebhooks.delivery import serialized
    from djwebhooks.models import Delivery

    with serialized(router.db_for_read(Delivery)):
        delivery = (
            Delivery.objects.select_related("webhook_target")
            .filter(hash_value=message_id, webhook_target__target_url=url)
            .first()
        )
    return copy.deepcopy(delivery)


#: The session the locmem backend sends through (and, inside ``override_webhooks()``,
#: every other sender, such as the worker).
outbox_session = OutboxSession()


def respond(url=None, *, status=200, body="", headers=None, timeout=False,
            connection_error=False, times=1):
    """Script the answer to the next request to ``url`` (to any URL when None).

    ``status``, ``body`` and ``headers`` make the answer (``headers={"Retry-After": "60"}``,
    say); ``timeout=True`` or ``connection_error=True`` make the request fail instead.
    ``times`` repeats the answer. Answers are used in the order they were scripted;
    without one, the answer is 200.
    """
    error = requests.Timeout if timeout else requests.ConnectionError if connection_error \
        else None
    outbox_session.respond(_Answer(
        url=url, status=status, body=body.encode() if isinstance(body, str) else body,
        headers=dict(headers or {}), error=error, times=times,
    ))


def reset():
    """Empty the outbox and forget every scripted answer."""
    outbox.clear()
    outbox_session.reset()


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
        return assert_webhook_sent(**criteria)

    def assertNoWebhooksSent(self, sent=None):  # noqa: N802
        """``assert_no_webhooks_sent()`` as a method."""
        assert_no_webhooks_sent(sent)
