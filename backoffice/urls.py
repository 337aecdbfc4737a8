"""Back-office pages mounted under /admin/backoffice/ (inside the admin's login)."""

from django.contrib import admin
from django.urls import path

from backoffice import views

urlpatterns = [
    path("dashboard/", admin.site.admin_view(views.dashboard_view), name="backoffice_dashboard"),
]
