"""URLs: the admin, and the projects app (its pages and its webhook receivers)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("projects.urls")),
]
