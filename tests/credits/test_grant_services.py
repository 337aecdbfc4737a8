"""Issue, approve, activate, void, transfer, expire: each writes exactly its ledger entries."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.utils import timezone

from credits.actors import Actor
from credits.exceptions import BusinessRuleViolation, Conflict, PermissionDenied, ValidationFailed
from credits.models import CreditGrant, GrantEvent, LedgerEntry
from credits.selectors import account_balances, balance_as_of, ledger_problems
from credits.services import (
    grant_activate,
    grant_approve,
    grant_transfer,
    grant_void,
    grants_activate_due,
    grants_expire,
)
from invoices.models import Invoice
from invoices.services import invoice_finalize
from tests.factories import TEST_ACTOR, AccountFactory, make_grant, make_invoice

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def ledger(grant) -> list[tuple[str, Decimal, Decimal]]:
    return list(
        LedgerEntry.objects.filter(grant=grant)
        .order_by("pk")
        .values_list("kind", "amount", "balance_after")
    )


class TestIssue:
    def test_issue_writes_grant_entry_and_is_active(self):
        grant = make_grant(amount="500.00", expiration_days=90, now=T0)
        assert grant.status == "active"
        assert grant.activated_at == T0
        assert grant.expires_at == T0 + timedelta(days=90)
        assert (grant.original, grant.remaining, grant.used) == (
            Decimal("500.00"),
            Decimal("500.00"),
            Decimal("0"),
        )
        assert ledger(grant) == [("grant", Decimal("500.00"), Decimal("500.00"))]
        assert grant.credit_id.startswith("cred_") and len(grant.credit_id) == 29

    def test_future_effective_date_stays_pending_and_expiry_counts_from_it(self):
        start = T0 + timedelta(days=10)
        grant = make_grant(amount="60.00", effective_at=start, expiration_days=30, now=T0)
        assert grant.status == "pending"
        assert grant.expires_at == start + timedelta(days=30)
        assert grants_activate_due(actor=TEST_ACTOR, now=start - timedelta(seconds=1)) == 0
        assert grants_activate_due(actor=TEST_ACTOR, now=start) == 1
        grant.refresh_from_db()
        assert (grant.status, grant.activated_at) == ("active", start)
        assert grants_activate_due(actor=TEST_ACTOR, now=start) == 0  # idempotent

    def test_auto_activate_off_waits_for_a_person(self, staff_user):
        grant = make_grant(amount="10.00", auto_activate=False, now=T0)
        assert grants_activate_due(actor=TEST_ACTOR, now=T0 + timedelta(days=1)) == 0
        grant = grant_activate(grant=grant, actor=Actor.for_user(staff_user), now=T0)
        assert grant.status == "active"
        assert GrantEvent.objects.get(grant=grant).actor == "user:fiona"

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"amount": "0.001"}, "more precision than USD allows"),
            ({"amount": "-5"}, "greater than zero"),
            ({"amount": 1.5}, "must be a decimal number"),
            ({"amount": "abc"}, "must be a decimal number"),
            ({"type": "gift"}, "Unknown credit type"),
            ({"currency": "BTC"}, "Unknown currency"),
            ({"usage_limit": "weekly"}, "Unknown usageLimit"),
            ({"expiration_days": 0}, "between 1 and 3650"),
            ({"expiration_days": 10, "expires_at": T0 + timedelta(days=3)}, "not both"),
            ({"price": "-1"}, "price must be zero or more"),
        ],
    )
    def test_bad_input_is_refused_and_writes_nothing(self, kwargs, message):
        account = AccountFactory()
        kwargs = {"amount": "10.00", **kwargs}
        with pytest.raises(ValidationFailed, match=message):
            make_grant(account, now=T0, **kwargs)
        assert not CreditGrant.objects.exists()
        assert not LedgerEntry.objects.exists()

    def test_jpy_has_no_minor_unit(self):
        account = AccountFactory(currency="JPY")
        with pytest.raises(ValidationFailed, match=r"JPY allows \(no decimals\)"):
            make_grant(account, "1.5", currency="JPY")
        grant = make_grant(account, "1500", currency="JPY")
        assert grant.original == Decimal("1500")

    def test_purchased_credit_bills_its_price(self):
        account = AccountFactory()
        grant = make_grant(account, "100.00", type="purchased", price="80.00", now=T0)
        invoice = Invoice.objects.get(purchased_grant=grant)
        assert (invoice.status, invoice.subtotal, invoice.total) == (
            "pending",
            Decimal("80.00"),
            Decimal("80.00"),
        )
        assert grant.status == "active" and grant.price == Decimal("80.00")


class TestMakerChecker:
    @override_settings(CREDIT_APPROVAL_THRESHOLDS={"USD": Decimal("1000.00")})
    def test_above_threshold_waits_for_a_second_person(self, staff_user, other_staff_user):
        maker, checker = Actor.for_user(staff_user), Actor.for_user(other_staff_user)
        grant = make_grant(amount="1000.01", actor=maker, now=T0)
        assert (grant.status, grant.approval_required) == ("pending", True)
        assert grants_activate_due(actor=TEST_ACTOR, now=T0 + timedelta(days=1)) == 0
        with pytest.raises(PermissionDenied, match="issuer of a credit cannot approve"):
            grant_approve(grant=grant, actor=maker, now=T0)
        grant = grant_approve(grant=grant, actor=checker, now=T0 + timedelta(hours=1))
        assert (grant.status, grant.approved_by) == ("active", "user:oscar")
        with pytest.raises(Conflict, match="already approved"):
            grant_approve(grant=grant, actor=checker)

    @override_settings(CREDIT_APPROVAL_THRESHOLDS={"USD": Decimal("1000.00")})
    def test_at_threshold_is_usable_at_once(self):
        assert make_grant(amount="1000.00").status == "active"


class TestVoid:
    def test_void_keeps_used_part(self):
        account = AccountFactory()
        grant = make_grant(account, "100.00", now=T0)
        invoice_finalize(
            invoice=make_invoice(account, ("clusters", "25.00"), now=T0), actor=TEST_ACTOR, now=T0
        )
        grant = grant_void(grant=grant, actor=TEST_ACTOR, reason="duplicate grant")
        assert (grant.status, grant.remaining, grant.used) == (
            "voided",
            Decimal("0"),
            Decimal("25.00"),
        )
        assert ledger(grant) == [
            ("grant", Decimal("100.00"), Decimal("100.00")),
            ("deduction", Decimal("-25.00"), Decimal("75.00")),
            ("void", Decimal("-75.00"), Decimal("0.00")),
        ]

    def test_void_needs_a_reason(self):
        with pytest.raises(ValidationFailed, match="reason is required"):
            grant_void(grant=make_grant(), actor=TEST_ACTOR, reason="  ")

    def test_void_twice_is_a_conflict(self):
        grant = grant_void(grant=make_grant(), actor=TEST_ACTOR, reason="x")
        with pytest.raises(Conflict, match="voided"):
            grant_void(grant=grant, actor=TEST_ACTOR, reason="again")


class TestTransfer:
    def test_transfer_moves_remaining_to_a_new_grant(self):
        source_account, target_account = AccountFactory(), AccountFactory()
        grant = make_grant(
            source_account,
            "100.00",
            transferable=True,
            expiration_days=30,
            applicable_services=["storage"],
            now=T0,
        )
        source, target = grant_transfer(
            grant=grant,
            to_account=target_account,
            amount="40.00",
            actor=TEST_ACTOR,
            now=T0,
        )
        assert source.remaining == Decimal("60.00")
        assert (target.account, target.original, target.remaining) == (
            target_account,
            Decimal("40.00"),
            Decimal("40.00"),
        )
        assert target.expires_at == grant.expires_at
        assert target.applicable_services == ["storage"]
        assert target.reference_id == grant.credit_id
        assert ledger(source)[-1] == ("transfer_out", Decimal("-40.00"), Decimal("60.00"))
        assert ledger(target) == [("transfer_in", Decimal("40.00"), Decimal("40.00"))]
        assert ledger_problems() == []

    def test_not_transferable_or_restricted_account_is_refused(self):
        a, b = AccountFactory(), AccountFactory(account_id="account_b")
        with pytest.raises(BusinessRuleViolation, match="not transferable"):
            grant_transfer(grant=make_grant(a), to_account=b, actor=TEST_ACTOR)
        restricted = make_grant(a, transferable=True, account_restrictions=["account_c"])
        with pytest.raises(BusinessRuleViolation, match="only be transferred to: account_c"):
            grant_transfer(grant=restricted, to_account=b, actor=TEST_ACTOR)
        with pytest.raises(BusinessRuleViolation, match=r"Only \$100.00"):
            grant_transfer(
                grant=make_grant(a, transferable=True),
                to_account=b,
                amount="100.01",
                actor=TEST_ACTOR,
            )


class TestExpire:
    def test_expire_writes_one_expiration_of_the_remainder(self):
        account = AccountFactory()
        grant = make_grant(account, "100.00", expiration_days=30, now=T0)
        invoice_finalize(
            invoice=make_invoice(account, ("clusters", "30.00"), now=T0), actor=TEST_ACTOR, now=T0
        )
        assert grants_expire(actor=TEST_ACTOR, now=grant.expires_at - timedelta(seconds=1)) == 0
        assert grants_expire(actor=TEST_ACTOR, now=grant.expires_at) == 1
        assert grants_expire(actor=TEST_ACTOR, now=grant.expires_at + timedelta(days=1)) == 0
        grant.refresh_from_db()
        assert (grant.status, grant.remaining, grant.used) == (
            "expired",
            Decimal("0.00"),
            Decimal("30.00"),
        )
        assert ledger(grant)[-1] == ("expiration", Decimal("-70.00"), Decimal("0.00"))
        assert ledger_problems() == []

    def test_expire_in_small_batches_covers_everything(self):
        account = AccountFactory()
        for _ in range(7):
            make_grant(account, "1.00", expiration_days=1, now=T0)
        assert grants_expire(actor=TEST_ACTOR, now=T0 + timedelta(days=2), batch_size=3) == 7
        assert LedgerEntry.objects.filter(kind="expiration").count() == 7

    def test_never_drawn_at_its_expiry_instant_even_before_the_job(self):
        account = AccountFactory()
        grant = make_grant(account, "50.00", expiration_days=1, now=T0)
        invoice = invoice_finalize(
            invoice=make_invoice(account, ("clusters", "20.00"), now=T0),
            actor=TEST_ACTOR,
            now=grant.expires_at,
        )
        assert invoice.credits_total == Decimal("0")
        assert invoice.total == Decimal("20.00")


class TestBalances:
    def test_balance_as_of_any_past_instant(self):
        account = AccountFactory()
        grant = make_grant(account, "100.00", now=T0)
        invoice_finalize(
            invoice=make_invoice(account, ("clusters", "30.00"), now=T0),
            actor=TEST_ACTOR,
            now=T0 + timedelta(days=1),
        )
        grant_void(grant=grant, actor=TEST_ACTOR, reason="closing", now=T0 + timedelta(days=2))
        assert balance_as_of(account, T0 - timedelta(seconds=1)) == {}
        assert balance_as_of(account, T0) == {"USD": Decimal("100.00")}
        assert balance_as_of(account, T0 + timedelta(days=1)) == {"USD": Decimal("70.00")}
        assert balance_as_of(account, T0 + timedelta(days=2)) == {"USD": Decimal("0.00")}

    def test_current_balances_split_available_reserved_pending_expiring(self):
        account = AccountFactory()
        now = timezone.now()
        make_grant(account, "100.00", expiration_days=10, now=now)
        make_grant(account, "50.00", now=now)
        make_grant(account, "20.00", effective_at=now + timedelta(days=3), now=now)
        [usd] = account_balances(account, now=now)
        assert (usd.available, usd.reserved, usd.pending, usd.expiring_30d) == (
            Decimal("150.00"),
            Decimal("0.00"),
            Decimal("20.00"),
            Decimal("100.00"),
        )
