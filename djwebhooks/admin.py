"""Admin: targets to manage; a read-only delivery log with attempts inline."""

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db import models
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.timezone import localtime
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from djwebhooks.delivery import replay
from djwebhooks.forms import WebhookTargetForm
from djwebhooks.models import Delivery, DeliveryAttempt, WebhookTarget


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
    actions = ["enable_targets"]

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

    def get_search_fields(self, request):
        # Search owners by whatever identifies them in this project's user model.
        username = get_user_model().USERNAME_FIELD
        return [*self.search_fields, f"owner__{username}"]

    @admin.display(description=_("signing secret"))
    def display_secret(self, obj):
        """The secret, masked: it is never shown whole in the admin."""
        return obj.masked_secret


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
    search_fields = ["=hash_value"]
    list_select_related = ["webhook_target"]
    date_hierarchy = "created"
    inlines = [DeliveryAttemptInline]
    actions = ["replay_deliveries"]
    fields = ["hash_value", "event", "webhook_target", "status", "reason", "success", "attempt",
              "response_status", "next_attempt_at", "locked_by", "locked_until", "created",
              "modified", "payload"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # Read-only log; viewing needs only the view permission.
        return False

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
