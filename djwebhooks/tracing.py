"""OpenTelemetry spans around each attempt, when ``opentelemetry-api`` is installed
(``pip install 'dj-webhooks[opentelemetry]'``).

``instrument()`` connects to ``attempt_started`` and ``attempt_finished``, which are sent on
the thread that makes the request, so the span is current while the request runs: spans
of an instrumented HTTP client are its children. A span names the target's host only,
never its URL, whose path or query may hold a secret. Nothing on the sending path imports
this module.
"""

import functools
import logging
import threading
import time
from urllib.parse import urlsplit

from djwebhooks import __version__, signals

__all__ = ["SPAN_NAME", "instrument", "uninstrument"]

logger = logging.getLogger("djwebhooks.tracing")

SPAN_NAME = "webhook send"
_UID = "djwebhooks.tracing"

_tracer = None
#: Whether spans are recorded: ``instrument()`` was given its tracer provider, or a
#: global one has been set.
_provider_set = False
_trace = _context = None  # opentelemetry's modules, once instrumented
_local = threading.local()  # delivery id -> (span, context token), on each sending thread


def instrument(tracer_provider=None):
    """Make a span around each attempt from now on, with ``tracer_provider`` (the global
    one when None); return False, doing nothing, when opentelemetry-api is not installed."""
    global _tracer, _provider_set, _trace, _context, _next_look
    try:
        from opentelemetry import context, trace
    except ImportError:
        logger.info("No spans for webhook attempts: opentelemetry-api is not installed "
                    "(pip install 'dj-webhooks[opentelemetry]').")
        return False
    _trace, _context = trace, context
    _tracer = trace.get_tracer("djwebhooks", __version__, tracer_provider=tracer_provider)
    _provider_set = tracer_provider is not None
    _next_look = 0.0
    signals.attempt_started.connect(_started, weak=False, dispatch_uid=_UID)
    signals.attempt_finished.connect(_finished, weak=False, dispatch_uid=_UID)
    return True


def uninstrument():
    """Make no more spans."""
    signals.attempt_started.disconnect(dispatch_uid=_UID)
    signals.attempt_finished.disconnect(dispatch_uid=_UID)


@functools.lru_cache(maxsize=1024)  # a span per attempt, to few URLs
def target_address(url):
    """``(host, port)`` of ``url``, without what may hold secrets (user, path, query);
    the port is None when the URL gives none."""
    try:
        parts = urlsplit(url)
        return parts.hostname or "", parts.port
    except ValueError:
        return "", None


#: While no global tracer provider is set: when to look again (``time.monotonic()``).
_next_look = 0.0
#: How often to look for a global tracer provider while none is set, in seconds.
LOOK_EVERY = 1.0


def _recording():
    """Whether spans are made: with the provider given to ``instrument()``, or once a
    global one is set. Until then the global provider is opentelemetry's stand-in, whose
    spans record nothing, and making them would only cost each attempt time; asking for
    the global provider costs time too (it reads the environment), so while there is
    none it is asked for once a second. Once set, it cannot be unset."""
    global _provider_set, _next_look
    if _provider_set:
        return True
    now = time.monotonic()
    if now < _next_look:
        return False
    if not isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider):
        _provider_set = True  # the global one, from now on
        return True
    _next_look = now + LOOK_EVERY
    return False


def _started(sender, delivery, **kwargs):
    if not _recording():
        return
    trace, context = _trace, _context
    host, port = target_address(delivery.webhook_target.target_url)
    attributes = {
        "djwebhooks.delivery.id": delivery.pk,
        "djwebhooks.event": delivery.event,
        "http.request.method": "POST",
        "server.address": host,
    }
    if port is not None:
        attributes["server.port"] = port
    span = _tracer.start_span(SPAN_NAME, kind=trace.SpanKind.CLIENT, attributes=attributes)
    token = context.attach(trace.set_span_in_context(span))
    spans = _local.__dict__.setdefault("spans", {})
    spans[delivery.pk] = (span, token)


def _finished(sender, delivery, result, **kwargs):
    spans = _local.__dict__.get("spans")
    entry = spans.pop(delivery.pk, None) if spans else None
    if entry is None:
        # No span was made: the attempt failed while being prepared (there was no
        # request), or nothing records spans.
        return
    context, Status, StatusCode = _context, _trace.Status, _trace.StatusCode
    span, token = entry
    try:
        span.set_attribute("djwebhooks.outcome", "success" if result.success else "failure")
        if result.response_status is not None:
            span.set_attribute("http.response.status_code", result.response_status)
        if not result.success:
            if result.response_status is not None:
                error_type = str(result.response_status)
            elif result.exception is not None:
                error_type = type(result.exception).__name__
            else:
                error_type = "error"
            span.set_attribute("error.type", error_type)
            # The notification is a fixed summary or the status line: never the URL.
            span.set_status(Status(StatusCode.ERROR, result.notification))
        span.end()
    finally:
        context.detach(token)
