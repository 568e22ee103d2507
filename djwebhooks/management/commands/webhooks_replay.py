"""``manage.py webhooks_replay``: send failed deliveries again."""

import operator
import sys
from datetime import timedelta
from functools import reduce

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from djwebhooks import conf
from djwebhooks.events import replay
from djwebhooks.exceptions import DeliveryError
from djwebhooks.management.parsing import check_count, check_text, ids_in_range, parse_since
from djwebhooks.models import DatabaseNow, Delivery, DeliveryAttempt, WebhookTarget

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
            # Not those of an ordered target that wait for an earlier one: their turn comes.
            deliveries = deliveries | Delivery.objects.due(
                DatabaseNow() - STALE_PENDING_AFTER).in_turn()
        if since is not None:
            deliveries = deliveries.filter(created__gte=parse_since(since))
        if event is not None:
            check_event(event)
            deliveries = deliveries.filter(event=event)
        if target is not None:
            check_target(target)
            deliveries = deliveries.filter(webhook_target_id=target)
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
            for start in range(0, len(ids), BATCH):
                for delivery, why in failures(ids[start:start + BATCH]):
                    self.stdout.write(
                        f"would replay {delivery.pk} {delivery.hash_value} {delivery.event} "
                        f"→ {delivery.webhook_target.target_url} (attempts so far: "
                        f"{delivery.attempt}): {why}"
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


def check_event(event):
    """Refuse an event that is not declared and that no delivery has."""
    declared = conf.get_events()
    if event not in declared and not Delivery.objects.filter(event=event).exists():
        raise CommandError(f"--event {event!r} is not a declared event, and no delivery has "
                           f"it. Declared events: {', '.join(sorted(declared)) or 'none'}.")


def check_target(pk):
    """Refuse the id of a webhook target that does not exist."""
    possible = ids_in_range(WebhookTarget, [pk])
    if not possible or not WebhookTarget.objects.filter(pk=pk).exists():
        raise CommandError(f"--target {pk}: there is no webhook target with this id; nothing "
                           "was replayed. The admin's webhook target list shows their ids.")


def failures(ids):
    """Yield ``(delivery, why)`` for the deliveries ``ids``, oldest first: why each failed,
    from its last attempt (the response status or error) and its reason."""
    deliveries = list(Delivery.objects.filter(pk__in=ids).select_related("webhook_target")
                      .order_by("created", "pk"))
    last = {}
    wanted = [Q(delivery_id=d.pk, attempt=d.attempt) for d in deliveries if d.attempt]
    if wanted:
        for attempt in DeliveryAttempt.objects.filter(reduce(operator.or_, wanted)):
            last[attempt.delivery_id] = attempt
    for delivery in deliveries:
        attempt = last.get(delivery.pk)
        if attempt is None:
            outcome = "no attempt made"
        else:
            outcome = (DeliveryError.sentence(attempt.error) or attempt.notification or
                       f"status {attempt.response_status}")
            if attempt.response_status and str(attempt.response_status) not in outcome:
                outcome = f"{attempt.response_status}: {outcome}"
            outcome = f"last attempt {_shorten(outcome)}"
        yield delivery, (f"{outcome}; {delivery.reason}" if delivery.reason else outcome)


def _shorten(text, limit=200):
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


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
