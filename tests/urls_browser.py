"""The test URLs with the self-service pages mounted, for tests/test_browser.py."""

from django.urls import include, path

from tests.urls import urlpatterns as base_urlpatterns

urlpatterns = [*base_urlpatterns, path("webhooks/", include("djwebhooks.urls"))]
