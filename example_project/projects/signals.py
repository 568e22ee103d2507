"""Send ``project.create`` whenever a project is first saved, wherever that happens."""

from django.db.models.signals import post_save
from django.dispatch import receiver

import djwebhooks
from projects.models import Project
from projects.webhooks import project_payload


@receiver(post_save, sender=Project, dispatch_uid="projects.send_project_create")
def send_project_create(sender, instance, created, raw=False, **kwargs):
    """Send ``project.create`` for a new project to its owner's targets for its slug."""
    # ``raw`` saves come from loaddata: fixtures describe the past, not new projects.
    if created and not raw:
        djwebhooks.send_event(
            "project.create",
            project_payload(instance),
            owner=instance.owner,
            identifier=instance.slug,
        )
