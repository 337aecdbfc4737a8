"""Routes of /v2/billing/: exactly the seed's paths, no trailing slash. Fixed paths come before
`credits/<creditId>`; anything else under the prefix is a JSON 404 (never a redirect)."""

from pathlib import Path

import drf_spectacular_sidecar
from django.urls import path, re_path, register_converter
from django.views.decorators.cache import cache_control
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from billing_api import views
from billing_api.errors import not_found_view


class ExternalIdConverter:
    """cred_…, inv_…, account ids: letters, digits, _ . : - (what the API itself issues)."""

    regex = r"[A-Za-z0-9_.:\-]{1,64}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(ExternalIdConverter, "extid")

SIDECAR_STATIC = (
    Path(drf_spectacular_sidecar.__file__).parent / "static" / "drf_spectacular_sidecar"
)

urlpatterns = [
    path("whoami", views.WhoAmIView.as_view(), name="whoami"),
    path("credits", views.CreditListView.as_view(), name="credits"),
    path("credits/issue", views.CreditIssueView.as_view(), name="credit-issue"),
    path("credits/expiring", views.CreditExpiringView.as_view(), name="credits-expiring"),
    path("credits/bulk-apply", views.CreditBulkApplyView.as_view(), name="credits-bulk-apply"),
    path("credits/ledger", views.LedgerView.as_view(), name="ledger"),
    path("credits/balance", views.BalanceView.as_view(), name="balance"),
    path("credits/analytics", views.AnalyticsView.as_view(), name="analytics"),
    path(
        "credits/optimize/<extid:invoiceId>",
        views.CreditOptimizeView.as_view(),
        name="credits-optimize",
    ),
    path("credits/<extid:creditId>", views.CreditDetailView.as_view(), name="credit"),
    path("credits/<extid:creditId>/void", views.CreditVoidView.as_view(), name="credit-void"),
    path("credits/<extid:creditId>/apply", views.CreditApplyView.as_view(), name="credit-apply"),
    path(
        "credits/<extid:creditId>/transfer",
        views.CreditTransferView.as_view(),
        name="credit-transfer",
    ),
    path(
        "credits/<extid:creditId>/approve",
        views.CreditApproveView.as_view(),
        name="credit-approve",
    ),
    path("invoices", views.InvoiceListView.as_view(), name="invoices"),
    path("invoices/<extid:invoiceId>", views.InvoiceDetailView.as_view(), name="invoice"),
    path(
        "invoices/<extid:invoiceId>/finalize",
        views.InvoiceFinalizeView.as_view(),
        name="invoice-finalize",
    ),
    path("invoices/<extid:invoiceId>/void", views.InvoiceVoidView.as_view(), name="invoice-void"),
    path("invoices/<extid:invoiceId>/pay", views.InvoicePayView.as_view(), name="invoice-pay"),
    path("accounts", views.AccountListView.as_view(), name="accounts"),
    path("accounts/<extid:accountId>", views.AccountDetailView.as_view(), name="account"),
    # OpenAPI schema and its docs pages, with Swagger UI / ReDoc from our own files.
    path("schema", SpectacularAPIView.as_view(), name="billing-schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="billing-schema"), name="billing-docs"),
    path("redoc", SpectacularRedocView.as_view(url_name="billing-schema"), name="billing-redoc"),
    re_path(
        r"^docs/assets/(?P<path>(swagger-ui-dist|redoc)/[A-Za-z0-9_./\-]+)$",
        cache_control(max_age=86400, public=True)(serve),
        {"document_root": SIDECAR_STATIC},
        name="billing-docs-assets",
    ),
    re_path(r"^.*$", not_found_view),
]
