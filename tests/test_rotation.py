"""Secret rotation: the model method, the admin action, the command, and on the wire."""

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from djwebhooks import send_event
from djwebhooks.models import WebhookTarget
from djwebhooks.rotation import rotate_secrets

DAY = 86400


def refreshed(target):
    target.refresh_from_db()
    return target


# The model method
# ----------------


@pytest.mark.django_db
class TestRotateSecret:
    def test_new_secret_and_the_old_one_kept_for_the_default_24_hours(self, user):
        target = WebhookTarget.objects.create(owner=user, event="project.update",
                                              target_url="https://example.com/hook")
        old = target.secret
        now = timezone.now()
        new = target.rotate_secret(now=now)
        target = refreshed(target)  # saved
        assert new == target.secret != old
        assert new.startswith("whsec_")
        assert target.previous_secret == old
        assert target.previous_secret_expires == now + timedelta(hours=24)

    def test_signing_secrets_before_and_after_expiry(self, user):
        target = WebhookTarget.objects.create(owner=user, event="project.update",
                                              target_url="https://example.com/hook")
        old = target.secret
        now = timezone.now()
        target.rotate_secret(3600, now=now)
        assert target.signing_secrets(now) == [target.secret, old]
        assert target.signing_secrets(now + timedelta(seconds=3599)) == [target.secret, old]
        assert target.signing_secrets(now + timedelta(seconds=3600)) == [target.secret]
        assert target.signing_secrets(now + timedelta(days=2)) == [target.secret]

    def test_the_default_grace_comes_from_the_setting(self, user, settings):
        settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "SECRET_ROTATION_GRACE": 2 * 3600}
        target = WebhookTarget.objects.create(owner=user, event="project.update",
                                              target_url="https://example.com/hook")
        now = timezone.now()
        target.rotate_secret(now=now)
        assert target.previous_secret_expires == now + timedelta(hours=2)
        settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "SECRET_ROTATION_GRACE": timedelta(3)}
        target.rotate_secret(now=now)
        assert target.previous_secret_expires == now + timedelta(days=3)

    @pytest.mark.parametrize("grace", [0, 0.0, timedelta(0)])
    def test_zero_grace_drops_the_old_secret_at_once(self, user, grace):
        target = WebhookTarget.objects.create(owner=user, event="project.update",
                                              target_url="https://example.com/hook")
        old = target.secret
        target.rotate_secret(grace)
        target = refreshed(target)
        assert target.secret != old
        assert target.previous_secret == ""
        assert target.previous_secret_expires is None
        assert target.signing_secrets() == [target.secret]

    @pytest.mark.parametrize("grace", [7 * DAY + 1, timedelta(days=8), -1])
    def test_more_than_seven_days_or_negative_is_refused(self, user, grace):
        target = WebhookTarget.objects.create(owner=user, event="project.update",
                                              target_url="https://example.com/hook")
        old = target.secret
        with pytest.raises(ValueError, match="between 0 and 7 days"):
            target.rotate_secret(grace)
        assert refreshed(target).secret == old
        assert target.previous_secret == ""

    def test_seven_days_is_allowed(self, user):
        target = WebhookTarget.objects.create(owner=user, event="project.update",
                                              target_url="https://example.com/hook")
        now = timezone.now()
        target.rotate_secret(timedelta(days=7), now=now)
        assert target.previous_secret_expires == now + timedelta(days=7)


@pytest.mark.django_db
class TestRotateSecrets:
    """``rotation.rotate_secrets``, which the admin action and the command share."""

    def test_skips_targets_in_a_grace_period_unless_forced(self, user):
        first = WebhookTarget.objects.create(owner=user, event="project.update",
                                             target_url="https://example.com/1")
        second = WebhookTarget.objects.create(owner=user, event="project.update",
                                              target_url="https://example.com/2")
        original = first.secret
        first.rotate_secret(DAY)
        results = rotate_secrets(WebhookTarget.objects.all(), DAY)
        assert [(r.target.pk, r.skipped) for r in results] == [(first.pk, True),
                                                              (second.pk, False)]
        assert refreshed(first).previous_secret == original  # still valid for its receiver
        results = rotate_secrets(WebhookTarget.objects.filter(pk=first.pk), DAY, force=True)
        assert not results[0].skipped
        assert refreshed(first).previous_secret != original

    def test_zero_grace_rotates_targets_in_a_grace_period(self, user):
        target = WebhookTarget.objects.create(owner=user, event="project.update",
                                              target_url="https://example.com/1")
        target.rotate_secret(DAY)
        [result] = rotate_secrets(WebhookTarget.objects.all(), 0)
        assert not result.skipped and result.valid_until is None
        assert refreshed(target).signing_secrets() == [target.secret]

    def test_dry_run_changes_nothing(self, user):
        target = WebhookTarget.objects.create(owner=user, event="project.update",
                                              target_url="https://example.com/1")
        now = timezone.now()
        [result] = rotate_secrets(WebhookTarget.objects.all(), 60, dry_run=True, now=now)
        assert result.valid_until == now + timedelta(seconds=60)
        assert refreshed(target).previous_secret == ""


# The admin action
# ----------------


def post_action(client, action, targets):
    return client.post(reverse("admin:djwebhooks_webhooktarget_changelist"), {
        "action": action, "_selected_action": [target.pk for target in targets],
    })


@pytest.fixture
def staff_client(client, django_user_model):
    """A client signed in as staff with the view and change permissions on targets."""
    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(
        codename__in=["view_webhooktarget", "change_webhooktarget"]))
    client.force_login(staff)
    return client


@pytest.mark.django_db
class TestAdminAction:
    def test_rotates_the_selected_targets_and_says_until_when(self, staff_client, user):
        targets = [
            WebhookTarget.objects.create(owner=user, event="project.update",
                                         target_url=f"https://example.com/{n}")
            for n in range(3)
        ]
        old = {target.pk: target.secret for target in targets}
        response = post_action(staff_client, "rotate_secrets", targets[:2])
        assert response.status_code == 302
        [message] = [str(m) for m in get_messages(response.wsgi_request)]
        assert message.startswith("Rotated the signing secrets of 2 targets. Their previous "
                                  "secrets stay valid, and requests are signed with both, "
                                  "until ")
        assert "(UTC)" in message
        for target in targets[:2]:
            target = refreshed(target)
            assert target.secret != old[target.pk]
            assert target.previous_secret == old[target.pk]
            expected = timezone.now() + timedelta(hours=24)
            assert abs(target.previous_secret_expires - expected) < timedelta(minutes=1)
            assert target.previous_secret not in message and target.secret not in message
        assert refreshed(targets[2]).secret == old[targets[2].pk]
        entries = LogEntry.objects.filter(change_message="Rotated the signing secret.")
        assert sorted(int(e.object_id) for e in entries) == sorted(t.pk for t in targets[:2])

    def test_one_target_with_no_grace_period(self, staff_client, user, settings):
        settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "SECRET_ROTATION_GRACE": 0}
        target = WebhookTarget.objects.create(owner=user, event="project.update",
                                              target_url="https://example.com/1")
        response = post_action(staff_client, "rotate_secrets", [target])
        [message] = [str(m) for m in get_messages(response.wsgi_request)]
        assert message == ("Rotated the signing secret of 1 target. Its previous secret is no "
                           "longer valid.")
        assert refreshed(target).previous_secret == ""

    def test_a_target_in_a_grace_period_is_skipped_with_a_warning(self, staff_client, user):
        target = WebhookTarget.objects.create(owner=user, event="project.update",
                                              target_url="https://example.com/1")
        target.rotate_secret()
        current = target.secret
        response = post_action(staff_client, "rotate_secrets", [target])
        [message] = list(get_messages(response.wsgi_request))
        assert message.level_tag == "warning"
        assert str(message).startswith("Skipped 1 target whose previous secret is still in "
                                       "its grace period: project.update → "
                                       "https://example.com/1 (until ")
        assert "webhooks_rotate_secret --force" in str(message)
        assert refreshed(target).secret == current

    def test_needs_the_change_permission(self, client, django_user_model, user):
        viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
        viewer.user_permissions.set(Permission.objects.filter(codename="view_webhooktarget"))
        client.force_login(viewer)
        target = WebhookTarget.objects.create(owner=user, event="project.update",
                                              target_url="https://example.com/1")
        changelist = client.get(reverse("admin:djwebhooks_webhooktarget_changelist"))
        assert changelist.status_code == 200
        assert "rotate_secrets" not in changelist.content.decode()
        post_action(client, "rotate_secrets", [target])
        assert refreshed(target).previous_secret == ""

    def test_the_action_is_offered_with_its_description(self, staff_client, user):
        WebhookTarget.objects.create(owner=user, event="project.update",
                                     target_url="https://example.com/1")
        html = staff_client.get(reverse("admin:djwebhooks_webhooktarget_changelist")).content
        assert b"Rotate signing secrets of selected targets" in html


# The command
# -----------


def rotate(*args):
    """Run webhooks_rotate_secret; return (stdout, stderr)."""
    out, err = StringIO(), StringIO()
    call_command("webhooks_rotate_secret", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def three_targets(user, other_user):
    return [
        WebhookTarget.objects.create(owner=user, event="project.update",
                                     target_url="https://example.com/1"),
        WebhookTarget.objects.create(owner=user, event="invoice.paid",
                                     target_url="https://example.com/2"),
        WebhookTarget.objects.create(owner=other_user, event="project.update",
                                     target_url="https://example.com/3"),
    ]


def secrets_of(targets):
    return [s for t in targets for s in (t.secret, t.previous_secret) if s]


@pytest.mark.django_db
class TestCommand:
    def test_rotates_the_targets_given_and_never_prints_a_secret(self, three_targets):
        first, second, third = three_targets
        before = secrets_of(three_targets)
        out, err = rotate("--target", str(first.pk), "--target", str(third.pk))
        targets = [refreshed(t) for t in three_targets]
        assert targets[0].previous_secret == before[0]
        assert targets[1].previous_secret == ""
        assert targets[2].previous_secret == before[2]
        assert f"Rotated target {first.pk} (project.update → https://example.com/1): the " \
               "old secret is valid until " in out
        assert f"Rotated target {third.pk} " in out
        assert f"target {second.pk} " not in out
        assert out.rstrip().endswith("Rotated 2 targets.")
        for secret in before + secrets_of(targets):
            assert secret not in out + err
            assert secret[-8:] not in out + err

    def test_the_old_secret_stays_valid_for_the_grace_given(self, three_targets):
        first = three_targets[0]
        out, _ = rotate("--target", str(first.pk), "--grace", "12h")
        first = refreshed(first)
        expected = timezone.now() + timedelta(hours=12)
        assert abs(first.previous_secret_expires - expected) < timedelta(minutes=1)
        until = timezone.localtime(first.previous_secret_expires)
        assert f"valid until {until:%Y-%m-%d %H:%M:%S} UTC." in out

    def test_default_grace_is_the_setting(self, three_targets, settings):
        settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "SECRET_ROTATION_GRACE": 600}
        rotate("--target", str(three_targets[0].pk))
        expected = timezone.now() + timedelta(minutes=10)
        assert abs(refreshed(three_targets[0]).previous_secret_expires - expected) < \
            timedelta(minutes=1)

    def test_zero_grace(self, three_targets):
        first = three_targets[0]
        out, _ = rotate("--target", str(first.pk), "--grace", "0s")
        assert refreshed(first).signing_secrets() == [first.secret]
        assert "the old secret is no longer valid." in out

    def test_by_owner_and_all(self, three_targets, user):
        out, _ = rotate("--owner", user.username)
        assert [bool(refreshed(t).previous_secret) for t in three_targets] == [True, True,
                                                                                False]
        assert out.rstrip().endswith("Rotated 2 targets.")
        out, err = rotate("--all")
        # The owner's two are in their grace period now, so only the third is rotated.
        assert out.rstrip().endswith("Rotated 1 target, 2 skipped (still in a grace period; "
                                     "see above).")
        assert err.count("Skipped target") == 2
        assert "use --force" in err
        out, _ = rotate("--all", "--force")
        assert out.rstrip().endswith("Rotated 3 targets.")

    def test_dry_run(self, three_targets):
        before = secrets_of(three_targets)
        out, _ = rotate("--all", "--dry-run", "--grace", "1d")
        assert secrets_of([refreshed(t) for t in three_targets]) == before
        assert out.count("Would rotate target") == 3
        assert "the old secret would stay valid until" in out
        assert out.rstrip().endswith("Dry run: 3 targets would be rotated.")
        for secret in before:
            assert secret not in out

    @pytest.mark.parametrize("grace", ["8d", "2w", "169h", "99999999999w",
                                       "999999999999999999999d", "9" * 5000 + "s"])
    def test_more_than_seven_days_is_refused(self, three_targets, grace):
        with pytest.raises(CommandError, match="longer than 7 days"):
            rotate("--all", "--grace", grace)
        assert all(refreshed(t).previous_secret == "" for t in three_targets)

    def test_seven_days_is_allowed(self, three_targets):
        rotate("--target", str(three_targets[0].pk), "--grace", "7d")
        assert refreshed(three_targets[0]).previous_secret

    @pytest.mark.parametrize("grace", ["soon", "12", "-1h", "1.5h"])
    def test_a_grace_that_is_not_a_duration_is_refused(self, three_targets, grace):
        with pytest.raises(CommandError, match="is not a duration such as 30s"):
            rotate("--all", f"--grace={grace}")

    def test_unknown_targets_and_owners_are_refused(self, three_targets):
        with pytest.raises(CommandError, match=r"No webhook target with id 998, 999; nothing"):
            rotate("--target", str(three_targets[0].pk), "--target", "999", "--target", "998")
        assert refreshed(three_targets[0]).previous_secret == ""
        with pytest.raises(CommandError, match="no user with username 'nobody'"):
            rotate("--owner", "nobody")

    @pytest.mark.parametrize("target", ["99999999999999999999999", "9223372036854775808",
                                        "-99999999999999999999999"])
    def test_ids_no_target_can_have_are_unknown(self, three_targets, target):
        with pytest.raises(CommandError, match=rf"^No webhook target with id {target}; "
                                               "nothing was rotated\\.$"):
            rotate("--target", str(three_targets[0].pk), "--target", target)
        assert refreshed(three_targets[0]).previous_secret == ""

    @pytest.mark.parametrize(("owner", "message"), [
        ("", "no user with username ''"),
        ("a\x00b", r"^--owner 'a\\x00b' contains a NUL character, which no username has\.$"),
    ])
    def test_an_empty_or_impossible_owner_rotates_nothing(self, three_targets, owner,
                                                          message):
        with pytest.raises(CommandError, match=message):
            rotate("--owner", owner)
        assert all(refreshed(t).previous_secret == "" for t in three_targets)

    def test_one_way_of_choosing_targets_is_required(self, three_targets):
        with pytest.raises(CommandError, match="one of the arguments --target --owner --all"):
            rotate()
        with pytest.raises(CommandError, match="not allowed with argument"):
            rotate("--all", "--owner", "audreyr")

    def test_nothing_to_rotate(self, db, django_user_model):
        django_user_model.objects.create_user("lonely")
        out, _ = rotate("--owner", "lonely")
        assert out == "No webhook targets match; nothing to rotate.\n"


# On the wire
# -----------


def verifies(secret, request):
    """Whether the reference package accepts ``request`` with ``secret``."""
    try:
        Webhook(secret).verify(request.body, request.headers)
    except WebhookVerificationError:
        return False
    return True


def with_signature(request, signature):
    """The request as it would be with only ``signature`` in its webhook-signature."""
    return type(request)(request.method, request.path,
                         {**request.headers, "webhook-signature": signature}, request.body)


@pytest.mark.django_db(transaction=True)
def test_requests_carry_a_signature_per_secret_until_the_old_one_expires(make_target, user,
                                                                         receiver):
    target = make_target()
    old = target.secret
    new = target.rotate_secret(3600)

    send_event("project.update", {"n": 1}, owner=user)
    request = receiver.requests[-1]
    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    # Each signature is made with its own secret: the new one first.
    assert verifies(new, with_signature(request, signatures[0]))
    assert verifies(old, with_signature(request, signatures[1]))
    assert not verifies(old, with_signature(request, signatures[0]))
    assert not verifies(new, with_signature(request, signatures[1]))
    # A receiver with either secret accepts the request as sent.
    assert verifies(new, request) and verifies(old, request)

    WebhookTarget.objects.filter(pk=target.pk).update(
        previous_secret_expires=timezone.now() - timedelta(seconds=1))
    send_event("project.update", {"n": 2}, owner=user)
    request = receiver.requests[-1]
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    assert verifies(new, request)
    assert not verifies(old, request)


@pytest.mark.django_db(transaction=True)
def test_a_rotation_with_no_grace_signs_with_the_new_secret_only(make_target, user, receiver):
    target = make_target()
    old = target.secret
    new = target.rotate_secret(0)
    send_event("project.update", {"n": 1}, owner=user)
    request = receiver.requests[-1]
    assert " " not in request.headers["webhook-signature"]
    assert verifies(new, request) and not verifies(old, request)


@pytest.mark.django_db(transaction=True)
def test_two_rotations_at_once_lose_neither_new_secret(user):
    # Two processes rotate the same target from instances loaded before either rotation:
    # the row lock makes the second see the first's new secret and keep it as the previous
    # one, instead of writing over it from its stale copy.
    import threading

    from django.db import connection, connections

    if connection.vendor == "sqlite":
        pytest.skip("SQLite's in-memory test database is one connection's: the threads here "
                    "need a database each connection shares; CI runs this on PostgreSQL "
                    "and MariaDB")
    target = WebhookTarget.objects.create(owner=user, event="project.update",
                                          target_url="https://a.example/")
    original = target.secret
    stale = [WebhookTarget.objects.get(pk=target.pk) for _ in range(2)]
    barrier, made, errors = threading.Barrier(2), [], []

    def rotate(instance):
        try:
            barrier.wait()
            made.append(instance.rotate_secret(3600))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=rotate, args=(instance,)) for instance in stale]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    target.refresh_from_db()
    assert original not in made and len(set(made)) == 2
    # The later rotation's secret is current, the earlier one's is the previous secret.
    assert {target.secret, target.previous_secret} == set(made)


def test_a_stale_instance_rotates_from_the_stored_secret(user, db):
    target = WebhookTarget.objects.create(owner=user, event="project.update",
                                          target_url="https://a.example/")
    stale = WebhookTarget.objects.get(pk=target.pk)
    first = target.rotate_secret(3600)
    second = stale.rotate_secret(3600)
    target.refresh_from_db()
    assert (target.secret, target.previous_secret) == (second, first)


def test_every_target_is_rotated_in_batches(user, db, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from djwebhooks import rotation

    monkeypatch.setattr(rotation, "BATCH_SIZE", 2)
    targets = [WebhookTarget.objects.create(owner=user, event="project.update",
                                            target_url=f"https://{n}.example/")
               for n in range(5)]
    before = {t.pk: t.secret for t in targets}
    with CaptureQueriesContext(connection) as captured:
        results = rotate_secrets(WebhookTarget.objects.all(), 3600)
    batches = [q["sql"] for q in captured.captured_queries
               if q["sql"].startswith("SELECT") and "djwebhooks_webhooktarget" in q["sql"]
               and " IN (" in q["sql"]]
    assert len(batches) == 3, batches  # 2 + 2 + 1 rows, each batch locked on its own
    assert [r.target.pk for r in results] == [t.pk for t in targets]
    for target in WebhookTarget.objects.all():
        assert target.previous_secret == before[target.pk] != target.secret


@pytest.mark.parametrize("secret", ["whsec_not base64!", "whsec_", "", "sk_live_abc"])
def test_a_secret_that_cannot_sign_is_refused_by_validation(user, db, secret):
    from django.core.exceptions import ValidationError

    target = WebhookTarget(owner=user, event="project.update",
                           target_url="https://a.example/", secret=secret)
    with pytest.raises(ValidationError) as info:
        target.full_clean()
    assert "secret" in info.value.message_dict
    target.secret, target.previous_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", secret
    if secret:  # blank is allowed for the previous secret: there may be none
        with pytest.raises(ValidationError) as info:
            target.full_clean()
        assert "usable signing secret" in str(info.value.message_dict["previous_secret"])
    else:
        target.full_clean()
