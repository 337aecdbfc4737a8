"""URLs: the finance back office (admin) and the partner API under /v2/billing/."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/backoffice/", include("backoffice.urls")),
    path("admin/", admin.site.urls),
    path("v2/billing/", include("billing_api.urls")),
]
