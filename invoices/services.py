"""Writes of the invoices app: create, add lines, hold and release credit, finalize (automatic
drawdown), apply one credit, void (reversals), pay, mark overdue, bulk-apply.

Settlement locks the invoice(s) first and then the grants, both in primary-key order (the one
order of credits.locking), re-reads them under the lock, asks the pure allocation engine for a
plan and writes the result: one negative credit line per grant, the charge lines' coverage, and
the grants' deductions through credits.services.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from credits import allocation
from credits.actors import Actor
from credits.exceptions import BusinessRuleViolation, Conflict, ValidationFailed
from credits.locking import lock_grants, lock_grants_for_settlement, lock_invoices
from credits.models import OPEN_STATUSES, Account, CreditGrant, CreditHold, GrantStatus
from credits.money import check_currency, fmt, from_minor, parse_amount, quantum, to_minor
from credits.services import (
    Draw,
    grant_void,
    grants_deduct_locked,
    grants_reverse_invoice_locked,
    hold_place_locked,
    holds_release_locked,
    insert_rows,
    live_deductions,
    referrals_activate_for_account_locked,
    save_fields,
)
from invoices.models import (
    OPEN_INVOICE_STATUSES,
    Invoice,
    InvoiceEvent,
    InvoiceEventKind,
    InvoiceLine,
    InvoiceSequence,
    InvoiceStatus,
    LineKind,
)
from invoices.selectors import (
    active_holds,
    candidates_for,
    charge_lines,
    invoice_target,
)

MAX_LINES = 500
LINE_DECIMALS = 6


# ---------------------------------------------------------------------------------------------
# Create


def _next_invoice_number(year: int) -> str:
    # The counter row is locked until commit: numbers are handed out in order, and a rolled-back
    # invoice takes its number back with it, so the year's sequence has no gaps.
    InvoiceSequence.objects.bulk_create([InvoiceSequence(year=year)], ignore_conflicts=True)
    seq = InvoiceSequence.objects.select_for_update().get(year=year)
    seq.last_number += 1
    seq.save(update_fields=["last_number"])
    return f"{year}-{seq.last_number:06d}"


def _decimal(value: object, name: str, places: int) -> Decimal:
    if isinstance(value, bool | float) or value is None:
        raise ValidationFailed(f"{name} must be a decimal number.", field=name)
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValidationFailed(
            f"{name} must be a decimal number, got {value!r}.", field=name
        ) from None
    if not number.is_finite() or number != number.quantize(Decimal(1).scaleb(-places)):
        raise ValidationFailed(f"{name} allows at most {places} decimals.", field=name)
    if abs(number) >= Decimal(10) ** 12:
        raise ValidationFailed(f"{name} is too large.", field=name)
    return number


def _build_lines(invoice: Invoice, lines: Sequence[dict], start: int) -> list[InvoiceLine]:
    """Charge lines from {service, description, quantity, unitPrice}. A line's amount is
    quantity x unit price rounded half-even to the currency's minor unit (the one rounding in
    the product, and only of a product that cannot be exact)."""
    if not lines:
        raise ValidationFailed("An invoice needs at least one line.", field="lines")
    if len(lines) > MAX_LINES:
        raise ValidationFailed(f"At most {MAX_LINES} lines per invoice.", field="lines")
    built = []
    for i, raw in enumerate(lines):
        if not isinstance(raw, dict):
            raise ValidationFailed(f"lines[{i}] must be an object.", field="lines")
        service = raw.get("service")
        if not isinstance(service, str) or not service.strip():
            raise ValidationFailed(f"lines[{i}].service is required.", field=f"lines[{i}].service")
        quantity = _decimal(raw.get("quantity", 1), f"lines[{i}].quantity", LINE_DECIMALS)
        unit_price = _decimal(raw.get("unit_price"), f"lines[{i}].unitPrice", LINE_DECIMALS)
        if quantity <= 0:
            raise ValidationFailed(f"lines[{i}].quantity must be positive.", field="quantity")
        if unit_price < 0:
            raise ValidationFailed(f"lines[{i}].unitPrice must not be negative.", field="unitPrice")
        amount = (quantity * unit_price).quantize(quantum(invoice.currency), ROUND_HALF_EVEN)
        built.append(
            InvoiceLine(
                invoice=invoice,
                position=start + i,
                kind=LineKind.CHARGE,
                service=service.strip()[:64],
                description=str(raw.get("description") or "")[:500],
                quantity=quantity,
                unit_price=unit_price,
                amount=amount,
            )
        )
    return built


def _event(invoice: Invoice, kind: str, actor: Actor, now: datetime, reason="", **data) -> None:
    event = InvoiceEvent(
        invoice=invoice, kind=kind, actor=actor.label, reason=reason, data=data, created_at=now
    )
    insert_rows(InvoiceEvent, [event])


@transaction.atomic
def invoice_create(
    *,
    account: Account,
    currency: str,
    lines: Sequence[dict],
    actor: Actor,
    due_date: date | None = None,
    issue_date: date | None = None,
    now: datetime | None = None,
) -> Invoice:
    """A draft invoice with its charge lines and the next number of its year."""
    now = now or timezone.now()
    check_currency(currency)
    issue_date = issue_date or now.date()
    if due_date is not None and due_date < issue_date:
        raise ValidationFailed("dueDate must not be before the issue date.", field="dueDate")
    invoice = Invoice(
        account=account,
        currency=currency,
        issue_date=issue_date,
        due_date=due_date,
        created_at=now,
        created_by=actor.label,
    )
    built = _build_lines(invoice, lines, start=1)  # validate before taking a number
    invoice.invoice_number = _next_invoice_number(issue_date.year)
    invoice.subtotal = sum((line.amount for line in built), Decimal("0"))
    invoice.total = invoice.subtotal
    invoice.save()
    InvoiceLine.objects.bulk_create(built)
    _event(invoice, InvoiceEventKind.CREATED, actor, now, lines=len(built))
    return invoice


@transaction.atomic
def invoice_add_lines(
    *, invoice: Invoice, lines: Sequence[dict], actor: Actor, now: datetime | None = None
) -> Invoice:
    now = now or timezone.now()
    invoice = lock_invoices([invoice.pk])[invoice.pk]
    _require_status(invoice, (InvoiceStatus.DRAFT,), "add lines to")
    start = (invoice.lines.aggregate(m=Max("position"))["m"] or 0) + 1
    built = _build_lines(invoice, lines, start=start)
    InvoiceLine.objects.bulk_create(built)
    invoice.subtotal += sum((line.amount for line in built), Decimal("0"))
    invoice.total = invoice.subtotal - invoice.credits_total
    invoice.save(update_fields=["subtotal", "total"])
    _event(invoice, InvoiceEventKind.LINES_ADDED, actor, now, lines=len(built))
    return invoice


def _require_status(invoice: Invoice, allowed: Iterable[str], verb: str) -> None:
    allowed = tuple(allowed)
    if invoice.status not in allowed:
        raise Conflict(
            f"Cannot {verb} invoice {invoice.invoice_number}: it is {invoice.status} "
            f"(needs {' or '.join(allowed)}).",
            code="invalid_invoice_status",
            status=invoice.status,
        )


# ---------------------------------------------------------------------------------------------
# Settlement


@dataclass
class Settlement:
    """What a plan draws, per grant pk and charge line pk, in Decimal."""

    per_grant: dict[int, dict[int, Decimal]] = field(default_factory=lambda: defaultdict(dict))

    def add(self, grant_pk: int, line_pk: int, amount: Decimal) -> None:
        lines = self.per_grant[grant_pk]
        lines[line_pk] = lines.get(line_pk, Decimal("0")) + amount

    def grant_total(self, grant_pk: int) -> Decimal:
        return sum(self.per_grant.get(grant_pk, {}).values(), Decimal("0"))

    @property
    def total(self) -> Decimal:
        return sum((self.grant_total(pk) for pk in self.per_grant), Decimal("0"))


def _plan_invoice(
    invoice: Invoice,
    charges: Sequence[InvoiceLine],
    grants: dict[int, CreditGrant],
    holds: dict[int, CreditHold],
    now: datetime,
    *,
    draw_unheld: bool,
    strategy: str = allocation.MINIMIZE_EXPIRATION,
) -> tuple[Settlement, allocation.Plan | None]:
    """Holds first (what a draft reserved is what it gets, as far as its lines still allow),
    then, if `draw_unheld`, the rest of the invoice from available credit in drawdown order."""
    cur = invoice.currency
    by_key = {line.line_id: line for line in charges}
    grant_by_key = {g.credit_id: g for g in grants.values()}
    settlement = Settlement()
    due = {line.pk: line.amount - line.credited for line in charges}
    held = [grants[pk] for pk in holds if pk in grants]
    if held:
        cands = candidates_for(held, [invoice])
        cands = [
            _with_available(c, min(holds[c.pk].amount, grants[c.pk].remaining), cur) for c in cands
        ]
        first = allocation.plan(cands, [_target(invoice, charges, due, now)])
        _collect(first, settlement, by_key, grant_by_key, due, cur)
    plan = None
    if draw_unheld:
        # A grant's hold on this invoice, less what pass one drew, is available here again.
        extra = {pk: holds[pk].amount - settlement.grant_total(pk) for pk in holds if pk in grants}
        cands = candidates_for(list(grants.values()), [invoice], extra_available=extra)
        plan = allocation.plan(cands, [_target(invoice, charges, due, now)], strategy=strategy)
        _collect(plan, settlement, by_key, grant_by_key, due, cur)
    return settlement, plan


def _with_available(cand: allocation.GrantCandidate, available: Decimal, cur: str):
    return replace(cand, available=max(to_minor(available, cur), 0))


def _target(invoice, charges, due: dict[int, Decimal], now):
    return invoice_target(
        invoice, charges, now, due={pk: to_minor(v, invoice.currency) for pk, v in due.items()}
    )


def _collect(plan, settlement, by_key, grant_by_key, due, cur) -> None:
    for a in plan.allocations:
        line = by_key[a.line_key]
        amount = from_minor(a.amount, cur)
        settlement.add(grant_by_key[a.grant_key].pk, line.pk, amount)
        due[line.pk] -= amount


def _write_settlement(
    *,
    invoice: Invoice,
    charges: Sequence[InvoiceLine],
    grants: dict[int, CreditGrant],
    settlement: Settlement,
    consumed_holds: dict[int, CreditHold],
    actor: Actor,
    now: datetime,
) -> Decimal:
    """One negative credit line per grant (merged into the grant's existing line on a pending
    invoice), the charge lines' coverage, the deductions, and the invoice's totals."""
    drawn = {pk: settlement.grant_total(pk) for pk in settlement.per_grant}
    drawn = {pk: amount for pk, amount in drawn.items() if amount > 0}
    if not drawn:
        return Decimal("0")
    existing = {}
    if invoice.status != InvoiceStatus.DRAFT:
        existing = {
            line.grant_id: line
            for line in invoice.lines.filter(kind=LineKind.CREDIT, grant_id__in=list(drawn))
        }
    next_position = max([line.position for line in charges], default=0) + 1
    if invoice.status != InvoiceStatus.DRAFT:
        next_position = (invoice.lines.aggregate(m=Max("position"))["m"] or 0) + 1
    new_lines, changed_lines = [], []
    credit_line_of = {}
    for pk in sorted(drawn, key=lambda pk: _order_key(grants[pk])):
        grant = grants[pk]
        if pk in existing:
            line = existing[pk]
            line.amount -= drawn[pk]
            line.quantity = Decimal("1")
            line.unit_price = line.amount
            changed_lines.append(line)
        else:
            line = InvoiceLine(
                invoice=invoice,
                position=next_position,
                kind=LineKind.CREDIT,
                service="credit",
                description=f"Credit {grant.credit_id}"
                + (f": {grant.description}" if grant.description else ""),
                quantity=Decimal("1"),
                unit_price=-drawn[pk],
                amount=-drawn[pk],
                grant=grant,
            )
            next_position += 1
            new_lines.append(line)
        credit_line_of[pk] = line
    insert_rows(InvoiceLine, new_lines)
    if changed_lines:
        InvoiceLine.objects.bulk_update(changed_lines, ["amount", "quantity", "unit_price"])
    covered = defaultdict(Decimal)
    for per_line in settlement.per_grant.values():
        for line_pk, amount in per_line.items():
            covered[line_pk] += amount
    touched = []
    for line in charges:
        if covered.get(line.pk):
            line.credited += covered[line.pk]
            touched.append(line)
    save_fields(InvoiceLine, touched, ["credited"])
    grants_deduct_locked(
        invoice=invoice,
        draws=[
            Draw(grant=grants[pk], amount=drawn[pk], invoice_line=credit_line_of[pk])
            for pk in sorted(drawn, key=lambda pk: _order_key(grants[pk]))
        ],
        consumed_holds=consumed_holds,
        actor=actor,
        now=now,
    )
    total = sum(drawn.values(), Decimal("0"))
    invoice.credits_total += total
    invoice.total = invoice.subtotal - invoice.credits_total
    return total


def _order_key(grant: CreditGrant):
    return allocation.drawdown_key(
        allocation.GrantCandidate(
            key=grant.credit_id,
            pk=grant.pk,
            currency=grant.currency,
            status=grant.status,
            available=0,
            effective_at=grant.effective_at,
            expires_at=grant.expires_at,
        )
    )


def _lock_for_settlement(invoice_pk: int, *, with_available: bool | None):
    """Lock the invoice, then in one pass its held grants and (if asked; None: if its account
    auto-applies credits) the account's usable grants. One pass: a second one could take a
    lower pk after a higher one and deadlock with a settlement locking in pk order."""
    invoice = lock_invoices([invoice_pk])[invoice_pk]
    holds = active_holds(invoice)
    if with_available is None:
        with_available = invoice.account.auto_apply_credits
    grants = lock_grants_for_settlement(holds, usable_for=invoice if with_available else None)
    # Re-read: a void or the expiry job releases a hold under its grant's lock, not the
    # invoice's, so the holds read before the grants were locked may be gone. (New holds need
    # the invoice's lock, held here, so nothing is missed, and no holds stay no holds.)
    if holds:
        holds = active_holds(invoice)
    return invoice, holds, grants


@transaction.atomic
def invoice_finalize(*, invoice: Invoice, actor: Actor, now: datetime | None = None) -> Invoice:
    """draft -> pending: holds become deductions, then (if the account auto-applies credits)
    available credit is drawn in Octane order; an invoice left with nothing due is paid."""
    now = now or timezone.now()
    invoice, holds, grants = _lock_for_settlement(invoice.pk, with_available=None)
    _require_status(invoice, (InvoiceStatus.DRAFT,), "finalize")
    charges = charge_lines(invoice)
    if not charges:
        raise BusinessRuleViolation("An invoice needs at least one line to be finalized.")
    settlement, _ = _plan_invoice(
        invoice, charges, grants, holds, now, draw_unheld=invoice.account.auto_apply_credits
    )
    consumed = {pk: h for pk, h in holds.items() if settlement.grant_total(pk) > 0}
    leftover = [h for pk, h in holds.items() if pk not in consumed]
    if leftover:
        # A hold its lines no longer allow (e.g. lines changed since) is released, not kept.
        from credits.services import _release_holds_locked

        _release_holds_locked(
            holds=leftover, grants=grants, actor=actor, now=now, reason="not needed at finalize"
        )
    _write_settlement(
        invoice=invoice,
        charges=charges,
        grants=grants,
        settlement=settlement,
        consumed_holds=consumed,
        actor=actor,
        now=now,
    )
    invoice.status = InvoiceStatus.PENDING
    invoice.finalized_at = now
    invoice.due_date = invoice.due_date or now.date() + timedelta(days=settings.INVOICE_DUE_DAYS)
    if invoice.total == 0:
        invoice.status = InvoiceStatus.PAID
        invoice.paid_at = now
    save_fields(
        Invoice,
        [invoice],
        ["status", "finalized_at", "due_date", "paid_at", "credits_total", "total"],
    )
    _event(invoice, InvoiceEventKind.FINALIZED, actor, now, credits=str(invoice.credits_total))
    referrals_activate_for_account_locked(account=invoice.account, actor=actor, now=now)
    return invoice


@transaction.atomic
def invoice_hold_credits(*, invoice: Invoice, actor: Actor, now: datetime | None = None):
    """Reserve available credit for a draft, in drawdown order, up to what it still owes.
    Held credit is not available to any other invoice until this one is finalized or voided."""
    now = now or timezone.now()
    invoice, holds, grants = _lock_for_settlement(invoice.pk, with_available=True)
    _require_status(invoice, (InvoiceStatus.DRAFT,), "hold credit for")
    charges = charge_lines(invoice)
    held_settlement, _ = _plan_invoice(invoice, charges, grants, holds, now, draw_unheld=False)
    # Plan the rest as if finalizing, then hold what the unheld pass would draw.
    full, _ = _plan_invoice(invoice, charges, grants, holds, now, draw_unheld=True)
    placed = []
    for pk in full.per_grant:
        extra = full.grant_total(pk) - held_settlement.grant_total(pk)
        if extra > 0:
            placed.append(
                hold_place_locked(
                    grant=grants[pk], invoice=invoice, amount=extra, actor=actor, now=now
                )
            )
    return placed


@transaction.atomic
def invoice_release_holds(
    *, invoice: Invoice, actor: Actor, reason: str = "released", now: datetime | None = None
) -> int:
    now = now or timezone.now()
    invoice, holds, grants = _lock_for_settlement(invoice.pk, with_available=False)
    holds_release_locked(invoice=invoice, grants=grants, actor=actor, now=now, reason=reason)
    return len(holds)


@transaction.atomic
def invoice_apply_credit(
    *,
    grant: CreditGrant,
    invoice: Invoice,
    amount: object,
    actor: Actor,
    now: datetime | None = None,
) -> tuple[Invoice, CreditGrant, Decimal]:
    """Apply one credit to one invoice for an exact amount: a deduction on a pending or overdue
    invoice, a hold on a draft (it becomes a deduction when the draft is finalized). All the
    credit's restrictions apply; if the whole amount cannot be applied, nothing is."""
    now = now or timezone.now()
    invoice = lock_invoices([invoice.pk])[invoice.pk]
    _require_status(invoice, (InvoiceStatus.DRAFT, *OPEN_INVOICE_STATUSES), "apply credit to")
    amount = parse_amount(amount, invoice.currency)
    holds = active_holds(invoice)
    grants = lock_grants([grant.pk, *holds])
    grant = grants[grant.pk]
    if grant.account_id != invoice.account_id:
        raise BusinessRuleViolation(
            f"{grant.credit_id} belongs to another account than invoice {invoice.invoice_number}.",
            code="account_mismatch",
        )
    charges = charge_lines(invoice)
    due = {line.pk: line.amount - line.credited for line in charges}
    if invoice.status == InvoiceStatus.DRAFT and holds:
        # On a draft, what the existing holds will cover is spoken for already.
        held, _ = _plan_invoice(invoice, charges, grants, holds, now, draw_unheld=False)
        for per_line in held.per_grant.values():
            for line_pk, value in per_line.items():
                due[line_pk] -= value
    [cand] = candidates_for([grant], [invoice])
    plan = allocation.plan(
        [cand], [_target(invoice, charges, due, now)], max_total=to_minor(amount, invoice.currency)
    )
    applicable = from_minor(plan.total, invoice.currency)
    if applicable < amount:
        reasons = "; ".join(d.reason for d in plan.decisions)
        raise BusinessRuleViolation(
            f"Cannot apply {fmt(amount, invoice.currency)} of {grant.credit_id} to "
            f"{invoice.invoice_number}: at most {fmt(applicable, invoice.currency)} "
            f"can be applied ({reasons}).",
            code="cannot_apply",
            applicable=str(applicable),
        )
    if invoice.status == InvoiceStatus.DRAFT:
        hold_place_locked(grant=grant, invoice=invoice, amount=amount, actor=actor, now=now)
    else:
        settlement = Settlement()
        by_key = {line.line_id: line for line in charges}
        _collect(plan, settlement, by_key, {grant.credit_id: grant}, due, invoice.currency)
        _write_settlement(
            invoice=invoice,
            charges=charges,
            grants=grants,
            settlement=settlement,
            consumed_holds={},
            actor=actor,
            now=now,
        )
        if invoice.total == 0:
            invoice.status = InvoiceStatus.PAID
            invoice.paid_at = now
        invoice.save(update_fields=["credits_total", "total", "status", "paid_at"])
    _event(
        invoice,
        InvoiceEventKind.CREDIT_APPLIED,
        actor,
        now,
        creditId=grant.credit_id,
        amount=str(amount),
    )
    return invoice, grant, amount


@transaction.atomic
def invoice_void(
    *, invoice: Invoice, actor: Actor, reason: str, now: datetime | None = None
) -> Invoice:
    """Void a draft (its holds are released) or a finalized, unpaid invoice (each deduction is
    reversed; credit that has ended meanwhile ends again at once). Paid invoices are refunded
    with a refund credit instead."""
    now = now or timezone.now()
    if not (reason or "").strip():
        raise ValidationFailed("A reason is required to void an invoice.", field="reason")
    invoice = lock_invoices([invoice.pk])[invoice.pk]
    if not (invoice.status == InvoiceStatus.PAID and invoice.total == 0):
        # A paid invoice was settled with money: it is refunded by a refund credit instead.
        # One settled by credits alone (nothing collected) can still be voided.
        _require_status(invoice, (InvoiceStatus.DRAFT, *OPEN_INVOICE_STATUSES), "void")
    holds = active_holds(invoice)
    deductions = live_deductions(invoice)
    grants = lock_grants([*holds, *(d.grant_id for d in deductions)])
    holds_release_locked(
        invoice=invoice, grants=grants, actor=actor, now=now, reason="invoice voided"
    )
    if deductions:
        grants_reverse_invoice_locked(
            invoice=invoice,
            deductions=deductions,
            grants=grants,
            actor=actor,
            reason=f"invoice {invoice.invoice_number} voided: {reason.strip()}",
            now=now,
        )
    invoice.status = InvoiceStatus.VOID
    invoice.voided_at = now
    invoice.void_reason = reason.strip()
    invoice.save(update_fields=["status", "voided_at", "void_reason"])
    _event(invoice, InvoiceEventKind.VOIDED, actor, now, reason.strip())
    bought = invoice.purchased_grant
    if bought is not None and bought.status in (
        GrantStatus.PENDING,
        GrantStatus.ACTIVE,
        GrantStatus.RESERVED,
    ):
        # The customer will not pay for these credits: what is left of them goes too.
        grant_void(grant=bought, actor=actor, reason=f"purchase invoice voided: {reason}", now=now)
    return invoice


@transaction.atomic
def invoice_pay(*, invoice: Invoice, actor: Actor, now: datetime | None = None) -> Invoice:
    now = now or timezone.now()
    invoice = lock_invoices([invoice.pk])[invoice.pk]
    _require_status(invoice, OPEN_INVOICE_STATUSES, "mark paid")
    invoice.status = InvoiceStatus.PAID
    invoice.paid_at = now
    invoice.save(update_fields=["status", "paid_at"])
    _event(invoice, InvoiceEventKind.PAID, actor, now, amount=str(invoice.total))
    return invoice


def invoice_bill_purchased_credit(*, grant: CreditGrant, actor: Actor, now: datetime) -> Invoice:
    """The invoice for a purchased credit's price, finalized at once (no credit draws on it:
    credits do not pay for credits)."""
    invoice = invoice_create(
        account=grant.account,
        currency=grant.currency,
        lines=[
            {
                "service": "credits",
                "description": (
                    f"Prepaid credits {grant.credit_id} ({fmt(grant.original, grant.currency)})"
                ),
                "quantity": Decimal("1"),
                "unit_price": grant.price,
            }
        ],
        actor=actor,
        now=now,
    )
    invoice.purchased_grant = grant
    invoice.status = InvoiceStatus.PENDING
    invoice.finalized_at = now
    invoice.due_date = now.date() + timedelta(days=settings.INVOICE_DUE_DAYS)
    invoice.save(update_fields=["purchased_grant", "status", "finalized_at", "due_date"])
    _event(invoice, InvoiceEventKind.FINALIZED, actor, now, purchasedCredit=grant.credit_id)
    return invoice


def invoices_mark_overdue(*, actor: Actor, now: datetime | None = None) -> int:
    """Set-based: pending invoices past their due date become overdue, each with one event
    (a unique constraint makes a second run, or a concurrent one, write none twice)."""
    now = now or timezone.now()
    with transaction.atomic():
        due = list(
            Invoice.objects.filter(status=InvoiceStatus.PENDING, due_date__lt=now.date())
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        changed = Invoice.objects.filter(pk__in=due, status=InvoiceStatus.PENDING).update(
            status=InvoiceStatus.OVERDUE
        )
        InvoiceEvent.objects.bulk_create(
            [
                InvoiceEvent(
                    invoice_id=pk, kind=InvoiceEventKind.OVERDUE, actor=actor.label, created_at=now
                )
                for pk in due
            ],
            ignore_conflicts=True,
        )
    return changed


# ---------------------------------------------------------------------------------------------
# Plans over many invoices (bulk-apply) and for one (optimize)


@dataclass
class BulkResult:
    plans: list[tuple[list[Invoice], dict[str, CreditGrant], allocation.Plan]]
    applied: bool

    @property
    def total(self) -> Decimal:
        out = Decimal("0")
        for invoices, _, plan in self.plans:
            if invoices:
                out += from_minor(plan.total, invoices[0].currency)
        return out


@transaction.atomic
def credits_bulk_apply(
    *,
    accounts: Iterable[Account],
    actor: Actor,
    strategy: str = allocation.MINIMIZE_EXPIRATION,
    invoice_statuses: Sequence[str] = OPEN_INVOICE_STATUSES,
    max_amount: Decimal | None = None,
    dry_run: bool = False,
    expiring_before: datetime | None = None,
    now: datetime | None = None,
) -> BulkResult:
    """Plan credits over the accounts' open invoices (per account and currency: credits only
    pay their own account's invoices in their currency) and, unless dry_run, apply the plan.
    `max_amount` caps the total applied, in each currency; `expiring_before` limits the plan to
    credits expiring before that instant (the auto_apply_expiring_credits job)."""
    now = now or timezone.now()
    statuses = [s for s in invoice_statuses if s in OPEN_INVOICE_STATUSES]
    account_ids = sorted(a.pk for a in accounts)
    invoices = list(
        Invoice.objects.filter(account_id__in=account_ids, status__in=statuses).values_list(
            "pk", flat=True
        )
    )
    locked = (
        lock_invoices(invoices)
        if not dry_run
        else {i.pk: i for i in Invoice.objects.select_related("account").filter(pk__in=invoices)}
    )
    groups: dict[tuple[int, str], list[Invoice]] = defaultdict(list)
    for inv in sorted(locked.values(), key=lambda i: (i.due_date or date.max, i.invoice_number)):
        groups[(inv.account_id, inv.currency)].append(inv)
    grant_q = Q(pk__in=[])
    for account_id, currency in groups:
        grant_q |= Q(
            account_id=account_id, currency=currency, status__in=("active",), remaining__gt=0
        )
    grant_qs = CreditGrant.objects.filter(grant_q)
    if expiring_before is not None:
        grant_qs = grant_qs.filter(expires_at__isnull=False, expires_at__lte=expiring_before)
    grant_pks = grant_qs.values_list("pk", flat=True)
    grants = (
        lock_grants(grant_pks)
        if not dry_run
        else {g.pk: g for g in CreditGrant.objects.filter(pk__in=list(grant_pks))}
    )
    by_group: dict[tuple[int, str], list[CreditGrant]] = defaultdict(list)
    for g in grants.values():
        by_group[(g.account_id, g.currency)].append(g)
    left: dict[str, int] = {}
    result = BulkResult(plans=[], applied=not dry_run)
    for key in sorted(groups):
        invs = groups[key]
        currency = key[1]
        if max_amount is not None and currency not in left:
            left[currency] = to_minor(max_amount, currency)
        charges = {inv.pk: charge_lines(inv) for inv in invs}
        cands = candidates_for(by_group.get(key, []), invs)
        plan = allocation.plan(
            cands,
            [invoice_target(inv, charges[inv.pk], now) for inv in invs],
            strategy=strategy,
            max_total=left.get(currency),
        )
        if currency in left:
            left[currency] -= plan.total
        grant_by_key = {g.credit_id: g for g in by_group.get(key, [])}
        result.plans.append((invs, grant_by_key, plan))
        if dry_run or not plan.allocations:
            continue
        for inv in invs:
            allocs = plan.allocations_for_invoice(inv.invoice_id)
            if not allocs:
                continue
            settlement = Settlement()
            by_line = {line.line_id: line for line in charges[inv.pk]}
            for a in allocs:
                settlement.add(
                    grant_by_key[a.grant_key].pk,
                    by_line[a.line_key].pk,
                    from_minor(a.amount, currency),
                )
            _write_settlement(
                invoice=inv,
                charges=charges[inv.pk],
                grants=grants,
                settlement=settlement,
                consumed_holds={},
                actor=actor,
                now=now,
            )
            if inv.total == 0:
                inv.status = InvoiceStatus.PAID
                inv.paid_at = now
            inv.save(update_fields=["credits_total", "total", "status", "paid_at"])
            _event(
                inv,
                InvoiceEventKind.CREDIT_APPLIED,
                actor,
                now,
                strategy=strategy,
                amount=str(from_minor(plan.total_for_invoice(inv.invoice_id), currency)),
            )
    return result


def invoice_optimize(
    *, invoice: Invoice, strategy: str = allocation.MAXIMIZE_SAVINGS, now: datetime | None = None
) -> tuple[allocation.Plan, dict[str, CreditGrant]]:
    """The plan for one invoice with the reasons per credit; nothing is written. For a draft it
    is what finalizing would draw (holds included); for a pending invoice, what could still be
    applied."""
    now = now or timezone.now()
    holds = active_holds(invoice)
    grants = {
        g.pk: g
        for g in CreditGrant.objects.filter(
            Q(pk__in=list(holds)) | Q(account_id=invoice.account_id, currency=invoice.currency)
        ).filter(Q(pk__in=list(holds)) | Q(status__in=OPEN_STATUSES, remaining__gt=0))
    }
    charges = charge_lines(invoice)
    extra = {pk: h.amount for pk, h in holds.items()}
    cands = candidates_for(list(grants.values()), [invoice], extra_available=extra)
    plan = allocation.plan(cands, [invoice_target(invoice, charges, now)], strategy=strategy)
    return plan, {g.credit_id: g for g in grants.values()}
