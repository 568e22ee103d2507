"""Endpoint health, automatic disabling, re-enabling, and the signals users connect to."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from djwebhooks import queue, send_event, sending, signals
from djwebhooks.exceptions import CancelDelivery
from djwebhooks.models import Delivery, DeliveryAttempt, WebhookTarget
from djwebhooks.retry import RetryPolicy
from djwebhooks.senders.base import AttemptResult
from tests.helpers import CLAIMANT, attempts_of, hold, record, travel
from tests.receiver import Reply

pytestmark = pytest.mark.django_db(transaction=True)

FAILURE = AttemptResult(success=False, response_status=500, response_message="",
                        response_content_type="", error="", duration=1, notification="500")
SUCCESS = AttemptResult(success=True, response_status=200, response_message="",
                        response_content_type="", error="", duration=1, notification="200")


@pytest.fixture
def pending(make_target, user, django_capture_on_commit_callbacks):
    """A target and one pending delivery to it, not sent."""
    target = make_target()
    delivery = Delivery.objects.create(webhook_target=target, event="project.update",
                                       hash_value="msg_h", next_attempt_at=timezone.now())
    return target, delivery


def test_failures_are_counted_and_a_success_resets_them(pending):
    target, delivery = pending
    [first] = attempts_of(record([(delivery, FAILURE)]))
    record([(delivery, FAILURE)])
    target.refresh_from_db()
    assert target.consecutive_failures == 2
    assert target.failing_since == first.created  # the first failure of the run
    record([(delivery, SUCCESS)])
    target.refresh_from_db()
    assert (target.consecutive_failures, target.failing_since) == (0, None)


def test_a_target_failing_for_five_days_is_disabled_on_a_final_failure(pending, listen):
    target, delivery = pending
    disabled = listen(signals.target_disabled)
    record([(delivery, FAILURE)], policy=RetryPolicy([60]))  # retried: kept
    target.refresh_from_db()
    assert target.is_active

    travel(timedelta(days=6).total_seconds())
    record([(delivery, FAILURE)], policy=RetryPolicy([]))
    target.refresh_from_db()
    assert target.is_active is False
    assert target.disabled_reason == "every attempt failed for more than 5 days"
    assert [kw["reason"] for kw in disabled] == ["every attempt failed for more than 5 days"]


def test_recent_failures_do_not_disable(pending):
    target, delivery = pending
    record([(delivery, FAILURE)], policy=RetryPolicy([60]))
    travel(timedelta(days=4).total_seconds())
    record([(delivery, FAILURE)], policy=RetryPolicy([]))
    target.refresh_from_db()
    assert target.is_active and target.consecutive_failures == 2


def test_disabling_can_be_turned_off(settings, pending):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "DISABLE_AFTER": None}
    target, delivery = pending
    record([(delivery, FAILURE)], policy=RetryPolicy([60]))
    travel(timedelta(days=30).total_seconds())
    record([(delivery, FAILURE)], policy=RetryPolicy([]))
    target.refresh_from_db()
    assert target.is_active and target.consecutive_failures == 2


def test_re_enabling_resets_health(pending):
    target, _ = pending
    WebhookTarget.objects.filter(pk=target.pk).update(
        is_active=False, consecutive_failures=9, failing_since=timezone.now(),
        disabled_at=timezone.now(), disabled_reason="the receiver answered 410 Gone",
    )
    target.refresh_from_db()
    target.identifier = "renamed"
    target.save()  # saving without re-enabling keeps the record
    target.refresh_from_db()
    assert target.consecutive_failures == 9

    target.is_active = True
    target.save(update_fields=["is_active"])
    target.refresh_from_db()
    assert (target.consecutive_failures, target.failing_since, target.disabled_at,
            target.disabled_reason) == (0, None, None, "")


def test_admin_enable_action(client, django_user_model, pending):
    target, _ = pending
    WebhookTarget.objects.filter(pk=target.pk).update(
        is_active=False, consecutive_failures=3, disabled_at=timezone.now(),
        disabled_reason="the receiver answered 410 Gone",
    )
    client.force_login(django_user_model.objects.create_superuser("root", "r@x.org", "pw"))
    url = reverse("admin:djwebhooks_webhooktarget_changelist")
    html = client.get(url).content.decode()
    assert "disabled: the receiver answered 410 Gone" in html
    response = client.post(url, {"action": "enable_targets", "_selected_action": [target.pk]},
                           follow=True)
    assert "Enabled 1 target." in response.content.decode()
    target.refresh_from_db()
    assert target.is_active and target.consecutive_failures == 0


def test_delivery_succeeded_signal(make_target, user, receiver, listen):
    succeeded = listen(signals.delivery_succeeded)
    make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    [call] = succeeded
    assert call["sender"] is Delivery
    assert call["delivery"].pk == delivery.pk
    assert call["attempt"].attempt == 1 and call["attempt"].response_status == 200


def test_signals_wait_for_commit(pending, listen):
    from django.db import transaction

    failed = listen(signals.delivery_failed)
    _, delivery = pending
    with transaction.atomic():
        record([(delivery, FAILURE)], policy=RetryPolicy([]))
        assert failed == []
    assert [kw["reason"] for kw in failed] == ["gave up after 1 attempt"]


def test_delivery_sending_can_cancel(make_target, user, receiver, listen):
    def veto(delivery, **kwargs):
        if delivery.payload.get("secret"):
            raise CancelDelivery("payload marked secret")

    signals.delivery_sending.connect(veto, dispatch_uid="test-veto")
    try:
        make_target()
        [cancelled] = send_event("project.update", {"secret": True}, owner=user)
        [sent] = send_event("project.update", {"secret": False}, owner=user)
    finally:
        signals.delivery_sending.disconnect(dispatch_uid="test-veto")
    cancelled.refresh_from_db()
    assert (cancelled.status, cancelled.reason) == ("cancelled", "cancelled: payload marked secret")
    assert cancelled.attempts.count() == 0
    assert [r.headers["webhook-id"] for r in receiver.requests] == [sent.hash_value]


def test_delivery_failed_signal_for_an_inactive_target(make_target, user, receiver, listen):
    failed = listen(signals.delivery_failed)
    receiver.default = Reply(status=200)
    target = make_target()
    from django.db import transaction

    with transaction.atomic():
        [delivery] = send_event("project.update", {}, owner=user)
        WebhookTarget.objects.filter(pk=target.pk).update(is_active=False)
    assert [(kw["delivery"].pk, kw["attempt"], kw["reason"]) for kw in failed] == [
        (delivery.pk, None, "target is inactive; nothing was sent")
    ]


def test_an_error_before_sending_is_recorded_and_retried(settings, make_target, user,
                                                         receiver):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "OWNER_FIELD": "no_such_attribute"}
    make_target()
    [delivery] = send_event("project.update", {}, owner=user)
    delivery.refresh_from_db()
    assert receiver.requests == []
    assert (delivery.status, delivery.attempt) == ("pending", 1)
    assert delivery.reason == "attempt 2 of 8: scheduled retry"
    attempt = delivery.attempts.get()
    assert attempt.notification == "Error before sending"
    assert attempt.error.startswith("AttributeError: ")


def test_a_failing_sending_receiver_is_recorded(make_target, user, receiver):
    def broken(**kwargs):
        raise KeyError("oops")

    signals.delivery_sending.connect(broken, dispatch_uid="test-broken")
    try:
        make_target()
        [delivery] = send_event("project.update", {}, owner=user)
    finally:
        signals.delivery_sending.disconnect(dispatch_uid="test-broken")
    assert receiver.requests == []
    assert delivery.attempts.get().error == "KeyError: 'oops'"


def test_a_batch_of_results_costs_a_fixed_number_of_queries(make_target, user,
                                                            django_assert_max_num_queries):
    target = make_target()
    deliveries = [
        Delivery.objects.create(webhook_target=target, event="project.update",
                                hash_value=f"msg_{n}", next_attempt_at=timezone.now())
        for n in range(20)
    ]
    hold(deliveries)
    deliveries = queue.load(CLAIMANT, [d.pk for d in deliveries])
    outcomes = [(d, SUCCESS if n % 2 else FAILURE) for n, d in enumerate(deliveries)]
    with django_assert_max_num_queries(12):
        attempts = attempts_of(sending.record(CLAIMANT, outcomes))
    assert [a.attempt for a in attempts] == [1] * 20
    assert Delivery.objects.filter(status="succeeded").count() == 10
    assert Delivery.objects.filter(status="pending", attempt=1).count() == 10
    target.refresh_from_db()
    # The batch had successes, so the target works; its failures still count.
    assert target.consecutive_failures == 10


@pytest.mark.parametrize("returning", [True, False])
def test_recorded_attempts_are_the_saved_rows(pending, monkeypatch, returning):
    from django.db import connection

    target, first = pending
    second = Delivery.objects.create(webhook_target=target, event="project.update",
                                     hash_value="msg_2", next_attempt_at=timezone.now())
    monkeypatch.setattr(type(connection.features), "can_return_rows_from_bulk_insert",
                        returning)
    awkward = AttemptResult(
        success=False, response_status=503, response_message="l'été\n\"quoted\" {1,2} NULL \\",
        response_content_type="text/plain; charset=utf-8", error="", duration=12,
        notification="503 Service Unavailable", retry_after="7",
    )
    attempts = attempts_of(record([(first, SUCCESS), (second, awkward)]))

    assert [a.delivery_id for a in attempts] == [first.pk, second.pk]
    assert [a.attempt for a in attempts] == [1, 1]
    saved = {a.delivery_id: a for a in DeliveryAttempt.objects.all()}
    assert len(saved) == 2
    for attempt in attempts:
        row = saved[attempt.delivery_id]
        if returning:
            assert attempt.pk == row.pk and not attempt._state.adding
        for field in DeliveryAttempt._meta.concrete_fields:
            if field.primary_key and not returning:
                continue
            assert getattr(attempt, field.attname) == getattr(row, field.attname), field.name
    assert saved[second.pk].response_message == awkward.response_message
    assert saved[first.pk].created == saved[second.pk].created


def test_a_failing_signal_receiver_is_logged_and_the_others_still_announced(
    make_target, user, listen, caplog
):
    target = make_target()
    first, second = (Delivery.objects.create(webhook_target=target, event="project.update",
                                             hash_value=f"msg_{n}",
                                             next_attempt_at=timezone.now())
                     for n in range(2))
    announced = listen(signals.delivery_succeeded)

    def broken(sender, delivery, **kwargs):
        if delivery.pk == first.pk:
            raise RuntimeError("receiver bug")

    signals.delivery_succeeded.connect(broken)
    try:
        record([(first, SUCCESS), (second, SUCCESS)])
    finally:
        signals.delivery_succeeded.disconnect(broken)

    assert [kwargs["delivery"].pk for kwargs in announced] == [first.pk, second.pk]
    assert "A delivery_succeeded receiver" in caplog.text
    assert "RuntimeError: receiver bug" in caplog.text
    assert set(Delivery.objects.values_list("status", flat=True)) == {"succeeded"}


def test_a_batch_of_attempts_without_any_response_is_recorded(pending):
    # Every column of the batch insert may be all NULL or empty (no response at all).
    target, first = pending
    second = Delivery.objects.create(webhook_target=target, event="project.update",
                                     hash_value="msg_2", next_attempt_at=timezone.now())
    refused = AttemptResult(success=False, response_status=None, response_message="",
                            response_content_type="", error="DeliveryConnectionError: refused",
                            duration=0, notification="Connection failed")
    record([(first, refused), (second, refused)])
    assert list(DeliveryAttempt.objects.values_list("response_status", "notification")) == [
        (None, "Connection failed"), (None, "Connection failed")
    ]


def test_a_batch_of_successes_numbers_and_finishes_in_one_update(
    make_target, django_assert_max_num_queries
):
    from django.db import connection

    target = make_target()
    deliveries = [
        Delivery.objects.create(webhook_target=target, event="project.update",
                                hash_value=f"msg_{n}", next_attempt_at=timezone.now())
        for n in range(20)
    ]
    hold(deliveries)
    deliveries = queue.load(CLAIMANT, [d.pk for d in deliveries])
    # The database's clock; then PostgreSQL's UPDATE ... RETURNING, and the insert.
    # Elsewhere the claims and attempt numbers are read back after counting the attempt,
    # and the deliveries finished after the insert: two more.
    expected = 3 if connection.vendor == "postgresql" else 5
    with django_assert_max_num_queries(expected + 2) as captured:  # BEGIN/COMMIT, if counted
        sending.record(CLAIMANT, [(d, SUCCESS) for d in deliveries])
    statements = [q["sql"] for q in captured.captured_queries
                  if q["sql"] not in ("BEGIN", "COMMIT")]
    assert len(statements) == expected, statements
    assert set(Delivery.objects.values_list("status", "attempt", "response_status",
                                            "claimed_by")) == {("succeeded", 1, 200, "")}
