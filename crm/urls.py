"""Routes of the web pages (mounted at the site root)."""

from django.urls import path

from crm.exports import urlpatterns as export_urls
from crm.views import manager, salesperson
from crm.webhooks.urls import urlpatterns as webhook_urls

app_name = "crm"

urlpatterns = [
    path("", salesperson.home, name="home"),
    path("my-day/", salesperson.my_day, name="my_day"),
    path("customers/", salesperson.account_list, name="account_list"),
    path("customers/<int:pk>/", salesperson.account_detail, name="account_detail"),
    path("customers/<int:pk>/facets/", salesperson.account_facets, name="account_facets"),
    path("customers/<int:pk>/contacts/", salesperson.contact_create, name="contact_create"),
    path("customers/<int:pk>/events/", salesperson.event_create, name="event_create"),
    path("opportunities/<int:pk>/status/", salesperson.opportunity_status, name="opportunity_status"),
    path("follow-ups/<int:pk>/done/", salesperson.follow_up_done, name="follow_up_done"),
    path("dashboard/", manager.dashboard, name="dashboard"),
    path("analytics/", manager.analytics, name="analytics"),
    path("clv/runs/", manager.clv_runs, name="clv_runs"),
    path("clv/runs/recompute/", manager.clv_recompute, name="clv_recompute"),
    path("clv/runs/progress/", manager.clv_progress, name="clv_progress"),
    *webhook_urls,
    *export_urls,
]
