"""``manage.py webhooks_skip``: cancel pending deliveries, so that an ordered target's
line moves on."""

from django.core.management.base import BaseCommand, CommandError

from djwebhooks.events import skip
from djwebhooks.management.parsing import ids_in_range
from djwebhooks.models import Delivery, WebhookTarget

PENDING = Delivery.Status.PENDING


class Command(BaseCommand):
    help = (
        "Skip (cancel) pending webhook deliveries. At an ordered target, the deliveries "
        "after one that keeps failing wait for it; skipping it lets the next one go."
    )

    def add_arguments(self, parser):
        parser.add_argument("--target", type=int, action="append", default=[],
                            metavar="ID", help="Skip the delivery this ordered target's "
                            "others wait for (its oldest pending one). May be repeated.")
        parser.add_argument("--delivery", type=int, action="append", default=[],
                            metavar="ID", help="Skip this pending delivery. May be repeated.")
        parser.add_argument("--dry-run", action="store_true",
                            help="Say what would be skipped, and change nothing.")

    def handle(self, *args, target=(), delivery=(), dry_run=False, **options):
        if not target and not delivery:
            raise CommandError("Name what to skip: --target ID (an ordered target: the "
                               "delivery its others wait for) or --delivery ID.")
        ids = []
        for pk in dict.fromkeys(target):
            head = head_of(pk)
            if head is None:
                self.stdout.write(f"target {pk}: nothing waits; no delivery is pending.")
            else:
                ids.append(head)
        ids += [pending(pk) for pk in dict.fromkeys(delivery)]
        ids = list(dict.fromkeys(ids))
        if not ids:
            self.stdout.write("Nothing to skip.")
            return
        deliveries = {d.pk: d for d in Delivery.objects.filter(pk__in=ids)}
        if dry_run:
            for pk in ids:
                self.stdout.write(f"would skip {describe(deliveries[pk])}")
            self.stdout.write(f"Dry run: {_count(len(ids))} would be skipped.")
            return
        skipped = set(skip(ids))
        for pk in ids:
            item = deliveries[pk]
            if pk in skipped:
                self.stdout.write(f"skipped {describe(item)}{next_in_line(item)}")
            else:
                self.stderr.write(f"left alone: delivery {pk} is being sent at this moment, "
                                  "or has just finished; run again once its attempt is "
                                  "recorded if it is still pending.")
        self.stdout.write(self.style.SUCCESS(f"Skipped {_count(len(skipped))}."))
        if len(skipped) < len(ids):
            raise CommandError(f"{_count(len(ids) - len(skipped))} could not be skipped.")


def head_of(pk):
    """The id of the delivery ordered target ``pk``'s others wait for; None if none waits."""
    found = WebhookTarget.objects.filter(pk__in=ids_in_range(WebhookTarget, [pk])).first()
    if found is None:
        raise CommandError(f"--target {pk}: there is no webhook target with this id; nothing "
                           "was skipped. The admin's webhook target list shows their ids.")
    if not found.ordered:
        raise CommandError(f"--target {pk}: this target is not ordered, so no delivery waits "
                           "for another; nothing was skipped. To cancel one of its "
                           "deliveries, give --delivery ID.")
    return first_pending(pk)


def first_pending(target_pk):
    return (Delivery.objects.filter(webhook_target_id=target_pk, status=PENDING)
            .order_by("pk").values_list("pk", flat=True).first())


def pending(pk):
    """``pk`` if it is a pending delivery; otherwise say what it is, and stop."""
    found = Delivery.objects.filter(pk__in=ids_in_range(Delivery, [pk])).first()
    if found is None:
        raise CommandError(f"--delivery {pk}: there is no delivery with this id; nothing was "
                           "skipped.")
    if found.status != PENDING:
        raise CommandError(f"--delivery {pk}: this delivery is {found.status}, not pending; "
                           "nothing was skipped. Only a pending delivery can be skipped.")
    return pk


def describe(delivery):
    return (f"delivery {delivery.pk} ({delivery.event}, {delivery.hash_value}) of target "
            f"{delivery.webhook_target_id}, after {delivery.attempt} attempts"
            + (f": {delivery.reason}" if delivery.reason else ""))


def next_in_line(delivery):
    """For a delivery of an ordered target: which one goes next."""
    if not WebhookTarget.objects.filter(pk=delivery.webhook_target_id, ordered=True).exists():
        return ""
    following = first_pending(delivery.webhook_target_id)
    if following is None:
        return "; nothing else waits at this target."
    return f"; next in line: delivery {following}."


def _count(number):
    return f"{number} delivery" if number == 1 else f"{number} deliveries"
