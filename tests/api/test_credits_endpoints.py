"""Credits endpoints: list (filters, summary, recommendations, pagination), detail, issue,
void, apply, transfer, approve, expiring, optimize, bulk-apply, with exact values."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from credits.models import CreditGrant, GrantStatus, LedgerEntry
from tests.api.conftest import make_client
from tests.factories import AccountFactory, make_grant, make_invoice

D = Decimal


def body(response):
    return json.loads(response.content, parse_float=Decimal)


@pytest.fixture
def seeded(api, account):
    """The seed's three credits: a promo with 174.50 used, an unused refund, a pending
    referral (minimum spend 50.00)."""
    now = timezone.now()
    promo = make_grant(
        account, "500.00", description="Welcome Bonus - New Account", expiration_days=60,
        applicable_services=["clusters", "ai-services"], campaign_id="welcome_2024_q1",
        tags=["new_customer", "welcome"], issued_by="marketing_system",
        reference_id="promo_welcome_2024",
    )  # fmt: skip
    refund = make_grant(
        account, "200.00", type="refund", description="Refund for Service Downtime",
        usage_limit="one_time", issued_by="support_team",
    )  # fmt: skip
    for amount in ("124.50", "50.00"):
        inv = make_invoice(account, ("clusters", amount))
        api.post_json(
            f"/v2/billing/credits/{promo.credit_id}/apply",
            {"invoiceId": inv.invoice_id, "amount": amount},
        )
        api.post_json(f"/v2/billing/invoices/{inv.invoice_id}/finalize")
    # Issued after those invoices: its qualifying spend (50.00) is still to come.
    referral = make_grant(
        account, "100.00", type="referral", description="Referral Bonus - Friend Signup",
        minimum_spend=D("50.00"), expiration_days=180, issued_by="referral_system",
    )  # fmt: skip
    return {"promo": promo, "refund": refund, "referral": referral, "now": now}


def test_list_answers_the_seeds_summary_and_recommendations(api, seeded):
    response = api.get(
        "/v2/billing/credits",
        {"status[]": ["active", "pending"], "includeUsageHistory": "true",
         "dateRange": "current_year"},
    )  # fmt: skip
    assert response.status_code == 200
    data = body(response)
    assert data["summary"] == {
        "totalCredits": D("625.50"),
        "totalUsed": D("174.50"),
        "byType": {
            "promotional": {"amount": D("325.50"), "count": 1},
            "refund": {"amount": D("200.00"), "count": 1},
            "referral": {"amount": D("100.00"), "count": 1},
        },
        "byStatus": {
            "active": {"amount": D("525.50"), "count": 2},
            "pending": {"amount": D("100.00"), "count": 1},
        },
        "expiringWithin30Days": D("0.00"),
        "currency": "USD",
        "count": 3,
    }
    expires = seeded["promo"].expires_at
    assert [(r["type"], r["priority"], r["title"], r["potentialSavings"])
            for r in data["recommendations"]] == [
        ("expiration_warning", "medium", "Use Promotional Credit Before Expiration", D("325.50")),
        ("unused_credit", "low", "Apply Refund Credit to Outstanding Invoices", D("200.00")),
    ]  # fmt: skip
    assert data["recommendations"][0]["description"] == (
        f"Your welcome bonus credit of $325.50 will expire on {expires:%B} {expires.day}, "
        f"{expires.year}. Consider using it for upcoming AI service or GPU cluster usage."
    )
    assert data["recommendations"][1]["description"] == (
        "You have $200.00 in refund credits that can be applied to any service. Consider "
        "applying to reduce your next invoice."
    )
    promo = next(c for c in data["credits"] if c["creditId"] == seeded["promo"].credit_id)
    assert promo["amount"] == {
        "original": D("500.00"), "remaining": D("325.50"), "used": D("174.50"),
        "reserved": D("0.00"), "currency": "USD",
    }  # fmt: skip
    assert [(u["amount"], u["description"][:10]) for u in promo["usage"]] == [
        (D("50.00"), "applied to"),
        (D("124.50"), "applied to"),
    ]
    assert promo["source"] == {
        "description": "Welcome Bonus - New Account", "referenceId": "promo_welcome_2024",
        "issuedBy": "marketing_system", "reason": None,
    }  # fmt: skip
    assert promo["metadata"]["campaignId"] == "welcome_2024_q1"
    assert promo["restrictions"]["applicableServices"] == ["ai-services", "clusters"]
    assert b'"remaining":325.50' in response.content  # a JSON number at cents, not a string


def test_list_filters_by_status_type_currency_and_account(api, seeded, account):
    other = AccountFactory(partner=api.partner, account_id="account_eur", currency="EUR")
    make_grant(other, "70.00")
    ids = lambda r: sorted(c["creditId"] for c in body(r)["credits"])  # noqa: E731
    assert ids(api.get("/v2/billing/credits", {"status[]": "pending"})) == [
        seeded["referral"].credit_id
    ]
    assert ids(api.get("/v2/billing/credits", {"type[]": ["refund", "referral"]})) == sorted(
        [seeded["refund"].credit_id, seeded["referral"].credit_id]
    )
    eur = body(api.get("/v2/billing/credits", {"currency": "EUR"}))
    assert eur["summary"]["totalCredits"] == D("70.00") and eur["summary"]["currency"] == "EUR"
    assert len(body(api.get("/v2/billing/credits", {"accountId": "account_123"}))["credits"]) == 3
    both = body(api.get("/v2/billing/credits"))
    assert [s["currency"] for s in both["summaries"]] == ["EUR", "USD"]
    assert "usage" not in both["credits"][0]


def test_list_date_ranges_filter_on_issue_date(api, account):
    now = timezone.now()
    old = make_grant(account, "10.00", now=now - timedelta(days=45))
    older = make_grant(account, "20.00", now=now - timedelta(days=120))
    new = make_grant(account, "30.00")

    def ids(**params):
        response = api.get("/v2/billing/credits", params)
        assert response.status_code == 200, response.content
        return {c["creditId"] for c in body(response)["credits"]}

    assert ids(dateRange="last_month") == {new.credit_id}
    assert ids(dateRange="last_3_months") == {new.credit_id, old.credit_id}
    assert ids(dateRange="last_6_months") == {new.credit_id, old.credit_id, older.credit_id}
    assert ids(dateRange="all") == {new.credit_id, old.credit_id, older.credit_id}
    day = (now - timedelta(days=45)).date()
    assert ids(dateRange="custom", startDate=str(day), endDate=str(day)) == {old.credit_id}
    current = {g.credit_id for g in (old, older, new) if g.issued_at.year == now.year}
    assert ids(dateRange="current_year") == current


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status[]": "bogus"}, "status[]"),
        ({"type[]": "cash"}, "type[]"),
        ({"currency": "XYZ"}, "currency"),
        ({"dateRange": "yesterday"}, "dateRange"),
        ({"dateRange": "custom", "startDate": "2024-01-01"}, "dateRange"),
        ({"startDate": "2024-02-30"}, "startDate"),
        ({"includeUsageHistory": "maybe"}, "includeUsageHistory"),
        ({"limit": "0"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_list_refuses_bad_filters_with_a_400_naming_them(api, params, field):
    response = api.get("/v2/billing/credits", params)
    assert response.status_code == 400
    error = body(response)["error"]
    assert error["code"] == "validation_error"
    assert field in error["message"] or error["details"].get("field") == field


def test_list_pages_with_a_cursor_without_gaps_or_repeats(api, account):
    grants = [make_grant(account, f"{i}.00") for i in range(1, 8)]
    seen, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        data = body(api.get("/v2/billing/credits", params))
        seen += [c["creditId"] for c in data["credits"]]
        assert data["pagination"]["limit"] == 3
        if not data["pagination"]["hasMore"]:
            assert data["pagination"]["nextCursor"] is None
            break
        cursor = data["pagination"]["nextCursor"]
    assert seen == [g.credit_id for g in reversed(grants)]
    # The summary covers the whole filtered set, not the page.
    assert body(api.get("/v2/billing/credits", {"limit": 3}))["summary"]["totalCredits"] == D(
        "28.00"
    )


def test_list_query_count_does_not_grow_with_page_size(api, account, django_assert_max_num_queries):
    inv = make_invoice(account, ("clusters", "1000.00"))
    for i in range(30):
        g = make_grant(account, "10.00")
        if i % 3 == 0:
            api.post_json(f"/v2/billing/credits/{g.credit_id}/apply",
                          {"invoiceId": inv.invoice_id, "amount": "1.00"})  # fmt: skip
    api.post_json(f"/v2/billing/invoices/{inv.invoice_id}/finalize")
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for limit in (5, 30):
        with CaptureQueriesContext(connection) as ctx:
            r = api.get("/v2/billing/credits", {"limit": limit, "includeUsageHistory": "true"})
        assert r.status_code == 200 and len(body(r)["credits"]) == limit
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1] <= 6


def test_detail_shows_the_credit_with_usage(api, seeded):
    response = api.get(f"/v2/billing/credits/{seeded['promo'].credit_id}")
    data = body(response)
    assert response.status_code == 200
    assert data["amount"]["remaining"] == D("325.50")
    assert sum(u["amount"] for u in data["usage"]) == D("174.50")


def test_issue_with_every_option(api, account):
    effective = timezone.now() + timedelta(days=2)
    response = api.post_json("/v2/billing/credits/issue", {
        "type": "bonus", "recipientAccountId": "account_123", "amount": 75.25,
        "currency": "USD", "price": "0", "campaignId": "c1", "description": "Loyalty",
        "reason": "Loyalty programme", "referenceId": "ref-1",
        "effectiveAt": effective.isoformat(), "expirationDays": 30, "autoActivate": True,
        "restrictions": {"applicableServices": ["storage"], "minimumSpend": "10.00",
                         "maximumDiscount": 20, "usageLimit": "monthly",
                         "accountRestrictions": ["account_456"]},
        "metadata": {"tags": ["loyal"], "transferable": True, "notes": "n",
                     "issuedBy": "crm", "tier": "gold"},
    })  # fmt: skip
    assert response.status_code == 201, response.content
    data = body(response)
    grant = CreditGrant.objects.get(credit_id=data["creditId"])
    assert data["status"] == "pending"  # effective in two days
    assert (grant.original, grant.price, grant.minimum_spend, grant.maximum_discount) == (
        D("75.25"), D("0"), D("10.00"), D("20"),
    )  # fmt: skip
    assert grant.expires_at == grant.effective_at + timedelta(days=30)
    assert data["metadata"] == {"tier": "gold", "campaignId": "c1", "tags": ["loyal"],
                                "notes": "n", "transferable": True}  # fmt: skip
    assert data["source"]["issuedBy"] == "crm"
    assert data["restrictions"]["accountRestrictions"] == ["account_456"]
    assert LedgerEntry.objects.get(grant=grant).actor == f"api_key:{api.key.prefix} (acme)"


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"amount": "-5"}, 400, "validation_error"),
        ({"amount": "10.001"}, 400, "validation_error"),
        ({"amount": "1.5", "currency": "JPY"}, 400, "validation_error"),
        ({"amount": True}, 400, "validation_error"),
        ({"amount": "ten"}, 400, "validation_error"),
        ({"type": "cash"}, 400, "validation_error"),
        ({"currency": "XYZ"}, 400, "validation_error"),
        ({"recipientAccountId": "nobody"}, 404, "account_not_found"),
        ({"restrictions": {"usageLimit": "sometimes"}}, 400, "validation_error"),
        ({"expirationDays": 0}, 400, "validation_error"),
        ({"expirationDays": 5, "expiresAt": "2030-01-01T00:00:00Z"}, 400, "validation_error"),
        ({"metadata": ["not", "an", "object"]}, 400, "validation_error"),
        ({"effectiveAt": "9999-12-31T23:59:59Z", "expirationDays": 3650}, 400, "validation_error"),
        ({"expiresAt": "not a date"}, 400, "validation_error"),
    ],
)
def test_issue_refuses_bad_input_and_writes_nothing(api, account, payload, status, code):
    base = {"type": "promotional", "recipientAccountId": "account_123", "amount": "10.00"}
    response = api.post_json("/v2/billing/credits/issue", base | payload)
    assert response.status_code == status, response.content
    assert body(response)["error"]["code"] == code
    assert not CreditGrant.objects.exists() and not LedgerEntry.objects.exists()


def test_issue_a_jpy_credit_renders_without_decimals(api, account):
    response = api.post_json(
        "/v2/billing/credits/issue",
        {"type": "promotional", "accountId": "account_123", "amount": 1200, "currency": "JPY"},
    )
    assert response.status_code == 201
    assert b'"original":1200,' in response.content


def test_issue_refund_without_account_needs_one_of_your_invoices(api, account, other_account):
    mine = make_invoice(account, ("clusters", "10.00"))
    theirs = make_invoice(other_account, ("clusters", "10.00"))
    payload = {"type": "refund", "amount": "5.00", "currency": "USD"}
    ok = api.post_json("/v2/billing/credits/issue", payload | {"referenceId": mine.invoice_id})
    assert ok.status_code == 201 and body(ok)["accountId"] == "account_123"
    by_number = api.post_json(
        "/v2/billing/credits/issue", payload | {"referenceId": mine.invoice_number}
    )
    assert by_number.status_code == 201
    refused = api.post_json(
        "/v2/billing/credits/issue", payload | {"referenceId": theirs.invoice_id}
    )
    assert refused.status_code == 400
    assert body(refused)["error"]["details"]["field"] == "recipientAccountId"


def test_void_keeps_the_used_part(api, seeded):
    promo = seeded["promo"]
    missing = api.post_json(f"/v2/billing/credits/{promo.credit_id}/void", {})
    assert missing.status_code == 400
    response = api.post_json(f"/v2/billing/credits/{promo.credit_id}/void", {"reason": "fraud"})
    data = body(response)
    assert data["status"] == "voided"
    assert (data["amount"]["remaining"], data["amount"]["used"]) == (D("0.00"), D("174.50"))
    again = api.post_json(f"/v2/billing/credits/{promo.credit_id}/void", {"reason": "twice"})
    assert again.status_code == 409 and body(again)["error"]["code"] == "invalid_status"


def test_apply_to_a_pending_invoice_deducts_the_exact_amount(api, account):
    grant = make_grant(account, "100.00")
    account.auto_apply_credits = False
    account.save()
    inv = make_invoice(account, ("clusters", "80.00"))
    api.post_json(f"/v2/billing/invoices/{inv.invoice_id}/finalize")
    response = api.post_json(
        f"/v2/billing/credits/{grant.credit_id}/apply",
        # 30.25, not 30.10: on SQLite the CHECK grant_used_within_original compares REALs and
        # 100 - 69.90 < 30.10 there (reported to the lead; PostgreSQL's numeric is exact).
        {"invoiceId": inv.invoice_id, "amount": 30.25},
    )
    data = body(response)
    assert response.status_code == 200
    assert (data["success"], data["amountApplied"]) == (True, D("30.25"))
    assert data["credit"]["amount"]["remaining"] == D("69.75")
    assert data["invoice"]["amounts"] == {
        "subtotal": D("80.00"),
        "credits": D("30.25"),
        "total": D("49.75"),
    }
    credit_line = data["invoice"]["lines"][-1]
    assert (credit_line["kind"], credit_line["amount"], credit_line["creditId"]) == (
        "credit", D("-30.25"), grant.credit_id,
    )  # fmt: skip
    too_much = api.post_json(
        f"/v2/billing/credits/{grant.credit_id}/apply",
        {"invoiceId": inv.invoice_id, "amount": "60.00"},
    )
    assert too_much.status_code == 422 and body(too_much)["error"]["code"] == "cannot_apply"


def test_transfer_moves_remaining_credit_to_another_account(api, account):
    target = AccountFactory(partner=api.partner, account_id="account_456")
    grant = make_grant(account, "90.00", transferable=True)
    response = api.post_json(
        f"/v2/billing/credits/{grant.credit_id}/transfer",
        {"toAccountId": "account_456", "amount": "40.00"},
    )
    data = body(response)
    assert response.status_code == 200, response.content
    assert data["from"]["amount"]["remaining"] == D("50.00")
    assert (data["to"]["accountId"], data["to"]["amount"]["original"]) == (
        target.account_id,
        D("40.00"),
    )
    assert data["to"]["source"]["referenceId"] == grant.credit_id
    fixed = make_grant(account, "10.00")
    refused = api.post_json(
        f"/v2/billing/credits/{fixed.credit_id}/transfer", {"toAccountId": "account_456"}
    )
    assert refused.status_code == 422 and body(refused)["error"]["code"] == "not_transferable"


def test_approve_needs_another_key_than_the_issuers(api, account):
    response = api.post_json(
        "/v2/billing/credits/issue",
        {"type": "bonus", "accountId": "account_123", "amount": "20000.00"},
    )
    credit_id = body(response)["creditId"]
    assert body(response)["status"] == "pending"
    same = api.post_json(f"/v2/billing/credits/{credit_id}/approve", {})
    assert same.status_code == 403 and body(same)["error"]["code"] == "approver_is_issuer"
    checker = make_client("acme", ["credits:approve"])
    approved = checker.post_json(f"/v2/billing/credits/{credit_id}/approve", {"reason": "ok"})
    assert approved.status_code == 200
    data = body(approved)
    assert data["status"] == "active"
    assert data["approval"]["approvedBy"] == f"api_key:{checker.key.prefix} (acme)"


def test_expiring_lists_soonest_first_within_days_ahead(api, account):
    late = make_grant(account, "30.00", expiration_days=20)
    soon = make_grant(account, "12.50", expiration_days=3)
    make_grant(account, "99.00", expiration_days=90)
    make_grant(account, "5.00")
    data = body(api.get("/v2/billing/credits/expiring", {"daysAhead": 30}))
    assert [c["creditId"] for c in data["credits"]] == [soon.credit_id, late.credit_id]
    assert data["totals"] == [{"currency": "USD", "amount": D("42.50"), "count": 2}]
    assert (
        "usage"
        in body(api.get("/v2/billing/credits/expiring", {"includeUsageHistory": "true"}))[
            "credits"
        ][0]
    )
    assert api.get("/v2/billing/credits/expiring", {"daysAhead": "0"}).status_code == 400


def test_optimize_plans_one_invoice_and_writes_nothing(api, account):
    a = make_grant(account, "30.00", expiration_days=10)
    b = make_grant(account, "100.00")
    inv = make_invoice(account, ("clusters", "50.00"))
    before = LedgerEntry.objects.count()
    data = body(api.get(f"/v2/billing/credits/optimize/{inv.invoice_id}"))
    assert data["invoiceAmount"] == D("50.00") and data["totalCredits"] == D("50.00")
    assert [(c["creditId"], c["amount"]) for c in data["creditsToApply"]] == [
        (a.credit_id, D("30.00")),
        (b.credit_id, D("20.00")),
    ]
    assert {d["creditId"] for d in data["decisions"]} == {a.credit_id, b.credit_id}
    assert LedgerEntry.objects.count() == before


def test_bulk_apply_dry_run_by_default_then_applies(api, account):
    account.auto_apply_credits = False
    account.save()
    grant = make_grant(account, "100.00", expiration_days=30)
    invs = [make_invoice(account, ("clusters", amount)) for amount in ("70.00", "50.00")]
    for inv in invs:
        api.post_json(f"/v2/billing/invoices/{inv.invoice_id}/finalize")
    plan = body(api.post_json("/v2/billing/credits/bulk-apply", {"maxAmount": 5000.00}))
    assert (plan["dryRun"], plan["applied"]) == (True, False)
    assert [(r["invoiceAmount"], r["totalCredits"]) for r in plan["recommendations"]] == [
        (D("70.00"), D("70.00")),
        (D("50.00"), D("30.00")),
    ]
    assert CreditGrant.objects.get(pk=grant.pk).remaining == D("100.00")
    capped = body(api.post_json("/v2/billing/credits/bulk-apply", {"maxAmount": "80"}))
    assert capped["totals"] == [{"currency": "USD", "amount": D("80.00"), "count": 2}]
    done = body(api.post_json("/v2/billing/credits/bulk-apply", {"dryRun": False}))
    assert done["applied"] is True
    assert CreditGrant.objects.get(pk=grant.pk).status == GrantStatus.APPLIED
    assert [r["amountAfterCredits"] for r in done["recommendations"]] == [D("0.00"), D("20.00")]
    bad = api.post_json("/v2/billing/credits/bulk-apply", {"invoiceTypes": ["draft"]})
    assert bad.status_code == 400
