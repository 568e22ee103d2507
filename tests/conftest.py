import socket

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache

from djwebhooks import pacing
from djwebhooks.models import WebhookTarget
from djwebhooks.transport import close_session
from tests.receiver import Receiver

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Each test starts with no action counted against any user's rate limits (they are
    counted in the default cache)."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def fresh_caps():
    """Each test starts with every target at its full cap on requests in flight (the caps
    are the process's, and target ids come round again from test to test)."""
    pacing.windows.forget()
    yield
    pacing.windows.forget()


@pytest.fixture
def receiver():
    """A real HTTP server on 127.0.0.1 that records what it receives."""
    with Receiver() as server:
        yield server
    close_session()


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("audreyr", "audrey@example.com", "pw")


@pytest.fixture
def other_user(db):
    return get_user_model().objects.create_user("pydanny", "danny@example.com", "pw")


@pytest.fixture
def make_target(user, receiver):
    """Create a ``WebhookTarget`` pointing at the test receiver by default."""

    def make(**fields):
        fields.setdefault("owner", user)
        fields.setdefault("event", "project.update")
        fields.setdefault("target_url", receiver.url + "/hook/")
        return WebhookTarget.objects.create(**fields)

    return make


@pytest.fixture
def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook/"


@pytest.fixture
def listen():
    """Connect a recorder to a signal for the length of the test."""
    connected = []

    def connect(signal):
        calls = []

        def receiver(**kwargs):
            calls.append(kwargs)

        signal.connect(receiver, weak=False)
        connected.append((signal, receiver))
        return calls

    yield connect
    for signal, receiver in connected:
        signal.disconnect(receiver)
