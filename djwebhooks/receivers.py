"""Receiving Standard Webhooks in Django views: ``verify_webhook`` and ``@webhook_receiver``.

For the project at the other end: they verify requests from dj-webhooks or from any other
Standard Webhooks sender. ``verify_webhook`` raises ``SignatureVerificationError`` saying
which check failed; ``webhook_receiver`` turns that into a 400 response before the view
runs.
"""

import functools
import hashlib
import json
import logging
import time
from numbers import Real

from asgiref.sync import iscoroutinefunction
from django.core.cache import caches
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, HttpResponseBadRequest, QueryDict
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_POST

from djwebhooks import signing
from djwebhooks.encoding import FORM
from djwebhooks.exceptions import SignatureVerificationError

#: The headers every Standard Webhooks request carries, in the order they are checked.
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
#: Prefix of the cache keys that remember received webhook-ids.
CACHE_KEY_PREFIX = "djwebhooks:received:"
#: The states of a remembered webhook-id: the view is running, or it answered 2xx.
PROCESSING, DONE = "processing", "done"
#: The seconds a repeat that arrives while its id is being processed is asked to wait.
BUSY_RETRY_AFTER = 5

logger = logging.getLogger(__name__)


@sensitive_variables("secret", "secrets")
def verify_webhook(request, secret, *, tolerance=signing.DEFAULT_TOLERANCE):
    """Verify a signed request and return its envelope; raise ``SignatureVerificationError``.

    ``secret`` is a ``whsec_...`` string or a list of them (any may match, as while a
    sender rotates its secret). The signature covers the raw body; a form-encoded body's
    envelope is the JSON in its ``payload`` field.
    """
    secrets = _secret_list(secret)
    msg_id, timestamp, signature = _read_headers(request)
    timestamp = _check_timestamp(timestamp, tolerance)
    body = request.body
    matched = False
    for candidate in secrets:
        # Try every secret, so the time taken does not tell which one matched.
        matched |= signing.signature_matches(candidate, msg_id, timestamp, body, signature)
    if not matched:
        raise SignatureVerificationError(_no_match_message(signature, len(secrets)))
    return _parse_envelope(request)


def webhook_receiver(secret, *, tolerance=signing.DEFAULT_TOLERANCE, replay_protection=False,
                     cache_alias="default"):
    """Make a view a webhook receiver: POST only, CSRF-exempt, verified before it runs.

    The view is called as ``view(request, webhook, *args, **kwargs)`` with the envelope.
    ``secret`` is a string, a list of strings, or a callable ``(request, *args, **kwargs)``
    returning either. A request that does not verify gets a 400 response saying why.

    With ``replay_protection``, a verified request whose ``webhook-id`` this path accepted
    before (the view answered 2xx) gets a 200 without the view running again, and one that
    arrives while the view is still processing that id gets a 409 with ``Retry-After``. The
    ids are kept in the ``cache_alias`` cache for twice the ``tolerance``.
    """
    _check_options(secret, tolerance)

    def decorator(view):
        if iscoroutinefunction(view):
            raise TypeError(
                f"webhook_receiver cannot wrap {view!r}: async views are not "
                "supported; make it a regular (sync) view."
            )

        @functools.wraps(view)
        @sensitive_variables("secret", "secrets")
        def receiver(request, *args, **kwargs):
            secrets = secret(request, *args, **kwargs) if callable(secret) else secret
            try:
                webhook = verify_webhook(request, secrets, tolerance=tolerance)
            except (SignatureVerificationError, RequestDataTooBig) as exc:
                # A body over DATA_UPLOAD_MAX_MEMORY_SIZE too: answered here, it cannot
                # reach Django's debug page (see _refuse).
                return _refuse(request, exc)
            if not replay_protection:
                return view(request, webhook, *args, **kwargs)
            # Only now, once the request is known to be the sender's, is the cache consulted.
            msg_id = _webhook_id(request)
            key, state = _claim(request, msg_id, tolerance, cache_alias)
            if key is None:
                return _answer_repeat(request, msg_id, state)
            return _call_and_record(view, key, tolerance, cache_alias, request, webhook,
                                    *args, **kwargs)

        return csrf_exempt(require_POST(receiver))

    return decorator


def _check_options(secret, tolerance):
    """Refuse, when the decorator is applied, options that could never work."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, Real) or tolerance < 0:
        raise TypeError(f"tolerance must be a number of seconds >= 0, got {tolerance!r}.")
    if callable(secret):
        return
    if secret is None or (isinstance(secret, (list, tuple)) and not secret):
        raise TypeError("webhook_receiver needs a secret: a string, a list of strings, or a "
                        "callable returning either.")
    _secret_list(secret)  # raises on a wrong type or an unusable secret


def _secret_list(secret):
    """Return ``secret`` as a list of secrets, each checked to be a usable key."""
    if secret is None:  # e.g. a callable that found no secret for this URL
        secrets = []
    elif isinstance(secret, str):
        secrets = [secret]
    elif isinstance(secret, (list, tuple)) and all(isinstance(s, str) for s in secret):
        secrets = list(secret)
    else:
        raise TypeError(
            "A webhook secret must be a string or a list of strings, got "
            f"{type(secret).__name__}."
        )
    if not secrets:
        raise SignatureVerificationError("There is no secret to verify this webhook with.")
    for candidate in secrets:
        signing.secret_key(candidate)  # ValueError, without the secret, for a bad one
    return secrets


def _read_headers(request):
    """Return the three Standard Webhooks headers; raise naming any that are missing."""
    values = [request.headers.get(name, "").strip() for name in HEADERS]
    missing = [name for name, value in zip(HEADERS, values, strict=True) if not value]
    if missing:
        noun = "header" if len(missing) == 1 else "headers"
        raise SignatureVerificationError(f"Missing webhook {noun}: {', '.join(missing)}.")
    return values


def _check_timestamp(value, tolerance):
    """Return the ``webhook-timestamp`` as an int; raise unless it is recent enough."""
    timestamp = signing.parse_timestamp(value)
    if timestamp is None:
        raise SignatureVerificationError(
            "The webhook-timestamp header is not an integer (Unix seconds): "
            f"{_shorten(value)}."
        )
    drift = time.time() - timestamp
    if abs(drift) > tolerance:
        when = "old" if drift > 0 else "in the future"
        raise SignatureVerificationError(
            f"The webhook-timestamp is {abs(drift):.0f} seconds {when}; at most "
            f"{tolerance:g} are allowed. Check both clocks, or this is a replay."
        )
    return timestamp


def _no_match_message(signature, secret_count):
    """Say why no signature matched: none could be read, or none was right."""
    if not signing.parse_signatures(signature):
        return ("The webhook-signature header holds no v1 signature (expected "
                "'v1,<base64>' entries separated by spaces).")
    which = "the secret" if secret_count == 1 else f"any of the {secret_count} secrets"
    return f"No signature in the webhook-signature header matches {which}."


def _parse_envelope(request):
    """Return the JSON object sent: the body, or a form body's ``payload`` field."""
    if request.content_type == FORM:
        values = QueryDict(request.body, encoding=request.encoding).getlist("payload")
        if len(values) != 1:
            raise SignatureVerificationError(
                f"The form body must have one 'payload' field; it has {len(values)}."
            )
        text, where = values[0], "The payload form field"
    else:
        text, where = request.body, "The body"
    try:
        envelope = json.loads(text)
    except ValueError as exc:  # json.JSONDecodeError, or bytes that are not UTF-8
        raise SignatureVerificationError(f"{where} is not JSON: {exc}.") from None
    if not isinstance(envelope, dict):
        raise SignatureVerificationError(f"{where} is not a JSON object.")
    return envelope


def _webhook_id(request):
    """The request's ``webhook-id`` header."""
    return request.headers["webhook-id"].strip()


def _claim(request, msg_id, tolerance, cache_alias):
    """Claim ``msg_id`` at this path for this request, or return why it cannot be claimed.

    Returns ``(key, None)`` when the id is now marked as being processed here, so the view
    may run; otherwise ``(None, state)``, ``DONE`` if it was accepted here before and
    ``PROCESSING`` if another request holds it now. Only one request can claim an id:
    ``cache.add`` stores a key only if it is absent.

    A timestamp verifies while it is within ``tolerance`` of the clock, so a request first
    accepted at the earliest moment its timestamp allowed can be replayed until 2 x
    ``tolerance`` later, and no longer: that is how long the id is kept (plus a second for
    the rounding of timestamps).
    """
    # Keyed by path as well: one message goes to every target of its event with the same
    # id, and two of them may be served here. Not by query string, which an attacker could
    # vary freely to get a replay through.
    digest = hashlib.sha256(f"{request.path}\n{msg_id}".encode()).hexdigest()
    key = CACHE_KEY_PREFIX + digest
    cache = caches[cache_alias]
    state = None
    for _ in range(2):  # the key may expire, or be released, between add() and get()
        if cache.add(key, PROCESSING, timeout=_keep_for(tolerance)):
            return key, None
        state = cache.get(key)
        if state is not None:
            break
    return None, DONE if state == DONE else PROCESSING


def _keep_for(tolerance):
    """How long, in seconds, a webhook-id is remembered (see ``_claim``)."""
    return 2 * tolerance + 1


def _call_and_record(view, key, tolerance, cache_alias, request, *args, **kwargs):
    """Call the view; mark the webhook-id done if it answered 2xx, else forget it.

    Forgotten, the id is processed again when the sender retries. Marked done, it is kept
    for the whole period again from now, which covers every replay of the request.
    """
    cache = caches[cache_alias]
    try:
        response = view(request, *args, **kwargs)
    except BaseException:
        cache.delete(key)
        raise
    if 200 <= response.status_code < 300:
        cache.set(key, DONE, timeout=_keep_for(tolerance))
    else:
        cache.delete(key)
    return response


def _answer_repeat(request, msg_id, state):
    """Answer a verified request whose webhook-id this path has claimed, without the view.

    Accepted before: 200, so the sender, which did not see the first answer, stops
    retrying. Still being processed: 409 and ``Retry-After``, since the first request may
    yet fail, and a 2xx now would lose the message.
    """
    shown = _shorten(msg_id)
    if state == DONE:
        logger.info("Webhook %s at %s was already received; answered 200 without calling "
                    "the view.", shown, request.path)
        return HttpResponse(f"The webhook-id {shown} was already received here.\n",
                            content_type="text/plain; charset=utf-8")
    logger.info("Webhook %s at %s is still being processed; answered 409.", shown,
                request.path)
    response = HttpResponse(
        f"The webhook-id {shown} is still being processed here; try again in "
        f"{BUSY_RETRY_AFTER} seconds.\n",
        status=409, content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(BUSY_RETRY_AFTER)
    return response


def _refuse(request, exc):
    """Answer 400 saying which check failed, and log it as Django logs suspicious requests.

    Answered here rather than raised: Django's debug page for a raised exception would
    show the secrets in this module's local variables to whoever sent the request.
    """
    logger = logging.getLogger(f"django.security.{type(exc).__name__}")
    logger.warning("Webhook refused at %s: %s", request.path, exc,
                   extra={"status_code": 400, "request": request})
    return HttpResponseBadRequest(f"{exc}\n", content_type="text/plain; charset=utf-8")


def _shorten(value, limit=40):
    """``repr(value)``, cut to ``limit`` characters: header values come from anyone."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
