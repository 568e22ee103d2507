"""Replaying failed deliveries: ``delivery.replay`` and ``manage.py webhooks_replay``."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from djwebhooks import send_event
from djwebhooks.events import replay
from djwebhooks.management.commands.webhooks_replay import parse_since
from djwebhooks.management.parsing import duration_seconds, parse_duration
from djwebhooks.models import Delivery
from tests.receiver import Reply

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_retries(settings):
    """Without retries, one failed attempt fails a delivery for good."""
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "RETRY_SCHEDULE": []}


def run(*args):
    out, err = StringIO(), StringIO()
    call_command("webhooks_replay", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def failed(make_target, user, receiver):
    """One delivery that failed with a 503, the receiver now answering 200."""
    receiver.replies = [Reply(status=503)]
    make_target()
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED
    return delivery


def test_replay_is_a_new_attempt_on_the_same_delivery(failed, receiver):
    assert replay(Delivery.objects.filter(pk=failed.pk)) == [failed.pk]

    failed.refresh_from_db()
    assert failed.status == Delivery.Status.SUCCEEDED
    assert failed.attempt == 2
    assert [(a.attempt, a.response_status) for a in failed.attempts.all()] == [
        (1, 503), (2, 200)
    ]
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == failed.hash_value
    assert first.body == second.body  # the same message, only the attempt is new


def test_replay_leaves_a_delivery_a_worker_holds(failed, receiver):
    from djwebhooks import queue

    Delivery.objects.filter(pk=failed.pk).update(status="pending", next_attempt_at=timezone.now())
    assert queue.claim("busy-worker", limit=1).ids == [failed.pk]
    assert replay([failed.pk]) == []
    failed.refresh_from_db()
    assert failed.claimed_by == "busy-worker"
    assert len(receiver.requests) == 1


def test_replay_accepts_ids_and_instances(failed):
    assert replay([failed]) == [failed.pk]
    assert replay([]) == []


def test_command_replays_failed_deliveries(failed, receiver):
    out, _ = run()
    assert "Replayed 1 delivery: 1 succeeded, 0 failed, 0 pending." in out
    failed.refresh_from_db()
    assert failed.status == Delivery.Status.SUCCEEDED
    assert {r.headers["webhook-id"] for r in receiver.requests} == {failed.hash_value}


def test_command_leaves_succeeded_deliveries_alone(make_target, user, receiver):
    make_target()
    send_event("project.update", {"n": 1}, owner=user)
    out, _ = run()
    assert "nothing to replay" in out
    assert len(receiver.requests) == 1


def test_stale_pending_deliveries(settings, make_target, user, receiver):
    make_target()
    # A process that stopped between commit and send leaves its deliveries pending.
    with override_settings(DJWEBHOOKS={**settings.DJWEBHOOKS,
                                       "BACKEND": "tests.test_backends.RecordingBackend"}):
        [stale] = send_event("project.update", {"n": 1}, owner=user)
        [fresh] = send_event("project.update", {"n": 2}, owner=user)
    Delivery.objects.filter(pk=stale.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=11)
    )

    out, _ = run()
    assert "nothing to replay" in out
    out, _ = run("--stale-pending")
    assert "Replayed 1 delivery: 1 succeeded" in out
    assert [r.headers["webhook-id"] for r in receiver.requests] == [stale.hash_value]
    assert Delivery.objects.get(pk=fresh.pk).status == Delivery.Status.PENDING


def test_dry_run_sends_nothing(failed, receiver):
    out, _ = run("--dry-run")
    assert f"would replay {failed.pk} {failed.hash_value} project.update" in out
    assert "Dry run: 1 delivery would be replayed." in out
    assert len(receiver.requests) == 1
    failed.refresh_from_db()
    assert failed.status == Delivery.Status.FAILED


def test_filters(make_target, user, other_user, receiver):
    receiver.default = Reply(status=500)
    mine = make_target()
    theirs = make_target(owner=other_user, target_url=receiver.url + "/theirs/")
    make_target(event="invoice.paid")
    send_event("project.update", {}, owner=user)
    send_event("project.update", {}, owner=other_user)
    send_event("invoice.paid", {}, owner=user)
    old = send_event("project.update", {"old": True}, owner=user)[0]
    Delivery.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(days=5))
    assert Delivery.objects.failed().count() == 4

    def selected(*args):
        out, _ = run("--dry-run", *args)
        return sorted(int(line.split()[2]) for line in out.splitlines()
                      if line.startswith("would replay"))

    by_event = Delivery.objects.filter(event="invoice.paid").values_list("pk", flat=True)
    assert selected("--event", "invoice.paid") == list(by_event)
    assert selected("--target", str(theirs.pk)) == [
        theirs.deliveries.get().pk
    ]
    assert len(selected("--owner", "audreyr")) == 3
    assert old.pk not in selected("--since", "2d")
    assert old.pk in selected("--since", "6d")
    assert len(selected("--limit", "2")) == 2
    assert selected("--target", str(mine.pk), "--since", "1h") == [
        mine.deliveries.exclude(pk=old.pk).get().pk
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "neither a duration"),
        (["--limit", "0"], "--limit must be a positive number"),
        (["--owner", "nobody"], "no user with username 'nobody'"),
        (["--since", ""], "neither a duration"),
        (["--since", "2026-02-30"], r"^--since '2026-02-30' is not a valid date/time \(day is "
         r"out of range for month\); give one such as 2026-11-28 or 2026-11-28T09:00\.$"),
        (["--since", "2026-13-01"], r"not a valid date/time \(month must be in 1\.\.12\)"),
        (["--since", "2026-11-28T25:00"], r"not a valid date/time \(hour must be in 0\.\.23\)"),
        (["--since", "2026-11-28T09:00+25:00"], r"\(its UTC offset must be less than 24 "
         r"hours\)"),
        (["--since", "99999999999w"], r"^--since '99999999999w' reaches back past the year 1; "
         r"give a shorter duration \(30m, 2h, 3d, 1w\) or a date/time \(2026-11-28 or "
         r"2026-11-28T09:00\)\.$"),
        (["--since", "999999999999999999999d"], "reaches back past the year 1"),
        (["--since", "800000d"], "reaches back past the year 1"),
        (["--since", "9" * 5000 + "s"], "reaches back past the year 1"),
        (["--since", "9999-12-31T23:59:59-05:00"], r"^--since '9999-12-31T23:59:59-05:00' is "
         r"out of range: give a date/time between 0001-01-01 and 9999-12-31 in UTC\.$"),
        (["--since", "0001-01-01T00:00:00+05:00"], "is out of range"),
        (["--limit", "-5"], "--limit must be a positive number"),
        (["--owner", ""], "no user with username ''"),
        (["--owner", "a\x00b"], r"--owner 'a\\x00b' contains a NUL character"),
        (["--event", "a\x00b"], r"--event 'a\\x00b' contains a NUL character"),
    ],
)
def test_bad_options_are_explained(args, message, db):
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_a_date_that_is_out_of_range_in_utc_is_explained(settings, db):
    settings.TIME_ZONE = "Asia/Tokyo"  # midnight on 0001-01-01 there is still year 0 in UTC
    with pytest.raises(CommandError, match="'0001-01-01' is out of range"):
        run("--since", "0001-01-01")


def test_the_earliest_and_latest_moments_are_accepted(failed):
    out, _ = run("--dry-run", "--since", "0001-01-01")
    assert "Dry run: 1 delivery would be replayed." in out
    out, _ = run("--dry-run", "--since", "739000d")  # about 2,000 years
    assert "Dry run: 1 delivery would be replayed." in out
    out, _ = run("--dry-run", "--since", "9999-12-31T23:59:59")
    assert "nothing to replay" in out


def test_since_without_time_zone_support(failed, settings):
    settings.USE_TZ = False
    out, _ = run("--dry-run", "--since", "2000-01-01")
    assert "Dry run: 1 delivery would be replayed." in out
    out, _ = run("--dry-run", "--since", "2000-01-01T00:00+02:00")
    assert "Dry run: 1 delivery would be replayed." in out


def test_a_limit_beyond_any_count_replays_everything(failed):
    out, _ = run("--limit", "99999999999999999999999")
    assert "Replayed 1 delivery: 1 succeeded" in out


@pytest.mark.parametrize("target", ["99999999999999999999999", "9223372036854775808",
                                    "-99999999999999999999999", "0", "99"])
def test_a_target_that_does_not_exist_is_named(failed, target):
    with pytest.raises(CommandError, match=rf"^--target {target}: there is no webhook target "
                       r"with this id; nothing was replayed\. The admin's webhook target list "
                       r"shows their ids\.$"):
        run("--target", target)
    failed.refresh_from_db()
    assert failed.status == Delivery.Status.FAILED


def test_an_undeclared_event_is_named_with_the_declared_ones(failed):
    with pytest.raises(CommandError, match=r"^--event 'projet.update' is not a declared "
                       r"event, and no delivery has it\. Declared events: invoice\.paid, "
                       r"project\.delete, project\.update\.$"):
        run("--event", "projet.update")


def test_an_event_no_longer_declared_can_still_be_replayed(failed, settings):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "EVENTS": ["invoice.paid"]}
    out, _ = run("--event", "project.update", "--dry-run")
    assert "Dry run: 1 delivery would be replayed." in out


def test_dry_run_says_why_each_delivery_failed(failed, make_target, user, closed_port_url):
    make_target(event="invoice.paid", target_url=closed_port_url)
    [refused] = send_event("invoice.paid", {}, owner=user)
    # What a delivery to an inactive target becomes: failed, without a request.
    never = Delivery.objects.create(webhook_target=failed.webhook_target, event="project.update",
                                    hash_value="msg_never", status=Delivery.Status.FAILED,
                                    reason="target is inactive; nothing was sent")
    lines = run("--dry-run")[0].splitlines()
    assert lines[2].endswith(f"{failed.webhook_target.target_url} (attempts so far: 0): no "
                             "attempt made; target is inactive; nothing was sent")
    assert lines[2].startswith(f"would replay {never.pk} ")
    assert lines[0].endswith(f"{failed.webhook_target.target_url} (attempts so far: 1): last "
                             "attempt 503 Service Unavailable; gave up after 1 attempt")
    assert lines[1].startswith(f"would replay {refused.pk} ")
    port = closed_port_url.split(":")[2].split("/")[0]
    assert f"(attempts so far: 1): last attempt Connection refused by 127.0.0.1:{port}; " \
        in lines[1]
    assert "Details" not in lines[1]
    assert lines[1].endswith("; gave up after 1 attempt")
    assert len(lines) == 4, lines


def test_parse_since():
    now = timezone.now()
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("3d", now) == now - timedelta(days=3)
    assert parse_since("1w", now) == now - timedelta(weeks=1)
    assert parse_since("2026-11-01").isoformat() == "2026-11-01T00:00:00+00:00"
    # In UTC, whatever the offset given: PostgreSQL takes none of 16 hours or more.
    assert parse_since("2026-11-01T09:30:00+01:00").isoformat() == "2026-11-01T08:30:00+00:00"
    assert parse_since("2026-11-01T09:30:00+23:59").isoformat() == "2026-10-31T09:31:00+00:00"


def test_parse_duration():
    assert parse_duration("30s") == timedelta(seconds=30)
    assert parse_duration(" 15 m ") == timedelta(minutes=15)
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("0003d") == timedelta(days=3)
    assert parse_duration("1w") == timedelta(weeks=1)
    assert parse_duration("0s") == timedelta(0)
    for value in ["", "2", "h", "-1h", "1.5h", "2 hours", "1y"]:
        assert parse_duration(value) is None
    assert parse_duration("142857142w") == timedelta(weeks=142857142)
    with pytest.raises(OverflowError):
        parse_duration("142857143w")  # past timedelta.max, 999,999,999 days
    # Far too many digits for Python to read as a number: still longer than any bound.
    assert duration_seconds("9" * 5000 + "s") == 10**30
    assert duration_seconds("0" * 5000 + "5m") == 300


def test_parse_since_in_a_time_zone(settings):
    settings.TIME_ZONE = "Asia/Tokyo"
    assert parse_since("2026-11-01").isoformat() == "2026-10-31T15:00:00+00:00"
    assert parse_since("2026-11-01T09:30").isoformat() == "2026-11-01T00:30:00+00:00"


def test_an_offset_of_a_day_almost_is_accepted(failed):
    out, _ = run("--dry-run", "--since", "2000-01-01T00:00+23:59")
    assert "Dry run: 1 delivery would be replayed." in out


def test_progress_bar_on_long_runs(make_target, user, receiver):
    receiver.default = Reply(status=500)
    make_target()
    for n in range(150):
        send_event("project.update", {"n": n}, owner=user)
    receiver.default = Reply(status=200)

    out, err = run()

    assert "[####################----------] 100/150" in err
    assert "[##############################] 150/150" in err
    assert "Replayed 150 deliveries: 150 succeeded" in out


def test_verbose_output_lists_each_delivery(failed):
    out = StringIO()
    call_command("webhooks_replay", verbosity=2, stdout=out, stderr=StringIO())
    assert f"{failed.pk} {failed.hash_value} project.update: succeeded after 2 attempts" in (
        out.getvalue()
    )
