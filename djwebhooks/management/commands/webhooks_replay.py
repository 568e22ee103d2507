"""``manage.py webhooks_replay``: send failed deliveries again."""

import sys
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from djwebhooks.events import replay
from djwebhooks.management.parsing import check_count, check_text, ids_in_range, parse_since
from djwebhooks.models import DatabaseNow, Delivery

BATCH = 100
#: A pending delivery overdue by this much is not being picked up: no worker runs, or the
#: process that was to send it stopped.
STALE_PENDING_AFTER = timedelta(minutes=10)


class Command(BaseCommand):
    help = (
        "Send failed webhook deliveries again. Each replay is a new attempt on the same "
        "delivery, with the same webhook-id."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", help="Only deliveries created since then: a duration "
                            "(30m, 2h, 3d, 1w) or a date/time.")
        parser.add_argument("--event", help="Only this event.")
        parser.add_argument("--target", type=int, help="Only this WebhookTarget id.")
        parser.add_argument("--owner", help="Only targets of the user with this username.")
        parser.add_argument("--limit", type=int, help="Replay at most this many deliveries.")
        parser.add_argument("--stale-pending", action="store_true",
                            help="Also replay pending deliveries overdue by 10 minutes or "
                            "more, that no worker holds (no worker runs, or the process "
                            "that was to send them stopped).")
        parser.add_argument("--dry-run", action="store_true",
                            help="List what would be replayed, and send nothing.")

    def handle(self, *args, since=None, event=None, target=None, owner=None, limit=None,
               stale_pending=False, dry_run=False, verbosity=1, **options):
        if limit is not None:
            check_count("--limit", limit)
            limit = min(limit, sys.maxsize)  # more than any list holds: no limit at all
        for option, value, what in (("--event", event, "event name"),
                                    ("--owner", owner, "username")):
            if value is not None:
                check_text(option, value, has=what)
        deliveries = Delivery.objects.failed()
        if stale_pending:
            deliveries = deliveries | Delivery.objects.due(DatabaseNow() - STALE_PENDING_AFTER)
        if since is not None:
            deliveries = deliveries.filter(created__gte=parse_since(since))
        if event is not None:
            deliveries = deliveries.filter(event=event)
        if target is not None:
            if ids_in_range(Delivery.webhook_target.field.related_model, [target]):
                deliveries = deliveries.filter(webhook_target_id=target)
            else:  # an id no target can have
                deliveries = deliveries.none()
        if owner is not None:
            user_model = get_user_model()
            lookup = {user_model.USERNAME_FIELD: owner}
            if not user_model._default_manager.filter(**lookup).exists():
                raise CommandError(f"--owner: no user with {user_model.USERNAME_FIELD} "
                                   f"{owner!r}.")
            deliveries = deliveries.filter(
                **{f"webhook_target__owner__{user_model.USERNAME_FIELD}": owner}
            )
        deliveries = deliveries.order_by("created", "pk")
        ids = list(deliveries.values_list("pk", flat=True)[:limit])
        if not ids:
            self.stdout.write("No failed deliveries match; nothing to replay.")
            return
        if dry_run:
            for delivery in Delivery.objects.filter(pk__in=ids).select_related(
                "webhook_target"
            ).order_by("created", "pk"):
                self.stdout.write(
                    f"would replay {delivery.pk} {delivery.hash_value} {delivery.event} "
                    f"→ {delivery.webhook_target.target_url} (attempts so far: "
                    f"{delivery.attempt})"
                )
            self.stdout.write(f"Dry run: {_count(len(ids))} would be replayed.")
            return
        progress = Progress(len(ids), self.stderr, enabled=verbosity > 0)
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            replay(chunk)
            progress.advance(len(chunk))
        progress.finish()
        if verbosity > 1:
            for delivery in Delivery.objects.filter(pk__in=ids).order_by("created", "pk"):
                self.stdout.write(f"{delivery.pk} {delivery.hash_value} {delivery.event}: "
                                  f"{delivery.status} after {delivery.attempt} attempts")
        counts = dict.fromkeys(Delivery.Status.values, 0)
        for status in Delivery.objects.filter(pk__in=ids).values_list("status", flat=True):
            counts[status] += 1
        summary = (f"Replayed {_count(len(ids))}: {counts['succeeded']} succeeded, "
                   f"{counts['failed']} failed, {counts['pending']} pending")
        if counts["cancelled"]:
            summary += f", {counts['cancelled']} cancelled"
        self.stdout.write(self.style.SUCCESS(summary + "."))


def _count(number):
    return f"{number} delivery" if number == 1 else f"{number} deliveries"


class Progress:
    """A progress bar for long runs: redrawn in place on a terminal, a line per step elsewhere."""

    def __init__(self, total, stream, enabled=True, width=30, threshold=BATCH):
        self.total, self.done, self.stream, self.width = total, 0, stream, width
        self.enabled = enabled and total > threshold
        self.tty = stream.isatty()

    def advance(self, count):
        self.done += count
        if self.enabled:
            filled = self.width * self.done // self.total
            line = f"[{'#' * filled}{'-' * (self.width - filled)}] {self.done}/{self.total}"
            if self.tty:
                self.stream.write("\r" + line, ending="")
                self.stream.flush()
            else:
                self.stream.write(line)

    def finish(self):
        if self.enabled and self.tty:
            self.stream.write("")
