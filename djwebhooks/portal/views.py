"""The self-service pages: a user's webhook targets, their deliveries, and their API
tokens.

Every view is for signed-in users whom ``MANAGE_PERMISSION`` allows (``owner_required``),
finds objects only among the user's own (``owned``: anyone else's is a 404), and changes
things only on a POST (CSRF-checked by Django's middleware).
"""

import logging
from functools import wraps

from django import forms
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import dateformat, timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from djwebhooks import conf, events, rotation
from djwebhooks.models import ApiToken, Delivery
from djwebhooks.portal import access, charts, display, stats
from djwebhooks.portal.filters import DeliveryFilterForm
from djwebhooks.portal.forms import OwnerTargetForm

#: How every time is shown: to the second, naming the time zone.
TIME_FORMAT = "Y-m-d H:i:s T"

#: The deliveries listed on a target's page, and per page of the deliveries page.
RECENT_DELIVERIES = 10
DELIVERIES_PER_PAGE = 50

#: The chart's ranges: how many hourly bars each has.
CHART_HOURS = {"24h": 24, "7d": 7 * 24}

TEMPLATES = "djwebhooks/portal/"

logger = logging.getLogger(__name__)


def owner_required(view):
    """Send anonymous users to log in, and refuse (403) those ``MANAGE_PERMISSION``
    refuses."""
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not access.may_manage(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)
    return wrapped


def owned(objects_of):
    """Call the view with the object ``pk`` names among ``objects_of(user)``, else 404.

    Applied outside ``require_POST``, so another user's object is a 404 whatever the
    method: a 405 would tell that it exists.
    """
    def decorate(view):
        @wraps(view)
        def wrapped(request, pk):
            return view(request, get_object_or_404(objects_of(request.user), pk=pk))
        return wrapped
    return decorate


def when(moment):
    """``moment`` in the current time zone, to the second, naming the zone."""
    return dateformat.format(timezone.localtime(moment), TIME_FORMAT)


def described(form):
    """Point each input of ``form`` at its help text and errors (``aria-describedby``), and
    mark the invalid ones; the ids are the ones ``_field.html`` gives them."""
    for field in form:
        ids = []
        if field.help_text:
            ids.append(f"{field.auto_id}_help")
        if field.errors:
            ids.append(f"{field.auto_id}_errors")
            field.field.widget.attrs["aria-invalid"] = "true"
        if ids:
            field.field.widget.attrs["aria-describedby"] = " ".join(ids)
    return form


# Targets


@owner_required
@require_safe
def target_list(request):
    """The user's targets, each with its state and health."""
    rows = [(target, stats.health(target)) for target in access.targets_of(request.user)]
    return render(request, TEMPLATES + "target_list.html", {"rows": rows})


@owner_required
@require_http_methods(["GET", "POST"])
@never_cache
def target_add(request):
    """Subscribe one of the user's URLs to an event."""
    return _target_form(request, OwnerTargetForm(_posted(request), owner=request.user))


@owner_required
@owned(access.targets_of)
@require_http_methods(["GET", "POST"])
@never_cache
def target_edit(request, target):
    """Change what one of the user's targets is sent."""
    form = OwnerTargetForm(_posted(request), instance=target, owner=request.user)
    return _target_form(request, form)


def _posted(request):
    """The submitted data on a POST; None (an unbound form) otherwise."""
    return request.POST if request.method == "POST" else None


def _target_form(request, form):
    """Save a valid submitted target form and go to its page, or show the form."""
    if form.is_bound and form.is_valid():
        target = form.save()
        messages.success(request, _("Webhook saved."))
        return redirect("djwebhooks:target", target.pk)
    return render(request, TEMPLATES + "target_form.html", {"form": described(form)})


@owner_required
@owned(access.targets_of)
@require_safe
def target_detail(request, target):
    """One target: its settings, health, chart, secret (masked) and recent deliveries."""
    recent = list(access.deliveries_of(request.user).filter(webhook_target=target)
                  .order_by("-created", "-pk")[:RECENT_DELIVERIES])
    return render(request, TEMPLATES + "target_detail.html", {
        "target": target,
        "health": stats.health(target),
        "recent": recent,
        "any_pending": any(d.status == Delivery.Status.PENDING for d in recent),
        "grace_hours": rotation.grace_seconds() / 3600,
        "total_timeout": conf.get_seconds("TOTAL_TIMEOUT"),
        "retry_schedule": display.retry_schedule(target),
        "max_in_flight": display.max_in_flight(target),
        "rate_limit": display.rate_limit(target),
        "line_head": display.line_head(target, access.deliveries_of(request.user))
        if target.ordered else None,
    })


@owner_required
@owned(access.targets_of)
@require_http_methods(["GET", "POST"])
def target_delete(request, target):
    """Ask before deleting a target (GET); delete it with its deliveries (POST)."""
    if request.method == "POST":
        target.delete()
        messages.success(request, _("Webhook deleted."))
        return redirect("djwebhooks:targets")
    return render(request, TEMPLATES + "target_delete.html", {"target": target})


@owner_required
@owned(access.targets_of)
@require_POST
def target_set_active(request, target):
    """Disable (``active=0``) or enable (``active=1``) a target; enabling resets its
    health."""
    active = request.POST.get("active")
    if active not in ("0", "1"):
        return HttpResponseBadRequest(_("active must be 0 or 1."))
    target.is_active = active == "1"
    target.save()
    messages.success(request, _("Webhook enabled.") if target.is_active
                     else _("Webhook disabled."))
    return redirect("djwebhooks:target", target.pk)


@owner_required
@owned(access.targets_of)
@require_POST
@never_cache
def target_secret(request, target):
    """The whole signing secret, on a page of its own that is never cached (asked for by
    POST so that it is never in a URL or the browser's history to revisit)."""
    logger.info("User %s viewed the signing secret of webhook target %s.",
                request.user.pk, target.pk)
    in_grace = len(target.signing_secrets()) > 1
    return render(request, TEMPLATES + "target_secret.html", {
        "target": target,
        "previous_expires": target.previous_secret_expires if in_grace else None,
        "headers": target.headers if isinstance(target.headers, dict) else {},
    })


@owner_required
@owned(access.targets_of)
@require_POST
def target_rotate(request, target):
    """Give the target a new secret; the previous one keeps working for the grace period."""
    if not _within_rate(request, "rotate_secret"):
        return redirect("djwebhooks:target", target.pk)
    target.rotate_secret()
    if target.previous_secret_expires:
        messages.success(request, _("Secret rotated. The previous secret keeps working until "
                                    "%(time)s.") % {"time": when(target.previous_secret_expires)})
    else:
        messages.success(request, _("Secret rotated. The previous secret no longer works."))
    return redirect("djwebhooks:target", target.pk)


@owner_required
@owned(access.targets_of)
@require_POST
def target_send_test(request, target):
    """Send the target one test delivery of its event, once this request's work commits."""
    if not _within_rate(request, "send_test"):
        return redirect("djwebhooks:target", target.pk)
    try:
        with transaction.atomic():
            events.send_test_event(target)
    except ValueError as exc:  # a disabled target
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Test event sent."))
    return redirect("djwebhooks:target", target.pk)


def _within_rate(request, action):
    """Count ``action`` for the user; False, with the reason as a message, when it is one
    too many."""
    try:
        access.rate_limit(request.user, action)
    except access.RateLimited as exc:
        messages.error(request, str(exc))
        return False
    return True


@owner_required
@owned(access.targets_of)
@require_safe
def target_chart(request, target):
    """The target's deliveries per hour as SVG: ``?range=24h`` (the default: 24 bars) or
    ``?range=7d`` (168 hourly bars, labelled by day); any other range is a 400."""
    period = request.GET.get("range", "24h")
    if period not in CHART_HOURS:
        return HttpResponseBadRequest(_("range must be 24h or 7d."), content_type="text/plain")
    span = _("the last 24 hours") if period == "24h" else _("the last 7 days")
    svg = charts.hourly_svg(stats.hourly(target, hours=CHART_HOURS[period]),
                            title=_("Deliveries to %(url)s per hour, %(span)s") % {
                                "url": target.target_url, "span": span})
    response = HttpResponse(svg, content_type="image/svg+xml")
    response["Cache-Control"] = "private, max-age=60"
    return response


# Deliveries


@owner_required
@require_safe
def delivery_list(request):
    """The deliveries to the user's targets, newest first, filtered, 50 a page."""
    form = DeliveryFilterForm(request.GET or None, targets=access.targets_of(request.user))
    deliveries = access.deliveries_of(request.user).order_by("-created", "-pk")
    if form.is_bound and form.is_valid():
        deliveries = form.filter(deliveries)
    elif form.is_bound:
        deliveries = deliveries.none()
    # get_page() turns a page number out of range, or not a number, into the nearest page.
    page = Paginator(deliveries, DELIVERIES_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, TEMPLATES + "delivery_list.html", {"form": form, "page": page})


@owner_required
@owned(access.deliveries_of)
@require_safe
def delivery_detail(request, delivery):
    """One delivery: its payload, the headers it is sent with, and every attempt."""
    return render(request, TEMPLATES + "delivery_detail.html", {
        "delivery": delivery,
        "payload": display.pretty_payload(delivery),
        "headers": display.request_headers(delivery),
        "attempts": delivery.attempts.order_by("attempt"),
        "replayable": delivery.status in (Delivery.Status.FAILED, Delivery.Status.CANCELLED),
    })


@owner_required
@owned(access.deliveries_of)
@require_POST
def delivery_replay(request, delivery):
    """Send a delivery again (a new attempt, the same message id) once this request
    commits."""
    if not _within_rate(request, "replay"):
        return redirect("djwebhooks:delivery", delivery.pk)
    with transaction.atomic():
        replayed = events.replay([delivery.pk])
    if replayed:
        messages.success(request, _("Replay queued."))
    else:
        messages.error(request, _("This delivery is being sent right now, so it was not "
                                  "replayed. Try again in a moment."))
    return redirect("djwebhooks:delivery", delivery.pk)


# API tokens


class TokenForm(forms.Form):
    """The name of a new API token."""

    name = forms.CharField(label=gettext_lazy("Name"), max_length=100,
                           help_text=gettext_lazy("What the key is for, such as the client "
                                                  "using it."))


@owner_required
@require_http_methods(["GET", "POST"])
@never_cache
def token_list(request):
    """The user's API tokens; a POST makes one and shows its key, this once."""
    form, key = TokenForm(_posted(request)), None
    if form.is_bound and form.is_valid():
        key = ApiToken.create(request.user, form.cleaned_data["name"])[1]
        form = TokenForm()
    return render(request, TEMPLATES + "token_list.html", {
        "form": described(form), "new_key": key, "tokens": access.tokens_of(request.user)})


@owner_required
@owned(access.tokens_of)
@require_POST
def token_revoke(request, token):
    """Delete an API token: clients using its key are refused from now on."""
    token.delete()
    messages.success(request, _("Token revoked."))
    return redirect("djwebhooks:tokens")
