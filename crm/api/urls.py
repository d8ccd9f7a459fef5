"""Routes of API v1, mounted at /api/v1/."""

from csp.decorators import csp_update
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from crm.api import contracts, next_actions, schema, views  # noqa: F401  (schema registers the token scheme)
from crm.api.history import RecordHistoryView
from crm.webhooks import api as webhooks_api

router = DefaultRouter()
router.register("customers", views.CustomerViewSet, basename="customer")
router.register("people", views.PersonViewSet, basename="person")
router.register("products", views.ProductViewSet, basename="product")
router.register("purchases", views.PurchaseViewSet, basename="purchase")
router.register("holdings", views.HoldingViewSet, basename="holding")
router.register("usage", views.UsageViewSet, basename="usage")
router.register("contacts", views.ContactViewSet, basename="contact")
router.register("tasks", views.TaskViewSet, basename="task")
router.register("events", views.EventViewSet, basename="event")
router.register("opportunities", views.OpportunityViewSet, basename="opportunity")
router.register("values", views.CustomerValueViewSet, basename="value")
router.register("clv-runs", views.ClvRunViewSet, basename="clv-run")
router.register("holding-values", contracts.HoldingValueViewSet, basename="holding-value")
router.register("renewals-at-risk", contracts.RenewalAtRiskViewSet, basename="renewal-at-risk")
router.register("next-actions", next_actions.NextActionViewSet, basename="next-action")
router.register("auth/tokens", views.TokenViewSet, basename="token")

app_name = "api"

# Swagger UI and Redoc style themselves with inline <style> elements (Redoc parses in a blob:
# worker): their two pages allow that; their scripts still come from our static files only.
DOCS_STYLES = csp_update({"style-src": ["'unsafe-inline'"], "worker-src": ["blob:"]})
SWAGGER = DOCS_STYLES(SpectacularSwaggerSplitView.as_view(url_name="api:schema"))
REDOC = DOCS_STYLES(SpectacularRedocView.as_view(url_name="api:schema"))

urlpatterns = [
    path("auth/token/", views.TokenView.as_view(), name="token"),
    path("sync/changes/", views.SyncChangesView.as_view(), name="sync-changes"),
    path("analytics/", views.AnalyticsIndexView.as_view(), name="analytics"),
    path("analytics/<slug:question>/", views.AnalyticsView.as_view(), name="analytics-question"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The schema and both documentation pages are public: they describe the API (as its source
    # does), never data; every operation needs a token. Swagger UI's script is its own file (CSP).
    path("docs/", SWAGGER, name="docs"),
    path("redoc/", REDOC, name="redoc"),
    path("webhooks/", webhooks_api.SubscriptionListView.as_view(), name="webhooks"),
    path("webhooks/<int:pk>/", webhooks_api.SubscriptionDetailView.as_view(), name="webhook"),
    path("webhooks/<int:pk>/deliveries/", webhooks_api.DeliveryListView.as_view(), name="webhook-deliveries"),
    path("webhooks/<int:pk>/deliveries/<int:delivery_id>/redeliver/", webhooks_api.RedeliverView.as_view(),
         name="webhook-redeliver"),
    path("<str:resource>/<str:pk>/history/", RecordHistoryView.as_view(), name="record-history"),
    path("", include(router.urls)),
]
