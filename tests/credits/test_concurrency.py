"""Races on PostgreSQL with real threads: settlements, voids, expiry and applies contending for
the same grants never overdraw them, never both spend and expire or void the same credit,
never deadlock, and leave the ledger clean.

Each contender runs in its own thread on its own connection (closed at the end), with a
lock_timeout and statement_timeout so that a deadlock or a lock wait that never ends shows up as
an error in that thread instead of a hung test; a threading.Barrier releases them together.
Where a race must be shown to go both ways, rounds alternate a small head start, and where an
interleaving matters, a third connection holds a row lock so the others queue in a known order.
"""

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import partial

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction
from django.db.models import Sum
from django.utils import timezone

from credits.exceptions import BusinessRuleViolation, Conflict
from credits.models import CreditGrant, CreditHold, EntryKind, HoldStatus, LedgerEntry
from credits.services import grant_void, grants_expire
from invoices.models import Invoice, InvoiceEvent, InvoiceEventKind, InvoiceStatus, LineKind
from invoices.services import (
    credits_bulk_apply,
    invoice_apply_credit,
    invoice_finalize,
    invoice_void,
)
from tests.factories import TEST_ACTOR, AccountFactory, make_grant, make_invoice

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ZERO = Decimal("0")
HEAD_START = 0.05  # seconds; far longer than taking the first lock, far shorter than a timeout
# A round alternates: a true race, then each side with a head start, so both orders happen.
DELAY_CYCLE = ((0, 0), (0, HEAD_START), (HEAD_START, 0))


@dataclass
class Outcome:
    value: object = None
    error: BaseException | None = None


def _prepare_connection() -> None:
    # Session settings on this thread's own connection: a deadlock is also detected by
    # PostgreSQL after deadlock_timeout (1 s), but a lock wait that never ends must not hang.
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '5s'")
        cursor.execute("SET statement_timeout = '20s'")


def run_together(*calls: Callable[[], object], delays=None) -> list[Outcome]:
    """Run each call in its own thread and connection, released together by a barrier.
    `delays[i]` seconds of head start for the others, after the barrier."""
    delays = delays or [0] * len(calls)
    barrier = threading.Barrier(len(calls))
    outcomes = [Outcome() for _ in calls]

    def worker(i: int, call: Callable[[], object]) -> None:
        try:
            _prepare_connection()  # connect before the barrier, so no one starts late
            barrier.wait(timeout=30)
            if delays[i]:
                time.sleep(delays[i])
            outcomes[i].value = call()
        except BaseException as exc:
            outcomes[i].error = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a contender never finished"
    return outcomes


def assert_no_error(outcomes: list[Outcome]) -> None:
    errors = [repr(o.error) for o in outcomes if o.error is not None]
    assert not errors, f"{len(errors)} contender(s) raised: {errors}"


def assert_ledger_clean() -> None:
    err = io.StringIO()
    try:
        call_command("verify_ledger", stdout=io.StringIO(), stderr=err)
    except CommandError as exc:
        raise AssertionError(f"verify_ledger: {exc}\n{err.getvalue()}") from None


def entries(grant, kind) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(grant=grant, kind=kind).order_by("pk"))


def deducted_on(invoice) -> Decimal:
    total = LedgerEntry.objects.filter(invoice=invoice, kind=EntryKind.DEDUCTION).aggregate(
        s=Sum("amount")
    )["s"]
    return -(total or ZERO)


def credit_lines_total(invoice) -> Decimal:
    total = invoice.lines.filter(kind=LineKind.CREDIT).aggregate(s=Sum("amount"))["s"]
    return -(total or ZERO)


def wait_for_lock_waiters(count: int, timeout: float = 10) -> None:
    """Until `count` other backends of this database wait on a row lock (pg_stat_activity is
    read in autocommit, so each poll sees a fresh snapshot)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0] >= count:
                return
        time.sleep(0.01)
    raise AssertionError(f"expected {count} backends waiting on a lock")


class RowLockHolder:
    """A connection in its own thread holding FOR UPDATE on grants until released, so that the
    contenders queue behind it in the order the test starts them."""

    def __init__(self, grant_pks):
        self.grant_pks = sorted(grant_pks)
        self.locked = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            _prepare_connection()
            with transaction.atomic():
                list(CreditGrant.objects.select_for_update().filter(pk__in=self.grant_pks))
                self.locked.set()
                self.release.wait(timeout=30)
        except BaseException as exc:
            self.error = exc
            self.locked.set()
        finally:
            connections.close_all()

    def __enter__(self):
        self.thread.start()
        assert self.locked.wait(timeout=10)
        assert self.error is None, repr(self.error)
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.thread.join(timeout=30)


def start_thread(call: Callable[[], object]) -> tuple[threading.Thread, Outcome]:
    outcome = Outcome()

    def worker() -> None:
        try:
            _prepare_connection()
            outcome.value = call()
        except BaseException as exc:
            outcome.error = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=worker)
    thread.start()
    return thread, outcome


# ---------------------------------------------------------------------------------------------
# 20 finalizations, one grant


@pytest.mark.parametrize("grant_amount", [Decimal("100.00"), Decimal("500.00")])
def test_twenty_finalizations_racing_for_one_grant_never_overdraw_it(grant_amount):
    # given one grant and 20 drafts wanting 167.50 in all (more, or less, than the grant)
    account = AccountFactory()
    grant = make_grant(account, grant_amount)
    amounts = [Decimal("6.00") + Decimal("0.25") * i for i in range(20)]
    demand = sum(amounts, ZERO)
    assert demand == Decimal("167.50")
    drafts = [make_invoice(account, ("clusters", str(a))) for a in amounts]

    # when all 20 are finalized at once
    outcomes = run_together(
        *(partial(invoice_finalize, invoice=inv, actor=TEST_ACTOR) for inv in drafts)
    )

    # then exactly min(grant, demand) is drawn, in one serial chain of balances
    assert_no_error(outcomes)
    grant.refresh_from_db()
    drawn = min(grant_amount, demand)
    assert grant.remaining == grant_amount - drawn
    assert grant.remaining >= 0
    assert grant.used == drawn
    deductions = entries(grant, EntryKind.DEDUCTION)
    assert -sum((d.amount for d in deductions), ZERO) == drawn
    balance = grant_amount
    for d in deductions:
        balance += d.amount
        assert d.balance_after == balance  # no two settlements read the same balance
    assert balance == grant.remaining

    invoices = list(Invoice.objects.filter(pk__in=[d.pk for d in drafts]))
    for inv in invoices:
        assert inv.status in (InvoiceStatus.PENDING, InvoiceStatus.PAID)
        assert inv.credits_total + inv.total == inv.subtotal
        on_invoice = [d for d in deductions if d.invoice_id == inv.pk]
        assert len(on_invoice) == (1 if inv.credits_total else 0)
        assert deducted_on(inv) == inv.credits_total == credit_lines_total(inv)
        assert (inv.status == InvoiceStatus.PAID) == (inv.total == 0)
    partly = [inv for inv in invoices if 0 < inv.credits_total < inv.subtotal]
    assert len(partly) <= 1  # only the settlement that found the grant nearly empty
    assert sum((inv.credits_total for inv in invoices), ZERO) == drawn
    if grant_amount < demand:
        assert grant.status == "applied"
        assert any(inv.credits_total == 0 for inv in invoices)
    else:
        assert all(inv.status == InvoiceStatus.PAID for inv in invoices)
    assert_ledger_clean()


# ---------------------------------------------------------------------------------------------
# Void racing finalize


@pytest.mark.parametrize("held", [False, True], ids=["unheld", "draft-holds-credit"])
def test_void_racing_finalize_either_draws_first_or_finds_the_credit_voided(held):
    outcomes_seen = set()
    for round_ in range(9):
        # given a grant of 50.00 and a draft of 30.00 (which may hold 20.00 of it)
        account = AccountFactory()
        grant = make_grant(account, "50.00")
        draft = make_invoice(account, ("clusters", "30.00"))
        if held:
            invoice_apply_credit(grant=grant, invoice=draft, amount="20.00", actor=TEST_ACTOR)

        # when the grant is voided while the draft is finalized
        void_delay, finalize_delay = DELAY_CYCLE[round_ % 3]
        outcomes = run_together(
            partial(grant_void, grant=grant, actor=TEST_ACTOR, reason="campaign withdrawn"),
            partial(invoice_finalize, invoice=draft, actor=TEST_ACTOR),
            delays=[void_delay, finalize_delay],
        )

        # then one of the two orders, each complete and consistent
        assert_no_error(outcomes)
        grant.refresh_from_db()
        draft.refresh_from_db()
        deductions = entries(grant, EntryKind.DEDUCTION)
        [void] = entries(grant, EntryKind.VOID)
        assert grant.status == "voided"
        assert grant.remaining == ZERO and grant.reserved == ZERO
        if deductions:
            outcomes_seen.add("finalize first")
            [deduction] = deductions
            assert deduction.amount == Decimal("-30.00")
            assert void.amount == Decimal("-20.00")  # only the unused remainder
            assert grant.used == Decimal("30.00")
            assert draft.credits_total == Decimal("30.00") and draft.total == ZERO
            assert draft.status == InvoiceStatus.PAID
        else:
            outcomes_seen.add("void first")
            assert void.amount == Decimal("-50.00")
            assert grant.used == ZERO
            assert draft.credits_total == ZERO and draft.total == Decimal("30.00")
            assert draft.status == InvoiceStatus.PENDING
            assert not draft.lines.filter(kind=LineKind.CREDIT).exists()
        assert not CreditHold.objects.filter(grant=grant, status=HoldStatus.ACTIVE).exists()
        assert_ledger_clean()
    assert outcomes_seen == {"finalize first", "void first"}


def test_finalize_queued_behind_a_void_of_its_held_credit_draws_nothing_from_it():
    """The interleaving that a stale read of the draft's holds would break: finalize has read
    the hold, then the void releases it (under the grant's lock, not the invoice's), then
    finalize gets the grant. It must see the hold gone, not release it a second time."""
    # given a draft holding 20.00 of a 50.00 grant, and the grant locked by a third party
    account = AccountFactory()
    grant = make_grant(account, "50.00")
    draft = make_invoice(account, ("clusters", "30.00"))
    invoice_apply_credit(grant=grant, invoice=draft, amount="20.00", actor=TEST_ACTOR)
    with RowLockHolder([grant.pk]):
        # when the void queues first, and finalize (invoice locked, holds read) second
        void_thread, void_outcome = start_thread(
            partial(grant_void, grant=grant, actor=TEST_ACTOR, reason="campaign withdrawn")
        )
        wait_for_lock_waiters(1)
        finalize_thread, finalize_outcome = start_thread(
            partial(invoice_finalize, invoice=draft, actor=TEST_ACTOR)
        )
        wait_for_lock_waiters(2)
    void_thread.join(timeout=30)
    finalize_thread.join(timeout=30)

    # then the void took all 50.00 and the invoice is finalized without credit
    assert_no_error([void_outcome, finalize_outcome])
    grant.refresh_from_db()
    draft.refresh_from_db()
    assert [e.amount for e in entries(grant, EntryKind.VOID)] == [Decimal("-50.00")]
    assert grant.reserved == ZERO and grant.remaining == ZERO and grant.used == ZERO
    assert draft.status == InvoiceStatus.PENDING
    assert draft.credits_total == ZERO and draft.total == Decimal("30.00")
    assert_ledger_clean()


# ---------------------------------------------------------------------------------------------
# Expire racing finalize


@pytest.mark.parametrize(
    ("finalize_offset", "held"),
    [
        (timedelta(minutes=-1), False),
        (timedelta(minutes=-1), True),
        (timedelta(minutes=1), False),
    ],
    ids=["finalize-just-before-expiry", "before-expiry-with-hold", "finalize-after-expiry"],
)
def test_expire_racing_finalize_never_both_spends_and_expires_the_same_credit(
    finalize_offset, held
):
    outcomes_seen = set()
    for round_ in range(9):
        # given a grant of 50.00 that expired an hour ago (issued with a short expiry)
        issued = timezone.now() - timedelta(hours=2)
        expires = issued + timedelta(hours=1)
        account = AccountFactory()
        grant = make_grant(account, "50.00", expires_at=expires, now=issued)
        draft = make_invoice(account, ("clusters", "30.00"), now=issued)
        if held:
            invoice_apply_credit(
                grant=grant, invoice=draft, amount="20.00", actor=TEST_ACTOR, now=issued
            )

        # when the expiry job (after the expiry) races a finalize (just before or after it)
        expire_delay, finalize_delay = DELAY_CYCLE[round_ % 3]
        job_now = expires + timedelta(minutes=1)
        outcomes = run_together(
            partial(grants_expire, actor=TEST_ACTOR, now=job_now),
            partial(
                invoice_finalize, invoice=draft, actor=TEST_ACTOR, now=expires + finalize_offset
            ),
            delays=[expire_delay, finalize_delay],
        )
        assert_no_error(outcomes)
        # The job skips rows a settlement holds (SKIP LOCKED): its next run takes them.
        grants_expire(actor=TEST_ACTOR, now=job_now + timedelta(minutes=1))

        # then the grant is expired exactly once, for what the finalize left, and never drawn
        # on after its expiry
        grant.refresh_from_db()
        draft.refresh_from_db()
        deductions = entries(grant, EntryKind.DEDUCTION)
        [expiration] = entries(grant, EntryKind.EXPIRATION)
        assert grant.status == "expired"
        assert grant.remaining == ZERO and grant.reserved == ZERO
        drawn = -sum((d.amount for d in deductions), ZERO)
        assert expiration.amount == -(Decimal("50.00") - drawn)
        assert grant.used == drawn == draft.credits_total == credit_lines_total(draft)
        assert all(d.created_at < grant.expires_at for d in deductions)
        if deductions:
            outcomes_seen.add("finalize first")
            assert finalize_offset < timedelta(0)
            assert drawn == Decimal("30.00")
            assert expiration.created_at > deductions[-1].created_at
        else:
            outcomes_seen.add("expiry first")
            assert draft.total == Decimal("30.00")
        assert draft.status in (InvoiceStatus.PENDING, InvoiceStatus.PAID)
        assert not CreditHold.objects.filter(grant=grant, status=HoldStatus.ACTIVE).exists()
        assert_ledger_clean()
    if finalize_offset < timedelta(0):
        assert outcomes_seen == {"finalize first", "expiry first"}
    else:
        assert outcomes_seen == {"expiry first"}


# ---------------------------------------------------------------------------------------------
# No deadlock


def test_invoice_void_racing_finalize_of_another_invoice_on_shared_grants():
    seen = set()
    for round_ in range(6):
        # given three grants (120.00), invoice A drawing 60.00 of them, and a draft B of 70.00
        account = AccountFactory()
        now = timezone.now()
        g1 = make_grant(account, "40.00", expires_at=now + timedelta(days=10))
        g2 = make_grant(account, "40.00", expires_at=now + timedelta(days=20))
        g3 = make_grant(account, "40.00")
        a = invoice_finalize(invoice=make_invoice(account, ("clusters", "60.00")), actor=TEST_ACTOR)
        assert a.credits_total == Decimal("60.00")
        b = make_invoice(account, ("clusters", "40.00"), ("storage", "30.00"))

        # when A is voided while B is finalized
        void_delay, finalize_delay = DELAY_CYCLE[round_ % 3]
        outcomes = run_together(
            partial(invoice_void, invoice=a, actor=TEST_ACTOR, reason="billed twice"),
            partial(invoice_finalize, invoice=b, actor=TEST_ACTOR),
            delays=[void_delay, finalize_delay],
        )

        # then no deadlock, A is fully reversed, and B drew what was there when it ran
        assert_no_error(outcomes)
        a.refresh_from_db()
        b.refresh_from_db()
        assert a.status == InvoiceStatus.VOID
        a_deductions = LedgerEntry.objects.filter(invoice=a, kind=EntryKind.DEDUCTION)
        assert a_deductions.count() == 2
        assert all(d.consequences.filter(kind=EntryKind.REVERSAL).exists() for d in a_deductions)
        if b.credits_total == Decimal("70.00"):
            seen.add("void first")  # 120.00 available again
        else:
            seen.add("finalize first")  # only 60.00 was left
            assert b.credits_total == Decimal("60.00")
        grants = list(CreditGrant.objects.filter(pk__in=[g1.pk, g2.pk, g3.pk]))
        assert sum((g.used for g in grants), ZERO) == b.credits_total == deducted_on(b)
        assert sum((g.remaining for g in grants), ZERO) == Decimal("120.00") - b.credits_total
        assert_ledger_clean()
    assert seen == {"void first", "finalize first"}


def test_bulk_settlements_over_interleaved_grants_in_opposite_orders_do_not_deadlock():
    # given two accounts whose grants interleave by primary key, each with pending invoices
    x, y = AccountFactory(auto_apply_credits=False), AccountFactory(auto_apply_credits=False)
    pending = []
    for account in (x, y):
        for amount in ("30.00", "45.00", "25.00"):
            inv = make_invoice(account, ("clusters", amount), ("storage", "5.00"))
            pending.append(invoice_finalize(invoice=inv, actor=TEST_ACTOR))
    now = timezone.now()
    grants = []
    for i in range(4):
        for account in (x, y):
            grants.append(
                make_grant(
                    account,
                    "20.00",
                    expires_at=now + timedelta(days=5 + i),
                    applicable_services=["clusters"] if i == 3 else None,
                )
            )
    offered = sum((g.original for g in grants), ZERO)
    owed = sum((inv.total for inv in pending), ZERO)

    # when two bulk settlements (opposite account orders, both strategies) and single applies
    # run at once over the same grants
    calls = [
        partial(credits_bulk_apply, accounts=[x, y], actor=TEST_ACTOR),
        partial(credits_bulk_apply, accounts=[y, x], actor=TEST_ACTOR, strategy="maximize_savings"),
        partial(
            invoice_apply_credit,
            grant=grants[-1],
            invoice=pending[3],
            amount="10.00",
            actor=TEST_ACTOR,
        ),
        partial(
            invoice_apply_credit,
            grant=grants[0],
            invoice=pending[2],
            amount="10.00",
            actor=TEST_ACTOR,
        ),
    ]
    outcomes = run_together(*calls)

    # then nothing deadlocked or timed out (a single apply may find its credit taken, or its
    # invoice already paid by a bulk settlement that ran first)
    assert_no_error(outcomes[:2])
    for o in outcomes[2:]:
        assert o.error is None or isinstance(o.error, BusinessRuleViolation | Conflict), repr(
            o.error
        )
    applied = ZERO
    for inv in Invoice.objects.filter(pk__in=[i.pk for i in pending]):
        assert inv.credits_total + inv.total == inv.subtotal
        assert deducted_on(inv) == inv.credits_total == credit_lines_total(inv)
        applied += inv.credits_total
    used = CreditGrant.objects.filter(pk__in=[g.pk for g in grants]).aggregate(s=Sum("used"))["s"]
    assert used == applied
    assert applied == min(offered, owed)  # together they place every credit there is
    assert_ledger_clean()


def test_finalize_of_a_draft_holding_credit_takes_grant_locks_in_global_order():
    """A draft holding credit on a high-numbered grant is finalized while a bulk settlement of
    the same account locks its grants in primary-key order. If finalize locked the held grant
    first and the account's other grants later, the two would wait for each other."""
    # given a pending invoice (for the bulk run), a low and a high grant, a draft holding the
    # high one, and a third party holding the low one so the contenders queue in a known order
    account = AccountFactory()
    pending = invoice_finalize(  # before any grant exists, so it stays due
        invoice=make_invoice(account, ("clusters", "80.00")), actor=TEST_ACTOR
    )
    low = make_grant(account, "100.00")
    high = make_grant(account, "100.00")
    draft = make_invoice(account, ("clusters", "50.00"))
    invoice_apply_credit(grant=high, invoice=draft, amount="10.00", actor=TEST_ACTOR)

    with RowLockHolder([low.pk]):
        # when the bulk run waits for `low` first, then finalize (which may hold `high`)
        bulk_thread, bulk = start_thread(
            partial(credits_bulk_apply, accounts=[account], actor=TEST_ACTOR)
        )
        wait_for_lock_waiters(1)
        finalize_thread, finalized = start_thread(
            partial(invoice_finalize, invoice=draft, actor=TEST_ACTOR)
        )
        wait_for_lock_waiters(2)
    bulk_thread.join(timeout=30)
    finalize_thread.join(timeout=30)

    # then both complete: no deadlock
    assert_no_error([bulk, finalized])
    pending.refresh_from_db()
    draft.refresh_from_db()
    assert pending.credits_total == Decimal("80.00")
    assert draft.credits_total == Decimal("50.00")
    total_used = CreditGrant.objects.filter(pk__in=[low.pk, high.pk]).aggregate(s=Sum("used"))
    assert total_used["s"] == Decimal("130.00")
    assert_ledger_clean()


# ---------------------------------------------------------------------------------------------
# Apply racing apply


def test_applies_racing_for_more_than_a_grant_has_succeed_exactly_as_far_as_it_goes():
    # given a grant of 100.00 and 8 pending invoices of 40.00 with nothing applied yet
    account = AccountFactory(auto_apply_credits=False)
    grant = make_grant(account, "100.00")
    invoices = [
        invoice_finalize(invoice=make_invoice(account, ("clusters", "40.00")), actor=TEST_ACTOR)
        for _ in range(8)
    ]

    # when 8 threads apply 30.00 of it each, at once
    outcomes = run_together(
        *(
            partial(
                invoice_apply_credit, grant=grant, invoice=inv, amount="30.00", actor=TEST_ACTOR
            )
            for inv in invoices
        )
    )

    # then 3 succeed (90.00), 5 are refused as a business rule, and the refused wrote nothing
    ok = [inv for inv, o in zip(invoices, outcomes, strict=True) if o.error is None]
    refused = [(inv, o.error) for inv, o in zip(invoices, outcomes, strict=True) if o.error]
    assert len(ok) == 3
    assert len(refused) == 5
    for _inv, error in refused:
        assert isinstance(error, BusinessRuleViolation), repr(error)
    grant.refresh_from_db()
    assert grant.remaining == Decimal("10.00") and grant.used == Decimal("90.00")
    assert len(entries(grant, EntryKind.DEDUCTION)) == 3
    for inv in ok:
        inv.refresh_from_db()
        assert inv.credits_total == Decimal("30.00") and inv.total == Decimal("10.00")
        assert deducted_on(inv) == credit_lines_total(inv) == Decimal("30.00")
    for inv, _error in refused:
        inv.refresh_from_db()
        assert inv.credits_total == ZERO and inv.total == Decimal("40.00")
        assert not inv.lines.filter(kind=LineKind.CREDIT).exists()
        assert not LedgerEntry.objects.filter(invoice=inv).exists()
        assert not InvoiceEvent.objects.filter(
            invoice=inv, kind=InvoiceEventKind.CREDIT_APPLIED
        ).exists()
        assert not inv.lines.filter(kind=LineKind.CHARGE, credited__gt=0).exists()
    assert_ledger_clean()
