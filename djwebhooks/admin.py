"""Admin: targets to manage; a read-only delivery log with attempts inline."""

import json
import logging

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.timezone import localtime
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache

from djwebhooks import rotation
from djwebhooks.events import replay
from djwebhooks.forms import WebhookTargetForm
from djwebhooks.models import Delivery, DeliveryAttempt, WebhookTarget

logger = logging.getLogger(__name__)


@admin.register(WebhookTarget)
class WebhookTargetAdmin(admin.ModelAdmin):
    form = WebhookTargetForm
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ["owner", "event", "identifier", "target_url", "header_content_type",
                    "is_active", "health", "display_secret", "created"]
    list_filter = ["is_active", "event", "header_content_type"]
    search_fields = ["event", "identifier", "target_url"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    readonly_fields = ["display_secret", "consecutive_failures", "failing_since", "disabled_at",
                       "disabled_reason", "created", "modified"]
    date_hierarchy = "created"
    actions = ["enable_targets", "rotate_secrets"]

    @admin.display(description=_("health"), ordering="consecutive_failures")
    def health(self, obj):
        """Failures since the last success, or why the target was disabled."""
        if obj.disabled_at:
            return format_html('<span style="color:#c62828">{}</span>',
                               _("disabled: %(reason)s") % {"reason": obj.disabled_reason})
        if obj.consecutive_failures:
            return ngettext("%(count)d failure since %(since)s",
                            "%(count)d failures since %(since)s",
                            obj.consecutive_failures) % {
                "count": obj.consecutive_failures,
                "since": date_format(localtime(obj.failing_since), "SHORT_DATETIME_FORMAT"),
            }
        return _("ok")

    @admin.action(description=_("Enable selected targets (and reset their health)"),
                  permissions=["change"])
    def enable_targets(self, request, queryset):
        count = 0
        for target in queryset.filter(is_active=False):
            target.is_active = True
            target.save()  # saving the change resets the failure count
            count += 1
        self.message_user(request, ngettext("Enabled %(count)d target.",
                                            "Enabled %(count)d targets.", count)
                          % {"count": count}, messages.SUCCESS)

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
        """The whole signing secret (and the previous one, during its grace period).

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
    fields = ["attempt", "created", "success", "response_status", "duration", "notification",
              "response_excerpt", "error"]
    readonly_fields = fields
    ordering = ["attempt"]

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
    list_display = ["hash_value", "event", "target_link", "display_status", "attempt",
                    "response_status", "next_attempt_at", "created"]
    list_filter = ["status", "event", "success", "webhook_target"]
    search_fields = ["hash_value__exact"]  # message ids are exact: the index serves
    list_select_related = ["webhook_target"]
    date_hierarchy = "created"
    inlines = [DeliveryAttemptInline]
    actions = ["replay_deliveries"]
    fields = ["hash_value", "event", "webhook_target", "status", "reason", "success", "attempt",
              "response_status", "next_attempt_at", "claimed_by", "claimed_until", "queued_at",
              "created", "modified", "display_payload"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # Read-only log; viewing needs only the view permission.
        return False

    @admin.display(description=_("payload"))
    def display_payload(self, obj):
        """The payload's JSON, indented; the text is escaped."""
        try:
            text = json.dumps(json.loads(obj.payload_json), indent=2, ensure_ascii=False)
        except ValueError:
            text = obj.payload_json
        return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', text)

    @admin.display(description=_("target"), ordering="webhook_target__target_url")
    def target_link(self, obj):
        return obj.webhook_target.target_url

    @admin.display(description=_("status"), ordering="status")
    def display_status(self, obj):
        colour = {"succeeded": "#2e7d32", "failed": "#c62828", "cancelled": "#616161"}.get(
            obj.status, "#8a6d00"
        )
        return format_html('<strong style="color:{}">{}</strong>', colour,
                           obj.get_status_display())

    @admin.action(description=_("Replay selected deliveries"), permissions=["replay"])
    def replay_deliveries(self, request, queryset):
        ids = replay(queryset)
        self.message_user(
            request,
            ngettext("Replaying %(count)d delivery.", "Replaying %(count)d deliveries.",
                     len(ids)) % {"count": len(ids)},
            messages.SUCCESS,
        )

    def has_replay_permission(self, request):
        """Replaying sends requests again, so it needs the ``change_delivery`` permission."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")
