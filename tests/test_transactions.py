"""Deliveries are written in the caller's transaction and sent only after it commits."""

import pytest
from django.db import transaction

from djwebhooks import send_event
from djwebhooks.models import Delivery

pytestmark = pytest.mark.django_db(transaction=True)


def test_nothing_is_sent_before_commit(make_target, user, receiver):
    make_target()
    with transaction.atomic():
        [delivery] = send_event("project.update", {"n": 1}, owner=user)
        assert receiver.requests == []
        assert Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.PENDING
    assert len(receiver.requests) == 1
    assert Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.SUCCEEDED


def test_rollback_leaves_no_rows_and_sends_nothing(make_target, user, receiver):
    make_target()
    with pytest.raises(RuntimeError), transaction.atomic():
        send_event("project.update", {"n": 1}, owner=user)
        raise RuntimeError("the caller's work failed")
    assert Delivery.objects.count() == 0
    assert receiver.requests == []


def test_rolled_back_savepoint_sends_nothing_but_the_outer_work_does(make_target, user,
                                                                      receiver):
    make_target()
    with transaction.atomic():
        send_event("project.update", {"kept": True}, owner=user)
        try:
            with transaction.atomic():
                send_event("project.update", {"kept": False}, owner=user)
                raise RuntimeError
        except RuntimeError:
            pass
    assert Delivery.objects.count() == 1
    assert [b'"kept":true' in r.body for r in receiver.requests] == [True]


def test_a_failure_while_sending_does_not_reach_the_caller(monkeypatch, make_target, user,
                                                           receiver, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr("djwebhooks.queue.record", broken)
    make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)  # does not raise
    assert "Could not send webhook deliveries" in caplog.text
    # The delivery stays pending and claimed: when the claim expires, a worker sends it.
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.PENDING
    assert delivery.claimed_by.startswith("inline:")
