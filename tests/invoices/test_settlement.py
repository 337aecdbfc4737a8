"""Invoices: finalization draws credits in Octane order, holds, apply, void with reversals,
numbering, referral activation and bulk application."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from credits.exceptions import BusinessRuleViolation, Conflict, ValidationFailed
from credits.locking import lock_grants_for_settlement
from credits.models import CreditGrant, LedgerEntry
from credits.selectors import ledger_problems
from credits.services import grant_void, grants_expire
from invoices.models import Invoice, InvoiceLine
from invoices.selectors import usable_grants_q
from invoices.services import (
    credits_bulk_apply,
    invoice_apply_credit,
    invoice_finalize,
    invoice_hold_credits,
    invoice_optimize,
    invoice_pay,
    invoice_void,
)
from tests.factories import TEST_ACTOR, AccountFactory, make_grant, make_invoice

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
D = Decimal


def finalize(invoice, now=T0):
    return invoice_finalize(invoice=invoice, actor=TEST_ACTOR, now=now)


def credit_lines(invoice) -> list[tuple[str, Decimal]]:
    return [
        (line.grant.credit_id, line.amount)
        for line in invoice.lines.filter(kind="credit").select_related("grant").order_by("position")
    ]


def test_octane_8000_invoice_with_5000_of_credits_leaves_3000():
    account = AccountFactory()
    grant = make_grant(account, "5000.00", now=T0)
    invoice = finalize(
        make_invoice(account, ("clusters", "6500.00"), ("storage", "1500.00"), now=T0)
    )
    assert (invoice.subtotal, invoice.credits_total, invoice.total) == (
        D("8000.00"),
        D("5000.00"),
        D("3000.00"),
    )
    assert invoice.status == "pending"
    assert credit_lines(invoice) == [(grant.credit_id, D("-5000.00"))]
    assert ledger_problems() == []


def test_octane_priority_table_draws_grant_3_then_1_then_2():
    account = AccountFactory()
    g1 = make_grant(
        account,
        "100.00",
        effective_at=datetime(2022, 1, 1, tzinfo=UTC),
        expires_at=datetime(2023, 1, 1, tzinfo=UTC),
        now=datetime(2022, 1, 1, tzinfo=UTC),
    )
    g2 = make_grant(
        account,
        "75.00",
        effective_at=datetime(2022, 1, 2, tzinfo=UTC),
        expires_at=datetime(2023, 1, 1, tzinfo=UTC),
        now=datetime(2022, 1, 1, tzinfo=UTC),
    )
    g3 = make_grant(
        account,
        "50.00",
        effective_at=datetime(2022, 1, 5, tzinfo=UTC),
        expires_at=datetime(2022, 2, 5, tzinfo=UTC),
        now=datetime(2022, 1, 1, tzinfo=UTC),
    )
    at = datetime(2022, 1, 10, tzinfo=UTC)
    from credits.services import grants_activate_due

    grants_activate_due(actor=TEST_ACTOR, now=at)
    invoice = finalize(make_invoice(account, ("clusters", "200.00"), now=at), now=at)
    assert credit_lines(invoice) == [
        (g3.credit_id, D("-50.00")),
        (g1.credit_id, D("-100.00")),
        (g2.credit_id, D("-50.00")),
    ]
    assert invoice.total == D("0.00") and invoice.status == "paid"


def test_restrictions_service_minimum_spend_and_maximum_discount():
    account = AccountFactory()
    storage_only = make_grant(account, "100.00", applicable_services=["storage"], now=T0)
    needs_spend = make_grant(account, "100.00", minimum_spend="500.00", now=T0)
    capped = make_grant(account, "100.00", maximum_discount="15.00", now=T0)
    invoice = finalize(make_invoice(account, ("clusters", "80.00"), ("storage", "20.00"), now=T0))
    # storage_only pays the storage line; needs_spend does not qualify (100 < 500);
    # capped takes at most 15 off this invoice.
    assert dict(credit_lines(invoice)) == {
        storage_only.credit_id: D("-20.00"),
        capped.credit_id: D("-15.00"),
    }
    assert invoice.total == D("65.00")
    needs_spend.refresh_from_db()
    assert needs_spend.remaining == D("100.00")


def test_credit_never_pays_another_currency():
    account = AccountFactory()
    make_grant(account, "100.00", currency="EUR", now=T0)
    invoice = finalize(make_invoice(account, ("clusters", "10.00"), now=T0))
    assert invoice.credits_total == D("0")


def test_one_time_credit_forfeits_its_remainder_after_one_invoice():
    account = AccountFactory()
    grant = make_grant(account, "200.00", type="refund", usage_limit="one_time", now=T0)
    finalize(make_invoice(account, ("clusters", "50.00"), now=T0))
    grant.refresh_from_db()
    assert (grant.status, grant.remaining, grant.used) == ("applied", D("0.00"), D("50.00"))
    assert list(
        LedgerEntry.objects.filter(grant=grant).order_by("pk").values_list("kind", "amount")
    ) == [("grant", D("200.00")), ("deduction", D("-50.00")), ("expiration", D("-150.00"))]
    assert ledger_problems() == []


def test_monthly_credit_draws_once_per_calendar_month():
    account = AccountFactory()
    grant = make_grant(account, "300.00", usage_limit="monthly", now=T0)
    first = finalize(make_invoice(account, ("clusters", "40.00"), now=T0))
    second = finalize(
        make_invoice(account, ("clusters", "40.00"), now=T0), now=T0 + timedelta(days=1)
    )
    next_month = T0 + timedelta(days=31)
    third = finalize(make_invoice(account, ("clusters", "40.00"), now=next_month), now=next_month)
    assert [first.credits_total, second.credits_total, third.credits_total] == [
        D("40.00"),
        D("0"),
        D("40.00"),
    ]
    grant.refresh_from_db()
    assert grant.remaining == D("220.00")


def test_account_without_auto_apply_keeps_its_credits():
    account = AccountFactory(auto_apply_credits=False)
    make_grant(account, "100.00", now=T0)
    invoice = finalize(make_invoice(account, ("clusters", "10.00"), now=T0))
    assert (invoice.credits_total, invoice.total) == (D("0"), D("10.00"))


class TestHolds:
    def test_held_credit_is_not_available_to_other_invoices(self):
        account = AccountFactory()
        grant = make_grant(account, "100.00", now=T0)
        draft = make_invoice(account, ("clusters", "100.00"), now=T0)
        [hold] = invoice_hold_credits(invoice=draft, actor=TEST_ACTOR, now=T0)
        grant.refresh_from_db()
        assert (hold.amount, grant.status, grant.reserved) == (D("100.00"), "reserved", D("100.00"))
        other = finalize(make_invoice(account, ("clusters", "30.00"), now=T0))
        assert other.credits_total == D("0")
        draft = finalize(draft)
        assert draft.credits_total == D("100.00")
        grant.refresh_from_db()
        assert (grant.status, grant.reserved, grant.remaining) == ("applied", D("0"), D("0"))
        hold.refresh_from_db()
        assert hold.status == "consumed"

    def test_discarding_a_draft_releases_its_hold(self):
        account = AccountFactory()
        grant = make_grant(account, "100.00", now=T0)
        draft = make_invoice(account, ("clusters", "60.00"), now=T0)
        invoice_hold_credits(invoice=draft, actor=TEST_ACTOR, now=T0)
        invoice_void(invoice=draft, actor=TEST_ACTOR, reason="draft discarded", now=T0)
        grant.refresh_from_db()
        assert (grant.status, grant.reserved, grant.remaining) == ("active", D("0"), D("100.00"))


class TestApply:
    def test_apply_exact_amount_to_pending_invoice(self):
        account = AccountFactory(auto_apply_credits=False)
        grant = make_grant(account, "100.00", now=T0)
        invoice = finalize(make_invoice(account, ("clusters", "80.00"), now=T0))
        invoice, grant, applied = invoice_apply_credit(
            grant=grant, invoice=invoice, amount="30.00", actor=TEST_ACTOR, now=T0
        )
        assert (applied, invoice.total, grant.remaining) == (D("30.00"), D("50.00"), D("70.00"))
        # A second application of the same credit merges into its one credit line.
        invoice, grant, _ = invoice_apply_credit(
            grant=grant, invoice=invoice, amount="50.00", actor=TEST_ACTOR, now=T0
        )
        assert credit_lines(invoice) == [(grant.credit_id, D("-80.00"))]
        assert (invoice.status, invoice.total) == ("paid", D("0.00"))

    def test_apply_more_than_allowed_writes_nothing(self):
        account = AccountFactory(auto_apply_credits=False)
        grant = make_grant(account, "100.00", applicable_services=["storage"], now=T0)
        invoice = finalize(
            make_invoice(account, ("clusters", "80.00"), ("storage", "10.00"), now=T0)
        )
        entries = LedgerEntry.objects.count()
        with pytest.raises(BusinessRuleViolation, match=r"at most \$10.00 can be applied"):
            invoice_apply_credit(grant=grant, invoice=invoice, amount="20.00", actor=TEST_ACTOR)
        assert LedgerEntry.objects.count() == entries
        with pytest.raises(ValidationFailed, match="more precision"):
            invoice_apply_credit(grant=grant, invoice=invoice, amount="1.001", actor=TEST_ACTOR)

    def test_apply_to_another_accounts_invoice_is_refused(self):
        grant = make_grant(AccountFactory(), "10.00")
        invoice = make_invoice(AccountFactory(), ("clusters", "10.00"))
        with pytest.raises(BusinessRuleViolation, match="another account"):
            invoice_apply_credit(grant=grant, invoice=invoice, amount="5.00", actor=TEST_ACTOR)


class TestVoidInvoice:
    def test_void_reverses_each_deduction(self):
        account = AccountFactory()
        grant = make_grant(account, "100.00", now=T0)
        invoice = finalize(make_invoice(account, ("clusters", "60.00"), now=T0))
        invoice = invoice_void(invoice=invoice, actor=TEST_ACTOR, reason="duplicate", now=T0)
        grant.refresh_from_db()
        assert (invoice.status, grant.status, grant.remaining, grant.used) == (
            "void",
            "active",
            D("100.00"),
            D("0.00"),
        )
        assert ledger_problems() == []

    def test_credit_past_its_expiry_expires_again_at_once(self):
        account = AccountFactory()
        grant = make_grant(account, "100.00", expiration_days=10, now=T0)
        invoice = finalize(make_invoice(account, ("clusters", "60.00"), now=T0))
        later = T0 + timedelta(days=11)
        grants_expire(actor=TEST_ACTOR, now=later)
        invoice_void(invoice=invoice, actor=TEST_ACTOR, reason="billing error", now=later)
        grant.refresh_from_db()
        assert (grant.status, grant.remaining, grant.used) == ("expired", D("0.00"), D("0.00"))
        assert list(
            LedgerEntry.objects.filter(grant=grant).order_by("pk").values_list("kind", "amount")
        ) == [
            ("grant", D("100.00")),
            ("deduction", D("-60.00")),
            ("expiration", D("-40.00")),
            ("reversal", D("60.00")),
            ("expiration", D("-60.00")),
        ]
        assert ledger_problems() == []

    def test_reversal_onto_a_voided_credit_is_voided_again(self):
        account = AccountFactory()
        grant = make_grant(account, "100.00", now=T0)
        invoice = finalize(make_invoice(account, ("clusters", "60.00"), now=T0))
        grant_void(grant=grant, actor=TEST_ACTOR, reason="fraud", now=T0)
        invoice_void(invoice=invoice, actor=TEST_ACTOR, reason="fraud", now=T0)
        grant.refresh_from_db()
        assert (grant.status, grant.remaining) == ("voided", D("0.00"))
        assert ledger_problems() == []

    def test_paid_invoice_cannot_be_voided(self):
        account = AccountFactory()
        invoice = finalize(make_invoice(account, ("clusters", "60.00"), now=T0))
        invoice_pay(invoice=invoice, actor=TEST_ACTOR)
        with pytest.raises(Conflict, match="it is paid"):
            invoice_void(invoice=invoice, actor=TEST_ACTOR, reason="x")


def test_invoice_numbers_are_sequential_per_year():
    account = AccountFactory()
    numbers = [
        make_invoice(account, now=datetime(2025, 12, 31, tzinfo=UTC)).invoice_number,
        make_invoice(account, now=datetime(2026, 1, 1, tzinfo=UTC)).invoice_number,
        make_invoice(account, now=datetime(2026, 1, 2, tzinfo=UTC)).invoice_number,
    ]
    with pytest.raises(ValidationFailed):
        make_invoice(account, {"service": "x", "unit_price": "1.0000001"})
    numbers.append(make_invoice(account, now=datetime(2026, 2, 1, tzinfo=UTC)).invoice_number)
    assert numbers == ["2025-000001", "2026-000001", "2026-000002", "2026-000003"]


def test_line_amount_is_quantity_times_unit_price_rounded_half_even():
    invoice = make_invoice(
        AccountFactory(),
        {"service": "storage", "quantity": "1.5", "unit_price": "0.99"},
        {"service": "network", "quantity": "3", "unit_price": "0.125"},
    )
    assert list(invoice.lines.values_list("amount", flat=True)) == [D("1.48"), D("0.38")]
    assert invoice.subtotal == D("1.86")


def test_referral_activates_when_finalized_spend_reaches_minimum():
    account = AccountFactory()
    referral = make_grant(account, "100.00", type="referral", minimum_spend="50.00", now=T0)
    assert referral.status == "pending"
    finalize(make_invoice(account, ("clusters", "30.00"), now=T0))
    referral.refresh_from_db()
    assert referral.status == "pending"
    finalize(make_invoice(account, ("clusters", "25.00"), now=T0))
    referral.refresh_from_db()
    assert referral.status == "active"


class TestPlans:
    def _setup(self):
        account = AccountFactory()
        # The all-services credit expires first: Octane order lets it eat the storage line
        # that only the storage credit could pay.
        everything = make_grant(account, "50.00", expiration_days=5, now=T0)
        storage = make_grant(account, "50.00", applicable_services=["storage"], now=T0)
        account.auto_apply_credits = False
        account.save()
        # Storage comes first on the invoice, so the greedy all-services credit takes it.
        invoice = finalize(
            make_invoice(account, ("storage", "50.00"), ("clusters", "50.00"), now=T0)
        )
        return account, invoice, everything, storage

    def test_maximize_savings_beats_expiring_first_and_explains_itself(self):
        account, invoice, everything, storage = self._setup()
        greedy = credits_bulk_apply(
            accounts=[account],
            actor=TEST_ACTOR,
            strategy="minimize_expiration",
            dry_run=True,
            now=T0,
        )
        best = credits_bulk_apply(
            accounts=[account], actor=TEST_ACTOR, strategy="maximize_savings", dry_run=True, now=T0
        )
        assert greedy.total == D("50.00")
        assert best.total == D("100.00")
        assert LedgerEntry.objects.filter(kind="deduction").count() == 0  # dry run
        plan, _ = invoice_optimize(invoice=invoice, now=T0)
        assert plan.total == 10000
        assert {d.grant_key: d.code for d in plan.decisions} == {
            everything.credit_id: "applied",
            storage.credit_id: "applied",
        }

    def test_bulk_apply_writes_the_plan(self):
        account, invoice, _, _ = self._setup()
        result = credits_bulk_apply(
            accounts=[account], actor=TEST_ACTOR, strategy="maximize_savings", now=T0
        )
        invoice.refresh_from_db()
        assert (result.total, invoice.total, invoice.status) == (D("100.00"), D("0.00"), "paid")
        assert ledger_problems() == []
        assert CreditGrant.objects.filter(remaining=0).count() == 2
        assert InvoiceLine.objects.filter(kind="credit").count() == 2
        assert Invoice.objects.get(pk=invoice.pk).credits_total == D("100.00")


def test_settlement_locks_exactly_the_grants_usable_grants_q_selects():
    """credits.locking.lock_grants_for_settlement writes invoices.selectors.usable_grants_q's
    condition in SQL; the two must select the same grants (and the holds' grants besides)."""
    account, other = AccountFactory(), AccountFactory()
    eur = AccountFactory(currency="EUR")
    grants = [
        make_grant(account, "10.00"),  # usable
        make_grant(account, "20.00", type="refund"),  # usable
        make_grant(account, "30.00", effective_at=timezone.now() + timedelta(days=2)),  # pending
        make_grant(account, "15.00", currency="EUR"),  # other currency
        make_grant(other, "40.00"),  # other account
        make_grant(eur, "50.00"),
    ]
    voided = make_grant(account, "25.00")
    grant_void(grant=voided, actor=TEST_ACTOR, reason="test")
    draft = make_invoice(account, ("clusters", "1.00"))
    expected = set(CreditGrant.objects.filter(usable_grants_q(draft)).values_list("pk", flat=True))
    assert expected and voided.pk not in expected and grants[4].pk not in expected
    with transaction.atomic():
        assert set(lock_grants_for_settlement([], usable_for=draft)) == expected
        both = lock_grants_for_settlement([grants[4].pk, voided.pk], usable_for=draft)
        assert set(both) == expected | {grants[4].pk, voided.pk}
        assert set(lock_grants_for_settlement([grants[5].pk])) == {grants[5].pk}
