"""The HTTP client: one pooled ``requests.Session`` per thread, and its error mapping.

Pure code: no Django, no models. Everything above this module sees our own
``DeliveryTimeout`` / ``DeliveryConnectionError`` / ``DeliveryError``, never requests'.
"""

import contextlib
import threading
from dataclasses import dataclass

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from djwebhooks.exceptions import (
    DeliveryConnectionError,
    DeliveryError,
    DeliveryInvalidURL,
    DeliveryTimeout,
)

_local = threading.local()
#: A session every thread uses instead of its own, while set (see ``override_session``).
_override = None


@dataclass(frozen=True)
class Response:
    """What came back from a receiver: the status and the start of the body."""

    status: int
    reason: str
    content_type: str
    body: bytes
    retry_after: str = ""

    @property
    def ok(self):
        """True for a 2xx answer; redirects are not followed, so 3xx is a failure."""
        return 200 <= self.status < 300


def new_session():
    """Return a ``Session`` set up for sending webhooks."""
    session = requests.Session()
    # Environment proxies and ~/.netrc credentials are not for arbitrary receivers.
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=16, pool_maxsize=16, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def get_session():
    """Return this thread's pooled session, creating it on first use."""
    if _override is not None:
        return _override
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = new_session()
    return session


@contextlib.contextmanager
def override_session(session):
    """Make every thread send through ``session`` (a test double) inside the block."""
    global _override
    previous, _override = _override, session
    try:
        yield session
    finally:
        _override = previous


def close_session():
    """Close this thread's session (its pooled connections)."""
    session = getattr(_local, "session", None)
    if session is not None:
        session.close()
        _local.session = None


def post(url, body, headers, *, timeout, body_limit, session=None):
    """POST ``body`` to ``url`` and return a :class:`Response`.

    ``timeout`` is ``(connect, read)`` seconds. Redirects are not followed. At most
    ``body_limit`` bytes of the response body are read; the rest is never downloaded.
    Raises ``DeliveryTimeout``, ``DeliveryConnectionError``, ``DeliveryInvalidURL`` or
    ``DeliveryError``.
    """
    session = session or get_session()
    try:
        with session.post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False, stream=True
        ) as response:
            content = response.raw.read(body_limit, decode_content=True) if body_limit else b""
            return Response(
                status=response.status_code,
                reason=response.reason or "",
                content_type=response.headers.get("Content-Type", ""),
                body=content or b"",
                retry_after=response.headers.get("Retry-After", ""),
            )
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema) as exc:
        raise DeliveryInvalidURL(str(exc)) from exc
    # Reading ``response.raw`` directly can raise urllib3's own errors, not requests'.
    except (requests.Timeout, urllib3.exceptions.TimeoutError) as exc:
        raise DeliveryTimeout(str(exc)) from exc
    except (requests.ConnectionError, urllib3.exceptions.ProtocolError) as exc:
        raise DeliveryConnectionError(str(exc)) from exc
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        raise DeliveryError(str(exc)) from exc
