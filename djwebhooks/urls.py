"""``path("webhooks/", include("djwebhooks.urls"))``: the self-service pages and the API
(``djwebhooks.portal``), in the ``djwebhooks`` URL namespace."""

from djwebhooks.portal.urls import app_name, urlpatterns

__all__ = ["app_name", "urlpatterns"]
