"""Retention: ``webhooks_prune`` and ``retention.prune``."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from djwebhooks.models import Delivery, DeliveryAttempt
from djwebhooks.retention import prunable, prune

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(make_target):
    """Deliveries of every status, some 40 days old, each with an attempt."""
    target = make_target()
    old = timezone.now() - timedelta(days=40)
    made = {}
    for age in ("old", "new"):
        for status in Delivery.Status.values:
            delivery = Delivery.objects.create(webhook_target=target, event="project.update",
                                               hash_value=f"{age}-{status}", status=status)
            delivery.attempts.create(attempt=1)
            if age == "old":
                Delivery.objects.filter(pk=delivery.pk).update(modified=old)
            made[age, status] = delivery
    return made


def test_prune_deletes_old_finished_deliveries_and_their_attempts(history):
    assert prune(timedelta(days=30), batch_size=2) == 3
    left = set(Delivery.objects.values_list("hash_value", flat=True))
    assert left == {"old-pending", "new-pending", "new-succeeded", "new-failed",
                    "new-cancelled"}
    assert DeliveryAttempt.objects.count() == 5


def test_prune_reports_each_batch(history):
    batches = []
    prune(30 * 86400, batch_size=2, on_batch=batches.append)
    assert batches == [2, 3]


def test_command_uses_the_retention_setting(settings, history):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RETENTION": timedelta(days=50)}
    out = StringIO()
    call_command("webhooks_prune", stdout=out)
    assert out.getvalue().strip() == "Deleted 0 finished deliveries."
    call_command("webhooks_prune", "--older-than", "30d", stdout=out)
    assert "Deleted 3 finished deliveries." in out.getvalue()


@pytest.mark.parametrize(("args", "message"), [
    (["--older-than", "a month"], "not a duration"),
    (["--older-than", ""], "not a duration"),
    (["--older-than=-1d"], "not a duration"),
    (["--batch-size", "0"], "--batch-size must be a positive number"),
    (["--older-than", "0s"], r"^--older-than '0s' must be longer than 0; give a duration such "
     r"as 30d, 12h or 2w\.$"),
    (["--older-than", "99999999999w"], r"^--older-than '99999999999w' reaches back past the "
     r"year 1; give a shorter duration such as 30d, 12h or 2w\.$"),
    (["--older-than", "999999999999999999999d"], "reaches back past the year 1"),
    (["--older-than", "800000d"], "reaches back past the year 1"),
    (["--batch-size", "10001"], r"^--batch-size must be a positive number, at most 10000; got "
     r"10001\.$"),
    (["--batch-size", "99999999999999999999999"], "at most 10000"),
])
def test_command_refuses_bad_options(args, message, history):
    with pytest.raises(CommandError, match=message):
        call_command("webhooks_prune", *args, stdout=StringIO())
    assert Delivery.objects.count() == 8  # nothing deleted


def test_command_accepts_the_largest_values(history):
    out = StringIO()
    call_command("webhooks_prune", "--older-than", "700000d", "--batch-size", "10000",
                 stdout=out)
    assert out.getvalue().strip() == "Deleted 0 finished deliveries."
    call_command("webhooks_prune", "--older-than", "1d", "--batch-size", "10000", stdout=out)
    assert "Deleted 3 finished deliveries." in out.getvalue()


def test_dry_run_counts_and_deletes_nothing(history):
    out = StringIO()
    call_command("webhooks_prune", "--dry-run", "--older-than", "30d", stdout=out)
    assert out.getvalue().strip() == ("Dry run: 3 finished deliveries would be deleted; "
                                      "nothing was deleted.")
    assert Delivery.objects.count() == 8
    assert DeliveryAttempt.objects.count() == 8


def test_dry_run_counts_what_prune_deletes(history):
    assert prunable(timedelta(days=30)) == 3
    assert prunable(timedelta(days=50)) == 0
    assert prune(timedelta(days=30)) == 3


@pytest.mark.parametrize("age", ["59m", "3599s", "1s"])
def test_an_age_under_an_hour_is_refused_without_force(history, age):
    with pytest.raises(CommandError, match=rf"^--older-than {age} is under one hour: "
                       r"deliveries that finished so recently may still be looked at, or "
                       r"about to be replayed\. Nothing was deleted\. Give an age of 1h or "
                       r"more, or pass --force to delete them anyway\.$"):
        call_command("webhooks_prune", "--older-than", age, stdout=StringIO())
    assert Delivery.objects.count() == 8


def test_a_retention_setting_under_an_hour_is_refused_without_force(settings, history):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RETENTION": 600}
    with pytest.raises(CommandError, match=r"^DJWEBHOOKS\['RETENTION'\] \(600 seconds\) is "
                                           r"under one hour"):
        call_command("webhooks_prune", "--dry-run", stdout=StringIO())


def test_force_accepts_an_age_under_an_hour(history):
    out = StringIO()
    call_command("webhooks_prune", "--older-than", "10m", "--force", "--dry-run", stdout=out)
    assert "Dry run: 3 finished deliveries would be deleted" in out.getvalue()  # the old ones
    Delivery.objects.exclude(status="pending").update(modified=timezone.now()
                                                      - timedelta(minutes=20))
    call_command("webhooks_prune", "--older-than", "10m", "--force", stdout=out)
    assert "Deleted 6 finished deliveries." in out.getvalue()
    assert set(Delivery.objects.values_list("status", flat=True)) == {"pending"}
    call_command("webhooks_prune", "--older-than", "1h", stdout=out)  # an hour needs no --force


@pytest.fixture
def mixed(make_target):
    """Eleven deliveries in id order, old finished ones between pending and recent ones;
    return the message ids of the old finished ones."""
    target = make_target()
    old = timezone.now() - timedelta(days=40)
    kinds = ["old-succeeded", "pending", "old-failed", "old-cancelled", "new-succeeded",
             "old-succeeded", "old-pending", "old-failed", "new-failed", "old-succeeded",
             "old-cancelled"]
    expected = set()
    for number, kind in enumerate(kinds):
        age, _, status = kind.rpartition("-")
        delivery = Delivery.objects.create(webhook_target=target, event="project.update",
                                           hash_value=f"{number}-{kind}", status=status)
        delivery.attempts.create(attempt=1)
        if age == "old":
            Delivery.objects.filter(pk=delivery.pk).update(modified=old)
            if status != "pending":
                expected.add(delivery.hash_value)
    return expected


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 1000])
def test_batches_after_the_first_delete_exactly_the_old_finished_ones(mixed, batch_size):
    batches = []
    assert prune(timedelta(days=30), batch_size=batch_size, on_batch=batches.append) == 7
    left = set(Delivery.objects.values_list("hash_value", flat=True))
    assert not left & mixed
    assert left == {"1-pending", "4-new-succeeded", "6-old-pending", "8-new-failed"}
    assert DeliveryAttempt.objects.count() == 4
    assert batches == [min(n, 7) for n in range(batch_size, 7 + batch_size, batch_size)]


def batch_queries(queries):
    """The SQL of prune's batch reads (the statements that filter on the age)."""
    return [q["sql"] for q in queries if q["sql"].startswith("SELECT") and "modified" in q["sql"]]


def test_each_batch_reads_on_from_where_the_one_before_ended(mixed):
    ids = list(Delivery.objects.order_by("pk").values_list("pk", flat=True))
    with CaptureQueriesContext(connection) as captured:
        prune(timedelta(days=30), batch_size=3)
    reads = batch_queries(captured.captured_queries)
    # 7 rows: batches of 3, 3 and 1, and no read after the short one.
    assert len(reads) == 3
    pk = connection.ops.quote_name("id")
    # The first batch ends at the fourth delivery (0, 2, 3), the second at the tenth (5, 7, 9).
    assert f"{pk} > {ids[3]}" in reads[1]
    assert f"{pk} > {ids[9]}" in reads[2]
    assert f"{pk} >" not in reads[0]


def test_a_full_last_batch_needs_one_more_read(mixed):
    with CaptureQueriesContext(connection) as captured:
        assert prune(timedelta(days=30), batch_size=7) == 7
    assert len(batch_queries(captured.captured_queries)) == 2
