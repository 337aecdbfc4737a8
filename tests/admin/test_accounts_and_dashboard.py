"""The account page (balances, expiring credit, balance as of a date, links) and the analytics
dashboard."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from credits.services import grant_void
from invoices.services import invoice_finalize
from tests.factories import TEST_ACTOR, make_grant, make_invoice

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/backoffice/dashboard/"


def test_account_page_shows_balances_expiring_credit_and_links(viewer_client, account):
    make_grant(account, "100.00", expiration_days=10)
    make_grant(account, "50.00")
    make_grant(account, "20000.00")  # above the threshold: pending approval
    response = viewer_client.get(reverse("admin:credits_account_change", args=[account.pk]))
    [usd] = response.context["balances"]
    assert (usd.available, usd.reserved, usd.pending, usd.expiring_30d) == (
        Decimal("150.00"),
        Decimal("0.00"),
        Decimal("20000.00"),
        Decimal("100.00"),
    )
    html = response.content.decode()
    assert "/admin/credits/creditgrant/?account=account_123" in html
    assert "/admin/credits/ledgerentry/?account=account_123" in html
    assert "/admin/invoices/invoice/?account=account_123" in html
    assert "Issue credits" not in html  # a viewer may not issue


def test_balance_as_of_a_past_date_comes_from_the_ledger(viewer_client, account):
    past = timezone.now() - timedelta(days=10)
    make_grant(account, "100.00", now=past)
    grant = make_grant(account, "40.00", now=past + timedelta(days=5))
    grant_void(grant=grant, actor=TEST_ACTOR, reason="mistake")
    url = reverse("admin:credits_account_change", args=[account.pk])
    at = (past + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    response = viewer_client.get(f"{url}?as_of={at}")
    assert response.context["as_of"]["balances"] == [("USD", Decimal("100.00"))]
    later = (past + timedelta(days=6)).strftime("%Y-%m-%dT%H:%M")
    response = viewer_client.get(f"{url}?as_of={later}")
    assert response.context["as_of"]["balances"] == [("USD", Decimal("140.00"))]
    now = (timezone.now() + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
    response = viewer_client.get(f"{url}?as_of={now}")
    assert response.context["as_of"]["balances"] == [("USD", Decimal("100.00"))]


def test_issuer_can_edit_an_account_but_not_its_id(issuer_client, issuer, account):
    url = reverse("admin:credits_account_change", args=[account.pk])
    response = issuer_client.post(
        url,
        {
            "account_id": "hijacked",
            "name": "Initech Ltd",
            "email": "ap@initech.example",
            "currency": "USD",
            "partner": "",
            "auto_apply_credits": "on",
        },
    )
    assert response.status_code == 302
    account.refresh_from_db()
    assert (account.account_id, account.name) == ("account_123", "Initech Ltd")


def test_dashboard_reads_the_report_from_the_database(viewer_client, account):
    used = make_grant(account, "100.00", type="promotional", issued_by="marketing_team")
    make_grant(account, "50.00", type="refund", issued_by="support_team")
    invoice = make_invoice(account, ("clusters", "150.00"))
    invoice_finalize(invoice=invoice, actor=TEST_ACTOR)
    make_grant(account, "25.00", expiration_days=3)
    response = viewer_client.get(DASHBOARD)
    assert response.status_code == 200
    report = response.context["report"]
    assert report["totals"]["issued"] == Decimal("175.00")
    assert report["totals"]["used"] == Decimal("150.00")
    assert report["utilization_rate"] == Decimal("85.7")
    assert response.context["expiring_total"] == Decimal("25.00")
    html = response.content.decode()
    assert html.count("<svg") >= 4  # monthly, utilization, by type, by source
    assert "marketing_team" in html and "support_team" in html
    assert "$175.00" in html and "85.7%" in html
    assert used.credit_id not in html  # fully used: not in the expiring list


def test_dashboard_per_currency_and_range(viewer_client, account):
    make_grant(account, "100.00")
    response = viewer_client.get(DASHBOARD + "?currency=EUR&range=3m")
    assert response.status_code == 200 and response.context["report"] is None
    assert "No credit in EUR" in response.content.decode()
    response = viewer_client.get(DASHBOARD + "?currency=XXX&range=nonsense")
    assert response.context["currency"] == "USD" and response.context["range_key"] == "12m"


def test_dashboard_is_cached_and_refresh_recomputes_it(viewer_client, account):
    make_grant(account, "100.00")
    first = viewer_client.get(DASHBOARD).context["report"]["totals"]["issued"]
    make_grant(account, "10.00")
    cached = viewer_client.get(DASHBOARD).context["report"]["totals"]["issued"]
    fresh = viewer_client.get(DASHBOARD + "?refresh=1").context["report"]["totals"]["issued"]
    assert (first, cached, fresh) == (Decimal("100.00"), Decimal("100.00"), Decimal("110.00"))


def test_dashboard_needs_a_staff_login(client, django_user_model):
    response = client.get(DASHBOARD)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    nobody = django_user_model.objects.create_user("nobody", password="pw-nobody-1", is_staff=True)
    client.force_login(nobody)
    assert client.get(DASHBOARD).status_code == 403


def test_admin_index_offers_the_finance_shortcuts(issuer_client, viewer_client):
    html = issuer_client.get("/admin/").content.decode()
    assert "Issue credits" in html and "Bulk issue (CSV)" in html and "Dashboard" in html
    assert "Issue credits" not in viewer_client.get("/admin/").content.decode()
