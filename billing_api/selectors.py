"""Reads the partner API needs beyond credits.selectors: the credits list's summary and
recommendations (one aggregate query over the filtered set, whatever its size), usage history
for a page of credits (one query), balances for a page of accounts (one query) and for a whole
partner. Every sum runs in the database."""

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import (
    Avg,
    Case,
    Count,
    DateTimeField,
    DecimalField,
    F,
    Func,
    IntegerField,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from credits.models import (
    OPEN_STATUSES,
    USABLE_STATUSES,
    CreditGrant,
    EntryKind,
    GrantStatus,
    LedgerEntry,
)
from credits.money import CURRENCIES, fmt, q
from credits.selectors import Balance

ZERO = Decimal("0")
MONEY = DecimalField(max_digits=18, decimal_places=2)
EXPIRY_WARNING_DAYS = 90
URGENT_DAYS = 7
MAX_EXPIRY_WARNINGS = 3
# How the seed words services in its recommendations ("GPU cluster or AI service usage").
SERVICE_WORDS = {"clusters": "GPU cluster", "ai-services": "AI service"}


def _when(condition: Q, then=None):
    """Sum of `then` (default: remaining) over the rows meeting `condition` (an aggregate
    FILTER clause where the database has one: cheaper than a CASE per row)."""
    then = F("remaining") if then is None else then
    return Coalesce(Sum(then, filter=condition), Value(ZERO), output_field=MONEY)


# The summary's unused buckets of a grant (never used and usable, with any service or with
# restricted ones) and the rest.
OTHER, UNUSED_ANY, UNUSED_RESTRICTED = 0, 1, 2


def credits_summary(qs: QuerySet, *, now: datetime) -> dict[str, dict]:
    """Per currency: the seed's summary (amounts are remaining credit) plus the never-used
    credit per type that the recommendations speak of. One GROUP BY over the filtered grants,
    on currency, type, status and unused bucket, with the credit expiring within 30 days
    summed apart. (billing_api.credit_list reads the same from the grant summary rows.)"""
    soon = now + timedelta(days=30)
    unrestricted = Q(applicable_services=["all"]) | Q(applicable_services=[])
    never_used = Q(status=GrantStatus.ACTIVE, used=0, remaining__gt=0)
    expiring_soon = Q(status__in=OPEN_STATUSES, expires_at__gt=now, expires_at__lte=soon)
    bucket = Case(
        When(never_used & unrestricted, then=Value(UNUSED_ANY)),
        When(never_used, then=Value(UNUSED_RESTRICTED)),
        default=Value(OTHER),
        output_field=IntegerField(),
    )
    rows = list(
        qs.order_by()
        .annotate(bucket=bucket)
        .values_list("currency", "type", "status", "bucket")
        .annotate(
            n=Count("*"),
            remaining_sum=Sum("remaining"),
            used_sum=Sum("used"),
            expiring_sum=_when(expiring_soon),
        )
    )
    expiring: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for row in rows:
        expiring[row[0]] += row[7]
    return summaries_from_groups([row[:7] for row in rows], expiring)


def summaries_from_groups(groups, expiring: dict[str, Decimal] | None = None) -> dict[str, dict]:
    """The per-currency summaries from groups of credits (currency, type, status, unused bucket,
    count, remaining, used) and the credit expiring within 30 days per currency."""
    out: dict[str, dict] = {}
    # Sorted, so that byType and byStatus list their keys in one order whatever the plan.
    for cur, type_, status, bucket, n, remaining, used in sorted(groups, key=lambda r: r[:4]):
        s = out.get(cur) or out.setdefault(cur, empty_summary(cur))
        s["totalCredits"] += remaining
        s["totalUsed"] += used
        s["count"] += n
        for group, name in (("byType", type_), ("byStatus", status)):
            entry = s[group].setdefault(name, {"amount": ZERO, "count": 0})
            entry["amount"] += remaining
            entry["count"] += n
        if bucket in (UNUSED_ANY, UNUSED_RESTRICTED):
            u = s["_unused"].setdefault(type_, {"any": ZERO, "restricted": ZERO})
            u["any" if bucket == UNUSED_ANY else "restricted"] += remaining
    for cur, amount in (expiring or {}).items():
        s = out.get(cur) or out.setdefault(cur, empty_summary(cur))
        s["expiringWithin30Days"] += amount
    for cur, s in out.items():
        s["totalCredits"] = q(s["totalCredits"], cur)
        s["totalUsed"] = q(s["totalUsed"], cur)
        s["expiringWithin30Days"] = q(s["expiringWithin30Days"], cur)
        for group in ("byType", "byStatus"):
            for entry in s[group].values():
                entry["amount"] = q(entry["amount"], cur)
        s["_unused"] = {t: u for t, u in s["_unused"].items() if u["any"] or u["restricted"]}
    return out


def empty_summary(currency: str) -> dict:
    return {
        "totalCredits": q(ZERO, currency),
        "totalUsed": q(ZERO, currency),
        "byType": {},
        "byStatus": {},
        "expiringWithin30Days": q(ZERO, currency),
        "currency": currency,
        "count": 0,
        "_unused": {},
    }


def _services_phrase(services: list[str]) -> str:
    names = [SERVICE_WORDS.get(s, s.replace("-", " ")) for s in services if s != "all"]
    if not names or "all" in services:
        return "service"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _long_date(at: datetime) -> str:
    return f"{at:%B} {at.day}, {at.year}"


# What a credit's expiration warning reads, in this order (soonest_expiring).
WARNING_COLUMNS = (
    "credit_id",
    "type",
    "currency",
    "remaining",
    "description",
    "expires_at",
    "applicable_services",
    "status",
    "used",
)


def soonest_expiring(qs: QuerySet, *, now: datetime) -> list[tuple]:
    """The (up to 3) usable credits of `qs` expiring soonest within 90 days, as WARNING_COLUMNS
    tuples."""
    return list(
        qs.filter(
            status__in=USABLE_STATUSES,
            remaining__gt=0,
            expires_at__gt=now,
            expires_at__lte=now + timedelta(days=EXPIRY_WARNING_DAYS),
        )
        .order_by("expires_at", "pk")
        .values_list(*WARNING_COLUMNS)[:MAX_EXPIRY_WARNINGS]
    )


def recommendations(
    expiring: list[tuple], summaries: dict[str, dict], *, now: datetime
) -> list[dict]:
    """The seed's recommendations, from the same filtered grants as the summary: a warning for
    each of the (up to 3) usable credits expiring soonest within 90 days (`expiring`, from
    soonest_expiring), then the never-used credit per type (from the summary) that no warning
    names already: each credit is recommended once."""
    out = []
    warned: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(
        lambda: {"any": ZERO, "restricted": ZERO}
    )
    for row in expiring:
        credit_id, type_, currency, remaining, description, expires_at, services, status, used = row
        if status == GrantStatus.ACTIVE and used == 0:
            scope = "any" if services in (["all"], []) else "restricted"
            warned[currency, type_][scope] += remaining
        label = (description.split(" - ")[0].strip() or type_).lower()
        days_left = (expires_at - now).days
        out.append(
            {
                "type": "expiration_warning",
                "priority": "high" if days_left < URGENT_DAYS else "medium",
                "title": f"Use {type_.title()} Credit Before Expiration",
                "description": (
                    f"Your {label} credit of {fmt(remaining, currency)} will expire on "
                    f"{_long_date(expires_at)}. Consider using it for upcoming "
                    f"{_services_phrase(services or ['all'])} usage."
                ),
                "potentialSavings": q(remaining, currency),
                "currency": currency,
                "creditIds": [credit_id],
            }
        )
    unused = []
    for cur, s in summaries.items():
        for type_, unused_amounts in s["_unused"].items():
            named = warned.get((cur, type_), {"any": ZERO, "restricted": ZERO})
            amounts = {k: unused_amounts[k] - named[k] for k in ("any", "restricted")}
            total = amounts["any"] + amounts["restricted"]
            if not total:
                continue
            scope = "any service" if not amounts["restricted"] else "their eligible services"
            unused.append(
                {
                    "type": "unused_credit",
                    "priority": "low",
                    "title": f"Apply {type_.title()} Credit to Outstanding Invoices",
                    "description": (
                        f"You have {fmt(total, cur)} in {type_} credits that can be applied to "
                        f"{scope}. Consider applying to reduce your next invoice."
                    ),
                    "potentialSavings": q(total, cur),
                    "currency": cur,
                    "creditIds": [],
                }
            )
    unused.sort(key=lambda r: (-r["potentialSavings"], r["title"]))
    return out + unused


class IsoInstant(Func):
    """An instant as the API writes it (billing_api.renderers.iso). PostgreSQL formats it itself
    (UTC, `Z`, microseconds only when there are any), which spares Python the parse of every
    timestamptz cell and its formatting: a page of 100 credits has ~500 of them. Elsewhere it is
    the column, read as a datetime, and the presenter formats it (presenters.instant)."""

    arity = 1
    output_field = DateTimeField()

    def as_sql(self, compiler, connection, **extra_context):
        return compiler.compile(self.source_expressions[0])

    def as_postgresql(self, compiler, connection, **extra_context):
        sql, params = compiler.compile(self.source_expressions[0])
        utc = f"({sql}) AT TIME ZONE 'UTC'"
        return (
            f"CASE WHEN date_trunc('second', {sql}) = {sql}"
            f' THEN to_char({utc}, \'YYYY-MM-DD"T"HH24:MI:SS"Z"\')'
            f' ELSE to_char({utc}, \'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\') END',
            (*params, *params, *params, *params),
        )


# What presenters.credit_json reads: the grant's columns, its account's id, and its instants
# (as IsoInstant, named iso_<field>).
CREDIT_COLUMNS = (
    "id",
    "credit_id",
    "account__account_id",
    "type",
    "status",
    "currency",
    "original",
    "remaining",
    "used",
    "reserved",
    "price",
    "description",
    "reference_id",
    "issued_by",
    "reason",
    "applicable_services",
    "minimum_spend",
    "maximum_discount",
    "usage_limit",
    "account_restrictions",
    "campaign_id",
    "tags",
    "notes",
    "transferable",
    "extra_metadata",
    "approval_required",
    "approved_by",
)
CREDIT_INSTANTS = (
    "effective_at",
    "issued_at",
    "activated_at",
    "expires_at",
    "last_used_at",
    "approved_at",
)


def credit_rows(qs: QuerySet) -> QuerySet:
    """`qs` (grants) as the dicts presenters.credit_json renders: plain values, no model
    instances (a page of 100 credits would build 200 of them), one query with their accounts."""
    return qs.values(
        *CREDIT_COLUMNS, **{f"iso_{name}": IsoInstant(name) for name in CREDIT_INSTANTS}
    )


def usage_history(grant_pks: list[int]) -> dict[int, list[dict]]:
    """Live applications (deductions not reversed) per grant, newest first; one query."""
    if not grant_pks:
        return {}
    rows = (
        LedgerEntry.objects.filter(grant_id__in=grant_pks, kind=EntryKind.DEDUCTION)
        .exclude(consequences__kind=EntryKind.REVERSAL)
        .order_by("-created_at", "-id")
        .values(
            "grant_id",
            "amount",
            "currency",
            "reason",
            "invoice__invoice_id",
            "invoice__invoice_number",
            iso_created_at=IsoInstant("created_at"),
        )
    )
    from billing_api.presenters import usage_json

    out: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        out[r["grant_id"]].append(usage_json(r))
    return out


def balances_for_accounts(account_pks: list[int], *, now: datetime) -> dict[int, list[Balance]]:
    """credits.selectors.account_balances for many accounts in one query."""
    if not account_pks:
        return {}
    soon = now + timedelta(days=30)
    usable = Q(status__in=USABLE_STATUSES)
    rows = (
        CreditGrant.objects.filter(account_id__in=account_pks, status__in=OPEN_STATUSES)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .values("account_id", "currency")
        .annotate(
            available_sum=_when(usable, F("remaining") - F("reserved")),
            reserved_sum=_when(usable, F("reserved")),
            pending_sum=_when(Q(status=GrantStatus.PENDING)),
            expiring_sum=_when(usable & Q(expires_at__lte=soon)),
        )
        .order_by("account_id", "currency")
    )
    out: dict[int, list[Balance]] = defaultdict(list)
    for r in rows:
        cur = r["currency"]
        out[r["account_id"]].append(
            Balance(
                currency=cur,
                available=q(r["available_sum"], cur),
                reserved=q(r["reserved_sum"], cur),
                pending=q(r["pending_sum"], cur),
                expiring_30d=q(r["expiring_sum"], cur),
            )
        )
    return out


def ledger_balance_as_of(entries: QuerySet, at: datetime) -> dict[str, Decimal]:
    """Sum of the ledger per currency up to `at` (the balance then), over any set of entries."""
    rows = (
        entries.filter(created_at__lte=at)
        .order_by()
        .values("currency")
        .annotate(balance=Sum("amount"))
        .order_by("currency")
    )
    return {r["currency"]: q(r["balance"], r["currency"]) for r in rows}


def source_usage_rates(grants: QuerySet, currency: str) -> dict[str, Decimal]:
    """Per issuedBy: the average of each credit's used/original in percent (the seed's
    'Average Usage Rate'), one decimal."""
    rows = (
        grants.filter(currency=currency)
        .order_by()
        .values("issued_by")
        .annotate(rate=Avg(F("used") * Value(Decimal("100")) / F("original"), output_field=MONEY))
    )
    return {r["issued_by"]: Decimal(r["rate"] or 0).quantize(Decimal("0.1")) for r in rows}


__all__ = ["CURRENCIES"]
