"""The pages' URLs alone, as djwebhooks/portal/urls.py names them, for the page tests until
the API's views exist (then the tests use djwebhooks.urls and this module goes)."""

from django.urls import include, path

from djwebhooks.portal import views

pages = [
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
]

urlpatterns = [path("webhooks/", include((pages, "djwebhooks")))]
