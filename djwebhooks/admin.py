"""Admin: targets to manage; a read-only delivery log with attempts inline."""

import logging
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import dateformat, timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.timezone import localtime
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache

from djwebhooks import rotation
from djwebhooks.events import replay, skip
from djwebhooks.forms import WebhookTargetForm
from djwebhooks.models import Delivery, DeliveryAttempt, WebhookTarget
from djwebhooks.portal import charts, display, stats

logger = logging.getLogger(__name__)

#: The hours the target page's chart shows: today and yesterday.
CHART_HOURS = 48
#: Log entries written per statement when many deliveries are replayed.
LOG_BATCH = 500
#: The lists leave out the admin's navigation sidebar, so that their columns fit a
#: 1,280 pixel screen beside the filters (the breadcrumbs lead back).
WIDE = {"is_nav_sidebar_enabled": False}


#: How the admin shows a moment: to the second, with the time zone's name.
TIME_FORMAT = "Y-m-d H:i:s T"
#: The characters of a long URL or identifier a list shows (the whole text is its title).
SHORT = 40


def format_time(moment):
    """``moment`` in the current time zone as ``TIME_FORMAT``, or "-" when there is none."""
    if moment is None:
        return "-"
    return dateformat.format(localtime(moment), TIME_FORMAT)


def time_display(name, description):
    """A display method showing the field ``name`` as ``format_time`` does."""

    @admin.display(description=description, ordering=name)
    def display(self, obj):
        return format_time(getattr(obj, name))

    return display


def truncated(text, length=SHORT):
    """``text`` cut to ``length`` characters, the whole of it in the title attribute."""
    if len(text) <= length:
        return text
    return format_html('<span title="{}">{}…</span>', text, text[:length - 1])


class OwnerFilter(admin.SimpleListFilter):
    """Only one owner's rows, as ``?owner=<user id>``.

    Django's filter on a foreign key lists every user, which no page can hold with many
    users; this one lists only the owner being filtered by, and is reached from the links
    in the owner column (or by typing the id into the URL).
    """

    title = _("owner")
    parameter_name = "owner"
    #: The lookup from the listed model to its owner.
    path = "owner"

    def lookups(self, request, model_admin):
        # A filter with no choices is not applied at all: an unknown id must still be one.
        if self.value() is None:
            return []
        owner = self.chosen()
        return [(self.value(), str(owner) if owner else gettext("no user with this id"))]

    def chosen(self):
        """The user filtered by, or None."""
        if self.value() is None:
            return None
        model = get_user_model()
        try:
            pk = model._meta.pk.to_python(self.value())
        except ValidationError as exc:
            raise IncorrectLookupParameters(exc) from exc
        return model._default_manager.filter(pk=pk).first()

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        owner = self.chosen()
        return queryset.filter(**{self.path: owner}) if owner else queryset.none()


class DeliveryOwnerFilter(OwnerFilter):
    path = "webhook_target__owner"


class TargetFilter(admin.SimpleListFilter):
    """Only one target's deliveries, as ``?webhook_target__id__exact=<id>`` (the parameter
    of Django's own filter, so older links still work), listing only that target."""

    title = _("webhook target")
    parameter_name = "webhook_target__id__exact"

    def lookups(self, request, model_admin):
        if self.value() is None:
            return []
        target = self.chosen()
        return [(self.value(), truncated(str(target)) if target
                 else gettext("no target with this id"))]

    def chosen(self):
        """The target filtered by, or None."""
        if self.value() is None:
            return None
        try:
            pk = WebhookTarget._meta.pk.to_python(self.value())
        except ValidationError as exc:
            raise IncorrectLookupParameters(exc) from exc
        return WebhookTarget.objects.filter(pk=pk).first()

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        target = self.chosen()
        return queryset.filter(webhook_target=target) if target else queryset.none()


def owner_link(changelist, owner):
    """A link to ``changelist`` (a URL name) filtered by ``owner``."""
    url = reverse(changelist) + "?" + urlencode({OwnerFilter.parameter_name: owner.pk})
    return format_html('<a href="{}" title="{}">{}</a>', url,
                       gettext("Show only %(owner)s's") % {"owner": owner}, owner)


def deliveries_url(target):
    """The delivery log filtered by ``target``."""
    return (reverse("admin:djwebhooks_delivery_changelist") + "?"
            + urlencode({TargetFilter.parameter_name: target.pk}))


def disabled_banner(target):
    """Why ``target`` is off, and what to do about it; "" when it is active."""
    if target.is_active:
        return ""
    if target.disabled_at:
        text = gettext("Disabled because %(reason)s (since %(when)s).") % {
            "reason": target.disabled_reason or gettext("no reason was recorded"),
            "when": format_time(target.disabled_at)}
    else:
        text = gettext("Disabled: “Active” was unticked, with no reason recorded.")
    return text + " " + gettext(
        "No deliveries are made for it meanwhile. To send to it again, tick “Active” and "
        "save (or use the “Enable selected targets” action), then replay the deliveries "
        "that failed.")


@admin.register(WebhookTarget)
class WebhookTargetAdmin(admin.ModelAdmin):
    form = WebhookTargetForm
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ["display_url", "owner_column", "event", "display_identifier", "is_active",
                    "health", "display_secret", "deliveries_link"]
    list_filter = ["is_active", "ordered", OwnerFilter, "event", "header_content_type"]
    search_fields = ["event", "identifier", "target_url"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    date_hierarchy = "created"
    actions = ["enable_targets", "disable_targets", "rotate_secrets"]

    #: What a person sets: all the add form shows.
    edited_fields = ["owner", "event", "identifier", "target_url", "header_content_type",
                     "is_active"]
    #: Each target's own way of being sent to.
    option_fields = ["headers", "timeout", "retry_schedule", "ordered", "max_in_flight",
                     "rate_limit"]
    health_fields = ["consecutive_failures", "failing_since_at", "disabled_at_at",
                     "disabled_reason", "last_success", "last_failure", "deliveries_link"]
    time_fields = ["created_at", "modified_at"]

    created_at = time_display("created", _("created"))
    modified_at = time_display("modified", _("modified"))
    failing_since_at = time_display("failing_since", _("failing since"))
    disabled_at_at = time_display("disabled_at", _("disabled at"))

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {**(extra_context or {}), **WIDE})

    def get_fieldsets(self, request, obj=None):
        fields = [*self.option_fields, "line_head"] if obj is not None and obj.ordered \
            else self.option_fields
        options = (_("Delivery options"), {"fields": fields,
                                           "classes": ["collapse"] if obj is None else []})
        if obj is None:
            return [(None, {"fields": self.edited_fields}), options]
        return [
            (None, {"fields": [*self.edited_fields, "display_secret"]}),
            options,
            (_("Health"), {"fields": self.health_fields}),
            (_("Times"), {"fields": self.time_fields}),
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["display_secret", "line_head", *self.health_fields, *self.time_fields]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        target = self.get_object(request, unquote(object_id))
        if target is not None:
            extra_context = {
                **(extra_context or {}),
                "disabled_banner": disabled_banner(target),
                "chart_hours": CHART_HOURS,
                "chart": mark_safe(charts.hourly_svg(  # hourly_svg escapes every text
                    stats.hourly(target, hours=CHART_HOURS),
                    gettext("Deliveries to %(target)s per hour, by outcome")
                    % {"target": target.target_url})),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description=_("target URL"), ordering="target_url")
    def display_url(self, obj):
        return truncated(obj.target_url, 30)

    @admin.display(description=_("identifier"), ordering="identifier")
    def display_identifier(self, obj):
        return truncated(obj.identifier, 16)

    @admin.display(description=_("owner"), ordering="owner")
    def owner_column(self, obj):
        return owner_link("admin:djwebhooks_webhooktarget_changelist", obj.owner)

    @admin.display(description=_("deliveries"))
    def deliveries_link(self, obj):
        """A link to the delivery log, filtered by this target."""
        return format_html('<a href="{}">{}</a>', deliveries_url(obj), gettext("Deliveries"))

    @admin.display(description=_("head of the line"))
    def line_head(self, obj):
        """The delivery an ordered target's others wait on, how it stands and a link to
        it; "nothing waiting" when none is pending."""
        head = display.line_head(obj)
        if head is None:
            return gettext("nothing waiting")
        url = reverse("admin:djwebhooks_delivery_change", args=[head.pk])
        return format_html(
            '<a href="{}" id="line-head">{}</a> — {}: {}; {}', url, head.hash_value,
            head.get_status_display(), head.reason or "-",
            gettext("next attempt at %(when)s") % {"when": format_time(head.next_attempt_at)})

    @admin.display(description=_("last success"))
    def last_success(self, obj):
        return self.last_attempt(obj, success=True)

    @admin.display(description=_("last failure"))
    def last_failure(self, obj):
        return self.last_attempt(obj, success=False)

    def last_attempt(self, obj, *, success):
        """When the target's latest successful (or failed) attempt was made, what came of
        it, and a link to its delivery; "never" when there is none."""
        attempt = (DeliveryAttempt.objects.filter(delivery__webhook_target=obj, success=success)
                   .select_related("delivery").order_by("-created", "-pk").first())
        if attempt is None:
            return gettext("never")
        url = reverse("admin:djwebhooks_delivery_change", args=[attempt.delivery_id])
        outcome = attempt.notification or attempt.error or attempt.response_status or ""
        return format_html('{} — {} (<a href="{}">{}</a>)', format_time(attempt.created),
                           outcome, url, attempt.delivery.hash_value)

    @admin.display(description=_("health"), ordering="consecutive_failures")
    def health(self, obj):
        """Failures since the last success, or why the target was disabled."""
        if obj.disabled_at:
            return format_html('<span style="color:#c62828">{}</span>', truncated(
                gettext("disabled: %(reason)s") % {"reason": obj.disabled_reason}))
        if obj.consecutive_failures:
            return format_html('<span title="{}">{}</span>', ngettext(
                "%(count)d failure since %(since)s", "%(count)d failures since %(since)s",
                obj.consecutive_failures) % {
                "count": obj.consecutive_failures, "since": format_time(obj.failing_since)},
                ngettext("%(count)d failure", "%(count)d failures",
                         obj.consecutive_failures) % {"count": obj.consecutive_failures})
        return _("ok")

    @admin.action(description=_("Enable selected targets (and reset their health)"),
                  permissions=["change"])
    def enable_targets(self, request, queryset):
        count = 0
        for target in queryset.filter(is_active=False):
            target.is_active = True
            target.save()  # saving the change resets the failure count
            self.log_change(request, target,
                            gettext("Enabled (action); its health was reset."))
            count += 1
        self.message_user(request, ngettext("Enabled %(count)d target.",
                                            "Enabled %(count)d targets.", count)
                          % {"count": count}, messages.SUCCESS)

    @admin.action(description=_("Disable selected targets"), permissions=["change"])
    def disable_targets(self, request, queryset):
        """Stop sending to the targets; the reason names who did it."""
        count = 0
        reason = gettext("%(user)s disabled it in the admin") % {
            "user": request.user.get_username()}
        for target in queryset.filter(is_active=True):
            target.is_active = False
            target.disabled_at = timezone.now()
            target.disabled_reason = reason[:255]
            target.save(update_fields=["is_active", "disabled_at", "disabled_reason",
                                       "modified"])
            self.log_change(request, target, gettext("Disabled (action)."))
            count += 1
        self.message_user(request, ngettext(
            "Disabled %(count)d target. Its new deliveries are not sent until it is enabled "
            "again.", "Disabled %(count)d targets. Their new deliveries are not sent until "
            "they are enabled again.", count) % {"count": count}, messages.SUCCESS)

    @admin.action(description=_("Rotate signing secrets of selected targets"),
                  permissions=["change"])
    def rotate_secrets(self, request, queryset):
        """Give each target a new secret; the old one stays valid for SECRET_ROTATION_GRACE."""
        results = rotation.rotate_secrets(queryset)
        rotated = [result for result in results if not result.skipped]
        skipped = [result for result in results if result.skipped]
        for result in rotated:
            self.log_change(request, result.target, gettext("Rotated the signing secret."))
        if rotated:
            self.message_user(request, rotated_message(rotated), messages.SUCCESS)
        if skipped:
            self.message_user(request, skipped_message(skipped), messages.WARNING)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        # Before the default URLs, whose "<path:object_id>/" would take this one.
        return [
            path("<path:object_id>/secret/",
                 self.admin_site.admin_view(never_cache(self.secret_view)),
                 name="{}_{}_secret".format(*info)),
            *super().get_urls(),
        ]

    def secret_view(self, request, object_id):
        """The whole signing secret (and the previous one, during its grace period), and
        the values of the target's headers, which may be credentials too.

        Only for users who may change the target: the secret lets its holder sign requests
        that the target's receiver trusts.
        """
        if not self.has_change_permission(request):
            raise PermissionDenied
        target = self.get_object(request, unquote(object_id))
        if target is None:
            raise Http404(gettext("No webhook target with this id."))
        if not self.has_change_permission(request, target):
            raise PermissionDenied
        # Who looked, never what they saw.
        logger.info("User %s viewed the signing secret of webhook target %s.",
                    request.user.pk, target.pk)
        in_grace = len(target.signing_secrets()) > 1
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Signing secret of %s") % target,
            "subtitle": None,
            "opts": self.opts,
            "object": target,
            "secret": target.secret,
            "previous_secret": target.previous_secret if in_grace else "",
            "previous_secret_expires": target.previous_secret_expires if in_grace else None,
            "headers": target.headers if isinstance(target.headers, dict) else {},
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/djwebhooks/webhooktarget/secret.html", context)

    def get_search_fields(self, request):
        # Search owners by whatever identifies them in this project's user model.
        username = get_user_model().USERNAME_FIELD
        return [*self.search_fields, f"owner__{username}"]

    @admin.display(description=_("signing secret"))
    def display_secret(self, obj):
        """The secret, masked: only the secret page (see ``secret_view``) shows it whole."""
        return obj.masked_secret


def format_moment(moment):
    """A date and time in the current time zone, naming the zone."""
    moment = localtime(moment)
    return f"{date_format(moment, 'DATETIME_FORMAT')} ({moment.tzname()})"


def rotated_message(rotated):
    """Say how many secrets were rotated, and until when the old ones keep working."""
    count = len(rotated)
    text = ngettext("Rotated the signing secret of %(count)d target.",
                    "Rotated the signing secrets of %(count)d targets.", count) % {
        "count": count}
    until = rotated[0].valid_until  # one grace period for the whole batch
    if until is None:
        return text + " " + ngettext("Its previous secret is no longer valid.",
                                     "Their previous secrets are no longer valid.", count)
    return text + " " + ngettext(
        "Its previous secret stays valid, and requests are signed with both, until "
        "%(until)s.",
        "Their previous secrets stay valid, and requests are signed with both, until "
        "%(until)s.", count) % {"until": format_moment(until)}


def skipped_message(skipped):
    """Say which targets were left alone because an earlier rotation's grace period runs."""
    count = len(skipped)
    listed = "; ".join(
        gettext("%(target)s (until %(until)s)") % {
            "target": result.target, "until": format_moment(result.valid_until)}
        for result in skipped
    )
    return ngettext(
        "Skipped %(count)d target whose previous secret is still in its grace period: "
        "%(listed)s. Rotating again now would make that secret invalid at once, while "
        "receivers may still use it. Try again once the period is over, or use "
        "manage.py webhooks_rotate_secret --force.",
        "Skipped %(count)d targets whose previous secrets are still in their grace period: "
        "%(listed)s. Rotating again now would make those secrets invalid at once, while "
        "receivers may still use them. Try again once the periods are over, or use "
        "manage.py webhooks_rotate_secret --force.", count) % {"count": count, "listed": listed}


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    show_change_link = False
    fields = ["attempt", "created_at", "success", "response_status", "duration", "notification",
              "response_excerpt", "error", "replayed_by"]
    readonly_fields = fields
    ordering = ["attempt"]

    created_at = time_display("created", _("made at"))

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("replayed_by")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("response"))
    def response_excerpt(self, obj):
        """The first 500 characters of the stored response body."""
        text = obj.response_message
        return text if len(text) <= 500 else text[:500] + "…"


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["message_id", "event", "owner_column", "target_link", "display_status",
                    "attempts", "http_status", "created_at"]
    list_filter = [DeliveryOwnerFilter, TargetFilter, "status", "event", "success"]
    # Message ids and events are exact (their indexes serve); URLs are matched in part.
    search_fields = ["hash_value__exact", "event__exact", "webhook_target__target_url"]
    list_select_related = ["webhook_target__owner"]
    date_hierarchy = "created"
    inlines = [DeliveryAttemptInline]
    actions = ["replay_deliveries", "skip_deliveries"]
    fields = ["hash_value", "event", "target", "owner_column", "status", "reason",
              "success", "attempt", "response_status", "next_attempt_at_time", "claimed_by",
              "claimed_until_time", "queued_at_time", "replayed_by", "created_at",
              "modified_at", "display_headers", "display_payload"]
    readonly_fields = fields

    created_at = time_display("created", _("created"))
    modified_at = time_display("modified", _("modified"))
    next_attempt_at_time = time_display("next_attempt_at", _("next attempt at"))
    claimed_until_time = time_display("claimed_until", _("claimed until"))
    queued_at_time = time_display("queued_at", _("queued at"))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # Read-only log; viewing needs only the view permission.
        return False

    def get_search_fields(self, request):
        # Owners by whatever identifies them in this project's user model, exactly.
        username = get_user_model().USERNAME_FIELD
        return [*self.search_fields, f"webhook_target__owner__{username}__iexact"]

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        # Before the default URLs, whose "<path:object_id>/" would take this one.
        return [
            path("<path:object_id>/replay/", self.admin_site.admin_view(self.replay_view),
                 name="{}_{}_replay".format(*info)),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}),
                         "has_replay_permission": self.has_replay_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {**(extra_context or {}), **WIDE})

    @admin.display(description=_("message id"), ordering="hash_value")
    def message_id(self, obj):
        """The start of the message id, linking to the delivery; the whole id in its title."""
        url = reverse("admin:djwebhooks_delivery_change", args=[obj.pk])
        short = obj.hash_value if len(obj.hash_value) <= 16 else obj.hash_value[:15] + "…"
        return format_html('<a href="{}" title="{}">{}</a>', url, obj.hash_value, short)

    @admin.display(description=_("tries"), ordering="attempt")
    def attempts(self, obj):
        return obj.attempt

    @admin.display(description=_("HTTP"), ordering="response_status")
    def http_status(self, obj):
        return obj.response_status or "-"

    @admin.display(description=_("payload"))
    def display_payload(self, obj):
        """The payload's JSON, indented; the text is escaped."""
        return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>',
                           display.pretty_payload(obj))

    @admin.display(description=_("headers sent"))
    def display_headers(self, obj):
        """The request's headers; the signatures are described, never shown."""
        lines = format_html_join("\n", "{}: {}", display.request_headers(obj))
        return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', lines)

    @admin.display(description=_("target"), ordering="webhook_target__target_url")
    def target_link(self, obj):
        url = reverse("admin:djwebhooks_webhooktarget_change", args=[obj.webhook_target_id])
        return format_html('<a href="{}">{}</a>', url,
                           truncated(obj.webhook_target.target_url, 32))

    @admin.display(description=_("target"))
    def target(self, obj):
        """The whole target URL, linking to the target."""
        url = reverse("admin:djwebhooks_webhooktarget_change", args=[obj.webhook_target_id])
        return format_html('<a href="{}">{}</a>', url, obj.webhook_target.target_url)

    @admin.display(description=_("owner"), ordering="webhook_target__owner")
    def owner_column(self, obj):
        return owner_link("admin:djwebhooks_delivery_changelist", obj.webhook_target.owner)

    @admin.display(description=_("status"), ordering="status")
    def display_status(self, obj):
        colour = {"succeeded": "#2e7d32", "failed": "#c62828", "cancelled": "#616161"}.get(
            obj.status, "#8a6d00"
        )
        return format_html('<strong style="color:{}">{}</strong>', colour,
                           obj.get_status_display())

    @admin.action(description=_("Replay selected deliveries"), permissions=["replay"])
    def replay_deliveries(self, request, queryset):
        self.replay(request, queryset, gettext("Replayed (action)."))

    def replay_view(self, request, object_id):
        """The Replay button of a delivery's page: POST only, with the action's permission."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"], gettext(
                "Replaying is done with the Replay button on the delivery's page (a POST)."))
        if not self.has_replay_permission(request):
            raise PermissionDenied
        delivery = self.get_object(request, unquote(object_id))
        if delivery is None:
            raise Http404(gettext("No delivery with this id."))
        self.replay(request, Delivery.objects.filter(pk=delivery.pk),
                    gettext("Replayed (Replay button)."))
        return HttpResponseRedirect(
            reverse("admin:djwebhooks_delivery_change", args=[delivery.pk]))

    def replay(self, request, queryset, log_message):
        """Replay the deliveries of ``queryset`` whose target is active, as
        ``request.user``; log each; warn about those left alone, and say why."""
        disabled = queryset.filter(webhook_target__is_active=False)
        left = disabled.count()
        if left:
            targets = list(WebhookTarget.objects.filter(
                pk__in=disabled.values("webhook_target_id")).order_by("pk")[:6])
            named = "; ".join(str(target) for target in targets[:5])
            if len(targets) > 5:
                named += "; …"
            self.message_user(request, ngettext(
                "%(count)d delivery was not replayed, because its target is disabled "
                "(%(targets)s). Enable the target first (tick “Active” on its page, or use "
                "the “Enable selected targets” action), then replay.",
                "%(count)d deliveries were not replayed, because their targets are disabled "
                "(%(targets)s). Enable the targets first (tick “Active” on their pages, or "
                "use the “Enable selected targets” action), then replay.", left)
                % {"count": left, "targets": named}, messages.WARNING)
        active = queryset.filter(webhook_target__is_active=True)
        wanted = active.count()
        ids = replay(active, replayed_by=request.user)
        for start in range(0, len(ids), LOG_BATCH):
            LogEntry.objects.log_actions(
                request.user.pk, Delivery.objects.filter(pk__in=ids[start:start + LOG_BATCH]),
                CHANGE, log_message)
        if ids or not left:
            self.message_user(request, ngettext(
                "Replaying %(count)d delivery.", "Replaying %(count)d deliveries.", len(ids))
                % {"count": len(ids)}, messages.SUCCESS)
        if len(ids) < wanted:
            self.message_user(request, ngettext(
                "%(count)d delivery was being sent at that moment and was left alone; replay "
                "it again once its attempt is recorded if it fails.",
                "%(count)d deliveries were being sent at that moment and were left alone; "
                "replay them again once their attempts are recorded if they fail.",
                wanted - len(ids)) % {"count": wanted - len(ids)}, messages.INFO)

    @admin.action(description=_("Skip selected pending deliveries (cancel them)"),
                  permissions=["replay"])
    def skip_deliveries(self, request, queryset):
        """Cancel the selected pending deliveries; at an ordered target, the next one's
        turn comes."""
        pending = queryset.filter(status=Delivery.Status.PENDING)
        wanted = pending.count()
        ids = skip(pending, skipped_by=request.user)
        for start in range(0, len(ids), LOG_BATCH):
            LogEntry.objects.log_actions(
                request.user.pk, Delivery.objects.filter(pk__in=ids[start:start + LOG_BATCH]),
                CHANGE, gettext("Skipped (action)."))
        self.message_user(request, ngettext(
            "Skipped %(count)d delivery: it is cancelled, and at an ordered target the next "
            "one goes.", "Skipped %(count)d deliveries: they are cancelled, and at ordered "
            "targets the next ones go.", len(ids)) % {"count": len(ids)},
            messages.SUCCESS if ids else messages.INFO)
        others = queryset.count() - wanted
        if others:
            self.message_user(request, ngettext(
                "%(count)d delivery was not pending (it had succeeded, failed or been "
                "cancelled) and was left alone.",
                "%(count)d deliveries were not pending (they had succeeded, failed or been "
                "cancelled) and were left alone.", others) % {"count": others},
                messages.INFO)
        if len(ids) < wanted:
            self.message_user(request, ngettext(
                "%(count)d delivery was being sent at that moment and was left alone; skip "
                "it again once its attempt is recorded if it is still pending.",
                "%(count)d deliveries were being sent at that moment and were left alone; "
                "skip them again once their attempts are recorded if they are still pending.",
                wanted - len(ids)) % {"count": wanted - len(ids)}, messages.INFO)

    def has_replay_permission(self, request):
        """Replaying sends requests again, so it needs the ``change_delivery`` permission."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")
