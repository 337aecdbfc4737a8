"""App config of the partner API."""

from django.apps import AppConfig


class BillingApiConfig(AppConfig):
    name = "billing_api"
    verbose_name = "Partner API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the OpenAPI extension describing Bearer key authentication.
        from billing_api import schema  # noqa: F401
