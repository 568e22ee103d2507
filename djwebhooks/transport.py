"""The HTTP client: one pooled ``requests.Session`` per thread, and its error mapping.

Pure code: no Django, no models. Everything above this module sees our own
``DeliveryTimeout`` / ``DeliveryConnectionError`` / ``DeliveryRefused`` / ``DeliveryError``,
never requests'. Every connection is opened to an address ``ssrf`` has checked, and every
request has a total deadline on top of the socket timeouts.
"""

import contextlib
import heapq
import http.cookiejar
import itertools
import socket
import threading
import time
from dataclasses import dataclass

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import connection as urllib3_connection

from djwebhooks import ssrf
from djwebhooks.exceptions import (
    DeliveryConnectionError,
    DeliveryError,
    DeliveryInvalidURL,
    DeliveryRefused,
    DeliveryTimeout,
)

_local = threading.local()
#: A session every thread uses instead of its own, while set (see ``override_session``).
_override = None
#: The deadline of a request when none is given.
DEFAULT_TOTAL_TIMEOUT = 30.0


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


class _Deadline:
    """The end of one request's time; its sockets are shut down when it passes."""

    def __init__(self, at):
        self.at = at
        self.sockets = []
        self.expired = False
        self.finished = False


class _Watchdog:
    """One thread that shuts down the sockets of requests past their deadline."""

    def __init__(self):
        self._changed = threading.Condition()
        self._heap = []
        self._order = itertools.count()
        self._thread = None

    def start(self, seconds):
        deadline = _Deadline(time.monotonic() + seconds)
        with self._changed:
            heap = self._heap
            while heap and heap[0][2].finished:
                heapq.heappop(heap)  # requests that ended; keeps the heap to those running
            # Wake the watchdog only when it must wait less than it does: most requests
            # end long before their deadline, and waking it for each would cost a thread
            # switch per request.
            earliest = not heap or deadline.at < heap[0][0]
            heapq.heappush(heap, (deadline.at, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="djwebhooks-watchdog",
                                                daemon=True)
                self._thread.start()
            elif earliest:
                self._changed.notify()
        return deadline

    def finish(self, deadline):
        with self._changed:
            deadline.finished = True

    def _run(self):
        while True:
            with self._changed:
                while self._heap and self._heap[0][2].finished:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._changed.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._changed.wait(wait)
                    continue
                deadline = heapq.heappop(self._heap)[2]
                deadline.expired = True
                sockets = list(deadline.sockets)
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


_watchdog = _Watchdog()


def _current():
    """The (policy, deadline) of the request this thread is making."""
    return getattr(_local, "request", None) or (ssrf.URLPolicy(), None)


class GuardedHTTPConnection(HTTPConnection):
    """An ``HTTPConnection`` that connects only to addresses the URL policy allows."""

    def _new_conn(self):
        policy, deadline = _current()
        try:
            addresses = ssrf.resolve(self._dns_host, self.port, policy)
        except ssrf.TargetURLRefused as exc:
            raise DeliveryRefused(str(exc)) from None
        except socket.gaierror as exc:
            raise urllib3.exceptions.NameResolutionError(self.host, self, exc) from exc
        error = None
        for address in addresses:
            try:
                # The vetted address itself is connected to, never the name again.
                sock = urllib3_connection.create_connection(
                    (str(address), self.port), self.timeout,
                    source_address=self.source_address, socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                raise urllib3.exceptions.ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout="
                    f"{self.timeout})") from exc
            except OSError as exc:
                error = exc
                continue
            if deadline is not None:
                deadline.sockets.append(sock)
            return sock
        raise urllib3.exceptions.NewConnectionError(
            self, f"Failed to establish a new connection: {error}") from error

    def request(self, *args, **kwargs):
        # A connection reused from the pool: watch its socket for this request's deadline.
        _, deadline = _current()
        if deadline is not None and self.sock is not None:
            deadline.sockets.append(self.sock)
        return super().request(*args, **kwargs)


class GuardedHTTPSConnection(GuardedHTTPConnection, HTTPSConnection):
    """The same for HTTPS; TLS still verifies the certificate against the host name."""


class _GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """requests' adapter, with pools of guarded connections and no retries."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPConnectionPool,
            "https": _GuardedHTTPSConnectionPool,
        }


class WebhookSession(requests.Session):
    """The ``requests.Session`` webhooks are sent with: pools of guarded connections, no
    retries, nothing taken from the environment, no cookies kept."""

    def __init__(self):
        super().__init__()
        # Environment proxies and ~/.netrc credentials are not for arbitrary receivers.
        self.trust_env = False
        # Nor is one receiver's cookie for its next request: webhooks are stateless.
        self.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        adapter = GuardedAdapter(pool_connections=16, pool_maxsize=16, max_retries=0)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def post_webhook(self, url, body, headers, *, timeout):
        """POST ``body`` with exactly ``headers``, and return the streamed response.

        ``Session.post`` first merges session-wide headers, cookies, authentication and
        environment settings into each request; a webhook has none of them, and skipping
        that halves the client's CPU time per request.
        """
        request = requests.PreparedRequest()
        request.prepare(method="POST", url=url, headers=headers, data=body)
        return self.send(request, timeout=timeout, allow_redirects=False, stream=True)


def new_session():
    """Return a ``WebhookSession``, set up for sending webhooks."""
    return WebhookSession()


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


def post(url, body, headers, *, timeout, body_limit, session=None, policy=None,
         total_timeout=DEFAULT_TOTAL_TIMEOUT):
    """POST ``body`` to ``url`` and return a :class:`Response`.

    ``timeout`` is ``(connect, read)`` seconds for each socket operation; ``total_timeout``
    bounds the whole request. ``policy`` (an ``ssrf.URLPolicy``; public addresses only by
    default) decides which URLs and addresses may be reached. Redirects are not followed.
    At most ``body_limit`` bytes of the response body are read; the rest is never
    downloaded. Raises ``DeliveryTimeout``, ``DeliveryConnectionError``,
    ``DeliveryRefused``, ``DeliveryInvalidURL`` or ``DeliveryError``.
    """
    policy = policy or ssrf.URLPolicy()
    try:
        ssrf.check_url(url, policy)
    except ssrf.TargetURLRefused as exc:
        raise DeliveryRefused(str(exc)) from None
    session = session or get_session()
    deadline = _watchdog.start(total_timeout)
    _local.request = (policy, deadline)
    try:
        if isinstance(session, WebhookSession):
            response = session.post_webhook(url, body, headers, timeout=timeout)
        else:  # another session, or a test double: the public API
            response = session.post(url, data=body, headers=headers, timeout=timeout,
                                    allow_redirects=False, stream=True)
        with response:
            content = response.raw.read(body_limit, decode_content=True) if body_limit else b""
            if deadline.expired:
                raise TimeoutError
            return Response(
                status=response.status_code,
                reason=response.reason or "",
                content_type=response.headers.get("Content-Type", ""),
                body=content or b"",
                retry_after=response.headers.get("Retry-After", ""),
            )
    except DeliveryError:
        raise
    except Exception as exc:
        if deadline.expired:
            raise DeliveryTimeout(
                f"The request took longer than its total deadline ({total_timeout:g} s)."
            ) from exc
        mapped = _map_error(exc)
        if mapped is exc:
            raise  # not a transport error: a bug, let it show as it is
        raise mapped from exc
    finally:
        _watchdog.finish(deadline)
        _local.request = None


def _map_error(exc):
    """Turn requests' and urllib3's exceptions into ours."""
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return DeliveryInvalidURL(str(exc))
    # Reading ``response.raw`` directly can raise urllib3's own errors, not requests'.
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        return DeliveryTimeout(str(exc))
    if isinstance(exc, (requests.ConnectionError, urllib3.exceptions.ProtocolError)):
        return DeliveryConnectionError(str(exc))
    if isinstance(exc, (requests.RequestException, urllib3.exceptions.HTTPError, OSError,
                        ValueError)):
        return DeliveryError(str(exc))
    return exc
