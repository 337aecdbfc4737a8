"""The database itself refuses what must never happen: each named constraint and the ledger's
append-only trigger fire when the ORM is bypassed (QuerySet.update, raw SQL)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import IntegrityError, ProgrammingError, connection, transaction
from django.utils import timezone

from credits.models import CreditGrant, EntryKind, LedgerEntry
from credits.services import grant_void
from invoices.models import Invoice
from invoices.services import invoice_finalize, invoice_void
from tests.factories import TEST_ACTOR, AccountFactory, make_grant, make_invoice

pytestmark = pytest.mark.django_db


def violates(name: str):
    """The statement fails naming the constraint (PostgreSQL names it; SQLite says CHECK)."""
    return pytest.raises(IntegrityError, match=name if connection.vendor == "postgresql" else None)


@pytest.mark.parametrize(
    ("changes", "constraint"),
    [
        ({"remaining": Decimal("-0.01")}, "grant_remaining_non_negative"),
        ({"remaining": Decimal("100.01")}, "grant_remaining_within_original"),
        ({"original": Decimal("0")}, "grant_original_positive"),
        ({"used": Decimal("0.01")}, "grant_used_within_original"),
        ({"reserved": Decimal("100.01")}, "grant_reserved_within_remaining"),
        ({"status": "spent"}, "grant_status_valid"),
        ({"currency": "XXX"}, "grant_currency_valid"),
        ({"price": Decimal("-1")}, "grant_price_non_negative"),
    ],
)
def test_grant_constraints_refuse_update_around_the_orm(changes, constraint):
    grant = make_grant(amount="100.00")
    with transaction.atomic(), violates(constraint):
        CreditGrant.objects.filter(pk=grant.pk).update(**changes)


def test_expiry_must_follow_effective_date():
    grant = make_grant(amount="10.00", expiration_days=30)
    with transaction.atomic(), violates("grant_expires_after_effective"):
        CreditGrant.objects.filter(pk=grant.pk).update(expires_at=grant.effective_at)


def test_ledger_sign_must_match_kind():
    grant = make_grant(amount="10.00")
    with transaction.atomic(), violates("ledger_sign_matches_kind"):
        LedgerEntry.objects.create(
            account=grant.account,
            grant=grant,
            kind=EntryKind.VOID,
            amount=Decimal("5.00"),
            currency="USD",
            balance_after=Decimal("15.00"),
            actor="tests",
        )


def test_second_grant_entry_for_a_grant_is_refused():
    grant = make_grant(amount="10.00")
    with transaction.atomic(), violates("ledger_one_grant_entry"):
        LedgerEntry.objects.create(
            account=grant.account,
            grant=grant,
            kind=EntryKind.GRANT,
            amount=Decimal("10.00"),
            currency="USD",
            balance_after=Decimal("20.00"),
            actor="tests",
        )


def test_second_expiration_of_a_grant_is_refused():
    grant = make_grant(amount="10.00")
    entry = {
        "account": grant.account,
        "grant": grant,
        "kind": EntryKind.EXPIRATION,
        "amount": Decimal("-1.00"),
        "currency": "USD",
        "balance_after": Decimal("9.00"),
        "actor": "tests",
    }
    LedgerEntry.objects.create(**entry)
    with transaction.atomic(), violates("ledger_one_expiration_per_grant"):
        LedgerEntry.objects.create(**entry)


def test_second_reversal_of_a_deduction_is_refused():
    account = AccountFactory()
    make_grant(account, "50.00")
    invoice = make_invoice(account, ("clusters", "20.00"))
    invoice_finalize(invoice=invoice, actor=TEST_ACTOR)
    invoice_void(invoice=invoice, actor=TEST_ACTOR, reason="wrong customer")
    reversal = LedgerEntry.objects.get(kind=EntryKind.REVERSAL)
    with transaction.atomic(), violates("ledger_one_consequence_per_cause"):
        LedgerEntry.objects.create(
            account=account,
            grant=reversal.grant,
            kind=EntryKind.REVERSAL,
            amount=Decimal("20.00"),
            currency="USD",
            balance_after=Decimal("50.00"),
            related_entry=reversal.related_entry,
            actor="tests",
        )


def test_invoice_total_must_equal_subtotal_less_credits():
    invoice = make_invoice(AccountFactory(), ("clusters", "20.00"))
    with transaction.atomic(), violates("invoice_total_is_subtotal_less_credits"):
        Invoice.objects.filter(pk=invoice.pk).update(total=Decimal("19.99"))
    with transaction.atomic(), violates("invoice_credits_within_subtotal"):
        Invoice.objects.filter(pk=invoice.pk).update(
            credits_total=Decimal("20.01"), total=Decimal("-0.01")
        )


@pytest.mark.postgres
class TestLedgerIsAppendOnly:
    def test_orm_update_is_refused(self):
        grant = make_grant(amount="10.00")
        with transaction.atomic(), pytest.raises(ProgrammingError, match="ledger_append_only"):
            LedgerEntry.objects.filter(grant=grant).update(reason="edited")

    def test_save_of_an_existing_entry_is_refused(self):
        entry = make_grant(amount="10.00").ledger_entries.get()
        entry.amount = Decimal("1000.00")
        with transaction.atomic(), pytest.raises(ProgrammingError, match="ledger_append_only"):
            entry.save()

    def test_delete_is_refused(self):
        grant = make_grant(amount="10.00")
        with transaction.atomic(), pytest.raises(ProgrammingError, match="ledger_append_only"):
            LedgerEntry.objects.filter(grant=grant).delete()

    def test_raw_sql_update_and_delete_are_refused(self):
        make_grant(amount="10.00")
        for sql in (
            "UPDATE credits_ledgerentry SET amount = 0",
            "DELETE FROM credits_ledgerentry",
        ):
            with (
                pytest.raises(ProgrammingError, match="ledger_append_only"),
                transaction.atomic(),
                connection.cursor() as cursor,
            ):
                cursor.execute(sql)
        assert LedgerEntry.objects.get().amount == Decimal("10.00")

    def test_inserting_stays_allowed(self):
        grant = make_grant(amount="10.00")
        grant_void(grant=grant, actor=TEST_ACTOR, reason="duplicate")
        assert list(
            LedgerEntry.objects.filter(grant=grant).order_by("pk").values_list("kind", "amount")
        ) == [("grant", Decimal("10.00")), ("void", Decimal("-10.00"))]


class TestVerifyLedger:
    def test_clean_database_passes(self, capsys):
        account = AccountFactory()
        make_grant(account, "30.00", expiration_days=10)
        call_command("verify_ledger")
        assert "Ledger OK: 1 grants, 1 entries" in capsys.readouterr().out

    def test_names_every_broken_grant_and_exits_non_zero(self, capsys):
        account = AccountFactory()
        good = make_grant(account, "30.00")
        bad_sum = make_grant(account, "40.00")
        bad_used = make_grant(account, "50.00")
        CreditGrant.objects.filter(pk=bad_sum.pk).update(remaining=Decimal("39.00"))
        CreditGrant.objects.filter(pk=bad_used.pk).update(
            remaining=Decimal("49.50"), used=Decimal("0.50")
        )
        with pytest.raises(SystemExit) as exit_info:
            _run_cli("verify_ledger")
        assert exit_info.value.code != 0
        err = capsys.readouterr().err
        assert f"{bad_sum.credit_id}: remaining 39.00 != ledger sum 40.00" in err
        [bad_used_line] = [line for line in err.splitlines() if bad_used.credit_id in line]
        assert "remaining 49.50 != ledger sum 50.00" in bad_used_line
        assert "used 0.50 != deductions less reversals 0.00" in bad_used_line
        assert good.credit_id not in err
        assert "2 of 3 grants break the ledger invariant" in err


def _run_cli(*argv):
    """Run a command as `manage.py` does, so CommandError becomes a non-zero exit."""
    from django.core.management import ManagementUtility

    ManagementUtility(["manage.py", *argv]).execute()


def test_grant_expired_in_the_past_cannot_be_issued():
    from credits.exceptions import ValidationFailed

    with pytest.raises(ValidationFailed, match="expiresAt is in the past"):
        make_grant(
            amount="10.00",
            effective_at=timezone.now() - timedelta(days=2),
            expires_at=timezone.now() - timedelta(seconds=1),
        )
