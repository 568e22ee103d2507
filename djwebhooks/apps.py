from importlib.util import find_spec

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DjWebhooksConfig(AppConfig):
    """The dj-webhooks app: registers its system checks, and makes OpenTelemetry spans
    around attempts when ``opentelemetry-api`` is installed."""

    name = "djwebhooks"
    verbose_name = _("Webhooks")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from djwebhooks import checks  # noqa: F401  (registers the checks)

        if find_spec("opentelemetry") is not None:
            from djwebhooks import tracing

            tracing.instrument()  # the global tracer provider: a no-op until one is set
