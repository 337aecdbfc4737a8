"""The endpoints of SPEC §8. Each view validates, calls one service or selector, renders.

Partner scoping: every object is looked up through the key's partner (`account__partner`), so
another partner's credit, invoice or account is a 404, exactly like one that does not exist.
Every POST runs in one transaction and honours Idempotency-Key (billing_api.idempotency).
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Q
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from billing_api import credit_list
from billing_api import serializers as s
from billing_api.auth import ApiKeyAuthentication, ApiKeyThrottle, HasScope
from billing_api.filters import (
    DATE_RANGES,
    MAX_DATE,
    MIN_DATE,
    CreditFilter,
    InvoiceFilter,
    LedgerFilter,
    date_window,
    validated,
)
from billing_api.idempotency import HEADER, idempotent
from billing_api.pagination import (
    Ordering,
    decode_cursor,
    encode_cursor,
    paginate,
    parse_limit,
)
from billing_api.presenters import (
    account_json,
    credit_json,
    invoice_json,
    ledger_entry_json,
)
from billing_api.renderers import RawJSON
from billing_api.selectors import (
    balances_for_accounts,
    credit_rows,
    credits_summary,
    empty_summary,
    ledger_balance_as_of,
    recommendations,
    soonest_expiring,
    source_usage_rates,
    usage_history,
)
from credits import allocation
from credits.actors import Actor
from credits.exceptions import NotFound, ValidationFailed
from credits.models import Account, CreditGrant, LedgerEntry
from credits.money import from_minor, parse_amount, q
from credits.selectors import account_balances, balance_as_of, credit_report, expiring_grants
from credits.services import account_create, grant_approve, grant_issue, grant_transfer, grant_void
from invoices.models import Invoice
from invoices.services import (
    credits_bulk_apply,
    invoice_apply_credit,
    invoice_create,
    invoice_finalize,
    invoice_optimize,
    invoice_pay,
    invoice_void,
)

CREDITS_ORDER = Ordering("credits", "issued_at", descending=True)
EXPIRING_ORDER = Ordering("expiring", "expires_at", descending=False)
LEDGER_ORDER = Ordering("ledger", "created_at", descending=True)
INVOICES_ORDER = Ordering("invoices", "created_at", descending=True)
ACCOUNTS_ORDER = Ordering("accounts", "account_id", descending=False)

ERRORS = {
    400: OpenApiResponse(s.ErrorOut, description="Invalid request (validation_error, ...)."),
    401: OpenApiResponse(s.ErrorOut, description="Missing, unknown or revoked API key."),
    403: OpenApiResponse(s.ErrorOut, description="The key lacks the scope (insufficient_scope)."),
    404: OpenApiResponse(s.ErrorOut, description="Not found, or another partner's."),
    429: OpenApiResponse(s.ErrorOut, description="Rate limited (Retry-After)."),
}
WRITE_ERRORS = {
    **ERRORS,
    409: OpenApiResponse(s.ErrorOut, description="State conflict or Idempotency-Key reused."),
    422: OpenApiResponse(s.ErrorOut, description="A business rule refuses it."),
}
IDEMPOTENCY_PARAM = OpenApiParameter(
    HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="Replays the first response for the same key and body; another body is a 409.",
)
LIST_PARAMS = [
    OpenApiParameter("limit", OpenApiTypes.INT, description="1-500, default 50."),
    OpenApiParameter("cursor", OpenApiTypes.STR, description="nextCursor of the previous page."),
]
USAGE_PARAM = OpenApiParameter(
    "includeUsageHistory", OpenApiTypes.BOOL, description="Add each credit's usage[]."
)
MAX_QUERY_VALUE = 1000


def _bool_param(params, name: str, default: bool = False) -> bool:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ValidationFailed(f"{name} must be true or false, got {raw!r}.", field=name)


def _int_param(params, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(f"{name} must be a whole number, got {raw!r}.", field=name) from None
    if not low <= value <= high:
        raise ValidationFailed(f"{name} must be between {low} and {high}.", field=name)
    return value


def _instant_param(params, name: str) -> datetime | None:
    """An ISO 8601 instant (naive means UTC) or a date (its end, UTC)."""
    raw = params.get(name)
    if raw in (None, ""):
        return None
    problem = (
        f"{name} must be an ISO 8601 date or date-time (e.g. 2024-01-31T23:59:59Z), got {raw!r}."
    )
    try:
        at = parse_datetime(raw)
        day = None if at is not None else parse_date(raw)
    except ValueError:
        raise ValidationFailed(problem, field=name) from None
    if at is None and day is None:
        raise ValidationFailed(problem, field=name)
    if day is not None:
        if not MIN_DATE <= day <= MAX_DATE:
            raise ValidationFailed(f"{name} is out of range.", field=name)
        return datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) - timedelta(
            microseconds=1
        )
    if not MIN_DATE.year <= at.year <= MAX_DATE.year:
        raise ValidationFailed(f"{name} is out of range.", field=name)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class BillingView(GenericAPIView):
    """Base of every endpoint: Bearer key, scopes per method, throttle per key."""

    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasScope]
    throttle_classes = [ApiKeyThrottle]
    required_scopes: dict[str, tuple[str, ...]] = {}
    filter_backends: list = []
    pagination_class = None
    # No OPTIONS metadata: the OpenAPI schema is the description (and OPTIONS answers 405).
    metadata_class = None

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        for name, values in request.query_params.lists():
            for value in [name, *values]:
                # PostgreSQL cannot hold NUL; such a value can match nothing and is refused.
                if "\x00" in value or len(value) > MAX_QUERY_VALUE:
                    raise ValidationFailed(
                        f"Query parameter {name[:50]!r} has an invalid value.", field=name[:50]
                    )

    # -- scoping -------------------------------------------------------------------------------

    @property
    def partner(self):
        return self.request.user.partner

    @property
    def actor(self) -> Actor:
        return Actor.for_api_key(self.request.auth)

    def accounts(self):
        return Account.objects.filter(partner=self.partner)

    def grants(self):
        return CreditGrant.objects.filter(account__partner=self.partner)

    def invoices(self):
        return Invoice.objects.filter(account__partner=self.partner)

    def get_account(self, account_id, field: str = "accountId") -> Account:
        account = self.accounts().filter(account_id=str(account_id)).first()
        if account is None:
            raise NotFound(f"No account {account_id}.", code="account_not_found", field=field)
        return account

    def get_credit(self, credit_id, *, lock_free: bool = True) -> CreditGrant:
        grant = self.grants().select_related("account").filter(credit_id=credit_id).first()
        if grant is None:
            raise NotFound(f"No credit {credit_id}.", code="credit_not_found")
        return grant

    def get_invoice(self, invoice_id, field: str | None = None) -> Invoice:
        invoice = self.invoices().select_related("account").filter(invoice_id=invoice_id).first()
        if invoice is None:
            raise NotFound(f"No invoice {invoice_id}.", code="invoice_not_found", field=field)
        return invoice

    def valid(self, serializer_class):
        serializer = serializer_class(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def credit_body(self, grant, *, with_usage: bool = True) -> dict:
        row = credit_rows(CreditGrant.objects.filter(pk=grant.pk)).get()
        usage = usage_history([grant.pk]) if with_usage else {}
        return credit_json(row, usage.get(grant.pk), with_usage=with_usage)

    def invoice_body(self, invoice) -> dict:
        invoice = Invoice.objects.select_related("account").get(pk=invoice.pk)
        lines = invoice.lines.select_related("grant").order_by("position")
        return invoice_json(invoice, list(lines))


def _as_datetime(value: datetime | str) -> datetime:
    """An IsoInstant value back to the datetime a cursor holds (only the page's last row)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _issued_at(row: dict) -> datetime:
    return _as_datetime(row["iso_issued_at"])


def _expires_at(row: dict) -> datetime:
    return _as_datetime(row["iso_expires_at"])


def _strip_private(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if not k.startswith("_")}


# ---------------------------------------------------------------------------------------------
# Credits


class CreditListView(BillingView):
    required_scopes = {"GET": ("credits:read",)}
    queryset = CreditGrant.objects.none()
    filter_backends = [DjangoFilterBackend]
    filterset_class = CreditFilter

    @extend_schema(
        operation_id="listCredits",
        tags=["credits"],
        parameters=[*LIST_PARAMS, USAGE_PARAM],
        responses={200: s.CreditListOut, **ERRORS},
        summary="List credits with their summary and recommendations",
    )
    def get(self, request):
        query = self.credit_query()
        include_usage = _bool_param(request.query_params, "includeUsageHistory")
        now = timezone.now()
        fast = credit_list.fast_path()
        if fast and query.summary_rows_answer:
            # Also answers whether the account is the partner's (a 404 otherwise).
            summaries = credit_list.credits_summary(query, now=now)
        else:
            if query.account_id is not None:
                self.get_account(query.account_id)
            summaries = credits_summary(query.queryset(), now=now)
        currency = request.query_params.get("currency") or (
            max(summaries, key=lambda c: (summaries[c]["count"], c == "USD", c))
            if summaries
            else "USD"
        )
        summary = summaries.get(currency) or empty_summary(currency)
        expiring = (
            credit_list.soonest_expiring(query, now=now)
            if fast
            else soonest_expiring(query.queryset(), now=now)
        )
        recs = recommendations(expiring, summaries, now=now)
        if fast:
            credits, pagination = self.credit_page_json(query, include_usage)
        else:
            page, pagination = paginate(
                credit_rows(query.queryset()),
                CREDITS_ORDER,
                request.query_params,
                sort_value=_issued_at,
            )
            usage = usage_history([r["id"] for r in page]) if include_usage else {}
            credits = [credit_json(r, usage.get(r["id"]), with_usage=include_usage) for r in page]
        return Response(
            {
                "credits": credits,
                "summary": _strip_private(summary),
                "summaries": [_strip_private(summaries[c]) for c in sorted(summaries)],
                "recommendations": recs,
                "pagination": pagination,
            }
        )

    def credit_query(self) -> credit_list.CreditQuery:
        """The validated filters (CreditFilter: a 400 naming the parameter otherwise)."""
        params = self.request.query_params
        data = validated(CreditFilter, params)
        account_id = params.get("accountId")
        start, end = date_window(data.get("dateRange"), data.get("startDate"), data.get("endDate"))

        def chosen(*names) -> tuple[str, ...] | None:
            # status and status[] (type, type[]) may both be given: both must hold.
            picked = None
            for name in names:
                if data.get(name):
                    values = set(data[name])
                    picked = values if picked is None else picked & values
            return None if picked is None else tuple(sorted(picked))

        return credit_list.CreditQuery(
            partner_id=self.partner.pk,
            # A known account's pk, not a join: the planner then range-scans its own index.
            account_id=str(account_id) if account_id else None,
            statuses=chosen("status", "status[]"),
            types=chosen("type", "type[]"),
            currency=data.get("currency") or None,
            issued_from=start,
            issued_to=end,
        )

    def credit_page_json(self, query, include_usage: bool) -> tuple[RawJSON, dict]:
        """The page as JSON written by PostgreSQL (billing_api.credit_list), with the same
        keyset cursor as paginate()."""
        params = self.request.query_params
        limit = parse_limit(params.get("limit"))
        cursor = params.get("cursor")
        after = decode_cursor(CREDITS_ORDER, cursor) if cursor else None
        rows = credit_list.credit_page(
            query, limit=limit + 1, after=after, with_usage=include_usage
        )
        has_more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = None
        if has_more:
            pk, issued_at, _ = rows[-1]
            next_cursor = encode_cursor(CREDITS_ORDER, _as_datetime(issued_at), pk)
        credits = RawJSON("[" + ",".join(row[2] for row in rows) + "]")
        return credits, {"limit": limit, "hasMore": has_more, "nextCursor": next_cursor}


class CreditDetailView(BillingView):
    required_scopes = {"GET": ("credits:read",)}

    @extend_schema(
        operation_id="getCredit",
        tags=["credits"],
        responses={200: s.CreditOut, **ERRORS},
        summary="One credit, with its usage history",
    )
    def get(self, request, creditId):
        return Response(self.credit_body(self.get_credit(creditId)))


class CreditIssueView(BillingView):
    required_scopes = {"POST": ("credits:issue",)}

    @extend_schema(
        operation_id="issueCredit",
        tags=["credits"],
        request=s.IssueCreditIn,
        parameters=[IDEMPOTENCY_PARAM],
        responses={201: s.CreditOut, **WRITE_ERRORS},
        summary="Issue a credit",
        description=(
            "The recipient is recipientAccountId (or accountId). Without one, a referenceId (or "
            "metadata.originalInvoice) naming one of your invoices issues the credit to that "
            "invoice's account (the seed's refund credits); otherwise 400."
        ),
    )
    @idempotent
    def post(self, request):
        data = self.valid(s.IssueCreditIn)
        restrictions = data.get("restrictions", {})
        metadata = data.get("metadata", {})
        extra = dict(metadata.get("extra", {}))
        account = self._recipient(data, extra)
        currency = data.get("currency") or account.currency
        campaign = data.get("campaignId") or metadata.get("campaignId") or ""
        grant = grant_issue(
            account=account,
            type=data["type"],
            amount=data["amount"],
            currency=currency,
            actor=self.actor,
            expiration_days=data.get("expirationDays"),
            expires_at=data.get("expiresAt"),
            effective_at=data.get("effectiveAt"),
            auto_activate=data["autoActivate"],
            price=data.get("price"),
            description=data.get("description", ""),
            reference_id=data.get("referenceId", ""),
            issued_by=data.get("issuedBy") or metadata.get("issuedBy") or "",
            reason=data.get("reason", ""),
            applicable_services=restrictions.get("applicableServices"),
            minimum_spend=restrictions.get("minimumSpend") or Decimal("0"),
            maximum_discount=restrictions.get("maximumDiscount"),
            usage_limit=restrictions.get("usageLimit", "unlimited"),
            account_restrictions=restrictions.get("accountRestrictions", ()),
            campaign_id=campaign,
            tags=metadata.get("tags", ()),
            notes=metadata.get("notes", ""),
            transferable=metadata.get("transferable", False),
            extra_metadata=extra,
        )
        return Response(self.credit_body(grant), status=201)

    def _recipient(self, data, extra) -> Account:
        account_id = data.get("recipientAccountId") or data.get("accountId")
        if account_id:
            field = "recipientAccountId" if data.get("recipientAccountId") else "accountId"
            return self.get_account(account_id, field)
        for ref in (data.get("referenceId"), extra.get("originalInvoice")):
            if isinstance(ref, str) and ref:
                invoice = (
                    self.invoices()
                    .select_related("account")
                    .filter(Q(invoice_id=ref) | Q(invoice_number=ref))
                    .first()
                )
                if invoice is not None:
                    return invoice.account
        raise ValidationFailed(
            "recipientAccountId is required, unless referenceId (or metadata.originalInvoice) "
            "names one of your invoices, whose account then receives the credit.",
            field="recipientAccountId",
        )


class CreditVoidView(BillingView):
    required_scopes = {"POST": ("credits:void",)}

    @extend_schema(
        operation_id="voidCredit",
        tags=["credits"],
        request=s.ReasonIn,
        parameters=[IDEMPOTENCY_PARAM],
        responses={200: s.CreditOut, **WRITE_ERRORS},
        summary="Void the unused remainder of a credit",
    )
    @idempotent
    def post(self, request, creditId):
        grant = self.get_credit(creditId)
        data = self.valid(s.ReasonIn)
        grant = grant_void(grant=grant, actor=self.actor, reason=data["reason"])
        return Response(self.credit_body(grant))


class CreditApplyView(BillingView):
    required_scopes = {"POST": ("credits:apply",)}

    @extend_schema(
        operation_id="applyCredit",
        tags=["credits"],
        request=s.ApplyIn,
        parameters=[IDEMPOTENCY_PARAM],
        responses={200: s.ApplyOut, **WRITE_ERRORS},
        summary="Apply a credit to an invoice for an exact amount",
        description=(
            "On a pending or overdue invoice the amount is deducted at once; on a draft it is "
            "held (reserved) and deducted when the draft is finalized. All or nothing."
        ),
    )
    @idempotent
    def post(self, request, creditId):
        grant = self.get_credit(creditId)
        data = self.valid(s.ApplyIn)
        invoice = self.get_invoice(data["invoiceId"], field="invoiceId")
        invoice, grant, amount = invoice_apply_credit(
            grant=grant, invoice=invoice, amount=data["amount"], actor=self.actor
        )
        return Response(
            {
                "success": True,
                "creditId": grant.credit_id,
                "invoiceId": invoice.invoice_id,
                "amountApplied": q(amount, invoice.currency),
                "credit": self.credit_body(grant),
                "invoice": self.invoice_body(invoice),
            }
        )


class CreditTransferView(BillingView):
    required_scopes = {"POST": ("credits:transfer",)}

    @extend_schema(
        operation_id="transferCredit",
        tags=["credits"],
        request=s.TransferIn,
        parameters=[IDEMPOTENCY_PARAM],
        responses={200: s.TransferOut, **WRITE_ERRORS},
        summary="Transfer remaining credit to another of your accounts",
    )
    @idempotent
    def post(self, request, creditId):
        grant = self.get_credit(creditId)
        data = self.valid(s.TransferIn)
        to_account = self.get_account(data["toAccountId"], "toAccountId")
        source, target = grant_transfer(
            grant=grant,
            to_account=to_account,
            actor=self.actor,
            amount=data.get("amount"),
            reason=data.get("reason", ""),
        )
        return Response({"from": self.credit_body(source), "to": self.credit_body(target)})


class CreditApproveView(BillingView):
    required_scopes = {"POST": ("credits:approve",)}

    @extend_schema(
        operation_id="approveCredit",
        tags=["credits"],
        request=s.OptionalReasonIn,
        parameters=[IDEMPOTENCY_PARAM],
        responses={200: s.CreditOut, **WRITE_ERRORS},
        summary="Approve a credit above the approval threshold (not with the issuing key)",
    )
    @idempotent
    def post(self, request, creditId):
        grant = self.get_credit(creditId)
        data = self.valid(s.OptionalReasonIn)
        grant = grant_approve(grant=grant, actor=self.actor, reason=data.get("reason", ""))
        return Response(self.credit_body(grant))


class CreditExpiringView(BillingView):
    required_scopes = {"GET": ("credits:read",)}

    @extend_schema(
        operation_id="listExpiringCredits",
        tags=["credits"],
        parameters=[
            OpenApiParameter("daysAhead", OpenApiTypes.INT, description="1-3650, default 30."),
            OpenApiParameter("accountId", OpenApiTypes.STR),
            USAGE_PARAM,
            *LIST_PARAMS,
        ],
        responses={200: s.ExpiringOut, **ERRORS},
        summary="Open credits with remaining credit expiring within daysAhead, soonest first",
    )
    def get(self, request):
        params = request.query_params
        days = _int_param(params, "daysAhead", 30, 1, 3650)
        include_usage = _bool_param(params, "includeUsageHistory")
        accounts = self.accounts()
        if params.get("accountId"):
            accounts = accounts.filter(pk=self.get_account(params["accountId"]).pk)
        now = timezone.now()
        qs = expiring_grants(within_days=days, now=now, accounts=accounts)
        totals = [
            {"currency": r["currency"], "amount": q(r["amount"], r["currency"]), "count": r["n"]}
            for r in qs.order_by("currency")
            .values("currency")
            .annotate(amount=_sum_remaining(), n=Count("id"))
        ]
        page, pagination = paginate(credit_rows(qs), EXPIRING_ORDER, params, sort_value=_expires_at)
        usage = usage_history([r["id"] for r in page]) if include_usage else {}
        return Response(
            {
                "daysAhead": days,
                "credits": [
                    credit_json(r, usage.get(r["id"]), with_usage=include_usage) for r in page
                ],
                "totals": totals,
                "pagination": pagination,
            }
        )


def _sum_remaining():
    from django.db.models import Sum

    return Sum("remaining")


def _planned(plan, grant_by_key, invoice_key: str, currency: str) -> list[dict]:
    amounts: dict[str, int] = {}
    for a in plan.allocations_for_invoice(invoice_key):
        amounts[a.grant_key] = amounts.get(a.grant_key, 0) + a.amount
    out = []
    for key, minor in amounts.items():
        grant = grant_by_key[key]
        out.append(
            {
                "creditId": key,
                "description": grant.description,
                "amount": from_minor(minor, currency),
                "expires": grant.expires_at,
            }
        )
    return out


class CreditOptimizeView(BillingView):
    required_scopes = {"GET": ("credits:read",)}

    @extend_schema(
        operation_id="optimizeInvoice",
        tags=["credits"],
        parameters=[
            OpenApiParameter(
                "strategy",
                OpenApiTypes.STR,
                enum=s.STRATEGIES,
                description="Default maximize_savings.",
            )
        ],
        responses={200: s.OptimizeOut, **ERRORS},
        summary="The best credit plan for one invoice, with a reason per credit; writes nothing",
    )
    def get(self, request, invoiceId):
        invoice = self.get_invoice(invoiceId)
        strategy = request.query_params.get("strategy") or allocation.MAXIMIZE_SAVINGS
        if strategy not in s.STRATEGIES:
            raise ValidationFailed(
                f"strategy must be one of {', '.join(s.STRATEGIES)}.", field="strategy"
            )
        plan, grant_by_key = invoice_optimize(invoice=invoice, strategy=strategy)
        cur = invoice.currency
        total = from_minor(plan.total, cur)
        return Response(
            {
                "invoiceId": invoice.invoice_id,
                "invoiceNumber": invoice.invoice_number,
                "status": invoice.status,
                "currency": cur,
                "strategy": plan.strategy,
                "invoiceAmount": q(invoice.total, cur),
                "totalCredits": total,
                "amountAfterCredits": q(invoice.total - total, cur),
                "exact": plan.exact,
                "creditsToApply": _planned(plan, grant_by_key, invoice.invoice_id, cur),
                "decisions": [
                    {
                        "creditId": d.grant_key,
                        "code": d.code,
                        "reason": d.reason,
                        "amount": from_minor(d.amount, cur),
                    }
                    for d in plan.decisions_for_invoice(invoice.invoice_id)
                ],
            }
        )


class CreditBulkApplyView(BillingView):
    required_scopes = {"POST": ("credits:apply",)}

    @extend_schema(
        operation_id="bulkApplyCredits",
        tags=["credits"],
        request=s.BulkApplyIn,
        parameters=[IDEMPOTENCY_PARAM],
        responses={200: s.BulkApplyOut, **WRITE_ERRORS},
        summary="Plan (dryRun, the default) or apply credits over your open invoices",
    )
    @idempotent
    def post(self, request):
        data = self.valid(s.BulkApplyIn)
        accounts = self.accounts()
        if data.get("accountIds"):
            wanted = set(data["accountIds"])
            accounts = list(accounts.filter(account_id__in=wanted))
            missing = wanted - {a.account_id for a in accounts}
            if missing:
                raise NotFound(
                    f"No account {sorted(missing)[0]}.",
                    code="account_not_found",
                    field="accountIds",
                )
        statuses = data.get("invoiceTypes") or ["pending", "overdue"]
        max_amount = data.get("maxAmount")
        if max_amount is not None:
            max_amount = parse_amount(max_amount, "USD", field="maxAmount", allow_zero=True)
            if (
                max_amount != max_amount.to_integral_value()
                and Invoice.objects.filter(
                    account__in=accounts, status__in=statuses, currency="JPY"
                ).exists()
            ):
                raise ValidationFailed(
                    "maxAmount applies in each currency and JPY has no decimals: "
                    "give a whole number.",
                    field="maxAmount",
                )
        strategy = data.get("strategy") or (
            allocation.MINIMIZE_EXPIRATION
            if data["prioritizeExpiring"]
            else allocation.MAXIMIZE_SAVINGS
        )
        result = credits_bulk_apply(
            accounts=accounts,
            actor=self.actor,
            strategy=strategy,
            invoice_statuses=statuses,
            max_amount=max_amount,
            dry_run=data["dryRun"],
        )
        recs, totals = [], {}
        for invoices, grant_by_key, plan in result.plans:
            for inv in invoices:
                cur = inv.currency
                planned = _planned(plan, grant_by_key, inv.invoice_id, cur)
                if not planned:
                    continue
                credited = sum((p["amount"] for p in planned), Decimal("0"))
                # An applied plan has already lowered inv.total; show what was owed before.
                before = inv.total + credited if result.applied else inv.total
                recs.append(
                    {
                        "invoiceId": inv.invoice_id,
                        "invoiceNumber": inv.invoice_number,
                        "accountId": inv.account.account_id,
                        "currency": cur,
                        "invoiceAmount": q(before, cur),
                        "totalCredits": q(credited, cur),
                        "amountAfterCredits": q(before - credited, cur),
                        "creditsToApply": planned,
                    }
                )
                t = totals.setdefault(cur, {"currency": cur, "amount": Decimal("0"), "count": 0})
                t["amount"] += credited
                t["count"] += 1
        return Response(
            {
                "strategy": strategy,
                "dryRun": data["dryRun"],
                "applied": result.applied and bool(recs),
                "totals": [
                    {**t, "amount": q(t["amount"], t["currency"])}
                    for _, t in sorted(totals.items())
                ],
                "recommendations": recs,
            }
        )


class LedgerView(BillingView):
    required_scopes = {"GET": ("ledger:read",)}
    queryset = LedgerEntry.objects.none()
    filter_backends = [DjangoFilterBackend]
    filterset_class = LedgerFilter

    @extend_schema(
        operation_id="listLedgerEntries",
        tags=["ledger"],
        parameters=LIST_PARAMS,
        responses={200: s.LedgerOut, **ERRORS},
        summary="The append-only credit ledger, newest first",
    )
    def get(self, request):
        params = request.query_params
        base = LedgerEntry.objects.filter(account__partner=self.partner)
        if params.get("accountId"):
            base = LedgerEntry.objects.filter(account_id=self.get_account(params["accountId"]).pk)
        if params.get("creditId"):
            base = base.filter(grant_id=self.get_credit(params["creditId"]).pk)
        qs = self.filter_queryset(base.select_related("grant", "account", "invoice"))
        page, pagination = paginate(qs, LEDGER_ORDER, request.query_params)
        return Response({"entries": [ledger_entry_json(e) for e in page], "pagination": pagination})


class BalanceView(BillingView):
    required_scopes = {"GET": ("credits:read",)}

    @extend_schema(
        operation_id="getBalance",
        tags=["credits"],
        parameters=[
            OpenApiParameter(
                "asOf",
                OpenApiTypes.DATETIME,
                description="Balance at this instant, from the ledger (a date means its end).",
            ),
            OpenApiParameter("accountId", OpenApiTypes.STR, description="Default: all accounts."),
        ],
        responses={200: s.BalanceResponseOut, **ERRORS},
        summary="Credit balance per currency, now or as of a past instant",
    )
    def get(self, request):
        params = request.query_params
        as_of = _instant_param(params, "asOf")
        now = timezone.now()
        at = min(as_of, now) if as_of else now
        account = self.get_account(params["accountId"]) if params.get("accountId") else None
        if account is not None:
            ledger = balance_as_of(account, at)
        else:
            ledger = ledger_balance_as_of(
                LedgerEntry.objects.filter(account__partner=self.partner), at
            )
        current = {}
        if as_of is None:
            if account is not None:
                current = {b.currency: b for b in account_balances(account, now=now)}
            else:
                by_account = balances_for_accounts(
                    list(self.accounts().values_list("pk", flat=True)), now=now
                )
                current = _merge_balances(by_account)
        balances = []
        for cur in sorted(set(ledger) | set(current)):
            row = {"currency": cur, "balance": q(ledger.get(cur, Decimal("0")), cur)}
            if as_of is None:
                b = current.get(cur)
                zero = q(Decimal("0"), cur)
                row.update(
                    available=b.available if b else zero,
                    reserved=b.reserved if b else zero,
                    pending=b.pending if b else zero,
                    expiringWithin30Days=b.expiring_30d if b else zero,
                )
            balances.append(row)
        return Response(
            {
                "accountId": account.account_id if account else None,
                "asOf": at,
                "balances": balances,
            }
        )


def _merge_balances(by_account):
    from credits.selectors import Balance

    merged: dict[str, Balance] = {}
    for balances in by_account.values():
        for b in balances:
            m = merged.get(b.currency)
            merged[b.currency] = (
                b
                if m is None
                else Balance(
                    currency=b.currency,
                    available=m.available + b.available,
                    reserved=m.reserved + b.reserved,
                    pending=m.pending + b.pending,
                    expiring_30d=m.expiring_30d + b.expiring_30d,
                )
            )
    return merged


class AnalyticsView(BillingView):
    required_scopes = {"GET": ("analytics:read",)}

    @extend_schema(
        operation_id="getCreditAnalytics",
        tags=["analytics"],
        parameters=[
            OpenApiParameter("dateRange", OpenApiTypes.STR, enum=DATE_RANGES),
            OpenApiParameter("startDate", OpenApiTypes.DATE),
            OpenApiParameter("endDate", OpenApiTypes.DATE),
            OpenApiParameter("currency", OpenApiTypes.STR),
            OpenApiParameter("accountId", OpenApiTypes.STR),
        ],
        responses={200: s.AnalyticsOut, **ERRORS},
        summary="Lifecycle, source effectiveness, monthly trends and utilization, per currency",
    )
    def get(self, request):
        params = request.query_params
        date_range = params.get("dateRange") or "all"
        if date_range not in DATE_RANGES:
            raise ValidationFailed(
                f"dateRange must be one of {', '.join(DATE_RANGES)}.", field="dateRange"
            )
        start_day, end_day = (_date_param(params, "startDate"), _date_param(params, "endDate"))
        start, end = date_window(date_range, start_day, end_day)
        grants = self.grants()
        if params.get("accountId"):
            grants = grants.filter(account=self.get_account(params["accountId"]))
        if start is not None:
            grants = grants.filter(issued_at__gte=start)
        if end is not None:
            grants = grants.filter(issued_at__lt=end)
        currency = params.get("currency") or None
        if currency is not None:
            from credits.money import check_currency

            check_currency(currency)
        report = credit_report(grants, currency=currency)
        out = {}
        for cur, r in report.items():
            t = r["totals"]
            rates = source_usage_rates(grants, cur)
            out[cur] = {
                "currency": cur,
                "lifecycle": {
                    "issued": t["count"],
                    "activated": t["activated"],
                    "partiallyUsed": t["partially_used"],
                    "fullyUsed": t["fully_used"],
                    "expiredUnused": t["expired_unused"],
                    "expiredPartial": t["expired_partial"],
                },
                "totals": {
                    "issued": q(t["issued"], cur),
                    "used": q(t["used"], cur),
                    "remaining": q(t["remaining"], cur),
                    "expiredUnused": q(t["expired"], cur),
                },
                "utilizationRate": r["utilization_rate"],
                "byType": [
                    {
                        "type": row["type"],
                        "count": row["count"],
                        "issued": q(row["issued"], cur),
                        "used": q(row["used"], cur),
                        "remaining": q(row["remaining"], cur),
                    }
                    for row in r["by_type"]
                ],
                "sourceEffectiveness": [
                    {
                        "source": row["issued_by"],
                        "count": row["count"],
                        "totalIssued": q(row["issued"], cur),
                        "totalUsed": q(row["used"], cur),
                        "averageUsageRate": rates.get(row["issued_by"], Decimal("0.0")),
                    }
                    for row in r["by_source"]
                ],
                "monthlyTrends": [
                    {
                        "month": row["month"].strftime("%Y-%m"),
                        "issued": row["count"],
                        "amount": q(row["issued"], cur),
                        "used": q(row["used"], cur),
                        "expired": q(row["expired"], cur),
                        "usageRate": _rate(row["used"], row["issued"]),
                    }
                    for row in r["monthly"]
                ],
            }
        return Response(
            {"dateRange": date_range, "startDate": start, "endDate": end, "currencies": out}
        )


def _rate(part: Decimal, whole: Decimal) -> Decimal:
    if not whole:
        return Decimal("0.0")
    return (Decimal(100) * part / whole).quantize(Decimal("0.1"))


def _date_param(params, name: str):
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        day = parse_date(raw)
    except ValueError:
        day = None
    if day is None:
        raise ValidationFailed(f"{name} must be a date (YYYY-MM-DD), got {raw!r}.", field=name)
    return day


# ---------------------------------------------------------------------------------------------
# Invoices


class InvoiceListView(BillingView):
    required_scopes = {"GET": ("invoices:read",), "POST": ("invoices:write",)}
    queryset = Invoice.objects.none()
    filter_backends = [DjangoFilterBackend]
    filterset_class = InvoiceFilter

    @extend_schema(
        operation_id="listInvoices",
        tags=["invoices"],
        parameters=LIST_PARAMS,
        responses={200: s.InvoiceListOut, **ERRORS},
        summary="Your invoices, newest first (status, accountId, currency filters)",
    )
    def get(self, request):
        qs = self.filter_queryset(self.invoices().select_related("account"))
        page, pagination = paginate(qs, INVOICES_ORDER, request.query_params)
        return Response({"invoices": [invoice_json(i) for i in page], "pagination": pagination})

    @extend_schema(
        operation_id="createInvoice",
        tags=["invoices"],
        request=s.InvoiceCreateIn,
        parameters=[IDEMPOTENCY_PARAM],
        responses={201: s.InvoiceOut, **WRITE_ERRORS},
        summary="Create a draft invoice",
    )
    @idempotent
    def post(self, request):
        data = self.valid(s.InvoiceCreateIn)
        account = self.get_account(data["accountId"])
        lines = [
            {
                "service": line["service"],
                "description": line.get("description", ""),
                "quantity": line.get("quantity", Decimal("1")),
                "unit_price": line["unitPrice"],
            }
            for line in data["lines"]
        ]
        invoice = invoice_create(
            account=account,
            currency=data.get("currency") or account.currency,
            lines=lines,
            actor=self.actor,
            due_date=data.get("dueDate"),
            issue_date=data.get("issueDate"),
        )
        return Response(self.invoice_body(invoice), status=201)


class InvoiceDetailView(BillingView):
    required_scopes = {"GET": ("invoices:read",)}

    @extend_schema(
        operation_id="getInvoice",
        tags=["invoices"],
        responses={200: s.InvoiceOut, **ERRORS},
        summary="One invoice with its lines (credit lines are negative and name their credit)",
    )
    def get(self, request, invoiceId):
        return Response(self.invoice_body(self.get_invoice(invoiceId)))


class InvoiceFinalizeView(BillingView):
    required_scopes = {"POST": ("invoices:write",)}

    @extend_schema(
        operation_id="finalizeInvoice",
        tags=["invoices"],
        request=None,
        parameters=[IDEMPOTENCY_PARAM],
        responses={200: s.InvoiceOut, **WRITE_ERRORS},
        summary="Finalize a draft: held credit is deducted, then credits auto-apply",
    )
    @idempotent
    def post(self, request, invoiceId):
        invoice = invoice_finalize(invoice=self.get_invoice(invoiceId), actor=self.actor)
        return Response(self.invoice_body(invoice))


class InvoiceVoidView(BillingView):
    required_scopes = {"POST": ("invoices:write",)}

    @extend_schema(
        operation_id="voidInvoice",
        tags=["invoices"],
        request=s.ReasonIn,
        parameters=[IDEMPOTENCY_PARAM],
        responses={200: s.InvoiceOut, **WRITE_ERRORS},
        summary="Void an invoice: its credit deductions are reversed",
    )
    @idempotent
    def post(self, request, invoiceId):
        invoice = self.get_invoice(invoiceId)
        data = self.valid(s.ReasonIn)
        invoice = invoice_void(invoice=invoice, actor=self.actor, reason=data["reason"])
        return Response(self.invoice_body(invoice))


class InvoicePayView(BillingView):
    required_scopes = {"POST": ("invoices:write",)}

    @extend_schema(
        operation_id="payInvoice",
        tags=["invoices"],
        request=None,
        parameters=[IDEMPOTENCY_PARAM],
        responses={200: s.InvoiceOut, **WRITE_ERRORS},
        summary="Mark a pending or overdue invoice paid",
    )
    @idempotent
    def post(self, request, invoiceId):
        invoice = invoice_pay(invoice=self.get_invoice(invoiceId), actor=self.actor)
        return Response(self.invoice_body(invoice))


# ---------------------------------------------------------------------------------------------
# Accounts


class AccountListView(BillingView):
    required_scopes = {"GET": ("accounts:read",), "POST": ("accounts:write",)}

    @extend_schema(
        operation_id="listAccounts",
        tags=["accounts"],
        parameters=LIST_PARAMS,
        responses={200: s.AccountListOut, **ERRORS},
        summary="Your accounts with their credit balances",
    )
    def get(self, request):
        page, pagination = paginate(self.accounts(), ACCOUNTS_ORDER, request.query_params)
        balances = balances_for_accounts([a.pk for a in page], now=timezone.now())
        return Response(
            {
                "accounts": [account_json(a, balances.get(a.pk, [])) for a in page],
                "pagination": pagination,
            }
        )

    @extend_schema(
        operation_id="createAccount",
        tags=["accounts"],
        request=s.AccountCreateIn,
        parameters=[IDEMPOTENCY_PARAM],
        responses={201: s.AccountOut, **WRITE_ERRORS},
        summary="Create an account owned by your partner",
    )
    @idempotent
    def post(self, request):
        data = self.valid(s.AccountCreateIn)
        account = account_create(
            partner=self.partner,
            account_id=data["accountId"],
            name=data["name"],
            email=data.get("email", ""),
            currency=data["currency"],
            auto_apply_credits=data["autoApplyCredits"],
        )
        return Response(account_json(account, account_balances(account)), status=201)


class AccountDetailView(BillingView):
    required_scopes = {"GET": ("accounts:read",)}

    @extend_schema(
        operation_id="getAccount",
        tags=["accounts"],
        responses={200: s.AccountOut, **ERRORS},
        summary="One account with its credit balances",
    )
    def get(self, request, accountId):
        account = self.get_account(accountId)
        return Response(account_json(account, account_balances(account)))


class WhoAmIView(BillingView):
    """The key's own partner and scopes: lets an integrator check its key (and is the trivial
    endpoint the benchmark compares the credits list with: same auth, scopes and throttle)."""

    required_scopes = {"GET": ()}

    @extend_schema(
        operation_id="whoAmI",
        tags=["auth"],
        responses={200: s.WhoAmIOut, **ERRORS},
        summary="The partner and scopes of the calling API key",
    )
    def get(self, request):
        key = request.auth
        return Response(
            {"partner": self.partner.name, "keyPrefix": key.prefix, "scopes": list(key.scopes)}
        )
