"""A real HTTP receiver on 127.0.0.1 for wire-level tests, scriptable per request."""

import collections
import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    """One request as it arrived on the wire."""

    method: str
    path: str
    headers: dict
    body: bytes
    client: tuple = ()  # the client's (host, port): one per connection


@dataclass
class Reply:
    """How the receiver answers one request."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict = field(default_factory=lambda: {"Content-Type": "text/plain"})
    delay: float = 0.0  # seconds before answering
    drip: float = 0.0  # seconds between body bytes
    header_drip: float = 0.0  # seconds between bytes of the status line and headers
    #: A ``threading.Barrier`` to wait at before answering: 503 if it breaks (its
    #: parties were not all in flight at once).
    barrier: object = None


class _Server(ThreadingHTTPServer):
    # Many clients connect at once in some tests: with the default backlog of 5, the kernel
    # drops the rest of their handshakes, and they connect a second or more later.
    request_queue_size = 256


class Receiver:
    """A threaded server; ``replies`` is a queue of scripted answers, then ``default``."""

    def __init__(self):
        self.requests = []
        self.replies = []
        self.default = Reply()
        self.routes = {}  # path -> Reply, before ``replies`` and ``default``
        #: A function of each ``Received`` request (called under a lock) that returns its
        #: ``Reply``, or None for the usual one; before everything else.
        self.respond = None
        self.in_flight = 0
        self.most_in_flight = 0  # the most requests read and not yet answered at once
        self.most_in_flight_by_path = collections.Counter()
        self._lock = threading.Lock()
        receiver = self
        in_flight = collections.Counter()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    received = Received("POST", self.path,
                                        {k.lower(): v for k, v in self.headers.items()},
                                        body, self.client_address[:2])
                    receiver.requests.append(received)
                    reply = (receiver.respond and receiver.respond(received)) or \
                        receiver.routes.get(self.path) or (
                            receiver.replies.pop(0) if receiver.replies else receiver.default
                        )
                    receiver.in_flight += 1
                    receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight)
                    in_flight[self.path] += 1
                    most = receiver.most_in_flight_by_path
                    most[self.path] = max(most[self.path], in_flight[self.path])
                self.counted = True
                try:
                    self.answer(reply)
                finally:
                    self.answering()

            def answering(self):
                """Stop counting this request as in flight: from its answer's first byte
                the client may have it, and send its next request."""
                if self.counted:
                    self.counted = False
                    with receiver._lock:
                        receiver.in_flight -= 1
                        in_flight[self.path] -= 1

            def answer(self, reply):
                if reply.barrier is not None:
                    try:
                        reply.barrier.wait()
                    except threading.BrokenBarrierError:
                        reply = Reply(status=503, body=b"not all at once")
                if reply.delay:
                    time.sleep(reply.delay)
                self.answering()
                try:
                    if reply.header_drip:
                        head = (f"HTTP/1.1 {reply.status} OK\r\nContent-Length: "
                                f"{len(reply.body)}\r\n\r\n").encode()
                        for index in range(len(head)):
                            self.wfile.write(head[index : index + 1])
                            time.sleep(reply.header_drip)
                        self.wfile.write(reply.body)
                        return
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    if reply.drip:
                        for index in range(len(reply.body)):
                            self.wfile.write(reply.body[index : index + 1])
                            self.wfile.flush()
                            time.sleep(reply.drip)
                    else:
                        self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A client that hangs up early (timeouts, capped reads) is expected here.
        self.server.handle_error = lambda request, client_address: None
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self):
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class RawReceiver:
    """A TCP listener on 127.0.0.1 that hands each connection it accepts to
    ``handle(connection)`` on a thread of its own: for receivers that break HTTP or TLS in
    ways a real server will not. Connections are closed when the block ends."""

    def __init__(self, handle):
        self.handle = handle
        self.connections = []
        self._stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self):
        return self.listener.getsockname()[1]

    def _accept(self):
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(5)
            self.connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection):
        with contextlib.suppress(OSError):  # the client hung up, as it may
            self.handle(connection)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.listener.close()
        for connection in self.connections:
            connection.close()


@contextlib.contextmanager
def unanswered_port():
    """The port of a listener on 127.0.0.1 whose accept queue is full: the kernel drops
    further connection attempts, so connecting to it times out as it does to a host that
    never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(3):
                filler = socket.socket()
                fillers.append(filler)
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            yield port
        finally:
            for filler in fillers:
                filler.close()


def read_request(connection):
    """Read one HTTP request (its head and a Content-Length body) from a raw connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
