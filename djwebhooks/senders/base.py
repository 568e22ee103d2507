"""``Senderable``: one message, to one URL, sent once. No Django here.

The class keeps the seed's shape (``url``, ``payload``, ``jsonified_payload``,
``get_url()``, ``get_payload()``, ``get_jsonified_payload()``, ``notify()``, ``send()``) so a
new sender is a subclass that overrides a method or two. ``send()`` makes exactly one
attempt: deciding whether and when to try again belongs to the backend, not the sender.
"""

import json
import time
from dataclasses import dataclass, field
from datetime import timezone
from functools import cached_property, lru_cache
from urllib.parse import urlencode

from djwebhooks import options, signing, transport
from djwebhooks.encoding import FORM, JSON
from djwebhooks.exceptions import DeliveryError

__all__ = ["FORM", "JSON", "AttemptResult", "Senderable", "isoformat"]


@dataclass(frozen=True)
class AttemptResult:
    """The outcome of one HTTP attempt, as stored on a ``DeliveryAttempt``."""

    success: bool
    response_status: int | None
    response_message: str
    response_content_type: str
    error: str
    duration: int  # milliseconds
    notification: str
    #: The response's ``Retry-After`` header, if any.
    retry_after: str = ""
    #: The ``DeliveryError`` raised when no response came back.
    exception: Exception | None = field(default=None, compare=False, repr=False)


def isoformat(moment):
    """Return an aware datetime as ISO 8601 in UTC with a ``Z`` suffix."""
    text = moment.astimezone(timezone.utc).isoformat()
    return text.replace("+00:00", "Z")


class Senderable:
    """Build, sign and send one webhook message; report the outcome to ``notify()``."""

    #: ``json.JSONEncoder`` subclass for the envelope; ``DjangoSenderable`` sets Django's.
    json_encoder = None

    def __init__(
        self,
        *,
        url,
        payload=None,
        event,
        message_id,
        secret,
        timestamp,
        content_type=JSON,
        extra=None,
        timeout=(5.0, 15.0),
        body_limit=4096,
        user_agent="dj-webhooks",
        session=None,
        clock=time.time,
        policy=None,
        total_timeout=transport.DEFAULT_TOTAL_TIMEOUT,
        payload_json=None,
        headers=None,
    ):
        if payload is None and payload_json is None:
            raise TypeError("Senderable needs the payload: payload= (a dict) or "
                            "payload_json= (its JSON text).")
        self._url = url
        self._payload = payload
        #: The payload's JSON text, sent as it is when given (see get_jsonified_payload).
        self.payload_json = payload_json
        self.event = event
        self.message_id = message_id
        self.secret = secret
        self.timestamp = timestamp
        self.content_type = content_type
        self.extra = extra or {}
        self.timeout = timeout
        self.body_limit = body_limit
        self.user_agent = user_agent
        self.session = session
        self.clock = clock
        self.policy = policy
        self.total_timeout = total_timeout
        #: Headers sent with every request besides the sender's own (a dict).
        self.headers = headers or {}

    @cached_property
    def url(self):
        """The receiver's URL."""
        return self.get_url()

    @cached_property
    def payload(self):
        """The data the hooked function returned (the envelope's ``data``)."""
        return self.get_payload()

    @cached_property
    def jsonified_payload(self):
        """The envelope as JSON text: what is sent, and what is signed."""
        return self.get_jsonified_payload()

    def get_url(self):
        """Return the URL to POST to."""
        return self._url

    def get_payload(self):
        """Return the message's data."""
        if self._payload is None:
            self._payload = json.loads(self.payload_json)
        return self._payload

    def get_envelope(self):
        """Return the envelope: ``type``, ``timestamp``, ``data`` and any extra keys."""
        envelope = {"type": self.event, "timestamp": isoformat(self.timestamp)}
        envelope.update(self.extra)
        envelope["data"] = self.payload
        return envelope

    def get_jsonified_payload(self):
        """Return the envelope serialised as compact JSON.

        When the payload's JSON text was given (``payload_json``) and neither
        ``get_payload()`` nor ``get_envelope()`` is overridden, that text is the envelope's
        ``data`` exactly as it is: the receiver gets the JSON the hook's return value was
        encoded to, key order and number spelling included.
        """
        raw = self.payload_json is not None and _inherited(self, "get_payload", "get_envelope")
        envelope = self.get_envelope() if not raw else self._envelope_without_data()
        text = _encoder(self.json_encoder).encode(envelope)
        if raw:
            text = f"{text[:-1]}{',' if len(text) > 2 else ''}\"data\":{self.payload_json}}}"
        return text

    def _envelope_without_data(self):
        envelope = {"type": self.event, "timestamp": isoformat(self.timestamp)}
        envelope.update(self.extra)
        envelope.pop("data", None)
        return envelope

    def get_body(self):
        """Return the request body: the JSON itself, or a form with one ``payload`` field."""
        if self.content_type == FORM:
            return urlencode({"payload": self.jsonified_payload}).encode("ascii")
        return self.jsonified_payload.encode("utf-8")

    def get_headers(self, body, sent_at):
        """Return the request headers, including the Standard Webhooks signature: the
        sender's own, after any of ``headers`` (which may not replace them)."""
        own = {
            "Content-Type": FORM if self.content_type == FORM else JSON,
            "User-Agent": self.user_agent,
            "webhook-id": self.message_id,
            "webhook-timestamp": str(sent_at),
            "webhook-signature": " ".join(
                signing.sign(secret, self.message_id, sent_at, body) for secret in self.secrets
            ),
        }
        if self.headers:
            # Checked again here: a target saved from code has not been validated.
            return {**options.check_headers(self.headers), **own}
        return own

    @property
    def secrets(self):
        """The secrets to sign with: ``secret`` may be one string or a list of them."""
        return [self.secret] if isinstance(self.secret, str) else list(self.secret)

    def notify(self, result):
        """Called with the :class:`AttemptResult` of every attempt. Override to record it."""

    def send(self):
        """Make one attempt, pass its result to ``notify()``, and return it.

        A failure to build the request (a secret that cannot sign, an exception from an
        overridden method) is a failed attempt like the receiver's failures, with the
        notification ``Error before sending``: nothing was sent.
        """
        try:
            body, headers = self.build_request()
        except Exception as exc:
            return self._finish(_before_sending(exc))
        started = time.monotonic()
        try:
            response = transport.post(self.url, body, headers, session=self.session,
                                      **self._limits())
        except DeliveryError as exc:
            return self._finish(_failed(exc, started))
        return self._finish(_answered(response, started))

    async def send_async(self, client):
        """``send()``, with the request made by ``client`` (a ``djwebhooks.aio.Client``)
        on the running event loop: the same request, result and ``notify()``."""
        try:
            body, headers = self.build_request()
        except Exception as exc:
            return self._finish(_before_sending(exc))
        started = time.monotonic()
        try:
            response = await client.post(self.url, body, headers, **self._limits())
        except DeliveryError as exc:
            return self._finish(_failed(exc, started))
        return self._finish(_answered(response, started))

    def build_request(self):
        """Return the ``(body, headers)`` of the request, signed at this moment."""
        body = self.get_body()
        sent_at = int(self.clock())
        return body, self.get_headers(body, sent_at)

    def _limits(self):
        """The request's bounds and URL policy, as both clients take them."""
        return {"timeout": self.timeout, "body_limit": self.body_limit, "policy": self.policy,
                "total_timeout": self.total_timeout}

    def _finish(self, result):
        self.notify(result)
        return result


def _before_sending(exc):
    return AttemptResult(
        success=False, response_status=None, response_message="", response_content_type="",
        error=f"{type(exc).__name__}: {exc}", duration=0, notification="Error before sending",
        exception=exc,
    )


def _failed(exc, started):
    return AttemptResult(
        success=False, response_status=None, response_message="", response_content_type="",
        error=exc.describe(), duration=_elapsed_ms(started), notification=exc.summary,
        exception=exc,
    )


def _answered(response, started):
    return AttemptResult(
        success=response.ok,
        response_status=response.status,
        response_message=response.body.decode("utf-8", errors="replace"),
        response_content_type=response.content_type,
        error="",
        duration=_elapsed_ms(started),
        notification=f"{response.status} {response.reason}".strip(),
        retry_after=response.retry_after,
    )


def _elapsed_ms(started):
    return max(0, round((time.monotonic() - started) * 1000))


def _inherited(sender, *names):
    """True when ``sender``'s class overrides none of the ``Senderable`` methods ``names``."""
    return _class_inherits(type(sender), names)


@lru_cache(maxsize=256)
def _class_inherits(cls, names):
    return all(getattr(cls, name) is getattr(Senderable, name) for name in names)


@lru_cache(maxsize=16)
def _encoder(cls):
    """The envelope's encoder, of the class ``cls`` (the standard one when None): made
    once, as ``json.dumps`` would make it at every call."""
    return (cls or json.JSONEncoder)(separators=(",", ":"), ensure_ascii=False,
                                     allow_nan=False)
