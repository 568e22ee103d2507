"""The async sending mode: many requests in flight on one event loop thread, kept to the
same rules as the threads (the sending tests also run whole in this mode: CI runs them with
DJWEBHOOKS_TEST_SEND_MODE=async)."""

import gzip
import os
import socket
import subprocess
import sys
import threading
import time
from io import StringIO

import pytest
from django.core import checks
from django.core.management import call_command

from djwebhooks import aio, conf, send_event, sending
from djwebhooks.exceptions import DeliveryTimeout, WebhookImproperlyConfigured
from djwebhooks.models import Delivery
from djwebhooks.worker import Worker
from tests.helpers import post_async
from tests.receiver import RawReceiver, Reply, read_request

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DATABASE = {"BACKEND": "djwebhooks.backends.database.DatabaseBackend"}


def sending_threads(before=()):
    """The names of dj-webhooks' threads, but those in ``before`` (left by other tests)."""
    return [thread.name for thread in threading.enumerate()
            if thread.name.startswith("djwebhooks") and thread not in before]


def test_many_requests_are_in_flight_at_once_on_one_thread(settings, make_target, user,
                                                           receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, **DATABASE, "READ_TIMEOUT": 20}
    # Every request waits at the receiver until all 60 are in flight: sent in turn, the
    # barrier would break (after 20 s) and the receiver would answer 503.
    receiver.default = Reply(barrier=threading.Barrier(60, timeout=20))
    for n in range(60):
        make_target(target_url=f"{receiver.url}/{n}/")
    send_event("project.update", {}, owner=user)
    seen, before = [], set(threading.enumerate())
    worker = Worker(concurrency=100, burst=True, mode="async", interval=0.05)
    watcher = threading.Thread(target=lambda: [seen.append(sending_threads(before)) or
                                               time.sleep(0.05) for _ in range(40)])
    watcher.start()
    assert worker.run() == 60
    watcher.join()
    assert Delivery.objects.filter(status="succeeded").count() == 60
    assert receiver.most_in_flight == 60
    # The loop's thread, and no thread per request (IP literals need no resolver threads).
    assert max(len(names) for names in seen) <= 1
    assert {name for names in seen for name in names} <= {"djwebhooks-loop"}


def test_the_worker_s_concurrency_caps_the_requests_in_flight(settings, make_target, user,
                                                               receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, **DATABASE}
    receiver.default = Reply(delay=0.1)
    for n in range(12):
        make_target(target_url=f"{receiver.url}/{n}/")
    send_event("project.update", {}, owner=user)
    assert Worker(concurrency=3, burst=True, mode="async", interval=0.05).run() == 12
    assert receiver.most_in_flight == 3


def test_a_stopped_worker_finishes_what_is_in_flight_and_gives_back_the_rest(
        settings, make_target, user, receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, **DATABASE}
    receiver.default = Reply(delay=0.5)
    for n in range(6):
        make_target(target_url=f"{receiver.url}/{n}/")
    send_event("project.update", {}, owner=user)
    worker = Worker(concurrency=2, mode="async", interval=0.05)
    runner = threading.Thread(target=worker.run)
    runner.start()
    deadline = time.monotonic() + 10
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    runner.join(10)
    assert not runner.is_alive()
    assert Delivery.objects.filter(status="succeeded").count() == 2
    pending = Delivery.objects.filter(status="pending")
    assert pending.count() == 4
    assert not pending.exclude(claimed_by="").exists()  # given back, due for any worker


@pytest.fixture
def async_mode(settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "SEND_MODE": "async"}


def test_a_compressed_answer_is_read_only_up_to_the_body_limit(async_mode, make_target,
                                                              user):
    # Identity was asked for; a receiver may still send 50 MB of zeros in 50 KB of gzip.
    bomb = gzip.compress(b"\x00" * 50_000_000)

    def answer(connection):
        read_request(connection)
        connection.sendall(b"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(bomb) + bomb)

    with RawReceiver(answer) as hostile:
        make_target(target_url=f"http://127.0.0.1:{hostile.port}/hook/")
        [delivery] = send_event("project.update", {}, owner=user)
    attempt = delivery.attempts.get()
    assert attempt.notification == "500 Oops"
    # The first 4,096 bytes, decompressed (NUL made storable); the rest never read.
    assert attempt.response_message == "\ufffd" * conf.get_setting("RESPONSE_BODY_LIMIT")


def test_an_answer_that_is_not_the_gzip_it_claims_is_a_failed_attempt(async_mode,
                                                                      make_target, user):
    def answer(connection):
        read_request(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                           b"Content-Length: 9\r\n\r\nnot gzip!")

    with RawReceiver(answer) as hostile:
        make_target(target_url=f"http://127.0.0.1:{hostile.port}/hook/")
        [delivery] = send_event("project.update", {}, owner=user)
    attempt = delivery.attempts.get()
    assert not attempt.success
    assert attempt.error.startswith("The receiver's answer could not be decompressed")


def test_a_reused_connection_past_its_deadline_sends_nothing(receiver):
    url = receiver.url + "/hook/"
    assert post(url, total_timeout=5).status == 200
    with pytest.raises(DeliveryTimeout, match=r"total deadline \(1e-06 s\)"):
        post(url, total_timeout=0.000001)
    time.sleep(0.2)  # time enough for a request to arrive, were one made
    assert len(receiver.requests) == 1


def test_only_the_webhook_headers_are_sent_and_cookies_are_not_kept(receiver):
    receiver.default = Reply(headers={"Content-Type": "text/plain",
                                      "Set-Cookie": "session=abc; Path=/"})
    for _ in range(2):
        post(receiver.url + "/hook/", headers={"Content-Type": "application/json",
                                               "User-Agent": "ua", "webhook-id": "msg_1"})
    assert [set(request.headers) for request in receiver.requests] == [{
        "host", "content-length", "content-type", "user-agent", "webhook-id",
        "accept-encoding",
    }] * 2
    assert receiver.requests[0].headers["accept-encoding"] == "identity"
    assert "cookie" not in receiver.requests[1].headers


def test_an_address_a_name_resolves_to_is_checked_at_connect_time(receiver):
    port = receiver.server.server_address[1]

    def inward(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    policy = aio_policy(resolver=inward, allowed=False)
    with pytest.raises(Exception) as raised:
        post(f"http://inward.test:{port}/hook/", policy=policy)
    assert type(raised.value).__name__ == "DeliveryRefused"
    assert "127.0.0.1" in str(raised.value)
    assert receiver.requests == []


# Python 3.12+ warns that a fork of a process with threads may deadlock in the child: the
# point here is that the child never waits on the parent's loop thread.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_the_event_loop_made_before_a_fork_is_not_used_in_the_child():
    parent = aio.event_loop()

    async def pid():
        return os.getpid()

    assert parent.submit(pid()).result(10) == os.getpid()
    child_pid = os.fork()
    if child_pid == 0:
        try:
            child = aio.event_loop()
            ok = child is not parent and child.submit(pid()).result(10) == os.getpid()
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(child_pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(child_pid, 9)
        os.waitpid(child_pid, 0)
        pytest.fail("the child hung on the parent's event loop")
    assert os.waitstatus_to_exitcode(status) == 0
    assert aio.event_loop() is parent


# Settings and the command
# ------------------------

def test_a_send_mode_that_does_not_exist_is_reported(settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "SEND_MODE": "asyncio"}
    [error] = [e for e in checks.run_checks() if e.id == "djwebhooks.E002"]
    assert error.msg == "DJWEBHOOKS['SEND_MODE'] must be 'threads' or 'async', got 'asyncio'."
    with pytest.raises(WebhookImproperlyConfigured, match="must be 'threads' or 'async'"):
        sending.send_deliveries([1])


def test_the_command_s_mode_wins_over_the_setting(settings, make_target, user, receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, **DATABASE, "SEND_MODE": "threads"}
    make_target()
    send_event("project.update", {}, owner=user)
    out = StringIO()
    call_command("webhooks_worker", "--burst", "--mode", "async", "--concurrency", "2000",
                 "--interval", "0.05", stdout=out, stderr=StringIO())
    assert "(async, concurrency 2000)" in out.getvalue()
    assert Delivery.objects.get().status == "succeeded"


OPEN_FILES_SCRIPT = """
import resource, django
django.setup()
from django.core.management import CommandError
from djwebhooks.management.commands.webhooks_worker import make_room_for_sockets
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512))
make_room_for_sockets(400)
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
try:
    make_room_for_sockets(600)
except CommandError as exc:
    print(exc)
"""


def test_the_open_files_limit_is_raised_to_fit_or_the_concurrency_refused():
    # In a process of its own, whose limits are lowered for the test.
    done = subprocess.run([sys.executable, "-c", OPEN_FILES_SCRIPT], capture_output=True,
                          text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"})
    assert done.returncode == 0, done.stderr
    raised, refused = done.stdout.splitlines()
    assert raised == "400"
    assert refused == ("This --concurrency needs 600 open files, and this process may open "
                       "at most 512 (ulimit -Hn). Lower --concurrency to 412, or raise the "
                       "limit (ulimit -n, or LimitNOFILE= in a systemd unit).")


def post(url, *, headers=None, policy=None, total_timeout=5):
    return post_async(url, b"{}", headers or {}, timeout=(2, 2), body_limit=100,
                      policy=policy or aio_policy(), total_timeout=total_timeout)


def aio_policy(resolver=None, allowed=True):
    import ipaddress

    from djwebhooks.ssrf import URLPolicy

    networks = (ipaddress.ip_network("127.0.0.0/8"),) if allowed else ()
    return URLPolicy(allowed_networks=networks, resolver=resolver)


def test_a_request_that_never_ends_on_the_loop_does_not_hold_the_caller(
        async_mode, settings, monkeypatch, make_target, user, receiver):
    # Fault injected: a sender that never returns (the deadline bounds every real request).
    import asyncio

    from djwebhooks.senders.orm import DjangoSenderable

    async def forever(self, client):
        await asyncio.sleep(3600)

    monkeypatch.setattr(DjangoSenderable, "send_async", forever)
    monkeypatch.setattr(sending, "LOOP_GRACE_SECONDS", 0.2)
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "TOTAL_TIMEOUT": 0.5, "LEASE": 40}
    make_target()
    started = time.monotonic()
    [delivery] = send_event("project.update", {}, owner=user)
    assert time.monotonic() - started < 5
    attempt = delivery.attempts.get()
    assert (attempt.success, attempt.notification) == (False, "Sender error")
