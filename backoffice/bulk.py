"""Bulk issue from a CSV (a campaign): parse, preview with per-row errors, then issue all or
nothing.

The preview is a dry run of the real thing: every row goes through credits.services.grant_issue
inside a transaction that is then rolled back, so it shows exactly the errors the service would
raise (precision of the amount for its currency, expiry dates, thresholds...). Confirming runs
the same calls in one transaction: one failing row rolls every row back.
"""

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from decimal import Decimal

from django.db import transaction
from django.utils.dateparse import parse_date, parse_datetime

from credits.actors import Actor
from credits.exceptions import DomainError
from credits.models import Account, CreditGrant
from credits.money import parse_amount
from credits.services import grant_issue

MAX_ROWS = 5000
MAX_BYTES = 2 * 1024 * 1024
REQUIRED = ("account_id", "amount")
KNOWN = {
    "account_id",
    "amount",
    "currency",
    "type",
    "price",
    "expiration_days",
    "expires_at",
    "effective_at",
    "description",
    "reference_id",
    "issued_by",
    "reason",
    "campaign_id",
    "applicable_services",
    "minimum_spend",
    "maximum_discount",
    "usage_limit",
    "account_restrictions",
    "tags",
    "notes",
    "transferable",
}
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"", "0", "false", "no", "n", "off"}


class BulkError(Exception):
    """The file as a whole cannot be read (not a row's problem)."""


@dataclass
class Row:
    line: int
    values: dict[str, str]
    kwargs: dict | None = None
    errors: list[str] = field(default_factory=list)
    credit_id: str = ""
    status: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors

    def shown(self, name: str) -> str:
        """A field as it will be issued (defaults applied), else as typed in the file."""
        if self.kwargs and self.kwargs.get(name):
            return self.kwargs[name]
        return self.values.get(name, "")

    @property
    def currency(self) -> str:
        return self.shown("currency")

    @property
    def type(self) -> str:
        return self.shown("type")

    @property
    def campaign_id(self) -> str:
        return self.shown("campaign_id")


@dataclass
class Batch:
    rows: list[Row]

    @property
    def errors(self) -> int:
        return sum(1 for r in self.rows if not r.ok)

    @property
    def ok(self) -> bool:
        return bool(self.rows) and self.errors == 0

    def totals(self) -> list[tuple[str, int, Decimal]]:
        """Per currency: rows and the amount they would issue (for the preview's summary)."""
        count: dict[str, int] = defaultdict(int)
        amount: dict[str, Decimal] = defaultdict(Decimal)
        for r in self.rows:
            if r.kwargs:
                cur = r.kwargs["currency"]
                count[cur] += 1
                amount[cur] += parse_amount(r.kwargs["amount"], cur)
        return [(cur, count[cur], amount[cur]) for cur in sorted(count)]


def decode(raw: bytes) -> str:
    if len(raw) > MAX_BYTES:
        raise BulkError(f"The file is larger than {MAX_BYTES // 1024 // 1024} MB.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BulkError("The file is not UTF-8 text.") from None


def parse(text: str, defaults: dict[str, str]) -> Batch:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise BulkError(f"Missing column(s): {', '.join(missing)}. Found: {', '.join(header)}.")
    unknown = [h for h in header if h and h not in KNOWN]
    if unknown:
        raise BulkError(f"Unknown column(s): {', '.join(unknown)}.")
    rows = []
    for i, raw in enumerate(reader, start=2):
        values = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k}
        if not any(values.values()):
            continue
        rows.append(Row(line=i, values=values))
        if len(rows) > MAX_ROWS:
            raise BulkError(f"At most {MAX_ROWS} rows per file.")
    if not rows:
        raise BulkError("The file has no rows.")
    accounts = {
        a.account_id: a
        for a in Account.objects.filter(account_id__in={r.values["account_id"] for r in rows})
    }
    for row in rows:
        _build(row, defaults, accounts)
    return Batch(rows)


def _build(row: Row, defaults: dict[str, str], accounts: dict[str, Account]) -> None:
    v = {k: (row.values.get(k) or defaults.get(k) or "") for k in KNOWN}
    account = accounts.get(v["account_id"])
    if account is None:
        row.errors.append(f"account {v['account_id']!r} does not exist")
    if not v["amount"]:
        row.errors.append("amount is required")
    days = None
    if v["expiration_days"]:
        if not v["expiration_days"].isdigit():
            row.errors.append("expiration_days must be a whole number of days")
        else:
            days = int(v["expiration_days"])
    if row.values.get("expires_at"):
        days = None  # a date in the row beats the form's default number of days
    dates = {}
    for name in ("expires_at", "effective_at"):
        if v[name]:
            parsed = _parse_when(v[name])
            if parsed is None:
                row.errors.append(f"{name} {v[name]!r} is not a date (YYYY-MM-DD or ISO 8601)")
            dates[name] = parsed
    if v["transferable"].lower() not in _TRUE | _FALSE:
        row.errors.append("transferable must be yes or no")
    if row.errors:
        return
    row.kwargs = {
        "account": account,
        "type": v["type"],
        "amount": v["amount"],
        "currency": v["currency"] or account.currency,
        "price": v["price"] or None,
        "expiration_days": days,
        "expires_at": dates.get("expires_at"),
        "effective_at": dates.get("effective_at"),
        "description": v["description"],
        "reference_id": v["reference_id"],
        "issued_by": v["issued_by"],
        "reason": v["reason"],
        "campaign_id": v["campaign_id"],
        "applicable_services": _list(v["applicable_services"]) or None,
        "minimum_spend": v["minimum_spend"] or "0",
        "maximum_discount": v["maximum_discount"] or None,
        "usage_limit": v["usage_limit"] or "unlimited",
        "account_restrictions": _list(v["account_restrictions"]),
        "tags": _list(v["tags"]),
        "notes": v["notes"],
        "transferable": v["transferable"].lower() in _TRUE,
    }
    try:
        parse_amount(row.kwargs["amount"], row.kwargs["currency"])
    except DomainError as exc:
        row.errors.append(exc.message)
        row.kwargs = None


def _list(text: str) -> list[str]:
    return [p.strip() for p in text.replace("|", ";").replace(",", ";").split(";") if p.strip()]


def _parse_when(text: str) -> datetime | None:
    moment = parse_datetime(text)
    if moment is not None:
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    day = parse_date(text)
    return datetime.combine(day, time.min, tzinfo=UTC) if day else None


class _DryRun(Exception):
    pass


def dry_run(batch: Batch, actor: Actor) -> Batch:
    """Run every parsed row through the service, then roll everything back."""
    try:
        with transaction.atomic():
            _issue_rows(batch, actor, stop_at_first=False)
            raise _DryRun
    except _DryRun:
        pass
    return batch


def issue(batch: Batch, actor: Actor) -> list[CreditGrant]:
    """All or nothing: any failing row rolls back every row (its error is on the row)."""
    if not batch.ok:
        return []
    try:
        with transaction.atomic():
            grants = _issue_rows(batch, actor, stop_at_first=True)
            if not batch.ok:
                raise _DryRun
    except _DryRun:
        for row in batch.rows:
            row.credit_id = row.status = ""
        return []
    return grants


def _issue_rows(batch: Batch, actor: Actor, *, stop_at_first: bool) -> list[CreditGrant]:
    grants = []
    for row in batch.rows:
        if not row.kwargs:
            continue
        try:
            # A savepoint per row: a failing row leaves the others' work intact in a dry run.
            with transaction.atomic():
                grant = grant_issue(actor=actor, **row.kwargs)
        except DomainError as exc:
            row.errors.append(exc.message)
            if stop_at_first:
                break
            continue
        row.credit_id, row.status = grant.credit_id, grant.status
        grants.append(grant)
    return grants
