"""Reads of the credits app shared by the admin, the API and the jobs: balances (now and as of
any past instant, from the ledger), expiring credits, the ledger invariant check and the
analytics report. Aggregations run in the database."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import Case, Count, DecimalField, F, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce, TruncMonth
from django.utils import timezone

from credits.models import (
    OPEN_STATUSES,
    USABLE_STATUSES,
    Account,
    CreditGrant,
    EntryKind,
    GrantStatus,
    LedgerEntry,
)
from credits.money import CURRENCIES, q

ZERO = Decimal("0")
MONEY = DecimalField(max_digits=18, decimal_places=2)


def _sum(expr) -> Coalesce:
    return Coalesce(Sum(expr), Value(ZERO), output_field=MONEY)


@dataclass(frozen=True)
class Balance:
    currency: str
    available: Decimal  # usable now: active grants' remaining minus holds
    reserved: Decimal  # held by draft invoices
    pending: Decimal  # issued but not yet usable (future, awaiting approval or spend)
    expiring_30d: Decimal  # usable credit whose expiry is within 30 days

    @property
    def total(self) -> Decimal:
        return self.available + self.reserved + self.pending


def account_balances(account: Account, *, now: datetime | None = None) -> list[Balance]:
    """Per currency, from the grants' running balances (kept equal to the ledger by
    verify_ledger's invariant). A currency with no open grant is omitted."""
    now = now or timezone.now()
    soon = now + timedelta(days=30)
    usable = Q(status__in=USABLE_STATUSES)
    rows = (
        CreditGrant.objects.filter(account=account, status__in=OPEN_STATUSES)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .values("currency")
        .annotate(
            available=_sum(Case(When(usable, then=F("remaining") - F("reserved")), default=ZERO)),
            reserved=_sum(Case(When(usable, then=F("reserved")), default=ZERO)),
            pending=_sum(Case(When(status=GrantStatus.PENDING, then=F("remaining")), default=ZERO)),
            expiring=_sum(
                Case(
                    When(usable & Q(expires_at__lte=soon), then=F("remaining")),
                    default=ZERO,
                )
            ),
        )
        .order_by("currency")
    )
    return [
        Balance(
            currency=r["currency"],
            available=q(r["available"], r["currency"]),
            reserved=q(r["reserved"], r["currency"]),
            pending=q(r["pending"], r["currency"]),
            expiring_30d=q(r["expiring"], r["currency"]),
        )
        for r in rows
    ]


def balance_as_of(account: Account, at: datetime) -> dict[str, Decimal]:
    """The account's credit balance per currency at instant `at`: the sum of its ledger up to
    then. The ledger is append-only, so this is what the balance was, not a reconstruction."""
    rows = (
        LedgerEntry.objects.filter(account=account, created_at__lte=at)
        .values("currency")
        .annotate(balance=Sum("amount"))
        .order_by("currency")
    )
    return {r["currency"]: q(r["balance"], r["currency"]) for r in rows}


def expiring_grants(
    *, within_days: int, now: datetime | None = None, accounts: QuerySet | None = None
) -> QuerySet:
    """Open grants with remaining credit that expire within `within_days` (soonest first)."""
    now = now or timezone.now()
    qs = CreditGrant.objects.filter(
        status__in=OPEN_STATUSES,
        remaining__gt=0,
        expires_at__gt=now,
        expires_at__lte=now + timedelta(days=within_days),
    )
    if accounts is not None:
        qs = qs.filter(account__in=accounts)
    return qs.select_related("account").order_by("expires_at", "effective_at", "pk")


# ---------------------------------------------------------------------------------------------
# verify_ledger


@dataclass(frozen=True)
class LedgerProblem:
    credit_id: str
    problem: str


_VERIFY_SQL = """
SELECT g.credit_id, g.original, g.remaining, g.used, g.reserved,
       COALESCE(l.total, 0), COALESCE(l.used, 0), COALESCE(l.entries, 0), l.last_balance
FROM credits_creditgrant g
LEFT JOIN (
    SELECT grant_id,
           SUM(amount) AS total,
           -SUM(CASE WHEN kind IN ('deduction', 'reversal') THEN amount ELSE 0 END) AS used,
           COUNT(*) AS entries,
           (ARRAY_AGG(balance_after ORDER BY id DESC))[1] AS last_balance
    FROM credits_ledgerentry GROUP BY grant_id
) l ON l.grant_id = g.id
WHERE COALESCE(l.total, 0) <> g.remaining
   OR COALESCE(l.used, 0) <> g.used
   OR g.remaining < 0 OR g.remaining > g.original
   OR g.reserved < 0 OR g.reserved > g.remaining
   OR l.last_balance IS DISTINCT FROM g.remaining
ORDER BY g.id
"""


def ledger_problems() -> list[LedgerProblem]:
    """Every grant breaking SPEC §5: remaining == sum(ledger), 0 <= remaining <= original,
    used == -(deductions + reversals), and the last entry's balance_after == remaining.
    One set-based query on PostgreSQL; per-grant aggregation elsewhere."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_VERIFY_SQL)
            rows = cursor.fetchall()
    else:
        rows = _verify_rows_portable()
    problems = []
    cents = Decimal("0.01")  # every money column has 2 places; SQLite sums may drop them
    for credit_id, original, remaining, used, reserved, total, lused, entries, last in rows:
        total, lused = Decimal(total).quantize(cents), Decimal(lused).quantize(cents)
        reasons = []
        if entries == 0:
            reasons.append("has no ledger entries")
        if total != remaining:
            reasons.append(f"remaining {remaining} != ledger sum {total}")
        if lused != used:
            reasons.append(f"used {used} != deductions less reversals {lused}")
        if remaining < 0 or remaining > original:
            reasons.append(f"remaining {remaining} outside 0..{original}")
        if reserved < 0 or reserved > remaining:
            reasons.append(f"reserved {reserved} outside 0..{remaining}")
        if entries and last != remaining:
            reasons.append(f"last balance_after {last} != remaining {remaining}")
        problems.append(LedgerProblem(credit_id, "; ".join(reasons)))
    return problems


def _verify_rows_portable():
    sums = {
        r["grant_id"]: r
        for r in LedgerEntry.objects.values("grant_id")
        .order_by()
        .annotate(
            total=Sum("amount"),
            used=-_sum(
                Case(
                    When(kind__in=[EntryKind.DEDUCTION, EntryKind.REVERSAL], then=F("amount")),
                    default=ZERO,
                )
            ),
            entries=Count("id"),
        )
    }
    last = {}
    # Write order (id), not created_at: a service's `now` is read before it waits for the
    # grant's lock, so the entry written last may carry the earlier timestamp.
    for grant_id, balance in LedgerEntry.objects.order_by("grant_id", "id").values_list(
        "grant_id", "balance_after"
    ):
        last[grant_id] = balance
    out = []
    for g in CreditGrant.objects.order_by("pk").values_list(
        "pk", "credit_id", "original", "remaining", "used", "reserved"
    ):
        pk, credit_id, original, remaining, used, reserved = g
        s = sums.get(pk, {"total": ZERO, "used": ZERO, "entries": 0})
        row = (
            credit_id,
            original,
            remaining,
            used,
            reserved,
            # SQLite sums money as binary floats (2.01 - 0.50 - 1.51 != 0): back to 2 places.
            Decimal(s["total"]).quantize(Decimal("0.01")),
            Decimal(s["used"] or ZERO).quantize(Decimal("0.01")),
            s["entries"],
            last.get(pk),
        )
        if (
            row[5] != remaining
            or row[6] != used
            or remaining < 0
            or remaining > original
            or reserved < 0
            or reserved > remaining
            or row[8] != remaining
        ):
            out.append(row)
    return out


# ---------------------------------------------------------------------------------------------
# Analytics: the seed's generate_comprehensive_credit_report, computed in the database


def credit_report(grants: QuerySet, *, currency: str | None = None) -> dict:
    """Lifecycle, per-type, per-source (issuedBy) and monthly figures over `grants`, per currency
    (amounts in different currencies are never added together)."""
    used_expr = F("used")
    expired_amount = Case(
        When(status=GrantStatus.EXPIRED, then=F("original") - F("used")), default=ZERO
    )
    currencies = [currency] if currency else CURRENCIES
    out = {}
    for cur in currencies:
        qs = grants.filter(currency=cur)
        totals = qs.aggregate(
            count=Count("id"),
            issued=_sum("original"),
            used_sum=_sum(used_expr),
            remaining_sum=_sum("remaining"),
            expired=_sum(expired_amount),
            activated=Count("id", filter=Q(status=GrantStatus.ACTIVE, used__gt=0)),
            partially_used=Count(
                "id", filter=Q(status=GrantStatus.ACTIVE, used__gt=0, used__lt=F("original"))
            ),
            fully_used=Count("id", filter=Q(used=F("original"))),
            expired_unused=Count("id", filter=Q(status=GrantStatus.EXPIRED, used=0)),
            expired_partial=Count("id", filter=Q(status=GrantStatus.EXPIRED, used__gt=0)),
        )
        if not totals["count"]:
            continue
        totals = _unalias(totals)
        by_type = [
            _unalias(row)
            for row in qs.values("type")
            .annotate(
                count=Count("id"),
                issued=_sum("original"),
                used_sum=_sum(used_expr),
                remaining_sum=_sum("remaining"),
            )
            .order_by("type")
        ]
        by_source = [
            _unalias(row)
            for row in qs.values("issued_by")
            .annotate(count=Count("id"), issued=_sum("original"), used_sum=_sum(used_expr))
            .order_by("-issued", "issued_by")
        ]
        monthly = [
            _unalias(row)
            for row in qs.annotate(month=TruncMonth("issued_at"))
            .values("month")
            .annotate(
                count=Count("id"),
                issued=_sum("original"),
                used_sum=_sum(used_expr),
                expired=_sum(expired_amount),
            )
            .order_by("month")
        ]
        out[cur] = {
            "totals": totals,
            "utilization_rate": _rate(totals["used"], totals["issued"]),
            "by_type": by_type,
            "by_source": by_source,
            "monthly": monthly,
        }
    return out


def _unalias(row: dict) -> dict:
    """Aggregates cannot be named like the fields they read (used, remaining): they are
    computed as `<name>_sum` and handed back under the field's name."""
    return {k.removesuffix("_sum") if k.endswith("_sum") else k: v for k, v in row.items()}


def _rate(part: Decimal, whole: Decimal) -> Decimal:
    """A percentage with one decimal, as the seed prints it."""
    if not whole:
        return Decimal("0.0")
    return (Decimal(100) * part / whole).quantize(Decimal("0.1"))


def expiring_totals(*, within_days: int = 30, now: datetime | None = None, accounts=None):
    """Per currency: the remaining credit expiring within the window (for the dashboard)."""
    totals = defaultdict(lambda: ZERO)
    for row in (
        expiring_grants(within_days=within_days, now=now, accounts=accounts)
        .order_by()
        .values("currency")
        .annotate(total=Sum("remaining"))
    ):
        totals[row["currency"]] = q(row["total"], row["currency"])
    return dict(totals)
