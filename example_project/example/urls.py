"""URLs: the admin, dj-webhooks' self-service pages (and its API) for the site's users, and
the projects app (its pages and its webhook receivers)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # Under account/: the projects app's receivers already use webhooks/.
    path("account/webhooks/", include("djwebhooks.urls")),
    path("", include("projects.urls")),
]
