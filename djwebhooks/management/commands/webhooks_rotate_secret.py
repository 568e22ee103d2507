"""``manage.py webhooks_rotate_secret``: give webhook targets new signing secrets."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils.timezone import localtime

from djwebhooks import conf
from djwebhooks.management.parsing import check_text, duration_seconds, ids_in_range
from djwebhooks.models import WebhookTarget
from djwebhooks.rotation import rotate_secrets


class Command(BaseCommand):
    help = (
        "Give webhook targets new signing secrets. For a grace period (SECRET_ROTATION_GRACE, "
        "24 hours unless set) the old secret stays valid and every request is signed with "
        "both, so receivers can switch over. Secrets are never printed: the admin shows them "
        "to users allowed to change the target."
    )

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--target", type=int, action="append", metavar="ID",
                           help="Rotate the WebhookTarget with this id; repeat for more.")
        which.add_argument("--owner", metavar="USERNAME",
                           help="Rotate every target of the user with this username.")
        which.add_argument("--all", action="store_true", dest="all_targets",
                           help="Rotate every target.")
        parser.add_argument("--grace", metavar="DURATION",
                            help="How long the old secret stays valid: 30s, 15m, 12h, 3d or "
                            "1w; 0s makes it invalid at once. At most 7d. Default: the "
                            "SECRET_ROTATION_GRACE setting.")
        parser.add_argument("--force", action="store_true",
                            help="Also rotate targets still in the grace period of an "
                            "earlier rotation, which makes the secret from before it "
                            "invalid at once.")
        parser.add_argument("--dry-run", action="store_true",
                            help="Say what would be rotated, and change nothing.")

    def handle(self, *args, target=None, owner=None, all_targets=False, grace=None,
               force=False, dry_run=False, **options):
        grace = parse_grace(grace)
        targets = select_targets(target, owner)
        if not targets.exists():
            self.stdout.write("No webhook targets match; nothing to rotate.")
            return
        try:
            results = rotate_secrets(targets, grace, force=force, dry_run=dry_run)
        except ValueError as exc:  # SECRET_ROTATION_GRACE is out of range
            raise CommandError(str(exc)) from None
        for result in results:
            self.report(result, dry_run)
        rotated = sum(not result.skipped for result in results)
        skipped = len(results) - rotated
        summary = (f"Dry run: {_count(rotated)} would be rotated" if dry_run
                   else f"Rotated {_count(rotated)}")
        if skipped:
            summary += f", {skipped} skipped (still in a grace period; see above)"
        self.stdout.write(self.style.SUCCESS(summary + "."))

    def report(self, result, dry_run):
        """Print what became of one target, and until when its old secret works."""
        target = result.target
        name = f"target {target.pk} ({target.event} → {target.target_url})"
        until = result.valid_until
        if result.skipped:
            self.stderr.write(self.style.WARNING(
                f"Skipped {name}: the secret from before its last rotation is valid until "
                f"{_moment(until)}; rotating again now would make it invalid at once. Wait "
                "until then, or use --force."
            ))
        elif dry_run:
            old = (f"the old secret would stay valid until {_moment(until)}" if until
                   else "the old secret would be invalid at once")
            self.stdout.write(f"Would rotate {name}: {old}.")
        else:
            old = (f"the old secret is valid until {_moment(until)}" if until
                   else "the old secret is no longer valid")
            self.stdout.write(f"Rotated {name}: {old}.")


def parse_grace(value):
    """Return ``--grace`` as a timedelta (None for the setting); refuse more than 7 days."""
    if value is None:
        return None
    seconds = duration_seconds(value)
    if seconds is None:
        raise CommandError(f"--grace {value!r} is not a duration such as 30s, 15m, 12h, 3d "
                           "or 1w (0s makes the old secret invalid at once).")
    if seconds > conf.MAX_ROTATION_GRACE:
        raise CommandError(f"--grace {value} is longer than 7 days, the longest an old "
                           "secret may stay valid.")
    return timedelta(seconds=seconds)


def select_targets(ids, owner):
    """Return the targets chosen by ``--target``, ``--owner`` or (neither) ``--all``."""
    targets = WebhookTarget.objects.all()
    if ids is not None:
        # An id beyond what the primary key holds belongs to no target; the database is not
        # asked about it (SQLite cannot take an integer beyond 64 bits).
        possible = ids_in_range(WebhookTarget, ids)
        found = set(targets.filter(pk__in=possible).values_list("pk", flat=True))
        missing = sorted(set(ids) - found)
        if missing:
            listed = ", ".join(map(str, missing))
            raise CommandError(f"No webhook target with id {listed}; nothing was rotated.")
        return targets.filter(pk__in=possible)
    if owner is not None:
        check_text("--owner", owner, has="username")
        user_model = get_user_model()
        lookup = {user_model.USERNAME_FIELD: owner}
        if not user_model._default_manager.filter(**lookup).exists():
            raise CommandError(f"--owner: no user with {user_model.USERNAME_FIELD} {owner!r}.")
        return targets.filter(**{f"owner__{user_model.USERNAME_FIELD}": owner})
    return targets


def _moment(moment):
    return f"{localtime(moment):%Y-%m-%d %H:%M:%S %Z}"


def _count(number):
    return f"{number} target" if number == 1 else f"{number} targets"
