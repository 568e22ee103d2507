"""A ``Project`` whose changes are sent as webhooks, and the ``ReceivedWebhook`` log."""

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone


class Project(models.Model):
    """Something a user owns; its slug is the identifier its webhook targets subscribe to."""

    title = models.CharField(max_length=200)
    slug = models.SlugField(unique=True)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="projects"
    )
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self):
        return self.title

    def get_absolute_url(self):
        return reverse("projects:edit", kwargs={"slug": self.slug})


class ReceivedWebhook(models.Model):
    """One request that reached a receiver view, whether or not its signature verified."""

    class Endpoint(models.TextChoices):
        RECEIVER = "receiver", "receiver"
        FLAKY = "flaky", "flaky receiver"

    endpoint = models.CharField(max_length=16, choices=Endpoint.choices)
    webhook_id = models.CharField("webhook-id", max_length=255, blank=True, db_index=True)
    event_type = models.CharField(max_length=128, blank=True)
    body = models.JSONField(null=True, blank=True, help_text="The envelope, when it was JSON.")
    verified = models.BooleanField(default=False)
    response_status = models.PositiveSmallIntegerField(help_text="What the receiver answered.")
    received = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-received", "-pk"]

    def __str__(self):
        return f"{self.event_type or 'unknown event'} {self.webhook_id} → {self.endpoint}"
