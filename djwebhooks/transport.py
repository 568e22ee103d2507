"""The HTTP client: one pool manager of urllib3 connections per thread, and its error mapping.

Pure code: no Django, no models. Everything above this module sees our own
``DeliveryTimeout`` / ``DeliveryConnectionError`` / ``DeliveryRefused`` / ``DeliveryError``,
never requests' or urllib3's. Every connection is opened to an address ``ssrf`` has
checked, and every request has a total deadline on top of the socket timeouts, from the
DNS lookup to the last byte read. Requests are made as ``requests`` would make them (its
URL preparation, its header checks, its exceptions), but straight through urllib3.
"""

import concurrent.futures
import contextlib
import functools
import heapq
import http.client
import itertools
import math
import os
import queue
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.utils import DEFAULT_CA_BUNDLE_PATH, check_header_validity
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import LocationValueError
from urllib3.util import Retry, Timeout
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
#: The most informational (1xx) responses a receiver may send before its answer.
MAX_INFORMATIONAL_RESPONSES = 10
#: The most threads looking names up at once; further lookups wait for one of them.
RESOLVER_THREADS = 16


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

    def __init__(self, seconds):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.sockets = []
        self.expired = False
        self.finished = False
        self._lock = threading.Lock()

    def left(self):
        """Seconds until the deadline; 0 once it has passed."""
        return max(0.0, self.at - time.monotonic())

    def passed(self):
        """True once the deadline has passed, whether or not the watchdog has seen it."""
        return self.expired or time.monotonic() >= self.at

    def error(self):
        """The ``DeliveryTimeout`` of a request that ran out of time."""
        return DeliveryTimeout(
            f"The request took longer than its total deadline ({self.seconds:g} s).")

    def watch(self, sock):
        """Shut ``sock`` down when the deadline passes. Returns False, having shut it down
        already, when the deadline has passed: the watchdog may have come and gone."""
        with self._lock:
            self.sockets.append(sock)
            if self.expired or time.monotonic() >= self.at:
                self.expired = True
                _shut_down(sock)
                return False
        return True

    def expire(self):
        """Mark the deadline passed and shut down every socket watched (the watchdog's)."""
        with self._lock:
            self.expired = True
            for sock in self.sockets:
                _shut_down(sock)


def _shut_down(sock):
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One thread that shuts down the sockets of requests past their deadline."""

    def __init__(self):
        self._changed = threading.Condition()
        self._heap = []
        self._order = itertools.count()
        self._thread = None
        #: When the watchdog wakes next by itself (infinity: only when notified).
        self._wakes_at = math.inf

    def start(self, seconds):
        deadline = _Deadline(seconds)
        with self._changed:
            heap = self._heap
            while heap and heap[0][2].finished:
                heapq.heappop(heap)  # requests that ended; keeps the heap to those running
            heapq.heappush(heap, (deadline.at, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._wakes_at = math.inf
                self._thread = threading.Thread(target=self._run, name="djwebhooks-watchdog",
                                                daemon=True)
                self._thread.start()
            elif deadline.at < self._wakes_at:
                # Wake the watchdog only when it would wake too late for this deadline:
                # most requests end long before their deadline, and waking it for each
                # would cost a thread switch per request. It looks at the heap when it
                # wakes, whatever woke it.
                self._wakes_at = deadline.at
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
                    self._wakes_at = math.inf
                    self._changed.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._wakes_at = self._heap[0][0]
                    self._changed.wait(wait)
                    continue
                deadline = heapq.heappop(self._heap)[2]
            deadline.expire()


_watchdog = _Watchdog()


class _ResolverPool:
    """A few daemon threads that look names up, so that a lookup can be waited for at most
    the time a request has left: ``getaddrinfo`` takes no timeout, and blocks for as long
    as the system's resolver keeps retrying. A lookup given up on finishes on its thread,
    and its answer is dropped; one still queued is not made at all."""

    def __init__(self, size):
        self.size = size
        self._reset()
        if hasattr(os, "register_at_fork"):
            # A child process has none of its parent's threads; it starts its own.
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self):
        self._lock = threading.Lock()
        self._jobs = queue.SimpleQueue()
        self._threads = 0  # started
        self._idle = 0  # waiting for a job that no submit has counted on them for
        self._backlog = 0  # queued while every thread was busy

    def submit(self, function, *args):
        """Run ``function(*args)`` on a pool thread; return its ``Future``."""
        future = concurrent.futures.Future()
        with self._lock:
            self._jobs.put((future, function, args))
            if self._idle:
                self._idle -= 1
            elif self._threads < self.size:
                self._threads += 1
                threading.Thread(target=self._work, args=(self._jobs,),
                                 name="djwebhooks-resolver", daemon=True).start()
            else:
                self._backlog += 1
        return future

    def _work(self, jobs):
        while True:
            self._run(*jobs.get())
            with self._lock:
                if self._backlog:
                    self._backlog -= 1
                else:
                    self._idle += 1

    @staticmethod
    def _run(future, function, args):
        if not future.set_running_or_notify_cancel():
            return  # cancelled while queued: its request has stopped waiting
        try:
            result = function(*args)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)


_resolvers = _ResolverPool(RESOLVER_THREADS)


def _resolve(host, port, policy, deadline):
    """``ssrf.resolve``, waiting for the DNS lookup at most the time the request has left."""
    if deadline is None or ssrf.ip_literal(host) is not None:
        return ssrf.resolve(host, port, policy)  # nothing to look up, or no deadline
    if deadline.passed():
        raise deadline.error()
    future = _resolvers.submit(ssrf.resolve, host, port, policy)
    done, _ = concurrent.futures.wait((future,), timeout=deadline.left())
    if not done:
        future.cancel()
        raise DeliveryTimeout(f"The DNS lookup of {host} did not finish within the "
                              f"request's total deadline ({deadline.seconds:g} s).")
    return future.result()


class _FinalResponse(http.client.HTTPResponse):
    """``http.client``'s response, reading past informational (1xx) responses to the answer.

    ``http.client`` skips ``100 Continue`` only, so a ``103 Early Hints`` would be taken for
    the answer. ``101 Switching Protocols`` ends the exchange, and is returned (as a
    failure: no upgrade is ever asked for).
    """

    def _read_status(self):
        skipped = 0
        while True:
            version, status, reason = super()._read_status()
            if not 100 <= status < 200 or status == 101:
                return version, status, reason
            if skipped == MAX_INFORMATIONAL_RESPONSES:
                raise DeliveryError(
                    f"The receiver sent more than {MAX_INFORMATIONAL_RESPONSES} "
                    "informational (1xx) responses without a final one.")
            http.client.parse_headers(self.fp)  # read and discarded
            skipped += 1


def _current():
    """The (policy, deadline) of the request this thread is making."""
    return getattr(_local, "request", None) or (ssrf.URLPolicy(), None)


class GuardedHTTPConnection(HTTPConnection):
    """An ``HTTPConnection`` that connects only to addresses the URL policy allows, within
    the request's deadline, and reads past informational responses."""

    response_class = _FinalResponse

    def _new_conn(self):
        policy, deadline = _current()
        try:
            addresses = _resolve(self._dns_host, self.port, policy, deadline)
        except ssrf.TargetURLRefused as exc:
            raise DeliveryRefused(str(exc)) from None
        except socket.gaierror as exc:
            raise urllib3.exceptions.NameResolutionError(self.host, self, exc) from exc
        error = None
        for address in addresses:
            timeout = self.timeout
            if deadline is not None:
                if deadline.passed():
                    raise deadline.error()
                timeout = self._time_left(deadline)
            try:
                # The vetted address itself is connected to, never the name again.
                sock = urllib3_connection.create_connection(
                    (str(address), self.port), timeout,
                    source_address=self.source_address, socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                raise urllib3.exceptions.ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout="
                    f"{timeout})") from exc
            except OSError as exc:
                error = exc
                continue
            if deadline is not None:
                # Python bounds a TLS handshake as a whole by the socket's timeout (and the
                # TLS wrapper detaches this socket, so the watchdog cannot shut it down
                # then): cut that to the time left too.
                sock.settimeout(self._time_left(deadline))
                if not deadline.watch(sock):
                    sock.close()
                    raise deadline.error()
            return sock
        raise urllib3.exceptions.NewConnectionError(
            self, f"Failed to establish a new connection: {error}") from error

    def _time_left(self, deadline):
        """The connect timeout, cut to the time the request has left (all of it when there
        is no connect timeout: None, or urllib3's default)."""
        left = deadline.left()
        return min(self.timeout, left) if isinstance(self.timeout, (int, float)) else left

    def request(self, *args, **kwargs):
        # A connection reused from the pool, or an HTTPS one, connected before its request:
        # watch its socket for this request's deadline.
        _, deadline = _current()
        if deadline is not None and self.sock is not None and not deadline.watch(self.sock):
            raise deadline.error()
        return super().request(*args, **kwargs)


class GuardedHTTPSConnection(GuardedHTTPConnection, HTTPSConnection):
    """The same for HTTPS; TLS still verifies the certificate against the host name."""


class _GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


#: Not one retry, and no read retries: an attempt is one request (requests' ``max_retries=0``).
_NO_RETRIES = Retry(0, read=False)


class _Target(NamedTuple):
    """Where a URL's requests go, as requests would prepare them."""

    scheme: str
    host: str
    port: int | None
    path: str  # with the query


@functools.lru_cache(maxsize=1024)
def _target(url):
    """The ``_Target`` of ``url``: requests' own URL preparation (its IDNA encoding,
    quoting and errors), made once per URL. Raises requests' ``InvalidURL``,
    ``MissingSchema`` or ``InvalidSchema`` for a URL that cannot be requested. (A URL
    with a user name or password, which requests would send as Basic authentication, is
    refused before: ``ssrf.check_url``.)"""
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    if not prepared.url.lower().startswith(("http://", "https://")):
        raise requests.exceptions.InvalidSchema(
            f"No connection adapters were found for {prepared.url!r}")
    parts = urlsplit(prepared.url)
    try:
        port = parts.port
    except ValueError as exc:
        raise requests.exceptions.InvalidURL(exc) from exc
    return _Target(parts.scheme.lower(), parts.hostname, port, prepared.path_url)


def _timeout(timeout):
    """urllib3's ``Timeout`` for ``(connect, read)`` seconds, or one number for both."""
    if isinstance(timeout, Timeout):
        return timeout
    if isinstance(timeout, tuple):
        try:
            connect, read = timeout
        except ValueError:
            raise ValueError(f"Invalid timeout {timeout}. Pass a (connect, read) timeout "
                             "tuple, or a single float to set both timeouts to the same "
                             "value.") from None
        return Timeout(connect=connect, read=read)
    return Timeout(connect=timeout, read=timeout)


#: Header names and values that requests' ``check_header_validity`` accepts, in the forms
#: a sender's own headers take: checked with one match each, where the checker costs more.
_PLAIN_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_PLAIN_VALUE = re.compile(r"(?:[!-~][ -~]*)?\Z")


def _request(url, body, headers):
    """``(target, body, headers)`` of a POST, as requests would send it: the headers
    checked, then ``Content-Length``."""
    target = _target(url)
    if type(body) is bytes and body and all(type(name) is str for name in headers):
        names = {name.lower() for name in headers}
        if len(names) == len(headers) and "content-length" not in names:
            for header in headers.items():
                # requests' checker, for any header that is not plainly valid by its rules
                # (a token for the name, printable ASCII for the value): it says what is
                # wrong with one that is not.
                if type(header[1]) is not str or not (
                        _PLAIN_NAME.match(header[0]) and _PLAIN_VALUE.match(header[1])):
                    check_header_validity(header)
            return target, body, {**headers, "Content-Length": str(len(body))}
    # Anything less plain (an empty or str body, headers that clash) is prepared by
    # requests itself, which has the rules for it.
    prepared = requests.PreparedRequest()
    prepared.prepare(method="POST", url=url, headers=headers, data=body)
    return target, prepared.body, prepared.headers


class WebhookSession:
    """The client webhooks are sent with: urllib3 pools of guarded connections, one
    request per attempt (no retries, no redirects), nothing taken from the environment
    (proxies, ``~/.netrc``), no cookies.

    Requests are made as ``requests.Session.send`` makes a prepared request, without its
    adapter, hooks, cookie jar and ``Response``, which cost as much CPU time as urllib3
    itself: the same bytes on the wire, and the same errors, as requests' exceptions.
    """

    def __init__(self):
        # What requests' adapter has: 16 pools of 16 connections; TLS verified against
        # requests' CA bundle (certifi's).
        self.pools = PoolManager(num_pools=16, maxsize=16, block=False,
                                 cert_reqs="CERT_REQUIRED", ca_certs=DEFAULT_CA_BUNDLE_PATH)
        self.pools.pool_classes_by_scheme = {
            "http": _GuardedHTTPConnectionPool,
            "https": _GuardedHTTPSConnectionPool,
        }

    def post_webhook(self, url, body, headers, *, timeout):
        """POST ``body`` with exactly ``headers``, and return urllib3's streamed response
        (its body not read). Raises requests' exceptions, as ``Session.send`` would."""
        target, body, headers = _request(url, body, headers)
        try:
            pool = self.pools.connection_from_host(target.host, target.port, target.scheme)
        except LocationValueError as exc:
            raise requests.exceptions.InvalidURL(exc) from exc
        chunked = not (body is None or "Content-Length" in headers)
        try:
            return pool.urlopen(
                "POST", target.path, body=body, headers=headers, redirect=False,
                assert_same_host=False, preload_content=False, decode_content=False,
                retries=_NO_RETRIES, timeout=_timeout(timeout), chunked=chunked,
            )
        except (urllib3.exceptions.ProtocolError, OSError) as exc:
            raise requests.ConnectionError(exc) from exc
        except urllib3.exceptions.MaxRetryError as exc:
            raise _retry_error(exc) from exc
        except urllib3.exceptions.ClosedPoolError as exc:
            raise requests.ConnectionError(exc) from exc
        except urllib3.exceptions.SSLError as exc:
            raise requests.exceptions.SSLError(exc) from exc
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise requests.ReadTimeout(exc) from exc
        except urllib3.exceptions.InvalidHeader as exc:
            raise requests.exceptions.InvalidHeader(exc) from exc

    def close(self):
        """Close every pooled connection."""
        self.pools.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _retry_error(exc):
    """requests' exception for urllib3's ``MaxRetryError``: what it failed with."""
    reason = exc.reason
    if isinstance(reason, urllib3.exceptions.ConnectTimeoutError) and not isinstance(
            reason, urllib3.exceptions.NewConnectionError):
        return requests.ConnectTimeout(exc)
    if isinstance(reason, urllib3.exceptions.ResponseError):
        return requests.exceptions.RetryError(exc)
    if isinstance(reason, urllib3.exceptions.SSLError):
        return requests.exceptions.SSLError(exc)
    return requests.ConnectionError(exc)


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


def session_overridden():
    """True while ``override_session`` replaces every thread's session."""
    return _override is not None


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
    check_url(url, policy)
    session = session or get_session()
    deadline = _watchdog.start(total_timeout)
    _local.request = (policy, deadline)
    reading = False
    try:
        if isinstance(session, WebhookSession):
            raw = session.post_webhook(url, body, headers, timeout=timeout)
            status, reason, fields, close = raw.status, raw.reason, raw.headers, raw
        else:  # another session, or a test double: the public API
            response = session.post(url, data=body, headers=headers, timeout=timeout,
                                    allow_redirects=False, stream=True)
            raw, status, reason = response.raw, response.status_code, response.reason
            fields, close = response.headers, response
        try:
            reading = True
            content = raw.read(body_limit, decode_content=True) if body_limit else b""
            if deadline.expired:
                raise TimeoutError
            return Response(
                status=status,
                reason=reason or "",
                content_type=fields.get("Content-Type", ""),
                body=content or b"",
                retry_after=fields.get("Retry-After", ""),
            )
        finally:
            # As requests' ``Response.close()``: a body read to its end has given its
            # connection back to the pool already; one cut short is closed, unread.
            close.close()
            if close is raw:
                raw.release_conn()
    except DeliveryError:
        raise
    except Exception as exc:
        mapped = _map_error(exc, url, timeout, reading)
        # Cut off by the watchdog, or failed as the deadline passed (the connect timeout is
        # cut to the time left, and may end before the watchdog wakes).
        if deadline.expired or (mapped is not exc and deadline.passed()):
            raise deadline.error() from exc
        if mapped is exc:
            raise  # not a transport error: a bug, let it show as it is
        raise mapped from exc
    finally:
        _watchdog.finish(deadline)
        _local.request = None


def check_url(url, policy):
    """Refuse, with ``DeliveryRefused``, a URL that ``policy`` does not allow
    (``ssrf.check_url``); the URLs allowed are remembered, as a worker sends to the same
    few again and again."""
    try:
        if type(url) is str:
            _checked_url(url, policy)
        else:
            ssrf.check_url(url, policy)
    except ssrf.TargetURLRefused as exc:
        raise DeliveryRefused(str(exc)) from None


@functools.lru_cache(maxsize=1024)
def _checked_url(url, policy):
    """``ssrf.check_url``, remembered for the URLs it allows: it depends on the URL and the
    policy alone (not on the policy's resolver: addresses are checked at connect time)."""
    return ssrf.check_url(url, policy)


def _map_error(exc, url="", timeout=None, reading=False):
    """Turn requests' and urllib3's exceptions into ours, with a sentence in plain words
    and the library's own text as the details; return ``exc`` itself when it is not a
    transport error. ``url`` and ``timeout`` are the request's; ``reading`` is True once
    the response's head has come."""
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return DeliveryInvalidURL(f"The URL cannot be requested: {exc}",
                                  f"{type(exc).__name__}: {exc}")
    # Reading ``response.raw`` directly can raise urllib3's own errors, not requests'.
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        cls = DeliveryTimeout
    elif isinstance(exc, (requests.ConnectionError, urllib3.exceptions.ProtocolError)):
        cls = DeliveryConnectionError
    elif isinstance(exc, (requests.RequestException, urllib3.exceptions.HTTPError, OSError,
                          ValueError)):
        cls = DeliveryError
    else:
        return exc
    return cls(_plain(_causes(exc), url, timeout, reading), f"{type(exc).__name__}: {exc}")


def _causes(exc):
    """``exc`` and the exceptions it wraps, outermost first: requests wraps urllib3's,
    which wraps the socket's or the TLS library's."""
    found = []
    while exc is not None and exc not in found and len(found) < 10:
        found.append(exc)
        reason = getattr(exc, "reason", None)
        wrapped = [arg for arg in exc.args if isinstance(arg, BaseException)]
        exc = reason if isinstance(reason, BaseException) else (
            exc.__cause__ or (wrapped[-1] if wrapped else None) or exc.__context__)
    return found


def _plain(causes, url, timeout, reading):
    """The sentence that says what went wrong, from the innermost cause it recognises."""
    def first(*types):
        return next((cause for cause in causes if isinstance(cause, types)), None)

    host, where = _where(url)
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    if first(socket.gaierror, urllib3.exceptions.NameResolutionError):
        return f"DNS lookup failed for {host}"
    certificate = first(ssl.SSLCertVerificationError)
    if certificate is not None:
        reason = getattr(certificate, "verify_message", "") or _ssl_reason(certificate)
        return f"TLS certificate not valid for {host}: {reason}"
    tls = first(ssl.SSLError)
    if tls is not None:
        reason = _ssl_reason(tls)
        hint = "; does the receiver speak HTTPS on that port?" if \
            getattr(tls, "reason", "") == "WRONG_VERSION_NUMBER" else ""
        return f"TLS handshake with {where} failed: {reason}{hint}"
    is_new_connection = first(urllib3.exceptions.NewConnectionError) is not None
    if first(requests.ConnectTimeout) or (
            first(urllib3.exceptions.ConnectTimeoutError) and not is_new_connection):
        return f"Timed out after {_seconds(connect)} connecting to {where}"
    if first(requests.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
        waiting = "reading the response" if reading else "waiting for the response"
        return f"Timed out after {_seconds(read)} {waiting}"
    if first(requests.Timeout, urllib3.exceptions.TimeoutError) and not is_new_connection:
        return f"Timed out waiting for {where}"
    if first(ConnectionRefusedError):
        return f"Connection refused by {where}"
    if first(http.client.RemoteDisconnected):
        return "The receiver closed the connection before answering"
    if first(http.client.IncompleteRead, urllib3.exceptions.IncompleteRead,
             requests.exceptions.ChunkedEncodingError):
        return "The receiver closed the connection in the middle of its response"
    if first(ConnectionResetError):
        return "Connection reset by the receiver"
    if first(BrokenPipeError):
        return "The receiver closed the connection while the request was being sent"
    if first(http.client.HTTPException):
        return "The receiver's answer is not valid HTTP"
    failure = first(OSError)
    strerror = getattr(failure, "strerror", None) if failure is not None else None
    if is_new_connection:
        return f"Could not connect to {where}" + (f": {strerror}" if strerror else "")
    if strerror:
        return f"The connection to {where} failed: {strerror}"
    if first(requests.ConnectionError, urllib3.exceptions.ProtocolError):
        return f"The connection to {where} failed"
    return f"The request to {where} failed"


def _where(url):
    """``(host, "host:port")`` of a URL, for messages."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "the receiver", parts.port
    except ValueError:
        return "the receiver", "the receiver"
    port = port or (443 if parts.scheme.lower() == "https" else 80)
    return host, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _seconds(value):
    return f"{value:g} s" if isinstance(value, (int, float)) else "the time allowed"


def _ssl_reason(exc):
    """The TLS library's reason, without its ``[SSL: CODE]`` tag and source line."""
    text = getattr(exc, "strerror", None) or str(exc)
    return re.sub(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(text)) or str(exc)
