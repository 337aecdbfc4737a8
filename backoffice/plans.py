"""Presentation of an allocation plan (credits.allocation.Plan) for one invoice: one row per
credit with what it would draw and the engine's reason. Amounts come from the engine in minor
units and are only converted (credits.money.from_minor), never recomputed here."""

from dataclasses import dataclass
from decimal import Decimal

from credits import allocation
from credits.models import CreditGrant
from credits.money import from_minor
from invoices.models import Invoice
from invoices.services import invoice_optimize


@dataclass(frozen=True)
class PlanRow:
    grant: CreditGrant | None
    credit_id: str
    amount: Decimal
    code: str
    reason: str

    @property
    def applied(self) -> bool:
        return self.amount > 0


@dataclass(frozen=True)
class PlanPreview:
    strategy: str
    rows: list[PlanRow]
    total: Decimal
    due_after: Decimal
    exact: bool

    @property
    def used_rows(self) -> list[PlanRow]:
        return [r for r in self.rows if r.applied]

    @property
    def unused_rows(self) -> list[PlanRow]:
        return [r for r in self.rows if not r.applied]


def preview(invoice: Invoice, strategy: str) -> PlanPreview:
    plan, grants = invoice_optimize(invoice=invoice, strategy=strategy)
    cur = invoice.currency
    rows = [
        PlanRow(
            grant=grants.get(d.grant_key),
            credit_id=d.grant_key,
            amount=from_minor(d.amount, cur),
            code=d.code,
            reason=d.reason,
        )
        for d in plan.decisions_for_invoice(invoice.invoice_id)
    ]
    rows.sort(key=lambda r: (not r.applied, -r.amount, r.credit_id))
    total = from_minor(plan.total_for_invoice(invoice.invoice_id), cur)
    # What would be left to pay: the invoice's own total less what this plan adds (the same
    # subtraction the settlement service makes when it writes the plan).
    return PlanPreview(
        strategy=strategy,
        rows=rows,
        total=total,
        due_after=invoice.total - total,
        exact=plan.exact,
    )


STRATEGY_LABELS = {
    allocation.MINIMIZE_EXPIRATION: "expiring first (the order finalizing uses)",
    allocation.MAXIMIZE_SAVINGS: "maximize savings",
}
