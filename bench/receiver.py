"""A fast local webhook receiver, run in its own process: ``python -m bench.receiver``.

asyncio on one thread, HTTP/1.1 keep-alive, ``TCP_NODELAY``, a hand-rolled parser that
understands just what the benchmarks send (``Content-Length`` bodies, no pipelining).
Paths choose the answer:

- ``/delay/<ms>/...`` answers 200 after ``ms`` milliseconds (``/delay/<ms>/log/...`` also
  notes when it answered, as ``/log/`` does its arrivals);
- ``/hang/...`` reads the request and never answers (the client's timeout ends it);
- ``/log/...`` answers 200 at once and notes when it arrived (``time.time()``), with its
  ``webhook-id`` header;
- anything else answers 200 at once.

``GET /stats`` returns counts of the requests received, as JSON; ``GET /arrivals`` returns
(and forgets) the notes taken on ``/log/...``: ``[[path, webhook_id, time], ...]``. The
process prints ``port <n>`` on stdout once it listens, and stops when its stdin is closed.

``ReceiverProcess`` starts it from the benchmark (a separate process, so it never competes
with the code under test for the GIL).
"""

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class Server:
    def __init__(self):
        self.counts = Counter()
        self.arrivals = []

    async def handle(self, reader, writer):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, _, header_lines = head.partition(b"\r\n")
                method, path, _ = request_line.split(b" ", 2)
                arrived = time.time()
                length, close, webhook_id = 0, False, ""
                for line in header_lines.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                    elif name == b"webhook-id":
                        webhook_id = value.strip().decode()
                if length:
                    await reader.readexactly(length)
                if method == b"GET" and path == b"/stats":
                    writer.write(json_response(dict(self.counts)))
                elif method == b"GET" and path == b"/arrivals":
                    arrivals, self.arrivals = self.arrivals, []
                    writer.write(json_response(arrivals))
                elif path.startswith(b"/hang/"):
                    self.counts["hang"] += 1
                    await reader.read()  # until the client gives up and closes
                    return
                elif path.startswith(b"/log/"):
                    self.counts["log"] += 1
                    self.arrivals.append([path.decode(), webhook_id, arrived])
                    writer.write(OK)
                else:
                    delay = delay_of(path)
                    self.counts["delay" if delay else "ok"] += 1
                    if delay:
                        await asyncio.sleep(delay)
                        if path.startswith(b"/delay/") and b"/log/" in path:
                            self.arrivals.append([path.decode(), webhook_id, time.time()])
                    writer.write(OK)
                if close:
                    return
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                ValueError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()



def json_response(data):
    body = json.dumps(data).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


def delay_of(path):
    """Seconds to wait before answering ``path`` (``/delay/<ms>/...``), or 0."""
    if not path.startswith(b"/delay/"):
        return 0.0
    return int(path.split(b"/")[2]) / 1000


async def serve(port):
    server = Server()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", port, backlog=1024)
    print(f"port {listener.sockets[0].getsockname()[1]}", flush=True)
    loop = asyncio.get_running_loop()
    # Stop when the parent closes our stdin (or dies); open connections just end with us.
    await loop.run_in_executor(None, sys.stdin.read)
    sys.stdout.flush()
    os._exit(0)


class ReceiverProcess:
    """The receiver in a subprocess; ``url`` is its base URL (no trailing slash)."""

    def __init__(self):
        self.process = None
        self.port = None

    def __enter__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver"], cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )
        line = self.process.stdout.readline()
        if not line.startswith("port "):
            self.process.kill()
            raise RuntimeError(f"the receiver did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def __exit__(self, *exc):
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def stats(self):
        """Counts of requests received so far: ``{"ok": n, "delay": n, "hang": n, ...}``."""
        return Counter(self._get("/stats"))

    def arrivals(self):
        """``[path, webhook_id, time.time()]`` of each request to ``/log/...`` since the last
        call."""
        return self._get("/arrivals")

    def _get(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
