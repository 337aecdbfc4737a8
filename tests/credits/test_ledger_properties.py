"""Property tests at the database level: random grants (amounts, dates, restrictions) and random
sequences of operations through the services, then SPEC §5's invariants over what was written.

After every sequence: no grant is negative, `remaining == sum(ledger)`, `used == -(deductions +
reversals)`, each invoice's credits equal its credit lines and its live deductions to the cent,
every live deduction respects its grant's dates and restrictions, `verify_ledger` is clean, and
each invoice finalized over unrestricted credits drew them in Octane order (checked against an
independent greedy over the grants as they stood just before). Each example runs in a savepoint
that is rolled back, so examples do not see each other's rows. Runs on SQLite and PostgreSQL.
"""

import io
import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import transaction
from django.db.models import Q, Sum
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from credits.exceptions import DomainError, ValidationFailed
from credits.models import (
    USABLE_STATUSES,
    CreditGrant,
    CreditHold,
    EntryKind,
    HoldStatus,
    LedgerEntry,
    UsageLimit,
)
from credits.money import quantum
from credits.services import grant_transfer, grant_void, grants_activate_due, grants_expire
from credits.summaries import grant_summaries_compact
from invoices.models import Invoice, InvoiceStatus, LineKind
from invoices.services import (
    invoice_apply_credit,
    invoice_finalize,
    invoice_void,
)
from tests.factories import TEST_ACTOR, AccountFactory, make_grant, make_invoice

pytestmark = pytest.mark.django_db

ZERO = Decimal("0")
SQLITE = "sqlite" in django_settings.DATABASES["default"]["ENGINE"]
SERVICES = ("clusters", "storage", "network")
# Late in a month, so sequences cross into the next one (monthly usage limits).
BASE = datetime(2030, 1, 27, 9, 0, tzinfo=UTC)
# Few distinct instants, so ties in expiry and in effective date are common.
EFFECTIVE = (BASE - timedelta(days=1), BASE - timedelta(days=1), BASE, BASE + timedelta(hours=6))
EXPIRES = (None, None, BASE + timedelta(days=2), BASE + timedelta(days=5), BASE + timedelta(days=5))
ADVANCE = (timedelta(minutes=1), timedelta(minutes=1), timedelta(hours=3), timedelta(days=1))
FRACTIONS = (Decimal("0.25"), Decimal("0.5"), Decimal("1"))

PROPERTIES = settings(
    # A handful per run keeps the suite fast; LEDGER_PROPERTY_EXAMPLES=500 for a deeper search.
    max_examples=int(os.environ.get("LEDGER_PROPERTY_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def step_of(currency: str) -> Decimal:
    """The grain of generated amounts: the currency's minor unit."""
    return quantum(currency)


def amounts(currency: str, low: int, high: int):
    """Amounts from `low` to `high` (whole currency units) on the scenario's grain."""
    step = step_of(currency)
    return st.integers(int(low / step), int(high / step)).map(lambda n: n * step)


def grain(amount: Decimal, currency: str) -> Decimal:
    """A derived amount (a fraction of a balance) down to the grain, at least one grain."""
    step = step_of(currency)
    return max((amount / step).to_integral_value(ROUND_FLOOR) * step, step)


@st.composite
def grant_specs(draw, currency: str, restricted: bool):
    spec = {
        "account": draw(st.sampled_from((0, 0, 1))),
        # Smaller than most invoices, so finalizations draw on several grants.
        "amount": draw(amounts(currency, 1, 60)),
        "effective_at": draw(st.sampled_from(EFFECTIVE)),
        "expires_at": draw(st.sampled_from(EXPIRES)),
        "transferable": draw(st.sampled_from((True, True, False))),
        "applicable_services": None,
        "minimum_spend": ZERO,
        "maximum_discount": None,
        "usage_limit": UsageLimit.UNLIMITED,
    }
    if restricted and draw(st.booleans()):
        spec["applicable_services"] = draw(
            st.one_of(
                st.none(), st.lists(st.sampled_from(SERVICES), min_size=1, max_size=2, unique=True)
            )
        )
        spec["minimum_spend"] = draw(st.sampled_from((ZERO, Decimal("20"), Decimal("90"))))
        spec["maximum_discount"] = draw(st.sampled_from((None, Decimal("15"), Decimal("40"))))
        spec["usage_limit"] = draw(st.sampled_from(UsageLimit.values))
    return spec


def operations(currency: str):
    index = st.integers(0, 30)
    advance = st.sampled_from(ADVANCE)
    lines = st.lists(
        st.tuples(st.sampled_from(SERVICES), amounts(currency, 1, 120)), min_size=1, max_size=3
    )
    invoice = st.tuples(
        st.just("invoice"), advance, st.sampled_from((0, 0, 1)), lines, st.sampled_from((1, 1, 0))
    )
    return st.one_of(
        invoice,
        invoice,  # twice: invoices are what most other operations act on
        st.tuples(st.just("finalize"), advance, index),
        st.tuples(st.just("apply"), advance, index, index, st.sampled_from(FRACTIONS)),
        st.tuples(st.just("void_grant"), advance, index),
        st.tuples(st.just("void_invoice"), advance, index),
        st.tuples(st.just("expire"), st.sampled_from((timedelta(days=1), timedelta(days=4)))),
        st.tuples(st.just("transfer"), advance, index, st.sampled_from(FRACTIONS)),
        st.tuples(st.just("activate"), advance),
        st.tuples(st.just("compact"), st.just(timedelta(0))),
    )


@st.composite
def scenarios(draw):
    currency = draw(st.sampled_from(("USD", "USD", "JPY")))
    # Half the scenarios have no restricted grant: there every automatic finalization is checked
    # against Octane order; in the other half, restrictions are checked instead.
    restricted = draw(st.booleans())
    return {
        "currency": currency,
        "auto_apply": (draw(st.sampled_from((True, True, False))), True),
        "grants": draw(st.lists(grant_specs(currency, restricted), min_size=3, max_size=7)),
        "ops": draw(st.lists(operations(currency), min_size=3, max_size=15)),
    }


# ---------------------------------------------------------------------------------------------
# The run


class Run:
    """Plays one scenario through the services on a clock that only moves forward (as it does
    in production), counting the finalizations it checked against Octane order."""

    def __init__(self, scenario):
        self.currency = scenario["currency"]
        self.now = BASE
        self.accounts = [
            AccountFactory(currency=self.currency, auto_apply_credits=flag)
            for flag in scenario["auto_apply"]
        ]
        self.grant_pks: list[int] = []
        self.invoice_pks: list[int] = []
        self.octane_checks = 0
        for spec in scenario["grants"]:
            spec = dict(spec)
            account = self.accounts[spec.pop("account")]
            amount = spec.pop("amount")
            grant = make_grant(account, amount, now=self.now, **spec)
            self.grant_pks.append(grant.pk)

    def pick(self, model, pks, i):
        return model.objects.get(pk=pks[i % len(pks)]) if pks else None

    def play(self, op) -> None:
        kind = op[0]
        self.now += op[1]
        try:
            with transaction.atomic():
                getattr(self, f"op_{kind}")(*op[2:])
        except DomainError as exc:
            # A refusal is a legitimate outcome; the savepoint undid any partial write.
            event(f"{kind}: refused ({exc.code})")
        else:
            event(f"{kind}: done")

    def op_invoice(self, account_index, lines, finalize):
        invoice = make_invoice(
            self.accounts[account_index],
            *[(service, str(amount)) for service, amount in lines],
            now=self.now,
        )
        self.invoice_pks.append(invoice.pk)
        if finalize:
            self.finalize(invoice)

    def op_finalize(self, i):
        drafts = list(
            Invoice.objects.filter(pk__in=self.invoice_pks, status=InvoiceStatus.DRAFT)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if drafts:
            self.finalize(Invoice.objects.get(pk=drafts[i % len(drafts)]))

    def op_apply(self, grant_i, invoice_i, fraction):
        grant = self.pick(CreditGrant, self.grant_pks, grant_i)
        invoice = self.pick(Invoice, self.invoice_pks, invoice_i)
        if grant is None or invoice is None:
            return
        invoice_apply_credit(
            grant=grant,
            invoice=invoice,
            amount=grain(min(grant.available, invoice.total) * fraction, self.currency),
            actor=TEST_ACTOR,
            now=self.now,
        )

    def op_void_grant(self, i):
        grant = self.pick(CreditGrant, self.grant_pks, i)
        grant_void(grant=grant, actor=TEST_ACTOR, reason="property test", now=self.now)

    def op_void_invoice(self, i):
        invoice = self.pick(Invoice, self.invoice_pks, i)
        if invoice is not None:
            invoice_void(invoice=invoice, actor=TEST_ACTOR, reason="property test", now=self.now)

    def op_expire(self):
        grants_expire(actor=TEST_ACTOR, now=self.now)

    def op_transfer(self, i, fraction):
        grant = self.pick(CreditGrant, self.grant_pks, i)
        to = self.accounts[1] if grant.account_id == self.accounts[0].pk else self.accounts[0]
        _, target = grant_transfer(
            grant=grant,
            to_account=to,
            amount=grain(grant.available * fraction, self.currency),
            actor=TEST_ACTOR,
            now=self.now,
        )
        self.grant_pks.append(target.pk)

    def op_activate(self):
        grants_activate_due(actor=TEST_ACTOR, now=self.now)

    def op_compact(self):
        grant_summaries_compact()  # the beat job folding the summary deltas (PostgreSQL)

    def finalize(self, invoice: Invoice) -> None:
        expected = self.octane_expectation(invoice)
        invoice = invoice_finalize(invoice=invoice, actor=TEST_ACTOR, now=self.now)
        if expected is None:
            return
        deductions = list(
            LedgerEntry.objects.filter(invoice=invoice, kind=EntryKind.DEDUCTION)
            .select_related("grant")
            .order_by("pk")
        )
        assert [(d.grant_id, -d.amount) for d in deductions] == expected
        if len(expected) > 1:
            self.octane_checks += 1  # an order was there to get wrong

    def octane_expectation(self, invoice: Invoice):
        """What Octane order draws, computed here from the grants as they stand, when every
        usable grant is unrestricted (restrictions are the allocation engine's own tests)."""
        account = invoice.account
        if not account.auto_apply_credits or CreditHold.objects.filter(invoice=invoice).exists():
            return None
        usable = [
            g
            for g in CreditGrant.objects.filter(
                Q(expires_at__isnull=True) | Q(expires_at__gt=self.now),
                account=account,
                currency=invoice.currency,
                status__in=USABLE_STATUSES,
                effective_at__lte=self.now,
            )
            if g.available > 0
        ]
        if any(
            g.services is not None
            or g.minimum_spend > 0
            or g.maximum_discount is not None
            or g.usage_limit != UsageLimit.UNLIMITED
            for g in usable
        ):
            return None
        # Soonest expiry first, no expiry last, ties by effective date, then by id.
        usable.sort(
            key=lambda g: (g.expires_at is None, g.expires_at or BASE, g.effective_at, g.pk)
        )
        due = invoice.subtotal
        expected = []
        for g in usable:
            take = min(g.available, due)
            if take > 0:
                expected.append((g.pk, take))
                due -= take
        return expected


# ---------------------------------------------------------------------------------------------
# The invariants


def live_deductions_qs():
    return LedgerEntry.objects.filter(kind=EntryKind.DEDUCTION).exclude(
        consequences__kind=EntryKind.REVERSAL
    )


def check_invariants(run: Run) -> None:
    q = quantum(run.currency)
    grants = {g.pk: g for g in CreditGrant.objects.filter(account__in=run.accounts)}
    ledger = defaultdict(list)
    for entry in LedgerEntry.objects.filter(grant__in=list(grants)).order_by("pk"):
        ledger[entry.grant_id].append(entry)

    for pk, g in grants.items():
        rows = ledger[pk]
        assert g.remaining >= 0 and 0 <= g.reserved <= g.remaining <= g.original
        assert g.remaining == sum((e.amount for e in rows), ZERO)
        assert g.used == -sum(
            (e.amount for e in rows if e.kind in (EntryKind.DEDUCTION, EntryKind.REVERSAL)), ZERO
        )
        assert rows[-1].balance_after == g.remaining
        for e in rows:
            assert e.amount == e.amount.quantize(q), f"{e.amount} is finer than {run.currency}"
        if g.status in ("voided", "expired"):
            assert g.remaining == 0 and g.reserved == 0
        held = CreditHold.objects.filter(grant=g, status=HoldStatus.ACTIVE).aggregate(
            s=Sum("amount")
        )["s"]
        assert g.reserved == (held or ZERO)

    live = defaultdict(list)
    for d in live_deductions_qs().filter(grant__in=list(grants)).select_related("invoice"):
        live[d.invoice_id].append(d)
        grant = grants[d.grant_id]
        assert d.invoice.account_id == grant.account_id
        assert d.invoice.currency == grant.currency
        assert grant.effective_at <= d.created_at
        assert grant.expires_at is None or d.created_at < grant.expires_at

    for invoice in Invoice.objects.filter(account__in=run.accounts).prefetch_related("lines"):
        lines = list(invoice.lines.all())
        charges = [line for line in lines if line.kind == LineKind.CHARGE]
        credit_lines = [line for line in lines if line.kind == LineKind.CREDIT]
        on_invoice = live.get(invoice.pk, [])
        assert invoice.total == invoice.subtotal - invoice.credits_total
        assert invoice.subtotal == sum((line.amount for line in charges), ZERO)
        for value in (invoice.subtotal, invoice.credits_total, invoice.total):
            assert value == value.quantize(q)
        if invoice.status == InvoiceStatus.VOID:
            assert not on_invoice, "a void invoice keeps no live deduction"
            continue
        assert invoice.credits_total == -sum((line.amount for line in credit_lines), ZERO)
        assert invoice.credits_total == -sum((d.amount for d in on_invoice), ZERO)
        assert invoice.credits_total == sum((line.credited for line in charges), ZERO)
        assert len({line.grant_id for line in credit_lines}) == len(credit_lines)
        for line in credit_lines:
            drawn = [d.amount for d in on_invoice if d.invoice_line_id == line.pk]
            assert line.amount == sum(drawn, ZERO)
        check_restrictions(invoice, charges, on_invoice, grants)

    one_time_invoices = defaultdict(set)
    monthly_invoices = defaultdict(set)
    for per_invoice in live.values():
        for d in per_invoice:
            grant = grants[d.grant_id]
            if grant.usage_limit == UsageLimit.ONE_TIME:
                one_time_invoices[grant.pk].add(d.invoice_id)
            if grant.usage_limit == UsageLimit.MONTHLY:
                at = d.created_at.astimezone(UTC)
                monthly_invoices[(grant.pk, at.year, at.month)].add(d.invoice_id)
    assert all(len(v) == 1 for v in one_time_invoices.values())
    assert all(len(v) == 1 for v in monthly_invoices.values())

    assert_ledger_clean()


def check_restrictions(invoice, charges, deductions, grants) -> None:
    by_grant = defaultdict(lambda: ZERO)
    for d in deductions:
        by_grant[d.grant_id] -= d.amount
    for pk, drawn in by_grant.items():
        g = grants[pk]
        applicable = sum(
            (line.amount for line in charges if g.services is None or line.service in g.services),
            ZERO,
        )
        assert drawn <= applicable, "a credit paid for lines of services it does not cover"
        assert applicable >= g.minimum_spend, "a credit drew below its minimum spend"
        if g.maximum_discount is not None:
            assert drawn <= g.maximum_discount


def assert_ledger_clean() -> None:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("verify_ledger", stdout=out, stderr=err)
    except CommandError as exc:
        raise AssertionError(f"verify_ledger: {exc}\n{err.getvalue()}") from None


# ---------------------------------------------------------------------------------------------
# Tests


@PROPERTIES
@given(scenario=scenarios())
def test_random_operations_keep_ledger_grants_and_invoices_consistent(scenario):
    note(repr(scenario))
    with transaction.atomic():
        run = Run(scenario)
        for op in scenario["ops"]:
            run.play(op)
        check_invariants(run)
        checked = min(run.octane_checks, 3)
        event(f"finalizations drawing 2+ grants checked for Octane order: {checked}+")
        transaction.set_rollback(True)


def test_jpy_has_no_minor_unit_end_to_end():
    # given a JPY account with a ¥1,500 credit
    account = AccountFactory(currency="JPY")
    grant = make_grant(account, "1500", expiration_days=30)
    assert grant.original == Decimal("1500") and grant.currency == "JPY"

    # when an invoice whose line products are not whole yen is finalized
    invoice = make_invoice(
        account,
        {"service": "clusters", "description": "GPU", "quantity": "1.5", "unit_price": "333"},
        ("storage", "1200"),
    )
    invoice = invoice_finalize(invoice=invoice, actor=TEST_ACTOR)

    # then every amount is whole yen: the line rounds half-even to ¥500, credits take ¥1,500
    charge = invoice.lines.get(kind=LineKind.CHARGE, service="clusters")
    assert charge.amount == Decimal("500")
    assert invoice.subtotal == Decimal("1700")
    assert invoice.credits_total == Decimal("1500")
    assert invoice.total == Decimal("200")
    grant.refresh_from_db()
    assert grant.remaining == ZERO and grant.used == Decimal("1500")
    amounts = [invoice.subtotal, invoice.credits_total, invoice.total, grant.used]
    amounts += list(invoice.lines.values_list("amount", flat=True))
    amounts += list(LedgerEntry.objects.filter(grant=grant).values_list("amount", flat=True))
    amounts += list(LedgerEntry.objects.filter(grant=grant).values_list("balance_after", flat=True))
    assert all(a == a.to_integral_value() for a in amounts), amounts
    assert_ledger_clean()


@pytest.mark.parametrize("amount", ["1.5", "0.5", "1500.01"])
def test_fractional_yen_is_refused_with_a_clear_message(amount):
    account = AccountFactory(currency="JPY")
    with pytest.raises(ValidationFailed, match=r"more precision than JPY allows \(no decimals\)"):
        make_grant(account, amount)
    assert not CreditGrant.objects.filter(account=account).exists()


def test_fractional_yen_apply_is_refused():
    account = AccountFactory(currency="JPY", auto_apply_credits=False)
    grant = make_grant(account, "1500")
    invoice = invoice_finalize(
        invoice=make_invoice(account, ("clusters", "1000")), actor=TEST_ACTOR
    )
    with pytest.raises(ValidationFailed, match="JPY"):
        invoice_apply_credit(grant=grant, invoice=invoice, amount="10.5", actor=TEST_ACTOR)
    grant.refresh_from_db()
    assert grant.used == ZERO and not LedgerEntry.objects.filter(invoice=invoice).exists()


def test_verify_ledger_reads_a_grants_last_balance_in_write_order_not_by_timestamp():
    """A service's `now` is read before it waits for the grant's lock, so the entry written
    last can carry the earlier timestamp (a void queued behind a settlement). The ledger's
    order is the order of writes under that lock; verify_ledger must follow it."""
    account = AccountFactory()
    issued = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
    grant = make_grant(account, "50.00", now=issued)
    invoice = make_invoice(account, ("clusters", "30.00"), now=issued)
    invoice_finalize(invoice=invoice, actor=TEST_ACTOR, now=issued + timedelta(seconds=2))
    # The void started a second earlier but got the lock after the settlement committed.
    grant_void(grant=grant, actor=TEST_ACTOR, reason="withdrawn", now=issued + timedelta(seconds=1))

    grant.refresh_from_db()
    assert grant.remaining == ZERO and grant.used == Decimal("30.00")
    [void] = LedgerEntry.objects.filter(grant=grant, kind=EntryKind.VOID)
    assert void.amount == Decimal("-20.00") and void.balance_after == ZERO
    assert_ledger_clean()


def test_verify_ledger_is_exact_for_amounts_a_binary_float_cannot_hold():
    # given a grant whose entries do not add up exactly in binary floating point (SQLite's SUM)
    source, target = AccountFactory(), AccountFactory()
    grant = make_grant(source, "2.01", transferable=True)
    grant_transfer(grant=grant, to_account=target, amount="0.50", actor=TEST_ACTOR)
    grant_void(grant=grant, actor=TEST_ACTOR, reason="withdrawn")

    # then its ledger is 2.01 - 0.50 - 1.51 = 0.00 exactly, and verify_ledger says so
    amounts = (
        LedgerEntry.objects.filter(grant=grant).order_by("pk").values_list("amount", flat=True)
    )
    assert list(amounts) == [Decimal("2.01"), Decimal("-0.50"), Decimal("-1.51")]
    assert_ledger_clean()


# SQLite evaluates CHECK constraints in binary floating point: the two that subtract round to
# cents, so exact amounts such as these pass there as on PostgreSQL.


def test_invoice_of_one_dollar_with_41_cents_of_credit_finalizes():
    account = AccountFactory()
    make_grant(account, "0.41")
    invoice = invoice_finalize(
        invoice=make_invoice(account, ("clusters", "1.00")), actor=TEST_ACTOR
    )
    assert invoice.credits_total == Decimal("0.41") and invoice.total == Decimal("0.59")


def test_grant_of_30_cents_can_lend_10_cents():
    account = AccountFactory()
    grant = make_grant(account, "0.30")
    invoice_finalize(invoice=make_invoice(account, ("clusters", "0.10")), actor=TEST_ACTOR)
    grant.refresh_from_db()
    assert grant.remaining == Decimal("0.20") and grant.used == Decimal("0.10")
