"""The client itself: the bytes it sends, next to what requests sends for the same call,
and what it does with its connections. Against raw listeners on 127.0.0.1."""

import ipaddress
import threading
import time

import pytest
import requests

from djwebhooks import transport
from djwebhooks.exceptions import DeliveryError, DeliveryTimeout
from djwebhooks.ssrf import URLPolicy
from tests.receiver import RawReceiver, read_request

LOOPBACK = URLPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
HEADERS = {"Content-Type": "application/json", "User-Agent": "dj-webhooks",
           "webhook-id": "msg_1", "webhook-timestamp": "1700000000",
           "webhook-signature": "v1,abc="}


class Recorder:
    """A raw receiver that answers ``answer`` to every request, keeping each connection
    open, and records the requests' bytes and the connection each came on."""

    def __init__(self, answer=OK):
        self.answer = answer
        self.requests = []  # (connection number, bytes)
        self._lock = threading.Lock()
        self._count = 0

    def __call__(self, connection):
        with self._lock:
            self._count += 1
            number = self._count
        while data := read_request(connection):
            self.requests.append((number, data))
            connection.sendall(self.answer)


def post(url, body=b"{}", headers=HEADERS, body_limit=100, session=None):
    return transport.post(url, body, headers, timeout=(5, 5), body_limit=body_limit,
                          session=session, policy=LOOPBACK)


def sent_by_requests(url, body, headers):
    """The bytes requests' ``Session.send`` of a prepared request puts on the wire."""
    recorder = Recorder()
    with RawReceiver(recorder) as raw, requests.Session() as session:
        port = raw.port
        session.trust_env = False
        prepared = requests.PreparedRequest()
        prepared.prepare(method="POST", url=url.format(port=raw.port), headers=headers,
                         data=body)
        session.send(prepared, timeout=(5, 5), allow_redirects=False).close()
    [(_, data)] = recorder.requests
    return data.replace(str(port).encode(), b"PORT")


def sent_by_transport(url, body, headers):
    recorder = Recorder()
    with RawReceiver(recorder) as raw, transport.new_session() as session:
        port = raw.port
        post(url.format(port=port), body, headers, session=session)
    [(_, data)] = recorder.requests
    return data.replace(str(port).encode(), b"PORT")


@pytest.mark.parametrize(("url", "body", "headers"), [
    ("http://127.0.0.1:{port}/hook/", b'{"a":1}', HEADERS),
    ("http://127.0.0.1:{port}/hook/?x=1&y=%7Bé%7D", b'{"a":1}', HEADERS),
    ("http://127.0.0.1:{port}", b'{"a":1}', HEADERS),
    # Less plain calls, which requests prepares itself: an empty body, a str body,
    # headers of its own that clash with those added.
    ("http://127.0.0.1:{port}/hook/", b"", HEADERS),
    ("http://127.0.0.1:{port}/hook/", "é", HEADERS),
    ("http://127.0.0.1:{port}/hook/", b"{}", {**HEADERS, "content-length": "2"}),
    ("http://127.0.0.1:{port}/hook/", b"{}", {"X-A": "1", "x-a": "2"}),
])
def test_the_request_is_the_one_requests_sends(url, body, headers):
    assert sent_by_transport(url, body, headers) == sent_by_requests(url, body, headers)


def test_a_connection_is_reused_and_one_cut_short_is_not():
    recorder = Recorder(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
    with RawReceiver(recorder) as raw, transport.new_session() as session:
        url = f"http://127.0.0.1:{raw.port}/hook/"
        assert post(url, session=session).body == b"0123456789"
        assert post(url, session=session).body == b"0123456789"
        # Reading 4 of the 10 bytes leaves the rest unread: that connection is closed.
        assert post(url, session=session, body_limit=4).body == b"0123"
        assert post(url, session=session).body == b"0123456789"
    assert [number for number, _ in recorder.requests] == [1, 1, 1, 2]


def test_an_invalid_header_value_fails_before_anything_is_sent():
    recorder = Recorder()
    with RawReceiver(recorder) as raw, pytest.raises(DeliveryError) as raised:
        port = raw.port
        post(f"http://127.0.0.1:{port}/hook/", headers={"X-Bad": "a\r\nInjected: 1"})
    assert str(raised.value) == f"The request to 127.0.0.1:{port} failed"
    assert raised.value.details.startswith("InvalidHeader: ")
    assert recorder.requests == []



def test_a_short_deadline_after_a_long_one_is_kept():
    """The watchdog, asleep until a long deadline, is woken for a shorter one."""
    def silent(connection):
        read_request(connection)
        time.sleep(3)  # never answers within the deadline

    recorder = Recorder()
    with RawReceiver(recorder) as fast, RawReceiver(silent) as slow:
        # Ended long before its deadline: the watchdog sleeps until then.
        transport.post(f"http://127.0.0.1:{fast.port}/hook/", b"{}", HEADERS, timeout=(5, 5),
                       body_limit=100, policy=LOOPBACK, total_timeout=60)
        started = time.monotonic()
        with pytest.raises(DeliveryTimeout) as raised:
            transport.post(f"http://127.0.0.1:{slow.port}/hook/", b"{}", HEADERS,
                           timeout=(5, 5), body_limit=100, policy=LOOPBACK,
                           total_timeout=0.5)
        assert time.monotonic() - started < 2
    assert str(raised.value) == "The request took longer than its total deadline (0.5 s)."
