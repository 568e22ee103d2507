from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DjWebhooksConfig(AppConfig):
    """The dj-webhooks app: registers its system checks."""

    name = "djwebhooks"
    verbose_name = _("Webhooks")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from djwebhooks import checks  # noqa: F401  (registers the checks)
