"""Reads shared by the invoices services, the admin, the API and the jobs."""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

from django.db.models import DecimalField, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from credits import allocation
from credits.models import USABLE_STATUSES, CreditGrant, CreditHold, HoldStatus
from credits.money import to_minor
from credits.services import grant_usage_summary
from invoices.models import OPEN_INVOICE_STATUSES, Invoice, InvoiceLine, LineKind

SPEND_STATUSES = ("pending", "paid", "overdue")


def qualifying_spend_subquery():
    """Per grant: its account's finalized invoice subtotal in its currency since it was issued
    (what activates a pending referral credit). For use in .annotate() on CreditGrant."""
    spend = (
        Invoice.objects.filter(
            account_id=OuterRef("account_id"),
            currency=OuterRef("currency"),
            status__in=SPEND_STATUSES,
            finalized_at__gte=OuterRef("issued_at"),
            purchased_grant__isnull=True,
        )
        .order_by()
        .values("account_id")
        .annotate(total=Sum("subtotal"))
        .values("total")
    )
    return Coalesce(
        Subquery(spend, output_field=DecimalField(max_digits=18, decimal_places=2)),
        Value(Decimal("0")),
        output_field=DecimalField(max_digits=18, decimal_places=2),
    )


def usable_grants_q(invoice: Invoice) -> Q:
    """The grants that could draw on this invoice before restrictions are looked at."""
    return Q(
        account_id=invoice.account_id,
        currency=invoice.currency,
        status__in=USABLE_STATUSES,
        remaining__gt=0,
    )


def charge_lines(invoice: Invoice) -> list[InvoiceLine]:
    return list(invoice.lines.filter(kind=LineKind.CHARGE).order_by("position"))


def invoice_target(invoice: Invoice, charges: Sequence[InvoiceLine], at: datetime, *, due=None):
    """The allocation engine's view of an invoice; `due` overrides what each line still owes."""
    cur = invoice.currency
    return allocation.InvoiceTarget(
        key=invoice.invoice_id,
        currency=cur,
        at=at,
        lines=tuple(
            allocation.LineDue(
                key=line.line_id,
                service=line.service,
                gross=to_minor(line.amount, cur),
                due=(
                    due[line.pk] if due is not None else to_minor(line.amount - line.credited, cur)
                ),
            )
            for line in charges
        ),
    )


def prior_credits(invoices: Iterable[Invoice]) -> dict[int, list[tuple[str, int]]]:
    """Per grant pk: what it already took off each of these invoices (for maximumDiscount)."""
    out: dict[int, list[tuple[str, int]]] = defaultdict(list)
    rows = InvoiceLine.objects.filter(
        invoice__in=[i.pk for i in invoices], kind=LineKind.CREDIT
    ).values_list("grant_id", "invoice__invoice_id", "amount", "invoice__currency")
    for grant_id, invoice_key, amount, cur in rows:
        out[grant_id].append((invoice_key, to_minor(-amount, cur)))
    return out


def grant_candidate(
    grant: CreditGrant,
    *,
    available: Decimal,
    usage: dict,
    prior: dict,
    status: str | None = None,
) -> allocation.GrantCandidate:
    cur = grant.currency
    return allocation.GrantCandidate(
        key=grant.credit_id,
        pk=grant.pk,
        currency=cur,
        status=status or grant.status,
        available=max(to_minor(available, cur), 0),
        effective_at=grant.effective_at,
        expires_at=grant.expires_at,
        applicable_services=grant.services,
        minimum_spend=to_minor(grant.minimum_spend, cur),
        maximum_discount=(
            None if grant.maximum_discount is None else to_minor(grant.maximum_discount, cur)
        ),
        usage_limit=grant.usage_limit,
        usage=tuple(usage.get(grant.pk, ())),
        prior_on_invoice=tuple(prior.get(grant.pk, ())),
        description=grant.description,
    )


def candidates_for(
    grants: Sequence[CreditGrant], invoices: Sequence[Invoice], *, extra_available=None
) -> list[allocation.GrantCandidate]:
    """Engine inputs for grants as they stand (`extra_available`: held amounts to add back)."""
    usage = grant_usage_summary(grants)
    prior = prior_credits(invoices) if any(g.maximum_discount is not None for g in grants) else {}
    extra_available = extra_available or {}
    return [
        grant_candidate(
            g,
            available=g.remaining - g.reserved + extra_available.get(g.pk, Decimal("0")),
            usage=usage,
            prior=prior,
            # Reserved by this very invoice is usable for it.
            status="active" if g.pk in extra_available and g.status == "reserved" else None,
        )
        for g in grants
    ]


def active_holds(invoice: Invoice) -> dict[int, CreditHold]:
    holds = {
        h.grant_id: h for h in CreditHold.objects.filter(invoice=invoice, status=HoldStatus.ACTIVE)
    }
    for hold in holds.values():
        # The caller's invoice is the hold's: no join (half the query's CPU per settlement).
        hold.invoice = invoice
    return holds


def open_invoices(account_ids: Iterable[int], statuses=OPEN_INVOICE_STATUSES):
    return (
        Invoice.objects.filter(account_id__in=list(account_ids), status__in=list(statuses))
        .select_related("account")
        .order_by("due_date", "invoice_number")
    )
