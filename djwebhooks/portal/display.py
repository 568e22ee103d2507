"""How a delivery is shown to its owner: the request's headers (never a secret, the
target's own headers masked), the payload pretty-printed; and a target's retry schedule,
its most requests at once, its rate limit and, when it is ordered, the delivery at the head
of its line."""

import json
import time

from django.utils.translation import gettext as _

from djwebhooks import conf, options
from djwebhooks.exceptions import WebhookImproperlyConfigured
from djwebhooks.models import Delivery
from djwebhooks.senders.orm import DjangoSenderable

#: Shown instead of the signatures, which are made at each attempt with the target's secret.
SIGNATURE_SHOWN = "v1,… (made at each attempt with the target's signing secret)"


def request_headers(delivery):
    """The headers each request for ``delivery`` carries, as a list of ``(name, value)``:
    ``webhook-timestamp`` is the time of each attempt, and the signatures are not shown."""
    try:
        sender = DjangoSenderable(delivery)
    except options.OptionError as exc:  # a timeout saved from code, without validation
        return [(_("(cannot be built)"), str(exc))]
    own, sender.headers = sender.headers, {}
    headers = sender.get_headers(sender.get_body(), int(time.time()))
    headers["webhook-timestamp"] = "(the time of each attempt, in seconds since 1970)"
    headers["webhook-signature"] = SIGNATURE_SHOWN
    return [*options.masked(own).items(), *headers.items()]


def retry_schedule(target):
    """A target's retry schedule as a sentence: its own, none, or the sender's."""
    schedule = target.retry_schedule
    if schedule is None:
        waits = conf.get_retry_policy().schedule
        return _("%(waits)s (the sender's)") % {"waits": options.format_schedule(waits)}
    try:
        waits = options.check_schedule(schedule)
    except options.OptionError as exc:
        return _("not usable, so the sender's applies: %(why)s") % {"why": exc}
    return options.format_schedule(waits) if waits else _("none: no retries")


def max_in_flight(target):
    """A target's most requests at once: its own, or the sender's default (and the
    ``MAX_IN_FLIGHT`` it stands for, when that is set and readable)."""
    if target.max_in_flight is not None:
        return str(target.max_in_flight)
    try:
        most = conf.get_max_in_flight()
    except WebhookImproperlyConfigured:  # the system checks say why
        most = None
    if most is None:
        return _("the sender's default")
    return _("%(most)d (the sender's default)") % {"most": most}


def rate_limit(target):
    """A target's rate limit as a phrase: so many a second, or none."""
    if target.rate_limit is None:
        return _("none")
    return _("%(rate)d a second") % {"rate": target.rate_limit}


def line_head(target, deliveries=None):
    """The delivery the others to ``target`` wait on when it is ordered: its oldest pending
    delivery (by id), or None when none is pending. ``deliveries`` narrows where it is
    looked for (the owner's own, on the pages); all of the target's by default."""
    rows = target.deliveries.all() if deliveries is None else \
        deliveries.filter(webhook_target=target)
    return rows.filter(status=Delivery.Status.PENDING).order_by("pk").first()


def pretty_payload(delivery):
    """The delivery's data as indented JSON, its keys in the order they were sent."""
    try:
        return json.dumps(json.loads(delivery.payload_json), indent=2, ensure_ascii=False)
    except ValueError:
        return delivery.payload_json
