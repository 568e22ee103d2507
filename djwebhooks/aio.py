"""The asynchronous HTTP client: many requests in flight on one thread, on asyncio alone.

Imported only by the asynchronous sending mode (``SEND_MODE = "async"``). A webhook is
one kind of request (a POST of bytes already built, whose answer matters for its status
and the start of its body), so the client is one asyncio protocol per connection and a
reader of HTTP/1.1 answers, without a general HTTP library's layers: on the benchmark
machine it spends about a third of the CPU time per request that aiohttp's client does
(see the Performance page).

It keeps the promises of ``transport``: the URL is checked first, IP literals included,
and every connection goes to an address ``ssrf`` has checked; every request has a total
deadline, from the DNS lookup to the last byte read, besides the connect and read
timeouts; at most ``body_limit`` bytes of the answer are read (and decompressed), and an
answer's head is bounded too; redirects are not followed, nothing is taken from the
environment, no cookies are kept. Requests are prepared by ``transport``'s rules (those
of ``requests``), and failures are raised as the same ``DeliveryError`` subclasses, with
the same sentences.

A connection is used again only after an answer whose end was certain (its length given
once, or chunks that ended), with nothing after it; anything else closes it.

``EventLoop`` is the process's loop on its own daemon thread: callers on other threads
hand it coroutines and get ``concurrent.futures.Future``s back.
"""

import asyncio
import contextlib
import os
import re
import socket
import ssl
import sys
import threading
import zlib

from djwebhooks import ssrf, transport
from djwebhooks.exceptions import (
    DeliveryConnectionError,
    DeliveryError,
    DeliveryInvalidURL,
    DeliveryRefused,
    DeliveryTimeout,
)

#: The longest head (status line and header fields) an answer may have, in bytes.
MAX_HEAD_BYTES = 65536
#: The most header lines an answer may have (as ``http.client``).
MAX_HEADERS = 100
#: The longest line of a chunked body's framing (a chunk's size, a trailer field).
MAX_CHUNK_LINE = 4096
#: How long a connection is kept for the next request to its receiver, unused.
KEEPALIVE_SECONDS = 15.0
#: How early a timer may run and still count as on time, in seconds.
_EARLY = 0.001

_STATUS_LINE = re.compile(rb"HTTP/1\.([0-9]) +([1-9][0-9]{2})(?: (.*))?")
#: The header fields the client reads; all others are skipped.
_WANTED = frozenset({b"content-length", b"transfer-encoding", b"connection",
                     b"content-type", b"retry-after", b"content-encoding"})
#: The fields whose every value counts (the others: the first one, as ``http.client``).
_JOINED = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_NO_BODY = frozenset({204, 304})


class _NotHTTP(Exception):
    """The answer broke HTTP/1.1's rules; the text says how."""


class _Connection(asyncio.Protocol):
    """One connection to a receiver: it writes a request, hands what comes back to the
    request's ``_Answer``, and ends the request when the answer is read, when it breaks
    HTTP, when the connection ends, or when time is up."""

    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.closed = False
        self.idle_since = 0.0
        self.future = None  # the request's, while one is being answered
        self.answer = None  # its _Answer, while a request is being answered
        self.timer = None
        self.reusable = False
        self.forget = None  # called with the connection once it is closed

    # asyncio's side
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.future is None or self.future.done():
            self.close()  # bytes nobody asked for: not a connection to use again
            return
        self.last = self.loop.time()
        try:
            if self.answer.feed(data):
                self._answered()
        except _NotHTTP as exc:
            self._fail(DeliveryError("The receiver's answer is not valid HTTP", str(exc)))
        except DeliveryError as exc:
            self._fail(exc)

    def eof_received(self):
        self._ended(None)
        return False  # close the transport

    def connection_lost(self, exc):
        self.closed = True
        self._ended(exc)
        if self.forget is not None:
            self.forget(self)

    # the client's side
    def close(self):
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def send(self, request, read, deadline, seconds, limit):
        """Write ``request`` and return the future of its answer: ``(status, reason,
        fields, body)``. ``read`` bounds each wait for bytes, ``deadline`` (the loop's
        time) the whole, ``limit`` the body kept."""
        loop = self.loop
        self.future = future = loop.create_future()
        self.answer = _Answer(limit)
        self.read, self.deadline, self.seconds = read, deadline, seconds
        self.last = loop.time()
        self.reusable = False
        self.timer = loop.call_at(self._next_check(), self._check_time)
        self.transport.write(request)
        return future

    def done(self):
        """End the exchange (answered, failed or given up): stop the timer, and close the
        connection unless it may carry the next request."""
        if self.timer is not None:
            self.timer.cancel()
        future, self.future, self.answer = self.future, None, None
        answered = future is not None and future.done() and not future.cancelled() and \
            future.exception() is None
        if not (answered and self.reusable and not self.closed):
            self.close()

    # time
    def _next_check(self):
        if self.read is None:
            return self.deadline
        return min(self.deadline, self.last + self.read)

    def _check_time(self):
        if self.future is None or self.future.done():
            return
        # A timer may run a little before its time (within the clock's resolution).
        now = self.loop.time() + _EARLY
        if now >= self.deadline:
            self._fail(DeliveryTimeout(f"The request took longer than its total deadline "
                                       f"({self.seconds:g} s)."))
        elif self.read is not None and now >= self.last + self.read:
            waiting = "reading the response" if self.answer.head_read else \
                "waiting for the response"
            self._fail(DeliveryTimeout(
                f"Timed out after {transport._seconds(self.read)} {waiting}",
                f"TimeoutError: no byte came for {self.read:g} s"))
        else:
            self.timer = self.loop.call_at(self._next_check(), self._check_time)

    # the end
    def _answered(self):
        answer = self.answer
        self.reusable = answer.reusable
        self.future.set_result((answer.status, answer.reason, answer.fields,
                                b"".join(answer.parts)))

    def _fail(self, exc):
        if self.future is not None and not self.future.done():
            self.future.set_exception(exc)
            self.close()

    def _ended(self, exc):
        """The receiver closed the connection (``exc`` when it broke)."""
        future, answer = self.future, self.answer
        if future is None or future.done():
            return
        if exc is None and answer.ended():
            self._answered()  # the end of the body, or the last chunk had come
            return
        if isinstance(exc, ConnectionResetError):
            message = "Connection reset by the receiver"
        elif isinstance(exc, BrokenPipeError):
            message = "The receiver closed the connection while the request was being sent"
        elif answer.head_read:
            message = "The receiver closed the connection in the middle of its response"
        else:
            message = "The receiver closed the connection before answering"
        details = f"{type(exc).__name__}: {exc}" if exc is not None else \
            f"EOF after {answer.received} bytes of the answer" if answer.received else \
            "EOF before any byte of the answer"
        if isinstance(exc, ssl.SSLError):
            message = f"The TLS connection failed: {transport._ssl_reason(exc)}"
        self._fail(DeliveryConnectionError(message, details))


class _Answer:
    """The reading of one answer, from the bytes given to ``feed()``: its informational
    answers skipped, its head parsed, its body framed (by its length, its chunks or the
    end of the connection) and kept up to ``limit`` bytes, decompressed. ``reusable``
    says, once it is read, whether its connection may carry the next request."""

    def __init__(self, limit):
        self.limit = limit
        self.buffer = bytearray()
        self.start = 0  # where to look on from in the buffer
        self.state = self._head  # reads what it can; True when it may read more
        self.received = 0
        self.informational = 0
        self.head_read = False
        self.complete = False
        self.reusable = False

    def feed(self, data):
        """Read ``data``; True once the answer is complete (or as much of it as is kept).
        Raises ``_NotHTTP`` or ``DeliveryError`` for an answer that cannot be read."""
        self.received += len(data)
        self.buffer += data
        while self.state is not None and self.state():
            pass
        return self.complete

    def ended(self):
        """The connection ended: True when that completes the answer (a body read to the
        end of the connection, or a chunked one whose last chunk had come)."""
        if self.state in (self._until_close, self._trailer):
            self._finish(False)
            return True
        return False

    def _finish(self, reusable):
        self.state = None
        self.complete = True
        self.reusable = reusable and self.keep_alive

    def _head(self):
        """Read one head; True when there is more to read in the buffer."""
        buffer = self.buffer
        end = _end_of_head(buffer, self.start)
        if end is None:
            if len(buffer) > MAX_HEAD_BYTES:
                raise _NotHTTP(f"the head of the answer is longer than {MAX_HEAD_BYTES} "
                               "bytes")
            self.start = max(0, len(buffer) - 3)
            return False
        if end > MAX_HEAD_BYTES:
            raise _NotHTTP(f"the head of the answer is longer than {MAX_HEAD_BYTES} bytes")
        lines = bytes(buffer[:end]).split(b"\n")
        del buffer[:end]
        self.start = 0
        status_line = lines[0].rstrip(b"\r")
        matched = _STATUS_LINE.fullmatch(status_line)
        if matched is None:
            raise _NotHTTP(f"not a status line: {status_line[:100]!r}")
        minor, status = matched.group(1), int(matched.group(2))
        if 100 <= status < 200 and status != 101:
            self.informational += 1
            if self.informational > transport.MAX_INFORMATIONAL_RESPONSES:
                raise DeliveryError(
                    f"The receiver sent more than {transport.MAX_INFORMATIONAL_RESPONSES} "
                    "informational (1xx) responses without a final one.")
            return True  # read and discarded: the answer follows
        fields = _fields(lines)
        self.head_read = True
        self.status = status
        self.reason = (matched.group(3) or b"").decode("latin-1").strip()
        self.fields = fields
        self.parts, self.size, self.decoder = [], 0, _decoder(fields)
        connection = fields.get(b"connection", "").lower()
        self.keep_alive = minor == b"1" and "close" not in connection
        coding = fields.get(b"transfer-encoding")
        if status in _NO_BODY or status == 101:
            self.keep_alive = self.keep_alive and status != 101
            return self._end_of_body()
        if coding is not None:
            if fields.get(b"content-length") is not None:
                self.keep_alive = False  # both framings given: trust neither for the next
            if coding.lower().rsplit(",", 1)[-1].strip() == "chunked":
                self.state, self.start = self._chunk_size, 0
            else:
                self.state, self.keep_alive = self._until_close, False
        elif (length := fields.get(b"content-length")) is not None:
            values = {value.strip() for value in length.split(",")}
            if len(values) != 1 or not (value := values.pop()).isdigit() or \
                    not value.isascii():
                raise _NotHTTP(f"Content-Length is not one length: {length[:100]!r}")
            self.left = int(value)
            self.state = self._by_length
        else:
            self.state, self.keep_alive = self._until_close, False
        if self.limit <= 0:  # nothing of the body is wanted: read no more
            self._finish(self.state == self._by_length and self.left == 0 and not buffer)
            return False
        return bool(buffer) or self.state == self._by_length and self.left == 0

    def _end_of_body(self):
        """The body is read: the connection is reusable if nothing came after it."""
        self._finish(not self.buffer)
        return False

    def _keep(self, chunk):
        """Keep ``chunk`` of the body, decompressed, up to the limit; True once full."""
        room = self.limit - self.size
        if self.decoder is not None:
            try:
                chunk = self.decoder.decompress(chunk, room)
            except zlib.error as exc:
                raise DeliveryError("The receiver's answer could not be decompressed",
                                    f"{type(exc).__name__}: {exc}") from exc
        elif len(chunk) > room:
            chunk = chunk[:room]
        if chunk:
            self.parts.append(chunk)
            self.size += len(chunk)
        return self.size >= self.limit

    def _full(self):
        self._finish(False)  # the rest is never read: this connection ends
        return False

    def _taken(self):
        """What the buffer holds of the body's length (or the chunk's) left to read."""
        buffer = self.buffer
        take = min(self.left, len(buffer))
        chunk = bytes(buffer[:take])
        del buffer[:take]
        self.left -= take
        return chunk

    def _by_length(self):
        if self._keep(self._taken()) and self.left:
            return self._full()
        if not self.left:
            return self._end_of_body()
        return False

    def _until_close(self):
        chunk = bytes(self.buffer)
        self.buffer.clear()
        if self._keep(chunk):
            return self._full()
        return False

    def _line(self):
        """The next line of a chunked body's framing, without its end; None until whole."""
        buffer = self.buffer
        end = buffer.find(b"\n", self.start)
        if end < 0:
            if len(buffer) > MAX_CHUNK_LINE:
                raise _NotHTTP(f"a chunk's line is longer than {MAX_CHUNK_LINE} bytes")
            self.start = len(buffer)
            return None
        if end > MAX_CHUNK_LINE:
            raise _NotHTTP(f"a chunk's line is longer than {MAX_CHUNK_LINE} bytes")
        line = bytes(buffer[:end]).rstrip(b"\r")
        del buffer[:end + 1]
        self.start = 0
        return line

    def _chunk_size(self):
        line = self._line()
        if line is None:
            return False
        size = line.split(b";", 1)[0].strip()
        if not size or len(size) > 16 or size.strip(b"0123456789abcdefABCDEF"):
            raise _NotHTTP(f"not a chunk size: {line[:100]!r}")
        self.left = int(size, 16)
        if self.left == 0:
            self.state, self.trailers = self._trailer, 0
        else:
            self.state = self._chunk
        return True

    def _chunk(self):
        if self._keep(self._taken()):
            return self._full()
        if self.left:
            return False
        self.state = self._chunk_end
        return True

    def _chunk_end(self):
        line = self._line()
        if line is None:
            return False
        if line:
            raise _NotHTTP("a chunk is longer than its size")
        self.state = self._chunk_size
        return True

    def _trailer(self):
        line = self._line()
        if line is None:
            return False
        if not line:
            return self._end_of_body()
        self.trailers += 1
        if self.trailers > MAX_HEADERS:
            raise _NotHTTP(f"more than {MAX_HEADERS} trailer fields")
        return True


def _end_of_head(buffer, start):
    """Where the head in ``buffer`` ends (after its empty line), or None. Lines may end in
    a bare LF, as ``http.client`` allows."""
    ends = [found + length for found, length in (
        (buffer.find(b"\n\r\n", start), 3), (buffer.find(b"\n\n", start), 2)) if found >= 0]
    return min(ends) if ends else None


def _fields(lines):
    """The header fields the client reads, from a head's lines (the status line first):
    ``{name: value}``, names in lower case, values as text; a field given more than once
    is joined with commas."""
    if len(lines) - 3 > MAX_HEADERS:  # the status line and the empty line at the end
        raise _NotHTTP(f"more than {MAX_HEADERS} header fields")
    fields = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or line[:1] in (b" ", b"\t"):
            continue  # a broken line, or the continuation of one: nothing read from it
        name = name.strip().lower()
        if name in _WANTED:
            value = value.strip().decode("latin-1")
            if name not in fields:
                fields[name] = value
            elif name in _JOINED:
                fields[name] = f"{fields[name]}, {value}"
    return fields


def _decoder(fields):
    encoding = fields.get(b"content-encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _Deflate()
    return None  # identity, or an encoding kept as it came


class _Deflate:
    """A decoder of ``deflate`` bodies: zlib's format, as the standard says, or the raw
    deflate some servers send instead (as urllib3 reads them too)."""

    def __init__(self):
        self._decoder = zlib.decompressobj()
        self._fed = b""  # until zlib's two-byte header has been read: what came

    def decompress(self, data, max_length):
        if self._fed is None:
            return self._decoder.decompress(data, max_length)
        self._fed += data
        try:
            decoded = self._decoder.decompress(data, max_length)
        except zlib.error:
            fed, self._fed = self._fed, None
            self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._decoder.decompress(fed, max_length)
        if len(self._fed) >= 2:
            self._fed = None  # a zlib header: zlib's format it is
        return decoded


def _tls_context():
    """The same certificates as the threaded client's: certifi's bundle when installed
    (as requests uses), the system's otherwise."""
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


class _Prepared:
    """What the requests to one URL share: where they go, and the start of their head."""

    __slots__ = ("key", "host", "port", "tls", "head")

    def __init__(self, target, policy):
        tls = target.scheme == "https"
        default = 443 if tls else 80
        port = target.port or default
        host = f"[{target.host}]" if ":" in target.host else target.host
        authority = host if port == default else f"{host}:{port}"
        self.key = (target.scheme, target.host, port, policy)
        self.host, self.port, self.tls = target.host, port, tls
        self.head = (f"POST {target.path} HTTP/1.1\r\nHost: {authority}\r\n"
                     "Accept-Encoding: identity\r\n")


class Client:
    """The connections of one event loop to receivers; make and use it on that loop."""

    def __init__(self):
        self._idle = {}  # key -> connections kept for the next request, the newest last
        self._open = set()
        self._tls = None
        self._sweeping = None
        self._prepared = {}

    async def close(self):
        """Close every connection."""
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
        self._open.clear()

    async def post(self, url, body, headers, *, timeout, body_limit, policy=None,
                   total_timeout=transport.DEFAULT_TOTAL_TIMEOUT):
        """POST ``body`` to ``url`` and return a ``transport.Response``; the arguments and
        the errors raised are ``transport.post``'s."""
        policy = policy or ssrf.URLPolicy()
        transport.check_url(url, policy)
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total_timeout
        try:
            prepared, request = self._request(url, body, headers, policy)
            if loop.time() >= deadline:
                raise TimeoutError  # past the deadline already: nothing is sent
            connection = self._take(prepared.key)
            if connection is None:
                connection = await self._connect(prepared, policy, connect, deadline,
                                                 total_timeout, url)
            try:
                status, reason, fields, content = await connection.send(
                    request, read, deadline, total_timeout, body_limit)
            finally:
                connection.done()
                if not connection.closed:
                    self._keep(prepared.key, connection)
        except DeliveryError:
            raise
        except (TimeoutError, asyncio.TimeoutError) as exc:
            raise DeliveryTimeout(f"The request took longer than its total deadline "
                                  f"({total_timeout:g} s).") from exc
        except ssrf.TargetURLRefused as exc:
            raise DeliveryRefused(str(exc)) from None
        except Exception as exc:
            mapped = transport._map_error(exc, url, (connect, read))
            if mapped is exc:
                raise  # not a transport error: a bug, let it show as it is
            raise mapped from exc
        return transport.Response(
            status=status, reason=reason, content_type=fields.get(b"content-type", ""),
            body=content, retry_after=fields.get(b"retry-after", ""))

    def _request(self, url, body, headers, policy):
        """``(prepared, bytes)``: the request to send, by ``transport``'s rules."""
        target, body, headers = transport._request(url, body, headers)
        if not target.host:
            raise DeliveryInvalidURL("The URL cannot be requested: it has no host",
                                     f"InvalidURL: {url!r}")
        prepared = self._prepared.get((target, policy))
        if prepared is None:
            if len(self._prepared) >= 1024:
                self._prepared.clear()
            prepared = self._prepared[target, policy] = _Prepared(target, policy)
        head = prepared.head + "".join([
            f"{name if type(name) is str else _text(name)}: "
            f"{value if type(value) is str else _text(value)}\r\n"
            for name, value in headers.items()])
        if type(body) is not bytes:
            # Text as UTF-8, as urllib3 sends it (and requests counted its length).
            body = b"" if body is None else body.encode("utf-8") \
                if isinstance(body, str) else bytes(body)
        return prepared, (head + "\r\n").encode("latin-1") + body

    def _take(self, key):
        """A kept connection for ``key`` that the receiver has not closed, or None."""
        connections = self._idle.get(key)
        while connections:
            connection = connections.pop()
            if not connection.closed:
                if not connections:
                    del self._idle[key]
                return connection
        self._idle.pop(key, None)
        return None

    def _keep(self, key, connection):
        connection.idle_since = connection.loop.time()
        self._idle.setdefault(key, []).append(connection)
        if self._sweeping is None:
            self._sweeping = connection.loop.call_later(KEEPALIVE_SECONDS, self._sweep)

    def _sweep(self):
        """Close the connections kept unused for ``KEEPALIVE_SECONDS``."""
        self._sweeping = None
        oldest = asyncio.get_running_loop().time() - KEEPALIVE_SECONDS
        for key, connections in list(self._idle.items()):
            while connections and (connections[0].closed or
                                   connections[0].idle_since <= oldest):
                connections.pop(0).close()
            if not connections:
                del self._idle[key]
        if self._idle:
            self._sweeping = asyncio.get_running_loop().call_later(
                KEEPALIVE_SECONDS / 2, self._sweep)

    async def _connect(self, prepared, policy, connect, deadline, seconds, url):
        """A new connection to an address of ``prepared.host`` that ``policy`` allows."""
        loop = asyncio.get_running_loop()
        host, port = prepared.host, prepared.port
        _, where = transport._where(url)
        if ssrf.ip_literal(host) is not None:
            addresses = ssrf.resolve(host, port, policy)  # nothing to look up
        else:
            lookup = asyncio.wrap_future(transport._resolvers.submit(
                ssrf.resolve, host, port, policy))
            try:
                addresses = await asyncio.wait_for(lookup, max(0.0, deadline - loop.time()))
            except (TimeoutError, asyncio.TimeoutError):
                raise DeliveryTimeout(
                    f"The DNS lookup of {host} did not finish within the request's total "
                    f"deadline ({seconds:g} s).") from None
            except socket.gaierror as exc:
                raise DeliveryConnectionError(f"DNS lookup failed for {host}",
                                              f"{type(exc).__name__}: {exc}") from exc
        if self._tls is None and prepared.tls:
            self._tls = _tls_context()
        error = None
        for address in addresses:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError
            # Which bound ends the attempt, if time is up: the deadline or the timeout.
            by_deadline = connect is None or left <= connect
            try:
                async with _within(left if by_deadline else connect):
                    # The vetted address itself is connected to, never the name again.
                    _, connection = await loop.create_connection(
                        lambda: _Connection(loop), str(address), port,
                        ssl=self._tls if prepared.tls else None,
                        server_hostname=host if prepared.tls else None)
            except (TimeoutError, asyncio.TimeoutError):
                if by_deadline:
                    raise
                raise DeliveryTimeout(
                    f"Timed out after {transport._seconds(connect)} connecting to {where}",
                    f"TimeoutError: connecting to {address} port {port} took longer than "
                    f"{connect:g} s") from None
            except ssl.SSLCertVerificationError as exc:
                reason = exc.verify_message or transport._ssl_reason(exc)
                raise DeliveryConnectionError(
                    f"TLS certificate not valid for {host}: {reason}",
                    f"{type(exc).__name__}: {exc}") from exc
            except ssl.SSLError as exc:
                hint = "; does the receiver speak HTTPS on that port?" if \
                    exc.reason == "WRONG_VERSION_NUMBER" else ""
                raise DeliveryConnectionError(
                    f"TLS handshake with {where} failed: {transport._ssl_reason(exc)}{hint}",
                    f"{type(exc).__name__}: {exc}") from exc
            except OSError as exc:
                error = exc
                continue
            self._open.add(connection)
            connection.forget = self._open.discard
            return connection
        details = f"{type(error).__name__}: {error}"
        if isinstance(error, ConnectionRefusedError):
            raise DeliveryConnectionError(f"Connection refused by {where}", details)
        strerror = getattr(error, "strerror", None)
        raise DeliveryConnectionError(
            f"Could not connect to {where}" + (f": {strerror}" if strerror else ""), details)


def _text(value):
    return value.decode("latin-1") if isinstance(value, bytes) else value


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
