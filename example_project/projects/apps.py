from django.apps import AppConfig


class ProjectsConfig(AppConfig):
    """Projects that send webhooks when they change, and the receivers that get them."""

    name = "projects"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from projects import signals  # noqa: F401  (connects the post_save receiver)
