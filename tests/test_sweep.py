"""The recovery sweep and the hand-over of retries to a backend that defers.

``Delivery.queued_at`` says when a queue was last given a delivery (empty: no queue holds
it). The sweep (``djwebhooks.sweep``, ``manage.py webhooks_sweep``) hands over again every
due, unclaimed delivery no queue has held for ``REQUEUE_AFTER``; these tests move the
rows' times (``travel``) rather than the clock.
"""

import logging
from datetime import timedelta
from io import StringIO

import pytest
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.db import transaction

from djwebhooks import queue, replay, send_event, sending
from djwebhooks.backends import get_backend, load_backend
from djwebhooks.backends.base import BaseBackend
from djwebhooks.exceptions import WebhookImproperlyConfigured
from djwebhooks.models import Delivery
from djwebhooks.senders.base import AttemptResult
from djwebhooks.sweep import sweep
from tests.helpers import CLAIMANT, hold, travel
from tests.receiver import Reply

pytestmark = pytest.mark.django_db(transaction=True)
HERE = "tests.test_sweep"


class Recording(BaseBackend):
    """Defers: keeps every ``enqueue`` call as ``(ids, run_after)``; sends nothing."""

    defers = True
    calls = []

    def enqueue(self, delivery_ids, *, run_after=None):
        self.calls.append((list(delivery_ids), run_after))


class Refusing(Recording):
    """A broker that is down."""

    def enqueue(self, delivery_ids, *, run_after=None):
        raise ConnectionError("broker down")


class CannotDefer(BaseBackend):
    def enqueue(self, delivery_ids, *, run_after=None):
        pass


@pytest.fixture(autouse=True)
def fresh_calls():
    Recording.calls = []


def use(settings, backend, **more):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "BACKEND": backend, **more}


def pending(user, count=1):
    with transaction.atomic():
        return [d for n in range(count) for d in send_event("project.update", {"n": n},
                                                             owner=user)]


def failure(status=500):
    return AttemptResult(success=False, response_status=status, response_message="boom",
                         response_content_type="text/plain", error="", duration=0.01,
                         notification=f"{status}")


def success():
    return AttemptResult(success=True, response_status=200, response_message="ok",
                         response_content_type="text/plain", error="", duration=0.01,
                         notification="200 OK")


def record_as_held(deliveries, results, **kwargs):
    ids = hold(deliveries)
    loaded = queue.load(CLAIMANT, ids)
    return sending.record(CLAIMANT, list(zip(loaded, results, strict=True)), **kwargs)


# queued_at through a delivery's life
# -----------------------------------

def test_a_new_delivery_is_queued_from_the_moment_it_is_due(settings, user, make_target):
    use(settings, f"{HERE}.Recording")
    make_target()
    [delivery] = pending(user)
    delivery.refresh_from_db()
    assert delivery.queued_at == delivery.next_attempt_at is not None
    assert Recording.calls == [([delivery.pk], None)]


def test_a_retry_is_handed_to_a_deferring_backend_for_its_time(settings, user, make_target):
    use(settings, f"{HERE}.Recording", RETRY_SCHEDULE=[60], RETRY_JITTER=0)
    make_target()
    [delivery] = pending(user)
    Recording.calls = []
    record_as_held([delivery], [failure()], retry=get_backend().enqueue, retry_within=600)
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert delivery.queued_at == delivery.next_attempt_at
    assert Recording.calls == [([delivery.pk], delivery.next_attempt_at)]


def test_a_retry_beyond_the_defer_limit_is_left_for_the_sweep(settings, user, make_target):
    use(settings, f"{HERE}.Recording", RETRY_SCHEDULE=[3600], RETRY_JITTER=0)
    make_target()
    [delivery] = pending(user)
    Recording.calls = []
    record_as_held([delivery], [failure()], retry=get_backend().enqueue, retry_within=600)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.queued_at) == ("pending", None)
    assert Recording.calls == []
    travel(3601)
    assert queue.overdue(limit=10, requeue_after=300) == [delivery.pk]


def test_a_retry_the_backend_refuses_is_left_for_the_next_sweep(settings, user, make_target,
                                                                caplog):
    use(settings, f"{HERE}.Refusing", RETRY_SCHEDULE=[5], RETRY_JITTER=0)
    make_target()
    [delivery] = pending(user)  # its first enqueue is refused too
    Delivery.objects.filter(pk=delivery.pk).update(queued_at=delivery.next_attempt_at)
    with caplog.at_level(logging.ERROR, logger="djwebhooks.sending"):
        record_as_held([delivery], [failure()], retry=get_backend().enqueue)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.queued_at) == ("pending", None)
    assert "Could not hand the retry of deliveries" in caplog.text
    travel(6)
    assert queue.overdue(limit=10, requeue_after=300) == [delivery.pk]


def test_a_first_enqueue_the_backend_refuses_leaves_the_delivery_for_the_sweep(
        settings, user, make_target, caplog):
    use(settings, f"{HERE}.Refusing")
    make_target()
    with caplog.at_level(logging.ERROR, logger="djwebhooks.events"):
        [delivery] = pending(user)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.queued_at) == ("pending", None)
    assert "could not take deliveries" in caplog.text
    assert queue.overdue(limit=10, requeue_after=300) == [delivery.pk]


def test_without_a_deferring_backend_no_retry_is_queued(settings, user, make_target):
    use(settings, f"{HERE}.CannotDefer", RETRY_SCHEDULE=[5], RETRY_JITTER=0)
    make_target()
    [delivery] = pending(user)
    record_as_held([delivery], [failure()])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.queued_at) == ("pending", None)


def test_finished_released_and_replayed_deliveries(settings, user, make_target):
    use(settings, f"{HERE}.Recording")
    make_target()
    done, released, replayed = pending(user, 3)
    record_as_held([done], [success()])
    hold([released])
    queue.release(CLAIMANT, [released.pk])
    Delivery.objects.filter(pk=replayed.pk).update(status="failed", queued_at=None)
    travel(600)
    replay([replayed.pk])
    rows = {d.pk: d for d in Delivery.objects.all()}
    assert rows[done.pk].queued_at is None  # succeeded: nothing to queue
    assert rows[released.pk].queued_at is None  # given back unsent: no queue holds it
    assert rows[replayed.pk].queued_at == rows[replayed.pk].next_attempt_at is not None


# Which deliveries are overdue
# ----------------------------

def test_overdue_means_due_unclaimed_and_held_by_no_queue_lately(settings, user, make_target):
    use(settings, f"{HERE}.Recording")
    make_target()
    fresh, stale, claimed, expired, later, done = pending(user, 6)
    travel(301)  # every one was queued over 5 minutes ago
    Delivery.objects.filter(pk=fresh.pk).update(queued_at=queue.DatabaseNow())
    hold([claimed], seconds=60)
    hold([expired], seconds=-1)
    Delivery.objects.filter(pk=later.pk).update(next_attempt_at=queue._sql.now_plus(60),
                                                queued_at=None)
    Delivery.objects.filter(pk=done.pk).update(status="succeeded", next_attempt_at=None)
    assert queue.overdue(limit=10, requeue_after=300) == [stale.pk, expired.pk]
    assert queue.overdue(limit=1, requeue_after=300) == [stale.pk]  # oldest due first
    assert queue.overdue(limit=10, requeue_after=400) == []


# The sweep
# ---------

def test_the_sweep_hands_over_in_batches_and_marks_what_it_handed(settings, user,
                                                                  make_target):
    use(settings, f"{HERE}.Recording")
    make_target()
    deliveries = pending(user, 5)
    Recording.calls = []
    travel(301)
    result = sweep(batch_size=2)
    assert (result.handed, result.backend, result.skipped) == (5, "Recording", "")
    ids = [d.pk for d in sorted(deliveries, key=lambda d: (d.next_attempt_at, d.pk))]
    assert Recording.calls == [(ids[:2], None), (ids[2:4], None), (ids[4:], None)]
    assert sweep().handed == 0  # each was just handed over
    travel(301)
    assert sweep(limit=3).handed == 3


def test_a_sweep_the_backend_refuses_leaves_the_batch_first_in_line(settings, user,
                                                                    make_target):
    use(settings, f"{HERE}.Recording")
    make_target()
    [delivery] = pending(user)
    travel(301)
    use(settings, f"{HERE}.Refusing")
    with pytest.raises(ConnectionError):
        sweep()
    delivery.refresh_from_db()
    assert delivery.queued_at is None


def test_no_sweep_for_a_backend_whose_workers_poll(settings, user, make_target):
    use(settings, "djwebhooks.backends.database.DatabaseBackend")
    make_target()
    pending(user)
    travel(301)
    result = sweep()
    assert result.handed == 0
    assert "find due deliveries in the database themselves" in result.skipped


def test_with_the_inline_backend_the_sweep_sends_the_retries(settings, user, make_target,
                                                             receiver):
    """The inline backend cannot defer: its retries wait in the database, and a sweep
    sends them in its own process. One that fails again stays with no queue holding it,
    for the next sweep once due."""
    use(settings, "djwebhooks.backends.inline.InlineBackend", RETRY_SCHEDULE=[5, 5],
        RETRY_JITTER=0)
    receiver.replies = [Reply(status=500), Reply(status=502)]
    make_target()
    [delivery] = pending(user)  # sent at once: 500
    travel(6)
    assert sweep().handed == 1  # 502
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt, delivery.queued_at) == ("pending", 2, None)
    assert sweep().handed == 0  # not due yet
    travel(6)
    assert sweep().handed == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt) == ("succeeded", 3)
    assert len(receiver.requests) == 3


# Deliveries a task was handed too early
# --------------------------------------

def test_a_task_hands_back_what_another_claim_holds_or_is_not_yet_due(settings, user,
                                                                      make_target):
    use(settings, f"{HERE}.Recording")
    make_target()
    held, early, gone_too_far = pending(user, 3)
    hold([held], claimant="a-worker-that-died", seconds=30)
    Delivery.objects.filter(pk=early.pk).update(next_attempt_at=queue._sql.now_plus(20))
    Delivery.objects.filter(pk=gone_too_far.pk).update(
        next_attempt_at=queue._sql.now_plus(7200))
    Recording.calls = []
    backend = get_backend()
    backend.defer_limit = 600
    assert backend.run([held.pk, early.pk, gone_too_far.pk]) == []
    rows = {d.pk: d for d in Delivery.objects.all()}
    assert sorted(Recording.calls, key=lambda call: call[1]) == [
        ([early.pk], rows[early.pk].next_attempt_at),
        ([held.pk], rows[held.pk].claimed_until),
    ]


# Checks, options and the command
# -------------------------------

def test_w003_for_a_backend_that_can_neither_defer_nor_poll(settings):
    use(settings, f"{HERE}.CannotDefer")
    assert "djwebhooks.W003" in [message.id for message in run_checks()]
    for backend in (f"{HERE}.Recording", "djwebhooks.backends.database.DatabaseBackend"):
        use(settings, backend)
        assert "djwebhooks.W003" not in [message.id for message in run_checks()]


def test_backend_options_reach_the_class_and_unknown_ones_are_named(settings):
    with pytest.raises(WebhookImproperlyConfigured, match=r"takes no options, got colour"):
        load_backend("djwebhooks.backends.database.DatabaseBackend", {"colour": "blue"})
    with pytest.raises(WebhookImproperlyConfigured, match=r"BACKEND_OPTIONS'\] must be a "
                                                          "dict"):
        load_backend("djwebhooks.backends.database.DatabaseBackend", ["queue"])
    use(settings, "djwebhooks.backends.database.DatabaseBackend",
        BACKEND_OPTIONS={"colour": "blue"})
    errors = [m for m in run_checks() if m.id == "djwebhooks.E004"]
    assert errors and "BACKEND_OPTIONS {'colour': 'blue'}" in errors[0].msg
    use(settings, "djwebhooks.backends.database.DatabaseBackend",
        BACKEND_OPTIONS={"not an identifier": 1})
    assert any(m.id == "djwebhooks.E002" and "BACKEND_OPTIONS" in m.msg for m in run_checks())


def test_a_missing_extra_is_named(settings):
    with pytest.raises(WebhookImproperlyConfigured, match=r'pip install "dj-webhooks\[rq\]"'):
        load_backend("djwebhooks.backends.rq.NoSuchBackend")


def sweep_command(*args):
    out = StringIO()
    call_command("webhooks_sweep", *args, stdout=out)
    return out.getvalue().strip()


def test_the_command_counts_hands_over_and_says_what_is_wrong(settings, user, make_target):
    use(settings, f"{HERE}.Recording")
    make_target()
    pending(user, 2)
    assert sweep_command() == "Handed 0 overdue deliveries to Recording."
    assert sweep_command("--requeue-after", "0s", "--dry-run") == (
        "Would hand 2 overdue deliveries to Recording.")
    assert sweep_command("--requeue-after", "0s", "--limit", "1") == (
        "Handed 1 overdue delivery to Recording.")
    for args, message in [
        (("--requeue-after", "soon"), "not a duration such as 90s, 5m or 1h"),
        (("--batch-size", "0"), "--batch-size must be a positive number"),
        (("--batch-size", "10001"), "at most 10000"),
        (("--limit", "-1"), "--limit must be a positive number"),
    ]:
        with pytest.raises(CommandError, match=message):
            sweep_command(*args)
    use(settings, f"{HERE}.Refusing")
    with pytest.raises(CommandError, match="Refusing refused deliveries: ConnectionError: "
                                           "broker down. They stay due"):
        sweep_command("--requeue-after", "0s")
    use(settings, "djwebhooks.backends.database.DatabaseBackend")
    assert sweep_command().startswith("Nothing to sweep: DatabaseBackend's workers")
    use(settings, "tests.nowhere.Backend")
    with pytest.raises(CommandError, match="could not be imported"):
        sweep_command()


def test_requeue_after_is_a_checked_setting(settings):
    use(settings, f"{HERE}.Recording", REQUEUE_AFTER=-1)
    assert any(m.id == "djwebhooks.E002" and "REQUEUE_AFTER" in m.msg for m in run_checks())
    use(settings, f"{HERE}.Recording", REQUEUE_AFTER=timedelta(minutes=2))
    assert not [m for m in run_checks() if "REQUEUE_AFTER" in m.msg]
