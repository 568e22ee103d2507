"""Admin for the example models; dj-webhooks registers its targets and deliveries itself."""

from django.contrib import admin

from projects.models import Project, ReceivedWebhook


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    """Projects, with their owners."""

    # Adding a project here sends project.create (the post_save signal does it), but
    # project.update is sent by the site's edit view, not by saves made here.

    list_display = ["title", "slug", "owner", "updated"]
    search_fields = ["title", "slug", "owner__username"]
    prepopulated_fields = {"slug": ["title"]}
    raw_id_fields = ["owner"]


@admin.register(ReceivedWebhook)
class ReceivedWebhookAdmin(admin.ModelAdmin):
    """What the example receivers got; a log, so nothing here can be changed."""

    list_display = ["received", "endpoint", "event_type", "webhook_id", "verified",
                    "response_status"]
    list_filter = ["endpoint", "verified", "event_type"]
    search_fields = ["=webhook_id"]
    date_hierarchy = "received"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
