"""The API's JSON shapes, built from model rows (SPEC §8, the seed's credit object).

Plain dict builders rather than DRF serializers: the credits list renders hundreds of nested
objects per request and these keep it cheap. The matching DRF serializers in
billing_api.serializers describe the same shapes for the OpenAPI schema, and schemathesis checks
the two agree. Every amount is quantized to its currency's precision here (JPY has none).
"""

from decimal import Decimal

from credits.money import CURRENCIES, quantum
from credits.selectors import Balance

ZERO = Decimal("0")
# Per-currency quanta, looked up once: these builders quantize ~20 amounts per credit.
_QUANTUM = {c: quantum(c) for c in CURRENCIES}


def q(amount: Decimal, currency: str) -> Decimal:
    """credits.money.q without re-validating the currency (it comes from our own rows)."""
    return amount.quantize(_QUANTUM[currency])


def money(amount: Decimal | None, currency: str) -> Decimal | None:
    return None if amount is None else q(amount, currency)


def _or_none(value: str) -> str | None:
    return value or None


def credit_json(grant, usage: list[dict] | None = None, *, with_usage: bool = False) -> dict:
    cur = grant.currency
    services = grant.applicable_services or ["all"]
    extra = grant.extra_metadata if isinstance(grant.extra_metadata, dict) else {}
    out = {
        "creditId": grant.credit_id,
        "accountId": grant.account.account_id,
        "type": grant.type,
        "status": grant.status,
        "amount": {
            "original": q(grant.original, cur),
            "remaining": q(grant.remaining, cur),
            "used": q(grant.used, cur),
            "reserved": q(grant.reserved, cur),
            "currency": cur,
        },
        "price": q(grant.price, cur),
        "effectiveAt": grant.effective_at,
        "source": {
            "description": grant.description,
            "referenceId": _or_none(grant.reference_id),
            "issuedBy": grant.issued_by,
            "reason": _or_none(grant.reason),
        },
        "dates": {
            "issued": grant.issued_at,
            "activated": grant.activated_at,
            "expires": grant.expires_at,
            "lastUsed": grant.last_used_at,
        },
        "restrictions": {
            "applicableServices": list(services),
            "minimumSpend": q(grant.minimum_spend, cur),
            "maximumDiscount": money(grant.maximum_discount, cur),
            "usageLimit": grant.usage_limit,
            "accountRestrictions": list(grant.account_restrictions or []),
        },
        "metadata": {
            **{k: v for k, v in extra.items() if isinstance(k, str)},
            "campaignId": _or_none(grant.campaign_id),
            "tags": list(grant.tags or []),
            "notes": _or_none(grant.notes),
            "transferable": grant.transferable,
        },
        "approval": {
            "required": grant.approval_required,
            "approvedAt": grant.approved_at,
            "approvedBy": _or_none(grant.approved_by),
        },
    }
    if with_usage:
        out["usage"] = usage or []
    return out


def usage_json(entry_values: dict) -> dict:
    """One application of a credit, from a deduction ledger row (values() dict)."""
    cur = entry_values["currency"]
    return {
        "appliedAt": entry_values["created_at"],
        "amount": q(-entry_values["amount"], cur),
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
