"""Waking an idle worker as soon as deliveries fall due: PostgreSQL's LISTEN/NOTIFY.

Migration 0005 puts two statement-level triggers on the delivery table. A statement that
inserts or updates deliveries, and leaves one of them pending, due and unclaimed, sends a
notification on the channel named after the table (``djwebhooks_delivery``). That covers
new deliveries, replays and claims given back, whatever wrote them. PostgreSQL sends
notifications when the transaction commits, and sends identical ones only once per
transaction, so a caller's transaction wakes the workers once however many rows it wrote.

A ``Listener`` holds a connection of its own (never the one the worker claims on), LISTENs
on that channel in a thread, and calls a function at each notification. When it cannot
listen (the server restarted, the connection was lost) it says so once, tries again with a
growing pause, and the worker keeps polling at its interval meanwhile. Where listening
cannot work at all (no trigger, or a connection pooler in transaction mode, through which
notifications never arrive) it says so once and stops; the worker polls.

The channel is the table's name, so that projects sharing one database server do not wake
each other's workers: notifications stay inside their database, and two projects in one
database have their tables apart (schemas or ``db_table``) or share a queue anyway.
"""

import contextlib
import logging
import os
import secrets
import select
import threading
import time

from django.db import connections

from djwebhooks.models import Delivery

logger = logging.getLogger("djwebhooks.wakeup")

#: The triggers migration 0005 makes; a worker listens only where they exist.
TRIGGERS = ("djwebhooks_delivery_due_insert", "djwebhooks_delivery_due_update")
#: Seconds the listener waits for its own test notification before it decides that
#: notifications cannot reach it.
PROBE_TIMEOUT = 5.0
#: Seconds of silence after which the listener checks that its connection still answers
#: (a connection lost without a word, as a dropped network leaves it, would otherwise
#: wait for ever).
HEALTH_CHECK = 30.0
#: The longest pause between attempts to listen again.
MAX_BACKOFF = 30.0


def channel():
    """The notification channel: the delivery table's name."""
    return Delivery._meta.db_table


def can_listen(using):
    """True where workers can be woken by notifications: PostgreSQL, through psycopg (3)
    or psycopg2."""
    connection = connections[using]
    return connection.vendor == "postgresql" and _driver(connection) is not None


def _driver(connection):
    name = getattr(connection.Database, "__name__", "")
    return name if name in ("psycopg", "psycopg2") else None


class CannotListen(Exception):
    """Listening cannot work with this database or this way of reaching it."""


class Listener:
    """Call ``wake()`` (from a thread of its own) whenever deliveries of database ``using``
    may have fallen due; ``start()`` it, ``stop()`` it."""

    def __init__(self, using, wake, *, name="djwebhooks-listener"):
        self.using = using
        self.wake = wake
        self.name = name
        self.channel = channel()
        #: True while a connection listens (and its test notification came back).
        self.listening = False
        #: The server process of the listening connection (``pg_stat_activity.pid``).
        self.backend_pid = None
        self._stopped = threading.Event()
        self._pipe = None
        self._thread = None

    def start(self):
        """Start listening in a daemon thread."""
        self._pipe = os.pipe()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout=5.0):
        """Stop listening and close the connection; wait up to ``timeout`` for the thread."""
        self._stopped.set()
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                os.write(self._pipe[1], b"x")
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return
        if self._pipe is not None:
            for end in self._pipe:
                os.close(end)
            self._pipe = None

    def _run(self):
        pause, failing = 1.0, False
        while not self._stopped.is_set():
            raw = None
            try:
                raw = self._connect()
                self.listening = True
                if failing:
                    logger.warning("Listening for new deliveries on channel %r again.",
                                   self.channel)
                pause, failing = 1.0, False
                # Deliveries may have fallen due while nobody listened.
                self.wake()
                self._listen(raw)
            except CannotListen as exc:
                logger.warning("Cannot wake on new deliveries: %s Polling instead.", exc)
                return
            except Exception as exc:  # whatever the driver raises: never stop the worker
                if self._stopped.is_set():
                    return
                if not failing:
                    logger.warning("Lost the connection listening for new deliveries (%s); "
                                   "polling meanwhile, and trying again.", exc)
                else:
                    logger.debug("Still cannot listen for new deliveries (%s).", exc)
                failing = True
            finally:
                self.listening = False
                if raw is not None:
                    try:
                        raw.close()
                    except Exception:
                        logger.debug("Closing the listening connection failed.",
                                     exc_info=True)
            self._stopped.wait(pause)
            pause = min(MAX_BACKOFF, pause * 2)

    def _connect(self):
        """Open a connection of its own, LISTEN, and check that a notification comes back."""
        wrapper = connections[self.using]
        driver = _driver(wrapper)
        # Straight from the driver: Django's own connect would take one from its pool (which
        # must not LISTEN) and change the wrapper's state in another thread.
        raw = wrapper.Database.connect(**wrapper.get_connection_params())
        try:
            raw.autocommit = True
            self._notifications = _psycopg2_notifications if driver == "psycopg2" else \
                _psycopg_notifications
            self._execute(raw, "SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(%s) "
                          "AND tgname = ANY(%s)",
                          [wrapper.ops.quote_name(self.channel), list(TRIGGERS)])
            if len(self._rows) < len(TRIGGERS):
                raise CannotListen("the delivery table has no notification triggers (run "
                                   "migrate: djwebhooks' migration 0005 adds them).")
            self._execute(raw, f"LISTEN {wrapper.ops.quote_name(self.channel)}")
            token = f"probe-{secrets.token_hex(8)}"
            self._execute(raw, "SELECT pg_notify(%s, %s)", [self.channel, token])
            deadline = time.monotonic() + PROBE_TIMEOUT
            while token not in self._notifications(raw):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CannotListen(
                        f"a notification sent on channel {self.channel!r} did not come back "
                        f"within {PROBE_TIMEOUT:g} s. A connection pooler in transaction "
                        "mode (pgbouncer's pool_mode = transaction) cannot LISTEN: give the "
                        "worker a direct or session-mode connection, or run it with "
                        "--no-listen."
                    )
                self._select(raw, remaining)
        except BaseException:
            raw.close()
            raise
        self.backend_pid = (raw.get_backend_pid() if driver == "psycopg2"
                            else raw.info.backend_pid)
        logger.info("Listening for new deliveries on channel %r.", self.channel)
        return raw

    def _listen(self, raw):
        """Wake the worker at each batch of notifications, until stopped or the connection
        fails (then raise)."""
        while not self._stopped.is_set():
            received = self._notifications(raw)
            if received:
                logger.info("Woken by %s %s on channel %r.", len(received),
                            "notification" if len(received) == 1 else "notifications",
                            self.channel)
                self.wake()
            if not self._select(raw, HEALTH_CHECK):
                self._execute(raw, "SELECT 1")  # still there? (raises if not)

    def _select(self, raw, timeout):
        """Wait until the connection has something to read (True), the listener is stopped
        (True), or ``timeout`` seconds have passed (False)."""
        ready, _, _ = select.select([raw.fileno(), self._pipe[0]], [], [], timeout)
        return bool(ready)

    def _execute(self, raw, sql, params=None):
        with raw.cursor() as cursor:
            cursor.execute(sql, params)
            self._rows = cursor.fetchall() if cursor.description else []


def _psycopg_notifications(raw):
    """The payloads of the notifications psycopg (3) has received, without waiting."""
    return [notify.payload for notify in raw.notifies(timeout=0)]


def _psycopg2_notifications(raw):
    """The payloads of the notifications psycopg2 has received, without waiting."""
    raw.poll()
    payloads = [notify.payload for notify in raw.notifies]
    raw.notifies.clear()
    return payloads
