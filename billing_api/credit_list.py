"""The credits list (GET /v2/billing/credits) on PostgreSQL: its summary read from the grant
summary the database keeps (credits.models.GrantSummary) and its page of credits written as JSON
by PostgreSQL itself, so that a request costs the same for an account of 10 credits as for one
of 10^4 (issue #4's benchmark: bench/api.py).

Elsewhere (SQLite), or with an issue-date window that the summary rows cannot answer, the view
uses the portable path (billing_api.selectors: credits_summary over the grants and
presenters.credit_json). Both give the same answer: tests/api/test_credit_list_fast.py compares
them credit by credit and figure by figure on random data.
"""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg
from django.db import connection
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

from billing_api.selectors import (
    EXPIRY_WARNING_DAYS,
    MAX_EXPIRY_WARNINGS,
    OTHER,
    UNUSED_ANY,
    UNUSED_RESTRICTED,
    WARNING_COLUMNS,
    summaries_from_groups,
)
from credits.exceptions import NotFound
from credits.models import OPEN_STATUSES, USABLE_STATUSES, CreditGrant, GrantStatus
from credits.money import MINOR_UNITS

ZERO = Decimal("0")


_ACCOUNT_PK = (
    "SELECT id FROM credits_account WHERE partner_id = %(partner)s AND account_id = %(account)s"
)


@dataclass(frozen=True)
class CreditQuery:
    """The credits a list request names: one account (its pk) or every account of a partner,
    narrowed by the filters (already validated: known statuses, types and currency)."""

    partner_id: int
    account_id: str | None = None  # the account's external id
    statuses: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    currency: str | None = None
    issued_from: datetime | None = None  # included
    issued_to: datetime | None = None  # excluded

    def queryset(self):
        """The same credits for the ORM (the portable path)."""
        qs = CreditGrant.objects.filter(account__partner_id=self.partner_id)
        if self.account_id is not None:
            qs = qs.filter(account__account_id=self.account_id)
        if self.statuses:
            qs = qs.filter(status__in=self.statuses)
        if self.types:
            qs = qs.filter(type__in=self.types)
        if self.currency:
            qs = qs.filter(currency=self.currency)
        if self.issued_from is not None:
            qs = qs.filter(issued_at__gte=self.issued_from)
        if self.issued_to is not None:
            qs = qs.filter(issued_at__lt=self.issued_to)
        return qs

    def where(self, alias: str, *, summary: bool = False) -> tuple[str, dict]:
        """SQL conditions and parameters on a grant table (or the summary table) `alias`."""
        conds, params = [], {}
        if self.account_id is not None:
            # A subquery run once (an InitPlan): the scan is then on the account's own index.
            conds.append(f"{alias}.account_id = ({_ACCOUNT_PK})")
            params.update(partner=self.partner_id, account=self.account_id)
        else:
            conds.append(
                f"{alias}.account_id IN "  # noqa: S608 (alias is ours; values are parameters)
                "(SELECT id FROM credits_account WHERE partner_id = %(partner)s)"
            )
            params["partner"] = self.partner_id
        if self.statuses:
            conds.append(f"{alias}.status = ANY(%(statuses)s)")
            params["statuses"] = list(self.statuses)
        if self.types:
            conds.append(f"{alias}.type = ANY(%(types)s)")
            params["types"] = list(self.types)
        if self.currency:
            conds.append(f"{alias}.currency = %(currency)s")
            params["currency"] = self.currency
        if not summary:
            if self.issued_from is not None:
                conds.append(f"{alias}.issued_at >= %(issued_from)s")
                params["issued_from"] = self.issued_from
            if self.issued_to is not None:
                conds.append(f"{alias}.issued_at < %(issued_to)s")
                params["issued_to"] = self.issued_to
        return " AND ".join(conds), params

    @property
    def summary_rows_answer(self) -> bool:
        """The summary rows are kept per status, type and currency, not per issue date."""
        return self.issued_from is None and self.issued_to is None


def fast_path() -> bool:
    return connection.vendor == "postgresql"


class _PreparedCursor(psycopg.Cursor):
    """Server-side binding, every query prepared on its connection (Django's own cursors bind
    on the client side, and Django leaves psycopg's automatic preparation off)."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(query, params, prepare=True, binary=binary)


def _fetchall(sql: str, params: dict) -> list[tuple]:
    """Run one of this module's queries as a prepared statement: planning it (~1 ms) and
    sending its text (~10 KB for the page) is paid once per connection, not per request.
    Wrapped like Django's cursors, so query logging and CaptureQueriesContext see it."""
    connection.ensure_connection()
    raw = _PreparedCursor(connection.connection)
    wrapper = CursorDebugWrapper if connection.queries_logged else CursorWrapper
    with wrapper(raw, connection) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


# -- the summary from the summary rows ---------------------------------------------------------

# One round trip: the summary rows of the credits ("S"), and ("W") the credit expiring within
# 30 days, the one figure that depends on the time of the request: a range scan of
# grant_account_open_expiry over that month only, whatever the account's size.
_SUMMARY_SQL = f"""
SELECT 'S', s.currency, s.type, s.status, s.unused, s.restricted,
       sum(s.grants)::bigint, sum(s.remaining), sum(s.used)
FROM credits_grantsummary s
WHERE {{summary_where}}
GROUP BY s.currency, s.type, s.status, s.unused, s.restricted
HAVING sum(s.grants) <> 0
UNION ALL
SELECT 'W', g.currency, '', '', false, false, 0, sum(g.remaining), 0
FROM credits_creditgrant g
WHERE {{where}} AND g.status IN ({", ".join(f"'{s}'" for s in OPEN_STATUSES)})
  AND g.expires_at > %(now)s AND g.expires_at <= %(soon)s
GROUP BY g.currency
UNION ALL
SELECT 'A', '', '', '', false, false, 0, 0, 0
WHERE %(account)s::text IS NULL OR EXISTS ({_ACCOUNT_PK})
"""  # noqa: S608 (fixed text; values are parameters)


def credits_summary(query: CreditQuery, *, now: datetime) -> dict[str, dict]:
    """billing_api.selectors.credits_summary, from the summary rows: what it adds up over every
    credit is read from a few dozen rows, and only the credits expiring within 30 days are
    read one by one."""
    summary_where, params = query.where("s", summary=True)
    where, grant_params = query.where("g")
    params.update(grant_params)
    params.update(now=now, soon=now + timedelta(days=30))
    params.setdefault("account", None)
    rows = _fetchall(_SUMMARY_SQL.format(summary_where=summary_where, where=where), params)
    if not any(row[0] == "A" for row in rows):
        account = query.account_id
        raise NotFound(f"No account {account}.", code="account_not_found", field="accountId")
    groups, expiring = [], {}
    for kind, cur, type_, status, unused, restricted, n, remaining, used in rows:
        if kind == "S":
            bucket = OTHER
            if status == GrantStatus.ACTIVE and unused:
                bucket = UNUSED_RESTRICTED if restricted else UNUSED_ANY
            groups.append((cur, type_, status, bucket, n, remaining, used))
        elif kind == "W":
            expiring[cur] = remaining
    return summaries_from_groups(groups, expiring)


# -- the page, as JSON written by PostgreSQL ----------------------------------------------------
# Each credit is one text value built by concatenation, compact like renderers.dumps (no space
# after ":" or ","); every piece below is an SQL expression that yields JSON text, never NULL.


def _obj(*fields: tuple[str, str]) -> str:
    """A JSON object from (key, JSON text expression) pairs, keys in this order."""
    pieces = []
    for i, (key, value) in enumerate(fields):
        pieces += [f"'{'{' if i == 0 else ','}{json.dumps(key)}:'", value]
    return "(" + " || ".join([*pieces, "'}'"]) + ")"


def _text(expr: str) -> str:
    return f"coalesce(to_json({expr})::text, 'null')"


def _or_null(column: str) -> str:
    """presenters._or_none: an empty text is null."""
    return _text(f"nullif({column}, '')")


def _bool(expr: str) -> str:
    return f"CASE WHEN {expr} THEN 'true' ELSE 'false' END"


# The currency's minor units, for round(): amounts are written at their currency's precision.
_PLACES = "CASE g.currency {} ELSE 2 END".format(
    " ".join(f"WHEN '{c}' THEN {p}" for c, p in MINOR_UNITS.items() if p != 2)
)


def _money(expr: str) -> str:
    return f"coalesce(round({expr}, {_PLACES})::text, 'null')"


def _iso_text(column: str) -> str:
    """billing_api.renderers.iso in SQL: UTC, Z, microseconds only when there are any."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"CASE WHEN date_trunc('second', {column}) = {column}"
        f' THEN to_char({utc}, \'YYYY-MM-DD"T"HH24:MI:SS"Z"\')'
        f' ELSE to_char({utc}, \'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\') END'
    )


def _iso(column: str) -> str:
    return f"""coalesce('"' || {_iso_text(column)} || '"', 'null')"""


def _json_list(column: str, default: str = "[]") -> str:
    """A JSON list column, `default` when it is SQL NULL, JSON null or empty (Python's `or`)."""
    return (
        f"CASE WHEN {column} IS NULL OR {column} IN ('null'::jsonb, '[]'::jsonb)"
        f" THEN '{default}' ELSE {column}::text END"
    )


_METADATA_FIELDS = (
    ("campaignId", "nullif(g.campaign_id, '')"),
    ("tags", f"({_json_list('g.tags')})::jsonb"),
    ("notes", "nullif(g.notes, '')"),
    ("transferable", "g.transferable"),
)
# presenters.credit_json's metadata: the extra keys, then (over them) the four named ones.
_METADATA = (
    "CASE WHEN coalesce(jsonb_typeof(g.extra_metadata), '') <> 'object'"
    " OR g.extra_metadata = '{}'::jsonb THEN "
    + _obj(
        ("campaignId", _or_null("g.campaign_id")),
        ("tags", _json_list("g.tags")),
        ("notes", _or_null("g.notes")),
        ("transferable", _bool("g.transferable")),
    )
    + " ELSE (g.extra_metadata || jsonb_build_object("
    + ", ".join(f"'{k}', {v}" for k, v in _METADATA_FIELDS)
    + "))::text END"
)

_USAGE_ENTRY = _obj(
    ("appliedAt", _iso("l.created_at")),
    ("amount", _money("-l.amount")),
    # Subqueries, not a join: each is one primary-key lookup (a join may hash the invoices).
    ("invoiceId", _text("(SELECT i.invoice_id FROM invoices_invoice i WHERE i.id = l.invoice_id)")),
    (
        "invoiceNumber",
        _text("(SELECT i.invoice_number FROM invoices_invoice i WHERE i.id = l.invoice_id)"),
    ),
    ("description", _text("l.reason")),
)
# A credit with nothing used has no live deduction (used is their sum: verify_ledger).
_USAGE = f"""CASE WHEN g.used = 0 THEN '[]' ELSE coalesce((
    SELECT '[' || string_agg({_USAGE_ENTRY}, ',' ORDER BY l.created_at DESC, l.id DESC) || ']'
    FROM credits_ledgerentry l
    WHERE l.grant_id = g.id AND l.kind = 'deduction'
      AND NOT EXISTS (SELECT 1 FROM credits_ledgerentry r
                      WHERE r.related_entry_id = l.id AND r.kind = 'reversal')
), '[]') END"""  # noqa: S608 (fixed text)

# presenters.credit_json, field for field (tests/api/test_credit_list_fast.py holds them equal).
_CREDIT_FIELDS = (
    ("creditId", _text("g.credit_id")),
    ("accountId", _text("a.account_id")),
    ("type", _text("g.type")),
    ("status", _text("g.status")),
    (
        "amount",
        _obj(
            ("original", _money("g.original")),
            ("remaining", _money("g.remaining")),
            ("used", _money("g.used")),
            ("reserved", _money("g.reserved")),
            ("currency", _text("g.currency")),
        ),
    ),
    ("price", _money("g.price")),
    ("effectiveAt", _iso("g.effective_at")),
    (
        "source",
        _obj(
            ("description", _text("g.description")),
            ("referenceId", _or_null("g.reference_id")),
            ("issuedBy", _text("g.issued_by")),
            ("reason", _or_null("g.reason")),
        ),
    ),
    (
        "dates",
        _obj(
            ("issued", _iso("g.issued_at")),
            ("activated", _iso("g.activated_at")),
            ("expires", _iso("g.expires_at")),
            ("lastUsed", _iso("g.last_used_at")),
        ),
    ),
    (
        "restrictions",
        _obj(
            ("applicableServices", _json_list("g.applicable_services", '["all"]')),
            ("minimumSpend", _money("g.minimum_spend")),
            ("maximumDiscount", _money("g.maximum_discount")),
            ("usageLimit", _text("g.usage_limit")),
            ("accountRestrictions", _json_list("g.account_restrictions")),
        ),
    ),
    ("metadata", f"({_METADATA})"),
    (
        "approval",
        _obj(
            ("required", _bool("g.approval_required")),
            ("approvedAt", _iso("g.approved_at")),
            ("approvedBy", _or_null("g.approved_by")),
        ),
    ),
)


def _page_sql(*, with_usage: bool) -> str:
    fields = [*_CREDIT_FIELDS, ("usage", _USAGE)] if with_usage else _CREDIT_FIELDS
    return f"""
SELECT g.id, {_iso_text("g.issued_at")}, {_obj(*fields)}
FROM credits_creditgrant g
JOIN credits_account a ON a.id = g.account_id
WHERE {{where}}
ORDER BY g.issued_at DESC, g.id DESC
LIMIT {{limit}}
"""  # noqa: S608 (fixed text; values are parameters)


_PAGE_SQL = {with_usage: _page_sql(with_usage=with_usage) for with_usage in (False, True)}


def credit_page(
    query: CreditQuery, *, limit: int, after: tuple[datetime, int] | None, with_usage: bool
) -> list[tuple[int, str, str]]:
    """Up to `limit` credits, newest issued first, after the keyset position `after`
    (issued_at, pk): (pk, issued_at as the API writes it, the credit's JSON)."""
    where, params = query.where("g")
    if after is not None:
        where += (
            " AND (g.issued_at < %(after_at)s OR (g.issued_at = %(after_at)s"
            " AND g.id < %(after_pk)s))"
        )
        params.update(after_at=after[0], after_pk=after[1])
    # The limit is part of the text (one prepared statement per page size): as a parameter, the
    # planner would have to plan for any size and keep re-planning each request instead.
    sql = _PAGE_SQL[with_usage].replace("{where}", where).replace("{limit}", str(int(limit)))
    return _fetchall(sql, params)


_SOONEST_SQL = f"""
SELECT {
    ", ".join(f"g.{c}" if c != "applicable_services" else f"g.{c}::text" for c in WARNING_COLUMNS)
}
FROM credits_creditgrant g
WHERE {{where}} AND g.status IN ({", ".join(f"'{s}'" for s in USABLE_STATUSES)})
  AND g.remaining > 0 AND g.expires_at > %(now)s AND g.expires_at <= %(horizon)s
ORDER BY g.expires_at, g.id
LIMIT {MAX_EXPIRY_WARNINGS}
"""  # noqa: S608 (fixed text; values are parameters)


def soonest_expiring(query: CreditQuery, *, now: datetime) -> list[tuple]:
    """billing_api.selectors.soonest_expiring for `query`."""
    where, params = query.where("g")
    params.update(now=now, horizon=now + timedelta(days=EXPIRY_WARNING_DAYS))
    rows = _fetchall(_SOONEST_SQL.replace("{where}", where), params)
    services = WARNING_COLUMNS.index("applicable_services")
    return [(*r[:services], json.loads(r[services]), *r[services + 1 :]) for r in rows]
