"""The README's run command loads this demo data: it must exercise every status and verify."""

import pytest
from django.core.management import call_command

from credits.models import CreditGrant, GrantStatus, GrantType, LedgerEntry
from credits.selectors import ledger_problems
from invoices.models import Invoice, InvoiceStatus

pytestmark = pytest.mark.django_db


def test_demo_data_covers_every_status_and_verifies(capsys):
    call_command("seed_demo")
    out = capsys.readouterr().out
    assert "Admin login: admin / " in out
    assert set(CreditGrant.objects.values_list("status", flat=True)) == set(GrantStatus.values)
    assert set(CreditGrant.objects.values_list("type", flat=True)) == set(GrantType.values)
    assert set(Invoice.objects.values_list("status", flat=True)) == set(InvoiceStatus.values)
    assert set(LedgerEntry.objects.values_list("kind", flat=True)) == {
        "grant",
        "deduction",
        "reversal",
        "void",
        "expiration",
        "transfer_out",
        "transfer_in",
    }
    assert ledger_problems() == []
    # A second run keeps the data and only prints a fresh login.
    grants = CreditGrant.objects.count()
    call_command("seed_demo")
    assert "Demo data already loaded." in capsys.readouterr().out
    assert CreditGrant.objects.count() == grants
