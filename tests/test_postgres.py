"""What only a real server shows: row locks and connections, on PostgreSQL (CI runs these with
DATABASE_URL)."""

import threading

import pytest
from django.db import connection, connections

from djwebhooks.models import Delivery, WebhookTarget
from djwebhooks.senders.base import AttemptResult
from tests.helpers import record as record_outcomes

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="needs PostgreSQL (row locks, its list of sessions); run with "
        "DATABASE_URL=postgres://...",
    ),
]


def test_concurrent_attempts_get_distinct_numbers(user):
    target = WebhookTarget.objects.create(owner=user, event="project.update",
                                          target_url="https://example.com/")
    delivery = Delivery.objects.create(webhook_target=target, event="project.update",
                                       hash_value="msg_race")
    result = AttemptResult(success=False, response_status=500, response_message="",
                           response_content_type="", error="", duration=1, notification="500")
    workers, barrier, errors = 8, threading.Barrier(8), []

    def record():
        try:
            barrier.wait()
            record_outcomes([(Delivery.objects.get(pk=delivery.pk), result)])
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=record) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    delivery.refresh_from_db()
    assert delivery.attempt == workers
    assert sorted(delivery.attempts.values_list("attempt", flat=True)) == list(
        range(1, workers + 1)
    )


def test_sending_threads_close_the_connections_they_open(monkeypatch, make_target, user,
                                                         receiver, settings):
    # A sender that reads the database from its thread (a project's subclass, say) opens a
    # connection there; the thread closes it when it ends, so none outlives the worker and
    # the test database can always be dropped.
    from djwebhooks import send_event
    from djwebhooks.senders.orm import DjangoSenderable
    from djwebhooks.worker import Worker

    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS,
                           "BACKEND": "djwebhooks.backends.database.DatabaseBackend"}
    headers = DjangoSenderable.get_headers
    readers = set()

    def reading_headers(self, body, sent_at):
        readers.add(threading.current_thread().name)
        WebhookTarget.objects.count()
        return headers(self, body, sent_at)

    monkeypatch.setattr(DjangoSenderable, "get_headers", reading_headers)
    make_target()
    for n in range(6):
        send_event("project.update", {"n": n}, owner=user)

    def sessions():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity "
                           "WHERE datname = current_database()")
            return cursor.fetchone()[0]

    before = sessions()
    assert Worker(burst=True, concurrency=3, interval=0.02).run() == 6
    assert readers and threading.current_thread().name not in readers
    assert sessions() == before
