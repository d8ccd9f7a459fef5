"""Top-level URL routes: admin, the web app and the versioned API."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/v1/", include("crm.api.urls")),
    path("", include("crm.urls")),
]

# API paths get RFC 9457 problem details; pages get the site's error pages.
handler403 = "crm.api.problems.api_aware_403"
handler404 = "crm.api.problems.api_aware_404"
handler500 = "crm.api.problems.api_aware_500"
