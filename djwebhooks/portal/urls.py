"""The pages and the API: ``path("webhooks/", include("djwebhooks.urls"))``."""

from django.urls import path, re_path

from djwebhooks.portal import api, views

app_name = "djwebhooks"

urlpatterns = [
    # Pages
    path("", views.target_list, name="targets"),
    path("targets/add/", views.target_add, name="target-add"),
    path("targets/<int:pk>/", views.target_detail, name="target"),
    path("targets/<int:pk>/edit/", views.target_edit, name="target-edit"),
    path("targets/<int:pk>/delete/", views.target_delete, name="target-delete"),
    path("targets/<int:pk>/active/", views.target_set_active, name="target-active"),
    path("targets/<int:pk>/secret/", views.target_secret, name="target-secret"),
    path("targets/<int:pk>/rotate/", views.target_rotate, name="target-rotate"),
    path("targets/<int:pk>/test/", views.target_send_test, name="target-test"),
    path("targets/<int:pk>/chart.svg", views.target_chart, name="target-chart"),
    path("deliveries/", views.delivery_list, name="deliveries"),
    path("deliveries/<int:pk>/", views.delivery_detail, name="delivery"),
    path("deliveries/<int:pk>/replay/", views.delivery_replay, name="delivery-replay"),
    path("tokens/", views.token_list, name="tokens"),
    path("tokens/<int:pk>/revoke/", views.token_revoke, name="token-revoke"),
    # The REST Hooks API
    path("api/openapi.json", api.openapi, name="api-openapi"),
    path("api/targets/", api.targets, name="api-targets"),
    path("api/targets/<int:pk>/", api.target, name="api-target"),
    path("api/deliveries/", api.deliveries, name="api-deliveries"),
    path("api/deliveries/<int:pk>/", api.delivery, name="api-delivery"),
    path("api/deliveries/<int:pk>/replay/", api.delivery_replay, name="api-delivery-replay"),
    # Anything else under api/ is answered in JSON too, never with the site's HTML 404.
    re_path(r"^api/(?P<path>.*)$", api.not_found),
]
