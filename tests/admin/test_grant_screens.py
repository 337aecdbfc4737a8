"""Credit grants in the admin: changelist (filters, search), the "Issue credits" form calling
grant_issue, and the grant's read-only page with its ledger and usage."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.urls import reverse
from django.utils import timezone

from credits.models import CreditGrant, EntryKind, GrantStatus, LedgerEntry
from invoices.services import invoice_finalize
from tests.factories import TEST_ACTOR, AccountFactory, make_grant, make_invoice

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/credits/creditgrant/"
ADD = "/admin/credits/creditgrant/add/"


def _issue_data(account, **overrides):
    data = {
        "account": account.pk,
        "type": "promotional",
        "amount": "250.00",
        "currency": "",
        "price": "",
        "expiration_days": "90",
        "expires_at": "",
        "effective_at": "",
        "auto_activate": "on",
        "description": "Spring campaign",
        "reference_id": "promo-42",
        "issued_by": "marketing_team",
        "reason": "Welcome offer",
        "applicable_services": ["clusters", "storage"],
        "other_services": "gpu-burst",
        "minimum_spend": "10.00",
        "maximum_discount": "100.00",
        "usage_limit": "monthly",
        "account_restrictions": "account_456, account_789",
        "campaign_id": "spring-26",
        "tags": "spring, welcome",
        "notes": "VIP",
        "transferable": "on",
        "extra_metadata": '{"team": "growth"}',
    }
    data.update(overrides)
    return data


def test_issue_form_calls_the_service_with_every_field(issuer_client, issuer, account):
    # when
    response = issuer_client.post(ADD, _issue_data(account))
    # then
    grant = CreditGrant.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:credits_creditgrant_change", args=[grant.pk])
    assert grant.original == Decimal("250.00") and grant.remaining == Decimal("250.00")
    assert grant.currency == "USD" and grant.status == GrantStatus.ACTIVE
    assert grant.price == Decimal("250.00")
    assert grant.expires_at - grant.effective_at == timedelta(days=90)
    assert grant.applicable_services == ["clusters", "gpu-burst", "storage"]
    assert grant.minimum_spend == Decimal("10.00")
    assert grant.maximum_discount == Decimal("100.00")
    assert grant.usage_limit == "monthly"
    assert grant.account_restrictions == ["account_456", "account_789"]
    assert (grant.campaign_id, grant.tags, grant.notes) == (
        "spring-26",
        ["spring", "welcome"],
        "VIP",
    )
    assert grant.transferable is True and grant.extra_metadata == {"team": "growth"}
    assert (grant.issued_by, grant.reference_id) == ("marketing_team", "promo-42")
    entry = LedgerEntry.objects.get(grant=grant)
    assert entry.kind == EntryKind.GRANT and entry.amount == Decimal("250.00")
    assert entry.actor == "user:ivan" and entry.actor_user == issuer
    log = LogEntry.objects.get(object_id=str(grant.pk))
    assert log.user == issuer and log.action_flag == ADDITION


def test_issue_form_with_an_expiry_date_and_a_future_effective_date(issuer_client, account):
    start = (timezone.now() + timedelta(days=3)).replace(second=0, microsecond=0)
    end = start + timedelta(days=10)
    data = _issue_data(
        account,
        expiration_days="",
        effective_at=start.strftime("%Y-%m-%dT%H:%M"),
        expires_at=end.strftime("%Y-%m-%dT%H:%M"),
        price="200.00",
    )
    issuer_client.post(ADD, data)
    grant = CreditGrant.objects.get()
    assert grant.status == GrantStatus.PENDING
    assert grant.effective_at == start and grant.expires_at == end
    assert grant.price == Decimal("200.00")


def test_issue_form_shows_the_services_precision_error_on_the_amount(issuer_client):
    tokyo = AccountFactory(currency="JPY")
    response = issuer_client.post(ADD, _issue_data(tokyo, amount="1500.5", minimum_spend=""))
    assert response.status_code == 200
    assert "more precision than JPY allows" in response.content.decode()
    assert "amount" in response.context["form"].errors
    assert not CreditGrant.objects.exists()


def test_issue_form_refuses_days_and_date_together(issuer_client, account):
    later = (timezone.now() + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M")
    response = issuer_client.post(ADD, _issue_data(account, expires_at=later))
    assert response.status_code == 200
    assert "not both" in response.content.decode()
    assert not CreditGrant.objects.exists()


def test_viewer_cannot_issue_credits(viewer_client, account):
    assert viewer_client.get(ADD).status_code == 403
    assert viewer_client.post(ADD, _issue_data(account)).status_code == 403
    assert not CreditGrant.objects.exists()


def test_amounts_are_read_only_after_issue(admin_client_fin, account):
    grant = make_grant(account, "100.00")
    url = reverse("admin:credits_creditgrant_change", args=[grant.pk])
    response = admin_client_fin.get(url)
    assert response.status_code == 200
    assert 'name="original"' not in response.content.decode()
    assert admin_client_fin.post(url, {"original": "999.00"}).status_code == 403
    grant.refresh_from_db()
    assert grant.original == Decimal("100.00")


def test_grant_page_shows_its_ledger_and_usage(viewer_client, account):
    grant = make_grant(account, "100.00")
    invoice = make_invoice(account, ("clusters", "40.00"))
    invoice_finalize(invoice=invoice, actor=TEST_ACTOR)
    response = viewer_client.get(reverse("admin:credits_creditgrant_change", args=[grant.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "Usage (credit lines on invoices)" in html and invoice.invoice_number in html
    assert "\u2212$40.00" in html  # the deduction and the negative credit line
    assert "+$100.00" in html  # the grant entry
    assert "Void…" not in html  # a viewer gets no action buttons


def test_changelist_filters_and_search(viewer_client, account):
    soon = make_grant(account, "10.00", expiration_days=5, campaign_id="spring")
    later = make_grant(account, "20.00", expiration_days=20, issued_by="support_team")
    never = make_grant(AccountFactory(), "30.00", reference_id="ticket-9")

    def ids(query):
        response = viewer_client.get(CHANGELIST + query)
        assert response.status_code == 200, query
        return {g.credit_id for g in response.context["cl"].result_list}

    assert ids("") == {soon.credit_id, later.credit_id, never.credit_id}
    assert ids("?expiring_within=7") == {soon.credit_id}
    assert ids("?expiring_within=30") == {soon.credit_id, later.credit_id}
    assert ids("?campaign=spring") == {soon.credit_id}
    assert ids("?issuer=support_team") == {later.credit_id}
    assert ids("?account=account_123") == {soon.credit_id, later.credit_id}
    assert ids("?type__exact=promotional&status__exact=active&currency__exact=USD") == {
        soon.credit_id,
        later.credit_id,
        never.credit_id,
    }
    today = timezone.now().date().isoformat()
    assert len(ids(f"?issued_at_from={today}&issued_at_to={today}")) == 3
    assert ids("?issued_at_to=2000-01-01") == set()
    assert ids(f"?q={soon.credit_id}") == {soon.credit_id}
    assert ids("?q=ticket-9") == {never.credit_id}
    assert ids("?q=spring") == {soon.credit_id}
    assert ids("?q=account_123") == {soon.credit_id, later.credit_id}


def test_changelist_does_not_count_the_whole_table(
    viewer_client, account, django_assert_max_num_queries
):
    for _ in range(3):
        make_grant(account, "5.00")
    with django_assert_max_num_queries(8) as ctx:
        viewer_client.get(CHANGELIST)
    sqls = [q["sql"].upper() for q in ctx.captured_queries]
    assert not [s for s in sqls if "COUNT(" in s and "LIMIT" not in s]
