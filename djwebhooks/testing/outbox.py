"""The test outbox: ``outbox``, and the session that fills it and answers as scripted.

Used by the locmem backend (and, inside ``override_webhooks()``, by every sender).
"""

import copy
import json
import threading
from dataclasses import dataclass, field
from functools import cached_property
from http import HTTPStatus
from io import BytesIO
from urllib.parse import parse_qs

import requests
import urllib3

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
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _find_delivery(message_id, url):
    """A copy of the delivery being sent: the one the sending path is sending on this
    thread, or else (a ``Senderable`` used on its own) the one the id and URL name."""
    # Here, not at the top: the testing tools import before Django's apps are ready.
    from djwebhooks.models import Delivery
    from djwebhooks.sending import current_delivery

    delivery = current_delivery()
    if delivery is None:
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
