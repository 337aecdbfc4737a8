"""App config of the back office (admin views, roles migration, templates, static files)."""

from django.apps import AppConfig


class BackofficeConfig(AppConfig):
    name = "backoffice"
    verbose_name = "Finance back office"

    def ready(self) -> None:
        from django.contrib import admin

        admin.site.site_header = "Credits back office"
        admin.site.site_title = "Credits back office"
        admin.site.index_title = "Finance back office"
        # Wide money tables need the width more than a second copy of the index in a sidebar.
        admin.site.enable_nav_sidebar = False
