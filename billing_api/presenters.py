"""The API's JSON shapes, built from model rows (SPEC §8, the seed's credit object).

Plain dict builders rather than DRF serializers: the credits list renders hundreds of nested
objects per request and these keep it cheap. The matching DRF serializers in
billing_api.serializers describe the same shapes for the OpenAPI schema, and schemathesis checks
the two agree. Every amount is quantized to its currency's precision here (JPY has none).
The credit objects (hundreds per list) are built from plain row dicts, with their amounts
pre-rendered (renderers.number) and their instants formatted by PostgreSQL (selectors.IsoInstant).
"""

from datetime import datetime
from decimal import Decimal

from billing_api.renderers import iso, number
from credits.money import CURRENCIES, quantum
from credits.selectors import Balance

ZERO = Decimal("0")
# Per-currency quanta, looked up once: these builders quantize ~20 amounts per credit.
_QUANTUM = {c: quantum(c) for c in CURRENCIES}


def q(amount: Decimal, currency: str) -> Decimal:
    """credits.money.q without re-validating the currency (it comes from our own rows)."""
    return amount.quantize(_QUANTUM[currency])


def instant(value: datetime | str | None) -> str | None:
    """An instant from selectors.IsoInstant: already text on PostgreSQL, a datetime elsewhere."""
    if value is None or value.__class__ is str:
        return value
    return iso(value)


def _number(amount: Decimal, currency: str) -> str:
    return number(amount.quantize(_QUANTUM[currency]))


def _or_none(value: str) -> str | None:
    return value or None


def credit_json(row: dict, usage: list[dict] | None = None, *, with_usage: bool = False) -> dict:
    """The seed's credit object from a selectors.credit_rows dict (the list's hot path: amounts
    are pre-rendered numbers, instants text, so rendering needs no callback per value)."""
    cur = row["currency"]
    services = row["applicable_services"] or ["all"]
    extra = row["extra_metadata"] if isinstance(row["extra_metadata"], dict) else {}
    maximum_discount = row["maximum_discount"]
    out = {
        "creditId": row["credit_id"],
        "accountId": row["account__account_id"],
        "type": row["type"],
        "status": row["status"],
        "amount": {
            "original": _number(row["original"], cur),
            "remaining": _number(row["remaining"], cur),
            "used": _number(row["used"], cur),
            "reserved": _number(row["reserved"], cur),
            "currency": cur,
        },
        "price": _number(row["price"], cur),
        "effectiveAt": instant(row["iso_effective_at"]),
        "source": {
            "description": row["description"],
            "referenceId": _or_none(row["reference_id"]),
            "issuedBy": row["issued_by"],
            "reason": _or_none(row["reason"]),
        },
        "dates": {
            "issued": instant(row["iso_issued_at"]),
            "activated": instant(row["iso_activated_at"]),
            "expires": instant(row["iso_expires_at"]),
            "lastUsed": instant(row["iso_last_used_at"]),
        },
        "restrictions": {
            "applicableServices": list(services),
            "minimumSpend": _number(row["minimum_spend"], cur),
            "maximumDiscount": None if maximum_discount is None else _number(maximum_discount, cur),
            "usageLimit": row["usage_limit"],
            "accountRestrictions": list(row["account_restrictions"] or []),
        },
        "metadata": {
            **{k: v for k, v in extra.items() if isinstance(k, str)},
            "campaignId": _or_none(row["campaign_id"]),
            "tags": list(row["tags"] or []),
            "notes": _or_none(row["notes"]),
            "transferable": row["transferable"],
        },
        "approval": {
            "required": row["approval_required"],
            "approvedAt": instant(row["iso_approved_at"]),
            "approvedBy": _or_none(row["approved_by"]),
        },
    }
    if with_usage:
        out["usage"] = usage or []
    return out


def usage_json(entry_values: dict) -> dict:
    """One application of a credit, from a deduction ledger row (selectors.usage_history)."""
    cur = entry_values["currency"]
    return {
        "appliedAt": instant(entry_values["iso_created_at"]),
        "amount": _number(-entry_values["amount"], cur),
        "invoiceId": entry_values["invoice__invoice_id"],
        "invoiceNumber": entry_values["invoice__invoice_number"],
        "description": entry_values["reason"],
    }


def line_json(line, currency: str) -> dict:
    unit = line.unit_price
    return {
        "lineId": line.line_id,
        "kind": line.kind,
        "service": line.service,
        "description": line.description,
        "quantity": line.quantity.normalize(),
        "unitPrice": q(unit, currency) if unit == q(unit, currency) else unit.normalize(),
        "amount": q(line.amount, currency),
        "creditId": line.grant.credit_id if line.grant_id else None,
    }


def invoice_json(invoice, lines=None) -> dict:
    cur = invoice.currency
    out = {
        "invoiceId": invoice.invoice_id,
        "invoiceNumber": invoice.invoice_number,
        "accountId": invoice.account.account_id,
        "status": invoice.status,
        "currency": cur,
        "issueDate": invoice.issue_date,
        "dueDate": invoice.due_date,
        "finalizedAt": invoice.finalized_at,
        "paidAt": invoice.paid_at,
        "voidedAt": invoice.voided_at,
        "amounts": {
            "subtotal": q(invoice.subtotal, cur),
            "credits": q(invoice.credits_total, cur),
            "total": q(invoice.total, cur),
        },
    }
    if lines is not None:
        out["lines"] = [line_json(line, cur) for line in lines]
    return out


def balance_json(balance: Balance) -> dict:
    cur = balance.currency
    return {
        "currency": cur,
        "available": q(balance.available, cur),
        "reserved": q(balance.reserved, cur),
        "pending": q(balance.pending, cur),
        "expiringWithin30Days": q(balance.expiring_30d, cur),
        "total": q(balance.total, cur),
    }


def account_json(account, balances: list[Balance]) -> dict:
    return {
        "accountId": account.account_id,
        "name": account.name,
        "email": account.email,
        "currency": account.currency,
        "autoApplyCredits": account.auto_apply_credits,
        "createdAt": account.created_at,
        "balances": [balance_json(b) for b in balances],
    }


def ledger_entry_json(entry) -> dict:
    cur = entry.currency
    return {
        "entryId": entry.entry_id,
        "kind": entry.kind,
        "amount": q(entry.amount, cur),
        "currency": cur,
        "balanceAfter": q(entry.balance_after, cur),
        "creditId": entry.grant.credit_id,
        "accountId": entry.account.account_id,
        "invoiceId": entry.invoice.invoice_id if entry.invoice_id else None,
        "actor": entry.actor,
        "reason": entry.reason,
        "createdAt": entry.created_at,
    }
