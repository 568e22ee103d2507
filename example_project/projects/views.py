"""Pages that send webhooks (the project form) and pages that receive them."""

import json
from functools import wraps

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.db import transaction
from django.http import HttpResponse
from django.views.generic import ListView, UpdateView

from djwebhooks.models import WebhookTarget
from djwebhooks.receivers import webhook_receiver
from projects.models import Project, ReceivedWebhook
from projects.webhooks import send_project_update

# Sending
# -------


class ProjectListView(LoginRequiredMixin, ListView):
    """The signed-in user's projects."""

    def get_queryset(self):
        return Project.objects.filter(owner=self.request.user)


class ProjectUpdateView(LoginRequiredMixin, UpdateView):
    """Edit a project, then tell its owner's webhook targets with ``project.update``."""

    fields = ["title", "description"]

    def get_queryset(self):
        return Project.objects.filter(owner=self.request.user)

    def form_valid(self, form):
        # The delivery rows are written in the same transaction as the edit: a receiver
        # never hears of a change that was rolled back. Nothing is sent here; once the
        # edit commits the rows are due, and the worker (manage.py webhooks_worker) sends
        # them, so this response never waits for a receiver.
        with transaction.atomic():
            response = super().form_valid(form)
            project = self.object
            deliveries = send_project_update(
                project, owner=project.owner, identifier=project.slug
            )
        messages.success(
            self.request,
            f"Saved {project}; project.update is queued for {len(deliveries)} webhook "
            "target(s).",
        )
        return response


# Receiving
# ---------
#
# These views stand in for someone else's site: they check each request the way any
# Standard Webhooks receiver would (with dj-webhooks' webhook_receiver decorator), and log
# it so the demo can show what arrived.

#: Seconds the flaky receiver asks for, in its 503's Retry-After header.
FLAKY_RETRY_AFTER = 1


def target_secrets(request):
    """The secrets a request to this URL may be signed with."""
    # A real receiver keeps the secret it was given when it subscribed. This one lives in
    # the sending project, so it looks the secrets up in the sender's own table: those of
    # every WebhookTarget whose URL is the one this request came to. One URL may be
    # subscribed to several events, each target with its own secret, and a target whose
    # secret was just rotated signs with its previous one too, so any of them may match.
    secrets = []
    for target in WebhookTarget.objects.filter(target_url=request.build_absolute_uri()):
        secrets += target.signing_secrets()
    return secrets


def read_envelope(request):
    """Return the JSON envelope sent, or None when the body does not hold one."""
    if request.content_type == "application/x-www-form-urlencoded":
        # Targets set to the form content type send the JSON in one ``payload`` field.
        text = request.POST.get("payload", "")
    else:
        text = request.body.decode("utf-8", errors="replace")
    try:
        envelope = json.loads(text)
    except ValueError:
        return None
    return envelope if isinstance(envelope, dict) else None


def record(request, endpoint, verified, status, envelope=None):
    """Store what arrived, and how the receiver answered it."""
    if envelope is None:
        envelope = read_envelope(request)
    event_type = envelope.get("type") if envelope else ""
    return ReceivedWebhook.objects.create(
        endpoint=endpoint,
        webhook_id=request.headers.get("webhook-id", "")[:255],
        event_type=event_type if isinstance(event_type, str) else "",
        body=envelope,
        verified=verified,
        response_status=status,
    )


def recording_refusals(endpoint):
    """Also log the requests that ``webhook_receiver`` refused, before the view ran."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            response = view(request, *args, **kwargs)
            # webhook_receiver answers 400 (saying why) when a request does not verify;
            # the views below never answer 400 themselves.
            if response.status_code == 400:
                record(request, endpoint, verified=False, status=400)
            return response

        return wrapper

    return decorator


@recording_refusals(ReceivedWebhook.Endpoint.RECEIVER)
@webhook_receiver(secret=target_secrets, replay_protection=True)
def receive_webhook(request, webhook):
    """Accept a correctly signed webhook with 200; refuse anything else with 400.

    With replay protection, a webhook-id accepted here within the last 10 minutes (twice
    the timestamp tolerance) gets 200 without this view running again: a sender's retry,
    or a copy of a request played again, is not processed twice.
    """
    record(request, ReceivedWebhook.Endpoint.RECEIVER, verified=True, status=200,
           envelope=webhook)
    return HttpResponse("Received.", content_type="text/plain")


@recording_refusals(ReceivedWebhook.Endpoint.FLAKY)
@webhook_receiver(secret=target_secrets)
def receive_webhook_flaky(request, webhook):
    """Like ``receive_webhook``, but answer 503 the first time a webhook-id arrives.

    The 503 carries ``Retry-After: 1``: "try again in a second". dj-webhooks schedules
    the retry no sooner than that, and a retry keeps its webhook-id, so it gets 200.
    """
    seen = ReceivedWebhook.objects.filter(
        endpoint=ReceivedWebhook.Endpoint.FLAKY,
        webhook_id=request.headers["webhook-id"],
        verified=True,
    ).exists()
    status = 200 if seen else 503
    record(request, ReceivedWebhook.Endpoint.FLAKY, verified=True, status=status,
           envelope=webhook)
    if not seen:
        response = HttpResponse("Down for a moment; try again in a second.", status=503,
                                content_type="text/plain")
        response["Retry-After"] = str(FLAKY_RETRY_AFTER)
        return response
    return HttpResponse("Received, at last.", content_type="text/plain")


class ReceivedWebhookListView(ListView):
    """Every request the receivers got, newest first."""

    model = ReceivedWebhook
    paginate_by = 50
