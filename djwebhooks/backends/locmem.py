"""``LocmemBackend``: deliveries go to ``djwebhooks.testing.outbox``, not to the network."""

from djwebhooks.backends.inline import InlineBackend
from djwebhooks.testing.outbox import outbox_session


class LocmemBackend(InlineBackend):
    """Like the inline backend, but every request lands in the test outbox.

    Each request is signed, recorded as an attempt and answered exactly as a real send
    would be; the answer comes from ``djwebhooks.testing.respond()`` (200 by default).
    """

    def session(self):
        return outbox_session
