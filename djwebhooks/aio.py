"""The asynchronous HTTP client: many requests in flight on one thread, with aiohttp.

Installed with ``pip install 'dj-webhooks[async]'``, and imported only by the asynchronous
sending mode (``SEND_MODE = "async"``). It keeps the promises of ``transport``: every
connection goes to an address ``ssrf`` has checked (aiohttp is given a resolver that
vets each address, and the URL is checked first, IP literals included); every request
has a total deadline, from the DNS lookup to the last byte read; at most ``body_limit``
bytes of the answer are read (and decompressed); redirects are not followed, nothing is
taken from the environment, no cookies are kept. Failures are raised as the same
``DeliveryError`` subclasses, with the same sentences, as ``transport``'s.

``EventLoop`` is the process's loop on its own daemon thread: callers on other threads
hand it coroutines and get ``concurrent.futures.Future``s back.
"""

import asyncio
import contextlib
import contextvars
import errno
import os
import socket
import ssl
import sys
import threading
import zlib

import aiohttp
from aiohttp.abc import AbstractResolver

from djwebhooks import ssrf, transport
from djwebhooks.exceptions import (
    DeliveryConnectionError,
    DeliveryError,
    DeliveryInvalidURL,
    DeliveryRefused,
    DeliveryTimeout,
)

#: The URL policy and the state of the request being made, for the resolver (which runs
#: in the request's task): ``(policy, state)``.
_request = contextvars.ContextVar("djwebhooks_request", default=None)


class _GuardedResolver(AbstractResolver):
    """Looks names up on ``transport``'s resolver threads, and returns only addresses the
    request's URL policy allows; one refused address refuses the name, as in ``ssrf``."""

    async def resolve(self, host, port=0, family=socket.AF_UNSPEC):
        policy, state = _request.get() or (ssrf.URLPolicy(), {})
        future = transport._resolvers.submit(ssrf.resolve, host, port, policy)
        state["looking_up"] = host
        addresses = await asyncio.wrap_future(future)
        state["looking_up"] = None
        return [
            {"hostname": host, "host": str(address), "port": port,
             "family": socket.AF_INET6 if address.version == 6 else socket.AF_INET,
             "proto": 0, "flags": socket.AI_NUMERICHOST}
            for address in addresses
        ]

    async def close(self):
        pass


def _tls_context():
    """The same certificates as the threaded client's: certifi's bundle when installed
    (as requests uses), the system's otherwise."""
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


class Client:
    """An aiohttp session set up for webhooks; make and use it on one event loop."""

    def __init__(self):
        connector = aiohttp.TCPConnector(
            resolver=_GuardedResolver(), use_dns_cache=False, limit=0, limit_per_host=0,
            ssl=_tls_context(), enable_cleanup_closed=sys.version_info < (3, 12, 7),
        )
        self.session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
            auto_decompress=False, skip_auto_headers=("Accept", "Accept-Encoding",
                                                      "User-Agent"),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self):
        await self.session.close()

    async def post(self, url, body, headers, *, timeout, body_limit, policy=None,
                   total_timeout=transport.DEFAULT_TOTAL_TIMEOUT):
        """POST ``body`` to ``url`` and return a ``transport.Response``; the arguments and
        the errors raised are ``transport.post``'s."""
        policy = policy or ssrf.URLPolicy()
        transport.check_url(url, policy)
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        state = {"reading": False, "looking_up": None}
        _request.set((policy, state))  # this task's own context: the resolver reads it
        loop = asyncio.get_running_loop()
        end = loop.time() + total_timeout
        try:
            async with _within(total_timeout):
                if loop.time() >= end:
                    raise TimeoutError  # past the deadline already: nothing is sent
                return await self._post(url, body, headers, connect, read, body_limit,
                                        state)
        except DeliveryError:
            raise
        except (TimeoutError, asyncio.TimeoutError) as exc:
            if isinstance(exc, aiohttp.ServerTimeoutError):
                raise _map_error(exc, url, (connect, read), state["reading"]) from exc
            if state["looking_up"]:
                raise DeliveryTimeout(
                    f"The DNS lookup of {state['looking_up']} did not finish within the "
                    f"request's total deadline ({total_timeout:g} s).") from exc
            raise DeliveryTimeout(f"The request took longer than its total deadline "
                                  f"({total_timeout:g} s).") from exc
        except ssrf.TargetURLRefused as exc:
            raise DeliveryRefused(str(exc)) from None
        except Exception as exc:
            mapped = _map_error(exc, url, (connect, read), state["reading"])
            if mapped is exc:
                raise  # not a transport error: a bug, let it show as it is
            raise mapped from exc

    async def _post(self, url, body, headers, connect, read, body_limit, state):
        headers = {"Accept-Encoding": "identity", **headers}
        limits = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=connect,
                                       sock_read=read)
        async with self.session.post(url, data=body, headers=headers, timeout=limits,
                                     allow_redirects=False) as response:
            state["reading"] = True
            content = await _read_body(response, body_limit) if body_limit else b""
            if not _finished(response):
                response.close()  # the rest is never downloaded: this connection ends
            return transport.Response(
                status=response.status,
                reason=response.reason or "",
                content_type=response.headers.get("Content-Type", ""),
                body=content,
                retry_after=response.headers.get("Retry-After", ""),
            )


def _within(seconds):
    """A block that must end within ``seconds``, or raise ``TimeoutError``."""
    if sys.version_info >= (3, 11):
        return asyncio.timeout(seconds)
    return _Timeout(seconds)  # pragma: no cover - Python 3.10


class _Timeout:
    """``asyncio.timeout`` for Python 3.10: cancels the task when time is up."""

    def __init__(self, seconds):
        self.seconds = seconds

    async def __aenter__(self):
        task = asyncio.current_task()
        self._expired = False

        def expire():
            self._expired = True
            task.cancel()

        self._handle = asyncio.get_running_loop().call_later(self.seconds, expire)

    async def __aexit__(self, kind, exc, tb):
        self._handle.cancel()
        if self._expired and kind is asyncio.CancelledError:
            raise TimeoutError
        return False


def _finished(response):
    return response.content.is_eof()  # the whole body read: the connection can be kept


async def _read_body(response, limit):
    """The first ``limit`` bytes of the body, decompressed if it came compressed (gzip or
    deflate, although identity was asked for); a body in another encoding is kept as it
    came. At most ``limit`` bytes are ever held, compressed or not."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    decoder = None
    if encoding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decoder = zlib.decompressobj()
    parts, size = [], 0
    while size < limit:
        chunk = await response.content.read(limit - size if decoder is None else 65536)
        if not chunk:
            break
        if decoder is not None:
            try:
                chunk = decoder.decompress(chunk, limit - size)
            except zlib.error as exc:
                raise DeliveryError("The receiver's answer could not be decompressed",
                                    f"{type(exc).__name__}: {exc}") from exc
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _map_error(exc, url="", timeout=None, reading=False):
    """aiohttp's exceptions as ours, with the sentences ``transport`` uses for the same
    failures; ``exc`` itself when it is not a transport error."""
    host, where = transport._where(url)
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    details = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.InvalidURL):
        return DeliveryInvalidURL(f"The URL cannot be requested: {exc}", details)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return DeliveryTimeout(
            f"Timed out after {transport._seconds(connect)} connecting to {where}", details)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        waiting = "reading the response" if reading else "waiting for the response"
        return DeliveryTimeout(f"Timed out after {transport._seconds(read)} {waiting}",
                               details)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return DeliveryTimeout(f"Timed out waiting for {where}", details)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return DeliveryConnectionError(f"DNS lookup failed for {host}", details)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        reason = getattr(error, "verify_message", "") or transport._ssl_reason(error)
        return DeliveryConnectionError(f"TLS certificate not valid for {host}: {reason}",
                                       details)
    if isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
        error = getattr(exc, "os_error", exc)
        hint = "; does the receiver speak HTTPS on that port?" if \
            getattr(error, "reason", "") == "WRONG_VERSION_NUMBER" else ""
        return DeliveryConnectionError(
            f"TLS handshake with {where} failed: {transport._ssl_reason(error)}{hint}",
            details)
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        if isinstance(error, ConnectionRefusedError):
            return DeliveryConnectionError(f"Connection refused by {where}", details)
        strerror = getattr(error, "strerror", None)
        return DeliveryConnectionError(
            f"Could not connect to {where}" + (f": {strerror}" if strerror else ""), details)
    if isinstance(exc, aiohttp.ClientPayloadError) or (
            reading and isinstance(exc, aiohttp.ServerDisconnectedError)):
        return DeliveryConnectionError(
            "The receiver closed the connection in the middle of its response", details)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return DeliveryConnectionError(
            "The receiver closed the connection before answering", details)
    code = getattr(exc, "errno", None)
    if isinstance(exc, ConnectionResetError) or code == errno.ECONNRESET:
        return DeliveryConnectionError("Connection reset by the receiver", details)
    if isinstance(exc, BrokenPipeError) or code == errno.EPIPE:
        return DeliveryConnectionError(
            "The receiver closed the connection while the request was being sent", details)
    if isinstance(exc, aiohttp.ClientResponseError):
        return DeliveryError("The receiver's answer is not valid HTTP", details)
    if isinstance(exc, (aiohttp.ClientConnectionError, OSError)):
        strerror = getattr(exc, "strerror", None)
        return DeliveryConnectionError(
            f"The connection to {where} failed" + (f": {strerror}" if strerror else ""),
            details)
    if isinstance(exc, aiohttp.ClientError):
        return DeliveryError(f"The request to {where} failed", details)
    return exc


class EventLoop:
    """An asyncio loop on a daemon thread of its own, with one ``Client``."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.client = None
        self.thread = threading.Thread(target=self._run, name="djwebhooks-loop", daemon=True)
        self.thread.start()
        self._ready.wait()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self):
        self.client = Client()

    def call_soon(self, callback, *args):
        """Call ``callback(*args)`` on the loop's thread, soon."""
        self.loop.call_soon_threadsafe(callback, *args)

    def submit(self, coroutine):
        """Run ``coroutine`` on the loop; return a ``concurrent.futures.Future``."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self, timeout=5.0):
        """Close the client's connections and stop the loop."""
        if not self.thread.is_alive():
            return
        closing = self.submit(self.client.close())
        with contextlib.suppress(Exception):  # a loop that will not answer is left behind
            closing.result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)


_shared = None
_shared_pid = None
_shared_lock = threading.Lock()


def event_loop():
    """The process's shared ``EventLoop``, started on first use (and again in a forked
    child, which has none of its parent's threads)."""
    global _shared, _shared_pid
    with _shared_lock:
        if _shared is None or _shared_pid != os.getpid() or not _shared.thread.is_alive():
            _shared, _shared_pid = EventLoop(), os.getpid()
        return _shared
