"""Views decorated with ``webhook_receiver``, and their URLs, for tests/test_receivers.py."""

from django.http import HttpResponse, JsonResponse
from django.urls import path

from djwebhooks.receivers import webhook_receiver
from djwebhooks.signing import generate_secret

SECRET = generate_secret()
OTHER_SECRET = generate_secret()
#: What the views were called with: (view name, webhook, kwargs).
calls = []
#: Functions that ``protected`` takes out of this list and calls with the request, one by
#: one, before it answers: a test's way to act while a webhook is being processed.
while_running = []


@webhook_receiver(secret=SECRET)
def plain(request, webhook):
    calls.append(("plain", webhook, {}))
    return JsonResponse({"type": webhook.get("type")})


@webhook_receiver(secret=SECRET, replay_protection=True)
def protected(request, webhook):
    """Answers the status in ``?status=`` (200 by default); raises with ``?raise=1``."""
    calls.append(("protected", webhook, {}))
    while while_running:
        while_running.pop(0)(request)
    if request.GET.get("raise"):
        raise RuntimeError("the view failed")
    return HttpResponse("ok", status=int(request.GET.get("status", 200)))


def tenant_secrets(request, tenant):
    """Tenant "a" is rotating its secret (two), "b" has one, others are unknown (None)."""
    return {"a": [OTHER_SECRET, SECRET], "b": OTHER_SECRET}.get(tenant)


@webhook_receiver(secret=tenant_secrets, replay_protection=True)
def per_tenant(request, webhook, tenant):
    calls.append(("per_tenant", webhook, {"tenant": tenant}))
    return HttpResponse(f"ok {tenant}")


urlpatterns = [
    path("hooks/plain/", plain),
    path("hooks/protected/", protected),
    path("hooks/also-protected/", protected),
    path("hooks/tenants/<slug:tenant>/", per_tenant),
]
