from django.urls import path

from projects import views

app_name = "projects"

urlpatterns = [
    path("", views.ProjectListView.as_view(), name="list"),
    path("projects/<slug:slug>/edit/", views.ProjectUpdateView.as_view(), name="edit"),
    path("webhooks/receive/", views.receive_webhook, name="receiver"),
    path("webhooks/flaky/", views.receive_webhook_flaky, name="flaky-receiver"),
    path("webhooks/received/", views.ReceivedWebhookListView.as_view(), name="received"),
]
