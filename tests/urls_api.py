"""The API's routes alone, as ``djwebhooks.portal.urls`` names them, at ``webhooks/``: for
the API's tests while the pages are written."""

from django.urls import include, path

from djwebhooks.portal import api

api_patterns = [
    path("api/openapi.json", api.openapi, name="api-openapi"),
    path("api/targets/", api.targets, name="api-targets"),
    path("api/targets/<int:pk>/", api.target, name="api-target"),
    path("api/deliveries/", api.deliveries, name="api-deliveries"),
    path("api/deliveries/<int:pk>/", api.delivery, name="api-delivery"),
    path("api/deliveries/<int:pk>/replay/", api.delivery_replay, name="api-delivery-replay"),
]

urlpatterns = [path("webhooks/", include((api_patterns, "djwebhooks")))]
