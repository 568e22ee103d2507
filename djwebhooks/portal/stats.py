"""What a target's owner is shown of its health: the last outcome, success rates, and
deliveries per hour by outcome (for the chart)."""

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Count, Q
from django.utils import timezone

from djwebhooks.models import Delivery, DeliveryAttempt

#: The windows success rates are given over, by name.
WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}


@dataclass(frozen=True)
class Rate:
    """Attempts made in a window, and how many succeeded."""

    attempts: int
    succeeded: int

    @property
    def percent(self):
        """The share of attempts that succeeded, 0–100, or None when none were made."""
        return None if not self.attempts else round(100 * self.succeeded / self.attempts, 1)


@dataclass(frozen=True)
class Health:
    """One target's health, as its owner sees it."""

    last_attempt: DeliveryAttempt | None
    rates: dict  # window name -> Rate
    disabled: bool
    disabled_reason: str

    def as_json(self):
        last = self.last_attempt
        return {
            "last_attempt": None if last is None else {
                "at": last.created.isoformat(), "success": last.success,
                "response_status": last.response_status},
            "success_rate": {name: {"attempts": rate.attempts, "succeeded": rate.succeeded,
                                    "percent": rate.percent}
                             for name, rate in self.rates.items()},
            "disabled": self.disabled,
            "disabled_reason": self.disabled_reason,
        }


def health(target, now=None):
    """Return ``target``'s ``Health``: two counting queries and one for the last attempt."""
    now = now or timezone.now()
    attempts = DeliveryAttempt.objects.filter(delivery__webhook_target=target)
    rates = {}
    for name, length in WINDOWS.items():
        counts = attempts.filter(created__gte=now - length).aggregate(
            attempts=Count("pk"), succeeded=Count("pk", filter=Q(success=True)))
        rates[name] = Rate(counts["attempts"], counts["succeeded"])
    last = attempts.order_by("-created", "-pk").first()
    return Health(last, rates, not target.is_active, target.disabled_reason)


#: Outcomes counted per hour, in the order the chart stacks them.
OUTCOMES = [Delivery.Status.SUCCEEDED, Delivery.Status.FAILED, Delivery.Status.PENDING,
            Delivery.Status.CANCELLED]


def hourly(target, hours=24, now=None):
    """Deliveries to ``target`` made in each of the last ``hours`` hours, by status: a list
    of ``(hour start, {status: count})``, oldest first, every hour present."""
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    buckets = [(start + timedelta(hours=n), dict.fromkeys(OUTCOMES, 0)) for n in range(hours)]
    rows = (Delivery.objects.filter(webhook_target=target, created__gte=start)
            .values_list("created", "status").iterator(chunk_size=2000))
    for created, status in rows:
        index = int((created - start).total_seconds() // 3600)
        if 0 <= index < hours and status in buckets[index][1]:
            buckets[index][1][status] += 1
    return buckets
