"""Ordered targets: their deliveries go one at a time, in creation order, and one that
fails holds back those after it until it succeeds, fails for good or is skipped."""

import logging
import re

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from djwebhooks import _sql, queue, replay, send_event, skip
from djwebhooks.backends.base import QueueBackend
from djwebhooks.backends.inline import InlineBackend
from djwebhooks.models import Delivery, WebhookTarget
from djwebhooks.sending import send_deliveries
from tests.helpers import CLAIMANT, hold, travel
from tests.receiver import Reply

DATABASE_BACKEND = "djwebhooks.backends.database.DatabaseBackend"
PENDING, SUCCEEDED = Delivery.Status.PENDING, Delivery.Status.SUCCEEDED
FAILED, CANCELLED = Delivery.Status.FAILED, Delivery.Status.CANCELLED


@pytest.fixture(autouse=True)
def left_in_the_table(settings):
    """Deliveries stay pending in the table until a test sends them."""
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "BACKEND": DATABASE_BACKEND}


@pytest.fixture
def lines(make_target, receiver, user):
    """An ordered target and an unordered one, both subscribed to project.update."""

    def make(count, **fields):
        ordered = make_target(target_url=receiver.url + "/ordered/", ordered=True, **fields)
        plain = make_target(target_url=receiver.url + "/plain/", **fields)
        for number in range(count):
            send_event("project.update", {"number": number}, owner=user)
        return (list(ordered.deliveries.order_by("pk")), list(plain.deliveries.order_by("pk")))

    return make


def claim(claimant="worker-a", of=None):
    """Claim what is due (of the deliveries ``of``, when given)."""
    ids = None if of is None else [d.pk for d in of]
    return queue.claim(claimant, limit=100, ids=ids).ids


def numbers(receiver, path):
    return [int(request.body.split(b":")[-1].strip(b"}")) for request in receiver.requests
            if request.path == path]


def test_an_ordered_target_hands_out_only_its_oldest_pending_delivery(lines):
    ordered, plain = lines(3)
    assert sorted(claim()) == sorted([ordered[0].pk, *(d.pk for d in plain)])
    # The first is being sent: another worker gets nothing of the target's.
    assert claim("worker-b") == []


def test_the_next_goes_once_the_one_before_has_succeeded(lines, receiver):
    ordered, _ = lines(3)
    ids = [d.pk for d in ordered]
    # One round claims, sends and records once: the first only.
    assert [d.pk for d, _ in send_deliveries(ids)] == [ids[0]]
    assert [d.pk for d, _ in send_deliveries(ids)] == [ids[1]]
    assert [d.pk for d, _ in send_deliveries(ids)] == [ids[2]]
    assert numbers(receiver, "/ordered/") == [0, 1, 2]


def test_a_failing_delivery_holds_back_the_rest_until_it_fails_for_good(lines, receiver):
    receiver.routes["/ordered/"] = Reply(status=500)
    ordered, plain = lines(3, retry_schedule=[60])
    send_deliveries([d.pk for d in ordered + plain])
    first = Delivery.objects.get(pk=ordered[0].pk)
    assert (first.status, first.attempt) == (PENDING, 1)
    # The others are due, yet wait; the unordered target's went at once.
    assert claim() == []
    assert set(Delivery.objects.filter(pk__in=[d.pk for d in plain])
               .values_list("status", flat=True)) == {SUCCEEDED}

    travel(80)  # the wait, give or take its jitter
    assert claim() == [first.pk]
    queue.release("worker-a", [first.pk])
    send_deliveries([first.pk])
    assert Delivery.objects.get(pk=first.pk).status == FAILED
    assert claim() == [ordered[1].pk]


def test_the_failing_one_is_retried_before_any_after_it(lines, receiver):
    receiver.replies = [Reply(status=503)]
    ordered, _ = lines(3, retry_schedule=[1])
    backend = InlineBackend()
    backend.run([d.pk for d in ordered])
    assert numbers(receiver, "/ordered/") == [0]
    travel(2)
    backend.run([d.pk for d in ordered])
    assert numbers(receiver, "/ordered/") == [0, 0, 1, 2]


def test_a_run_sends_a_batch_of_one_target_in_order(lines, receiver):
    ordered, plain = lines(4)
    outcomes = InlineBackend().run([d.pk for d in reversed(ordered + plain)])
    assert len(outcomes) == 8
    assert numbers(receiver, "/ordered/") == [0, 1, 2, 3]
    assert set(Delivery.objects.values_list("status", flat=True)) == {SUCCEEDED}


def test_skipping_the_one_that_fails_lets_the_next_go(lines, receiver, user):
    receiver.routes["/ordered/"] = Reply(status=500)
    ordered, _ = lines(2, retry_schedule=[3600])
    send_deliveries([ordered[0].pk])
    assert claim(of=ordered) == []

    assert skip([ordered[0]], skipped_by=user) == [ordered[0].pk]
    first = Delivery.objects.get(pk=ordered[0].pk)
    assert (first.status, first.reason, first.next_attempt_at) == (
        CANCELLED, "skipped by audreyr", None)
    assert claim(of=ordered) == [ordered[1].pk]


def test_a_delivery_being_sent_is_not_skipped(lines):
    ordered, _ = lines(2)
    hold([ordered[0]], "worker-a")
    assert skip([ordered[0].pk]) == []
    assert Delivery.objects.get(pk=ordered[0].pk).status == PENDING
    assert claim("worker-b", of=ordered) == []


def test_a_replayed_earlier_delivery_waits_for_the_one_in_flight_then_goes_first(
        lines, receiver):
    ordered, _ = lines(3)
    send_deliveries([ordered[0].pk])
    assert claim(of=ordered) == [ordered[1].pk]  # worker-a sends the second
    assert replay([ordered[0].pk]) == [ordered[0].pk]
    assert claim("worker-b", of=ordered) == []  # not beside the one in flight
    queue.release("worker-a", [ordered[1].pk])
    # Created first, it takes its place in line again: before the second.
    assert claim("worker-b", of=ordered) == [ordered[0].pk]


def test_turning_ordering_on_applies_to_deliveries_already_pending(lines):
    _, plain = lines(3)
    WebhookTarget.objects.filter(pk=plain[0].webhook_target_id).update(ordered=True)
    assert plain[0].pk in claim()
    assert not {d.pk for d in plain[1:]} & set(claim("worker-b"))


def test_the_sweep_hands_over_only_the_one_whose_turn_it_is(lines):
    ordered, plain = lines(3)
    travel(3600)
    overdue = queue.overdue(limit=100, requeue_after=60)
    assert sorted(overdue) == sorted([ordered[0].pk, *(d.pk for d in plain)])


def test_status_counts_as_due_only_the_one_whose_turn_it_is(lines):
    from djwebhooks.status import status

    ordered, plain = lines(3)
    travel(60)
    figures = status()
    assert (figures.pending, figures.due) == (6, 4)
    assert figures.oldest_due_id in {ordered[0].pk, *(d.pk for d in plain)}


def test_a_claim_that_raced_another_gives_its_delivery_back(lines):
    """Two claims at once can each see the other's delivery as free; the check made under
    the target's lock, after the claim, sees what the other committed. The race is made
    here by hand: another worker holds the first while this one took the second."""
    ordered, _ = lines(3)
    target = WebhookTarget.objects.filter(pk=ordered[0].webhook_target_id)
    hold([ordered[0]], "worker-b")
    hold([ordered[1]], "worker-a")
    with transaction.atomic():
        lost = _sql._check_turns("default", "worker-a",
                                 Delivery.objects.filter(pk=ordered[1].pk), target)
    assert lost == {ordered[1].pk}
    given_back = Delivery.objects.get(pk=ordered[1].pk)
    assert (given_back.claimed_by, given_back.claimed_until) == ("", None)
    # The one whose turn it is keeps its claim.
    Delivery.objects.filter(pk=ordered[0].pk).update(status=SUCCEEDED, claimed_by="",
                                                     claimed_until=None)
    hold([ordered[1]], "worker-a")
    with transaction.atomic():
        assert _sql._check_turns("default", "worker-a",
                                 Delivery.objects.filter(pk=ordered[1].pk), target) == set()
    assert Delivery.objects.get(pk=ordered[1].pk).claimed_by == "worker-a"


class Recording(QueueBackend):
    """A queue backend that keeps what it is handed, to send by hand."""

    def __init__(self, refuse=False):
        super().__init__()
        self.enqueued, self.refuse = [], refuse

    def enqueue(self, delivery_ids, *, run_after=None):
        if self.refuse:
            raise ConnectionError("broker down")
        self.enqueued.append((list(delivery_ids), run_after))


def test_a_queue_is_handed_the_next_delivery_once_one_finishes(lines, receiver):
    ordered, _ = lines(3)
    backend = Recording()
    # The tasks of the second and third ran early, while the first was being sent.
    hold([ordered[0]], "worker-a")
    assert backend.run([ordered[1].pk, ordered[2].pk]) == []
    assert backend.enqueued == []
    queue.release("worker-a", [ordered[0].pk])
    backend.run([ordered[0].pk])
    assert backend.enqueued == [([ordered[1].pk], None)]
    assert Delivery.objects.get(pk=ordered[1].pk).queued_at is not None


def test_a_next_delivery_the_queue_refuses_is_left_for_the_sweep(lines, receiver, caplog):
    ordered, _ = lines(2)
    with caplog.at_level(logging.ERROR, "djwebhooks.backends"):
        Recording(refuse=True).run([ordered[0].pk])
    assert "whose turn has come" in caplog.text
    assert Delivery.objects.get(pk=ordered[1].pk).queued_at is None
    assert queue.overdue(limit=10, requeue_after=3600) == [ordered[1].pk]


def test_a_retry_is_handed_over_and_nothing_after_it(lines, receiver,
                                                    django_capture_on_commit_callbacks):
    receiver.routes["/ordered/"] = Reply(status=500)
    ordered, _ = lines(2, retry_schedule=[5])
    backend = Recording()
    with django_capture_on_commit_callbacks(execute=True):
        backend.run([d.pk for d in ordered])
    [(ids, run_after)] = backend.enqueued
    assert ids == [ordered[0].pk] and run_after is not None


# The command


def test_the_command_skips_the_delivery_a_target_waits_for(lines, receiver):
    receiver.routes["/ordered/"] = Reply(status=500)
    ordered, _ = lines(2, retry_schedule=[3600])
    send_deliveries([ordered[0].pk])
    target = ordered[0].webhook_target_id

    call_command("webhooks_skip", "--target", str(target), "--dry-run", stdout=out())
    assert Delivery.objects.get(pk=ordered[0].pk).status == PENDING

    stdout = out()
    call_command("webhooks_skip", "--target", str(target), stdout=stdout)
    text = stdout.getvalue()
    assert f"skipped delivery {ordered[0].pk}" in text
    assert f"next in line: delivery {ordered[1].pk}" in text
    assert Delivery.objects.get(pk=ordered[0].pk).status == CANCELLED
    assert claim(of=ordered) == [ordered[1].pk]


@pytest.mark.parametrize(("args", "message"), [
    ([], "Name what to skip"),
    (["--target", "999999"], "there is no webhook target with this id"),
    (["--target", str(2**70)], "there is no webhook target with this id"),
    (["--delivery", "999999"], "there is no delivery with this id"),
])
def test_the_command_says_what_is_wrong(db, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("webhooks_skip", *args, stdout=out())


def test_the_command_refuses_an_unordered_target_and_a_finished_delivery(lines, receiver):
    ordered, plain = lines(1)
    with pytest.raises(CommandError, match="this target is not ordered"):
        call_command("webhooks_skip", "--target", str(plain[0].webhook_target_id),
                     stdout=out())
    send_deliveries([ordered[0].pk])
    with pytest.raises(CommandError, match="this delivery is succeeded, not pending"):
        call_command("webhooks_skip", "--delivery", str(ordered[0].pk), stdout=out())
    stdout = out()
    call_command("webhooks_skip", "--target", str(ordered[0].webhook_target_id),
                 stdout=stdout)
    assert "nothing waits" in stdout.getvalue()


def test_the_command_says_when_a_delivery_is_being_sent(lines):
    ordered, _ = lines(1)
    hold([ordered[0]], CLAIMANT)
    stderr = out()
    with pytest.raises(CommandError, match="1 delivery could not be skipped"):
        call_command("webhooks_skip", "--delivery", str(ordered[0].pk), stdout=out(),
                     stderr=stderr)
    assert "is being sent at this moment" in stderr.getvalue()


def out():
    from io import StringIO

    return StringIO()


def locks_targets(query):
    """Whether ``query`` locks webhook target rows (``_check_turns`` does)."""
    sql = query["sql"]
    return (sql.startswith("SELECT") and re.search(r"FOR (NO KEY )?UPDATE\s*$", sql)
            and WebhookTarget._meta.db_table in sql.split(" WHERE ")[0])


@pytest.mark.skipif(connection.vendor == "sqlite",
                    reason="SQLite checks turns in the claim's UPDATE, under its write lock")
def test_claims_check_turns_under_the_targets_lock(lines, django_assert_max_num_queries):
    """Where claims run side by side, a claim that takes an ordered target's delivery
    checks it again under the target's lock, in its transaction; a claim of unordered
    ones does not."""
    ordered, plain = lines(2)
    WebhookTarget.objects.filter(pk=ordered[0].webhook_target_id).update(ordered=False)
    with django_assert_max_num_queries(20) as unordered:
        assert len(claim()) == 4
    queue.release("worker-a", [d.pk for d in ordered + plain])
    WebhookTarget.objects.filter(pk=ordered[0].webhook_target_id).update(ordered=True)
    with django_assert_max_num_queries(20) as with_ordered:
        assert len(claim()) == 3
    assert [locks_targets(q) for q in with_ordered.captured_queries].count(True) == 1
    assert not any(locks_targets(q) for q in unordered.captured_queries)
