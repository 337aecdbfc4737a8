"""The seed's own client (tests/api/seed_client.py) runs against a live server and succeeds,
and what it computes from the API agrees with the API's own figures."""

from decimal import Decimal

import pytest
import requests

from billing_api.keys import SCOPES
from billing_api.services import api_key_create
from tests.api import seed_client as seed


def _post(base, raw, path, body):
    response = requests.post(
        f"{base}{path}", json=body, headers={"Authorization": f"Bearer {raw}"}, timeout=30
    )
    assert response.status_code in (200, 201), response.text
    return response.json(parse_float=Decimal)


def _get(base, raw, path, **params):
    response = requests.get(
        f"{base}{path}", params=params, headers={"Authorization": f"Bearer {raw}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json(parse_float=Decimal)


@pytest.mark.slow
def test_seed_client_runs_unchanged_but_for_base_url_and_key(live_server, capsys):
    # given: a partner key, and, made through the API as the docs describe, two accounts
    # (credits are applied by hand, so auto-apply is off) and two pending invoices
    _, raw = api_key_create(partner_name="tensorone-partner", scopes=sorted(SCOPES))
    base = f"{live_server.url}/v2/billing"
    seed.configure(base, raw)
    for account_id in ("account_123", "account_456"):
        _post(base, raw, "/accounts", {
            "accountId": account_id, "name": account_id, "email": f"{account_id}@example.com",
            "currency": "USD", "autoApplyCredits": False,
        })  # fmt: skip
    invoices = []
    for account_id, amount in (("account_123", "800.00"), ("account_456", "60.00")):
        inv = _post(base, raw, "/invoices", {
            "accountId": account_id, "currency": "USD",
            "lines": [{"service": "clusters", "description": "GPU hours", "quantity": 1,
                       "unitPrice": amount}],
        })  # fmt: skip
        invoices.append(_post(base, raw, f"/invoices/{inv['invoiceId']}/finalize", {}))
    assert [i["status"] for i in invoices] == ["pending", "pending"]

    # when: the seed's issuing functions run with the seed's own example arguments
    promo = seed.issue_promotional_credit("account_123", 250.00, "spring_2024_promo", 120)
    seed.issue_promotional_credit("account_123", 40.00, "flash_sale", expires_days=5)
    refund = seed.issue_refund_credit(
        invoices[0]["invoiceId"], 150.00, "Service downtime compensation"
    )
    support = seed.issue_support_credit(
        "account_456",
        100.00,
        "Apology for billing error",
        restrictions={"applicableServices": ["clusters"], "minimumSpend": 25.00,
                      "usageLimit": "monthly"},
    )  # fmt: skip

    # then: each is a credit of the seed's shape, the refund on the refunded invoice's account
    assert promo["status"] == "active" and promo["amount"]["original"] == 250.0
    assert promo["metadata"]["campaignId"] == "spring_2024_promo"
    assert refund["accountId"] == "account_123"
    assert refund["source"]["referenceId"] == invoices[0]["invoiceId"]
    assert refund["restrictions"]["usageLimit"] == "one_time"
    assert refund["metadata"]["originalInvoice"] == invoices[0]["invoiceId"]
    assert support["source"]["issuedBy"] == "support_team"
    assert support["restrictions"] == {
        "applicableServices": ["clusters"], "minimumSpend": 25.0, "maximumDiscount": None,
        "usageLimit": "monthly", "accountRestrictions": [],
    }  # fmt: skip

    # when: the seed's module-level flow runs (strategy, examples, notifications, report, ROI)
    capsys.readouterr()
    report = seed.main()
    out = capsys.readouterr().out

    # then: bulk-apply recommended, soonest expiry first: 40 + 250 + 150 (one_time) on the
    # 800.00 invoice; the support credit covers the 60.00 clusters invoice
    assert f"Invoice {invoices[0]['invoiceNumber']}: $800.00" in out
    assert " Recommended credits: $440.00" in out
    assert " Recommended credits: $60.00" in out
    assert "💰 Total Potential Savings: $500.00" in out
    assert "Credits expiring in 30 days: $40.00" in out
    assert "🔴 Promotional credit from campaign flash_sale" in out
    assert "Credit Lifecycle Analysis:" in out and "Total Issued: 4 credits ($540.00)" in out
    assert report["lifecycle_stats"]["issued"] == 4
    assert report["total_issued"] == 540.0

    # when: the commented-out "apply" step of apply_credits_with_strategy is executed
    optimization = seed.bulk_apply_credits()
    results = [
        seed.apply_credit_to_invoice(c["creditId"], rec["invoiceId"], c["amount"])
        for rec in optimization["recommendations"]
        for c in rec["creditsToApply"]
    ]
    assert [r["success"] for r in results] == [True, True, True, True]
    plan = seed.get_optimal_credit_application(invoices[0]["invoiceId"])
    assert plan["invoiceId"] == invoices[0]["invoiceId"] and plan["invoiceAmount"] == 360.0

    # then: the invoices owe what is left, and the seed's report agrees with GET analytics
    pending = seed.get_pending_invoices()
    assert {i["invoiceNumber"]: i["amounts"]["total"] for i in pending["invoices"]} == {
        invoices[0]["invoiceNumber"]: 360.0
    }
    report = seed.generate_comprehensive_credit_report()
    analytics = _get(base, raw, "/credits/analytics", dateRange="current_year")
    usd = analytics["currencies"]["USD"]
    assert usd["totals"]["issued"] == Decimal("540.00")
    assert usd["totals"]["used"] == Decimal("500.00")
    assert Decimal(str(report["total_used"])) == usd["totals"]["used"]
    assert usd["lifecycle"] == {
        "issued": 4, "activated": 1, "partiallyUsed": 1, "fullyUsed": 3,
        "expiredUnused": 0, "expiredPartial": 0,
    }  # fmt: skip
    assert report["lifecycle_stats"]["partially_used"] == usd["lifecycle"]["partiallyUsed"]
    assert usd["utilizationRate"] == Decimal("92.6")
    seed_rate = Decimal(str(report["utilization_rate"])).quantize(Decimal("0.1"))
    assert seed_rate == usd["utilizationRate"]

    # and: the seed's expiry flows run with what is left
    assert seed.send_expiration_notifications() is None  # the 5-day credit is used up
    assert seed.auto_apply_expiring_credits() == []
