"""Routes of the Webhooks page, included from crm/urls.py."""

from django.urls import path

from crm.webhooks import views

urlpatterns = [
    path("webhooks/", views.webhook_list, name="webhooks"),
    path("webhooks/<int:pk>/toggle/", views.webhook_toggle, name="webhook_toggle"),
    path("webhooks/<int:pk>/delete/", views.webhook_delete, name="webhook_delete"),
    path("webhooks/<int:pk>/deliveries/<int:delivery_id>/redeliver/", views.webhook_redeliver,
         name="webhook_redeliver"),
]
