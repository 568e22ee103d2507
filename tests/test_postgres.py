"""Row locking that only a real server shows: PostgreSQL (CI runs these with DATABASE_URL)."""

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
        reason="needs PostgreSQL row locks; run with DATABASE_URL=postgres://...",
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
