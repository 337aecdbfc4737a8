"""The jobs as management commands (SQLite and PostgreSQL): each does its work, prints
what it did, and a second run writes nothing. The Celery tasks call the same functions
(credits.jobs); tests/jobs/test_worker.py runs them in real workers."""

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from credits.models import EntryKind, GrantEvent, GrantStatus, GrantSummary, LedgerEntry
from credits.selectors import ledger_problems
from credits.services import grant_void
from credits.summaries import summary_problems
from invoices.models import InvoiceEvent, InvoiceStatus
from invoices.services import invoice_finalize
from notifications.models import ExpiryWarning
from tests.factories import TEST_ACTOR, AccountFactory, make_grant, make_invoice

pytestmark = pytest.mark.django_db


def run(command: str, *args) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def writes() -> tuple[int, ...]:
    """Row counts of everything a job may write."""
    return (
        LedgerEntry.objects.count(),
        GrantEvent.objects.count(),
        InvoiceEvent.objects.count(),
        ExpiryWarning.objects.count(),
        len(mail.outbox),
    )


def test_activate_credits_activates_credits_whose_effective_date_came():
    now = timezone.now()
    grant = make_grant(AccountFactory(), effective_at=now + timedelta(hours=1))
    referral = make_grant(AccountFactory(), type="referral", minimum_spend=Decimal("500.00"))
    assert grant.status == referral.status == GrantStatus.PENDING

    assert "0 credit(s) activated" in run("activate_credits")
    with time_machine.travel(now + timedelta(hours=2)):
        out = run("activate_credits")
        before = writes()
        again = run("activate_credits")

    assert "activate_credits: 1 credit(s) activated" in out
    grant.refresh_from_db()
    referral.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE
    assert referral.status == GrantStatus.PENDING  # no qualifying spend yet
    assert GrantEvent.objects.filter(grant=grant, kind="activated", actor="job:activate_credits")
    assert "0 credit(s) activated" in again and writes() == before


def test_expire_credits_expires_the_remainder_with_a_ledger_entry():
    now = timezone.now()
    grant = make_grant(AccountFactory(), "40.00", expires_at=now + timedelta(hours=1))
    keeps = make_grant(AccountFactory(), "5.00", expires_at=now + timedelta(days=3))

    with time_machine.travel(now + timedelta(hours=2)):
        out = run("expire_credits", "--batch-size", "1")
        before = writes()
        again = run("expire_credits")

    assert "expire_credits: 1 credit(s) expired" in out
    grant.refresh_from_db()
    assert (grant.status, grant.remaining) == (GrantStatus.EXPIRED, Decimal("0.00"))
    entry = LedgerEntry.objects.get(grant=grant, kind=EntryKind.EXPIRATION)
    assert (entry.amount, entry.actor) == (Decimal("-40.00"), "job:expire_credits")
    keeps.refresh_from_db()
    assert keeps.status == GrantStatus.ACTIVE
    assert "0 credit(s) expired" in again and writes() == before
    assert ledger_problems() == []


def test_send_expiry_warnings_sends_once():
    make_grant(AccountFactory(), "12.00", expires_at=timezone.now() + timedelta(days=6))

    out = run("send_expiry_warnings")
    before = writes()
    again = run("send_expiry_warnings")

    assert "1 warning(s) in 1 notice(s); 1 delivered (1 email, 0 webhook)" in out
    assert len(mail.outbox) == 1
    assert "0 warning(s) in 0 notice(s); 0 delivered" in again and writes() == before


def test_mark_overdue_invoices_marks_pending_invoices_past_due():
    today = timezone.localdate()
    account = AccountFactory(auto_apply_credits=False)
    late = make_invoice(
        account, issue_date=today - timedelta(days=40), due_date=today - timedelta(days=10)
    )
    on_time = make_invoice(account, due_date=today + timedelta(days=10))
    for invoice in (late, on_time):
        invoice_finalize(invoice=invoice, actor=TEST_ACTOR)

    out = run("mark_overdue_invoices")
    before = writes()
    again = run("mark_overdue_invoices")

    assert "mark_overdue_invoices: 1 invoice(s) marked overdue" in out
    late.refresh_from_db()
    on_time.refresh_from_db()
    assert (late.status, on_time.status) == (InvoiceStatus.OVERDUE, InvoiceStatus.PENDING)
    assert InvoiceEvent.objects.filter(invoice=late, kind="overdue").count() == 1
    assert "0 invoice(s) marked overdue" in again and writes() == before


def test_auto_apply_expiring_credits_applies_credit_expiring_within_7_days_for_opted_in():
    # given an opted-in account with a $100 pending invoice, $30 expiring in 3 days and $50
    # expiring in 20 days; and an account that did not opt in
    now = timezone.now()
    opted = AccountFactory(auto_apply_credits=False, auto_apply_expiring_credits=True)
    other = AccountFactory(auto_apply_credits=False, auto_apply_expiring_credits=False)
    soon = make_grant(opted, "30.00", expires_at=now + timedelta(days=3))
    later = make_grant(opted, "50.00", expires_at=now + timedelta(days=20))
    untouched = make_grant(other, "30.00", expires_at=now + timedelta(days=3))
    invoice = invoice_finalize(
        invoice=make_invoice(opted, ("clusters", "100.00")), actor=TEST_ACTOR
    )
    invoice_finalize(invoice=make_invoice(other, ("clusters", "100.00")), actor=TEST_ACTOR)
    assert invoice.total == Decimal("100.00")
    # when
    out = run("auto_apply_expiring_credits")
    before = writes()
    again = run("auto_apply_expiring_credits")
    # then only the soon-expiring credit of the opted-in account was applied
    assert "auto_apply_expiring_credits: $30.00 applied to 1 invoice(s) of 1 account(s)" in out
    invoice.refresh_from_db()
    assert (invoice.credits_total, invoice.total) == (Decimal("30.00"), Decimal("70.00"))
    for grant, remaining in ((soon, "0.00"), (later, "50.00"), (untouched, "30.00")):
        grant.refresh_from_db()
        assert grant.remaining == Decimal(remaining)
    deduction = LedgerEntry.objects.get(grant=soon, kind=EntryKind.DEDUCTION)
    assert deduction.actor == "job:auto_apply_expiring_credits"
    assert "nothing applied to 0 invoice(s) of 0 account(s)" in again and writes() == before
    assert ledger_problems() == []


def test_verbose_command_lists_its_counts():
    out = StringIO()
    call_command("expire_credits", verbosity=2, stdout=out)
    assert "  expired: 0" in out.getvalue()


@pytest.mark.postgres
def test_compact_grant_summaries_folds_the_deltas_and_changes_no_figure():
    account = AccountFactory()
    grant = make_grant(account, "60.00", expiration_days=30)
    grant_void(grant=grant, actor=TEST_ACTOR, reason="test")
    make_grant(account, "25.00", type="refund")
    assert GrantSummary.objects.filter(compacted=False).count() == 4  # 3 changes, 4 deltas
    out = run("compact_grant_summaries", "--verbosity", "2")
    assert "compact_grant_summaries: 1 account(s), 4 summary row(s) folded into 2" in out
    rows = GrantSummary.objects.order_by("type").values_list(
        "type", "status", "grants", "remaining", "compacted"
    )
    assert list(rows) == [
        ("promotional", "voided", 1, Decimal("0.00"), True),
        ("refund", "active", 1, Decimal("25.00"), True),
    ]
    assert "compact_grant_summaries: 0 account(s)" in run("compact_grant_summaries")
    assert summary_problems() == []
