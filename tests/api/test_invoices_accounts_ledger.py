"""Invoices, accounts, ledger, balance and analytics endpoints, with exact values."""

import json
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from credits.models import Account, LedgerEntry
from tests.factories import AccountFactory, make_grant, make_invoice

D = Decimal


def body(response):
    return json.loads(response.content, parse_float=Decimal)


def test_create_finalize_and_pay_an_invoice_that_draws_credit(api, account):
    make_grant(account, "25.00", expiration_days=10)
    response = api.post_json("/v2/billing/invoices", {
        "accountId": "account_123", "dueDate": "2030-01-31",
        "lines": [{"service": "clusters", "description": "GPU", "quantity": "2.5",
                   "unitPrice": 12.10},
                  {"service": "storage", "description": "S3", "quantity": 3,
                   "unitPrice": "0.083333"}],
    })  # fmt: skip
    assert response.status_code == 201, response.content
    draft = body(response)
    assert (draft["status"], draft["currency"], draft["dueDate"]) == ("draft", "USD", "2030-01-31")
    assert draft["amounts"] == {"subtotal": D("30.50"), "credits": D("0.00"), "total": D("30.50")}
    # 3 x 0.083333 = 0.249999, rounded half-even to the cent once, on the line.
    assert [(line["quantity"], line["unitPrice"], line["amount"]) for line in draft["lines"]] == [
        (D("2.5"), D("12.10"), D("30.25")),
        (D("3"), D("0.083333"), D("0.25")),
    ]
    final = body(api.post_json(f"/v2/billing/invoices/{draft['invoiceId']}/finalize"))
    assert final["status"] == "pending"
    assert final["amounts"] == {"subtotal": D("30.50"), "credits": D("25.00"), "total": D("5.50")}
    assert final["lines"][-1]["kind"] == "credit" and final["lines"][-1]["amount"] == D("-25.00")
    again = api.post_json(f"/v2/billing/invoices/{draft['invoiceId']}/finalize")
    assert again.status_code == 409 and body(again)["error"]["code"] == "invalid_invoice_status"
    paid = body(api.post_json(f"/v2/billing/invoices/{draft['invoiceId']}/pay"))
    assert paid["status"] == "paid" and paid["paidAt"] is not None


def test_void_an_invoice_gives_its_credit_back(api, account):
    grant = make_grant(account, "40.00")
    inv = make_invoice(account, ("clusters", "30.00"))
    api.post_json(f"/v2/billing/invoices/{inv.invoice_id}/finalize")
    assert api.post_json(f"/v2/billing/invoices/{inv.invoice_id}/void", {}).status_code == 400
    void = body(api.post_json(f"/v2/billing/invoices/{inv.invoice_id}/void", {"reason": "dup"}))
    assert void["status"] == "void"
    credit = body(api.get(f"/v2/billing/credits/{grant.credit_id}"))
    assert credit["amount"]["remaining"] == D("40.00") and credit["usage"] == []


def test_invoice_list_carries_amounts_total_and_filters(api, account):
    account.auto_apply_credits = False
    account.save()
    other = AccountFactory(partner=api.partner, account_id="account_456", currency="EUR")
    a = make_invoice(account, ("clusters", "10.00"))
    make_invoice(other, ("clusters", "20.00"))
    api.post_json(f"/v2/billing/invoices/{a.invoice_id}/finalize")
    pending = body(api.get("/v2/billing/invoices", {"status": "pending"}))["invoices"]
    assert [(i["invoiceId"], i["amounts"]["total"]) for i in pending] == [
        (a.invoice_id, D("10.00"))
    ]
    eur = body(api.get("/v2/billing/invoices", {"currency": "EUR"}))["invoices"]
    assert [i["accountId"] for i in eur] == ["account_456"]
    by_account = body(api.get("/v2/billing/invoices", {"accountId": "account_123"}))
    assert len(by_account["invoices"]) == 1 and "lines" not in by_account["invoices"][0]
    assert api.get("/v2/billing/invoices", {"status": "late"}).status_code == 400


def test_invoice_create_refuses_bad_lines_and_writes_nothing(api, account):
    for lines in ([], [{"service": "x"}], [{"service": "x", "unitPrice": "-1"}],
                  [{"service": "x", "unitPrice": "1.0000001"}],
                  [{"service": "x", "unitPrice": "1e15", "quantity": 1000}]):  # fmt: skip
        response = api.post_json("/v2/billing/invoices", {"accountId": "account_123",
                                                           "lines": lines})  # fmt: skip
        assert response.status_code == 400, (lines, response.content)
    assert not account.invoices.exists()


def test_accounts_create_list_and_detail(api):
    response = api.post_json("/v2/billing/accounts", {
        "accountId": "account_777", "name": "Seven", "email": "ap@seven.example",
        "currency": "JPY",
    })  # fmt: skip
    assert response.status_code == 201
    assert body(response) | {"createdAt": None} == {
        "accountId": "account_777", "name": "Seven", "email": "ap@seven.example",
        "currency": "JPY", "autoApplyCredits": True, "balances": [], "createdAt": None,
    }  # fmt: skip
    assert Account.objects.get(account_id="account_777").partner == api.partner
    duplicate = api.post_json("/v2/billing/accounts", {"accountId": "account_777", "name": "x"})
    assert duplicate.status_code == 409
    make_grant(Account.objects.get(account_id="account_777"), "1500", currency="JPY")
    listed = body(api.get("/v2/billing/accounts"))["accounts"]
    assert listed[0]["balances"] == [{
        "currency": "JPY", "available": D("1500"), "reserved": D("0"), "pending": D("0"),
        "expiringWithin30Days": D("0"), "total": D("1500"),
    }]  # fmt: skip
    assert body(api.get("/v2/billing/accounts/account_777"))["balances"] == listed[0]["balances"]
    assert b'"available":1500,' in api.get("/v2/billing/accounts/account_777").content


def test_ledger_lists_entries_with_filters(api, account):
    grant = make_grant(account, "50.00")
    other = make_grant(account, "10.00")
    api.post_json(f"/v2/billing/credits/{grant.credit_id}/void", {"reason": "mistake"})
    entries = body(api.get("/v2/billing/credits/ledger", {"creditId": grant.credit_id}))["entries"]
    assert [(e["kind"], e["amount"], e["balanceAfter"]) for e in entries] == [
        ("void", D("-50.00"), D("0.00")),
        ("grant", D("50.00"), D("50.00")),
    ]
    assert entries[0]["reason"] == "mistake" and entries[0]["accountId"] == "account_123"
    grants = body(api.get("/v2/billing/credits/ledger", {"kind": "grant"}))["entries"]
    assert {e["creditId"] for e in grants} == {grant.credit_id, other.credit_id}
    today = timezone.now().date()
    assert len(body(api.get("/v2/billing/credits/ledger", {
        "accountId": "account_123", "startDate": str(today), "endDate": str(today)
    }))["entries"]) == 3  # fmt: skip
    assert body(api.get("/v2/billing/credits/ledger", {
        "endDate": str(today - timedelta(days=1))}))["entries"] == []  # fmt: skip
    assert api.get("/v2/billing/credits/ledger", {"kind": "gift"}).status_code == 400


def test_balance_now_and_as_of_a_past_instant(api, account):
    now = timezone.now()
    make_grant(account, "100.00", now=now - timedelta(days=10))
    grant = make_grant(account, "40.00", now=now - timedelta(days=2))
    api.post_json(f"/v2/billing/credits/{grant.credit_id}/void", {"reason": "x"})
    current = body(api.get("/v2/billing/credits/balance", {"accountId": "account_123"}))
    assert current["balances"] == [{
        "currency": "USD", "balance": D("100.00"), "available": D("100.00"),
        "reserved": D("0.00"), "pending": D("0.00"), "expiringWithin30Days": D("0.00"),
    }]  # fmt: skip
    as_of = (now - timedelta(days=1)).isoformat()
    past = body(api.get("/v2/billing/credits/balance", {"asOf": as_of}))
    assert past["balances"] == [{"currency": "USD", "balance": D("140.00")}]
    before = body(api.get("/v2/billing/credits/balance",
                          {"asOf": str((now - timedelta(days=20)).date())}))  # fmt: skip
    assert before["balances"] == []
    assert api.get("/v2/billing/credits/balance", {"asOf": "yesterday"}).status_code == 400


def test_analytics_are_the_seeds_report_computed_in_the_database(api, account):
    used = make_grant(account, "100.00", issued_by="support_team")
    make_grant(account, "300.00", issued_by="marketing_system")
    inv = make_invoice(account, ("clusters", "25.00"))
    api.post_json(f"/v2/billing/invoices/{inv.invoice_id}/finalize")
    data = body(api.get("/v2/billing/credits/analytics", {"dateRange": "last_month"}))
    usd = data["currencies"]["USD"]
    assert usd["totals"] == {"issued": D("400.00"), "used": D("25.00"),
                             "remaining": D("375.00"), "expiredUnused": D("0.00")}  # fmt: skip
    assert usd["utilizationRate"] == D("6.2")  # 6.25 rounded half-even, as the seed prints it
    assert usd["lifecycle"]["activated"] == 1 and usd["lifecycle"]["partiallyUsed"] == 1
    sources = {s["source"]: s for s in usd["sourceEffectiveness"]}
    assert sources["support_team"]["averageUsageRate"] == D("25.0")
    assert sources["marketing_system"]["averageUsageRate"] == D("0.0")
    month = used.issued_at.strftime("%Y-%m")
    assert usd["monthlyTrends"] == [{"month": month, "issued": 2, "amount": D("400.00"),
                                     "used": D("25.00"), "expired": D("0.00"),
                                     "usageRate": D("6.2")}]  # fmt: skip
    assert api.get("/v2/billing/credits/analytics", {"dateRange": "soon"}).status_code == 400


def test_ledger_entry_rows_are_never_written_by_reads(api, account):
    make_grant(account, "5.00")
    before = LedgerEntry.objects.count()
    for path in ("credits", "credits/ledger", "credits/balance", "credits/analytics",
                 "credits/expiring", "accounts", "invoices"):  # fmt: skip
        assert api.get(f"/v2/billing/{path}").status_code == 200
    assert LedgerEntry.objects.count() == before
