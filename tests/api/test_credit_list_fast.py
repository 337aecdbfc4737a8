"""The credits list's PostgreSQL path (billing_api.credit_list) gives what the portable path
gives: each credit's JSON as PostgreSQL writes it equals presenters.credit_json's, and the
summary read from the grant summary rows equals the one added up over the grants, for every
filter and at instants that move credits between buckets. The summary rows themselves are kept
by triggers (credits.models.GrantSummary); their compaction and their check by verify_ledger
are tested here too."""

import io
import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from billing_api import credit_list
from billing_api.presenters import credit_json
from billing_api.renderers import dumps
from billing_api.selectors import credit_rows, credits_summary, usage_history
from credits.models import CreditGrant, GrantSummary
from credits.services import grant_void, grants_expire
from credits.summaries import grant_summaries_compact, summary_problems
from invoices.services import invoice_finalize, invoice_void
from tests.factories import TEST_ACTOR, AccountFactory, make_grant, make_invoice

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def exact(text: str):
    """JSON with every number kept as its text (325.50 stays 325.50, 1200 stays 1200)."""
    return json.loads(text, parse_float=str, parse_int=str)


@pytest.fixture
def varied(account):
    """Credits in every status, two currencies, restricted or not, used, reversed, with
    metadata, unicode and characters JSON must escape."""
    jpy = AccountFactory(partner=account.partner, account_id="account_jpy", currency="JPY")
    g = {}
    g["plain"] = make_grant(account, "325.50", expiration_days=20, now=NOW)
    g["odd"] = make_grant(
        account,
        "80.00",
        type="refund",
        description='Ré "quoted" \\ back\nline\t€ 💳',
        reason="support <ticket> & 'x'",
        reference_id="REF-1",
        issued_by="ops@example.com",
        applicable_services=["clusters", "ai-services"],
        maximum_discount="40.00",
        minimum_spend="10.00",
        usage_limit="monthly",
        account_restrictions=["acct_a"],
        campaign_id="camp-9",
        tags=["vip", "q1"],
        notes="note ✓",
        transferable=True,
        extra_metadata={"source": "crm", "campaignId": "shadowed", "n": 3, "nested": {"a": [1]}},
        expiration_days=200,
        now=NOW,
    )
    g["forever"] = make_grant(account, "50.00", type="bonus", now=NOW)
    g["pending"] = make_grant(
        account, "70.00", effective_at=NOW + timedelta(days=3), expiration_days=60, now=NOW
    )
    g["voided"] = make_grant(account, "40.00", type="support", expiration_days=100, now=NOW)
    grant_void(grant=g["voided"], actor=TEST_ACTOR, reason="test", now=NOW)
    g["soon"] = make_grant(
        account,
        "15.00",
        type="partner",
        expiration_days=2,
        applicable_services=["storage"],
        now=NOW,
    )
    g["yen"] = make_grant(jpy, "1200", currency="JPY", expiration_days=45, now=NOW)
    # Used: two invoices draw on the soonest-expiring credits; one is voided (a reversal).
    for amount in ("30.00", "12.34"):
        inv = make_invoice(account, ("clusters", amount), now=NOW)
        invoice_finalize(invoice=inv, actor=TEST_ACTOR, now=NOW + timedelta(minutes=1))
    invoice_void(invoice=inv, actor=TEST_ACTOR, reason="mistake", now=NOW + timedelta(minutes=2))
    inv = make_invoice(jpy, ("clusters", "500"), now=NOW)
    invoice_finalize(invoice=inv, actor=TEST_ACTOR, now=NOW + timedelta(minutes=3))
    grants_expire(actor=TEST_ACTOR, now=NOW + timedelta(days=3))  # "soon" expires
    return g


def query(account, **filters):
    return credit_list.CreditQuery(partner_id=account.partner_id, **filters)


def test_page_json_is_presenters_credit_json_credit_for_credit(varied, account):
    q = query(account)
    rows = credit_list.credit_page(q, limit=100, after=None, with_usage=True)
    assert len(rows) == CreditGrant.objects.count() == 7
    reference = {r["id"]: r for r in credit_rows(q.queryset())}
    usage = usage_history(list(reference))
    assert sum(len(u) for u in usage.values()) >= 2  # a live deduction in USD and one in JPY
    for pk, issued, text in rows:
        expected = credit_json(reference[pk], usage.get(pk), with_usage=True)
        assert exact(text) == exact(dumps(expected))
        assert issued == reference[pk]["iso_issued_at"]
    plain = credit_list.credit_page(q, limit=100, after=None, with_usage=False)
    assert all("usage" not in exact(text) for _, _, text in plain)
    # Compact like renderers.dumps, amounts at the currency's precision.
    odd = next(t for pk, _, t in rows if pk == varied["odd"].pk)
    assert '"original":80.00,' in odd and ": " not in odd.split('"metadata"')[0]
    yen = next(t for pk, _, t in rows if pk == varied["yen"].pk)
    assert '"original":1200,' in yen and '"remaining":700,' in yen


def test_page_keyset_walks_every_credit_once_newest_first(varied, account):
    q = query(account)
    seen, after = [], None
    while True:
        rows = credit_list.credit_page(q, limit=2, after=after, with_usage=False)
        seen += [pk for pk, _, _ in rows]
        if len(rows) < 2:
            break
        pk, issued, _ = rows[-1]
        after = (datetime.fromisoformat(issued), pk)
    expected = list(q.queryset().order_by("-issued_at", "-pk").values_list("pk", flat=True))
    assert seen == expected


FILTERS = [
    {},
    {"statuses": ("active",)},
    {"statuses": ("active", "expired", "voided")},
    {"statuses": ()},
    {"types": ("refund", "promotional")},
    {"currency": "JPY"},
    {"currency": "USD", "types": ("bonus",), "statuses": ("active",)},
]


@pytest.mark.parametrize("filters", FILTERS)
@pytest.mark.parametrize("days", [0, 1, 19, 25, 44, 61, 150, 400])
def test_summary_from_summary_rows_equals_the_sum_over_the_grants(varied, account, filters, days):
    at = NOW + timedelta(days=days)
    for q in (query(account, account_id=account.account_id, **filters), query(account, **filters)):
        fast = credit_list.credits_summary(q, now=at)
        assert fast == credits_summary(q.queryset(), now=at)
    assert summary_problems() == []


def test_summary_figures_are_the_seeds(varied, account):
    mine = query(account, account_id=account.account_id)
    summary = credit_list.credits_summary(mine, now=NOW)["USD"]
    # 325.50 + 80.00 + 50.00 + 70.00 + 40.00 (voided: 0 left) + 15.00 (expired: 0 left), less
    # the 30.00 live deduction from "plain" (the 12.34 one was reversed).
    assert summary["totalCredits"] == Decimal("495.50")
    assert summary["totalUsed"] == Decimal("30.00")
    assert summary["count"] == 6
    assert type(summary["count"]) is int
    assert summary["byStatus"] == {
        "active": {"amount": Decimal("425.50"), "count": 3},
        "expired": {"amount": Decimal("0.00"), "count": 1},
        "pending": {"amount": Decimal("70.00"), "count": 1},
        "voided": {"amount": Decimal("0.00"), "count": 1},
    }
    # Within 30 days of NOW: "plain" (20 days; 295.50 after 30.00 drawn from it).
    assert summary["expiringWithin30Days"] == Decimal("295.50")
    # Never used, usable, no expiry within 90 days: "odd" (restricted), "forever".
    assert summary["_unused"] == {
        "bonus": {"any": Decimal("50.00"), "restricted": Decimal("0")},
        "refund": {"any": Decimal("0"), "restricted": Decimal("80.00")},
    }


def test_triggers_keep_the_summary_and_compaction_folds_it(varied, account):
    assert summary_problems() == []
    before = GrantSummary.objects.filter(compacted=False).count()
    assert before > 0  # every change appended its deltas
    result = grant_summaries_compact(accounts_per_batch=1)  # one account per batch
    assert result.accounts == 2 and result.rows_before > result.rows_after
    assert not GrantSummary.objects.filter(compacted=False).exists()
    keys = GrantSummary.objects.values_list(
        "account_id", "currency", "type", "status", "unused", "restricted"
    )
    assert len(keys) == len(set(keys))  # one row per key
    assert summary_problems() == []
    # A second run finds nothing to fold.
    assert grant_summaries_compact().accounts == 0


def test_verify_ledger_names_an_account_whose_summary_is_wrong(varied, account):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO credits_grantsummary (account_id, currency, type, status, unused,"
            " restricted, grants, remaining, used, compacted)"
            " VALUES (%s, 'USD', 'bonus', 'active', true, false, 0, 1.00, 0, false)",
            [account.pk],
        )
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 grant summary key"):
        call_command("verify_ledger", stdout=io.StringIO(), stderr=err)
    assert "summary of account_123 (USD bonus active never-used)" in err.getvalue()
    assert "remaining 51.00" in err.getvalue() and "50.00" in err.getvalue()


@pytest.mark.django_db(transaction=True)
def test_compaction_racing_grant_writes_keeps_every_figure(api):
    account = AccountFactory(partner=api.partner)
    grants = [make_grant(account, "10.00", expiration_days=30) for _ in range(30)]
    errors = []

    def write():
        try:
            for g in grants:
                grant_void(grant=g, actor=TEST_ACTOR, reason="race")
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    def compact():
        try:
            for _ in range(30):
                grant_summaries_compact()
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write), *(threading.Thread(target=compact) for _ in "ab")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    grant_summaries_compact()
    assert summary_problems() == []
    row = GrantSummary.objects.get(account=account)
    assert (row.status, row.grants, row.remaining, row.compacted) == (
        "voided",
        30,
        Decimal("0.00"),
        True,
    )
