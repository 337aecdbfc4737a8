"""Input serializers (validation of bodies) and output serializers (the OpenAPI description of
the shapes billing_api.presenters builds). Field names are the seed's camelCase."""

from datetime import date
from decimal import Decimal, InvalidOperation

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from credits.models import EntryKind, GrantStatus, GrantType, UsageLimit
from credits.money import CURRENCY_CHOICES, MAX_AMOUNT
from invoices.models import InvoiceStatus, LineKind

ID_MAX = 64
MAX_TAGS = 50
MAX_EXTRA_METADATA = 20
MAX_LINE_AMOUNT = Decimal("999999999999.99")
MIN_DOCUMENT_DATE = date(2000, 1, 1)
MAX_DOCUMENT_DATE = date(2999, 12, 31)


@extend_schema_field({"type": "number", "minimum": 0, "maximum": float(MAX_AMOUNT)})
class MoneyField(serializers.Field):
    """An amount: a JSON number (parsed as Decimal from its text) or a numeric string. Its
    precision is checked against the currency by the service (0.001 USD, 1.5 JPY: 400)."""

    default_error_messages = {
        "invalid": "Must be a decimal number (a JSON number or a numeric string).",
        "range": f"Must be between 0 and {MAX_AMOUNT}.",
    }

    def to_internal_value(self, data) -> Decimal:
        if isinstance(data, bool) or not isinstance(data, Decimal | int | str):
            self.fail("invalid")
        try:
            value = data if isinstance(data, Decimal) else Decimal(str(data).strip())
        except (InvalidOperation, ValueError):
            self.fail("invalid")
        if not value.is_finite():
            self.fail("invalid")
        if value < 0 or value > MAX_AMOUNT:
            self.fail("range")
        return value

    def to_representation(self, value):
        return value


@extend_schema_field({"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1e12})
class QuantityField(MoneyField):
    """A line's quantity or unit price: up to 6 decimals (checked by the invoices service)."""

    def to_internal_value(self, data) -> Decimal:
        value = super().to_internal_value(data)
        if value >= Decimal(10) ** 12:
            self.fail("range")
        return value


class RestrictionsIn(serializers.Serializer):
    applicableServices = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, max_length=50
    )
    minimumSpend = MoneyField(required=False)
    maximumDiscount = MoneyField(required=False, allow_null=True)
    usageLimit = serializers.ChoiceField(choices=UsageLimit.choices, required=False)
    accountRestrictions = serializers.ListField(
        child=serializers.CharField(max_length=ID_MAX), required=False, max_length=100
    )


def _plain(value, depth=0):
    """Extra metadata stored as JSON: exact numbers with a fraction are kept as strings."""
    if depth > 4:
        raise serializers.ValidationError("metadata is nested too deeply.")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k)[:64]: _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, str) and len(value) > 2000:
        raise serializers.ValidationError("metadata values are limited to 2000 characters.")
    return value


class MetadataIn(serializers.Serializer):
    """Known keys plus any others (kept as the credit's extra metadata, e.g. originalInvoice)."""

    tags = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, max_length=MAX_TAGS
    )
    transferable = serializers.BooleanField(required=False)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    issuedBy = serializers.CharField(required=False, allow_blank=True, max_length=200)
    campaignId = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=200
    )

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError("metadata must be an object.")
        known = super().to_internal_value(data)
        extra = {k: v for k, v in data.items() if k not in self.fields}
        if len(extra) > MAX_EXTRA_METADATA:
            raise serializers.ValidationError(
                f"metadata allows at most {MAX_EXTRA_METADATA} extra keys."
            )
        known["extra"] = _plain(extra)
        return known


def _plausible_instant(value):
    if value is not None and not MIN_DOCUMENT_DATE.year <= value.year <= MAX_DOCUMENT_DATE.year:
        raise serializers.ValidationError(
            f"must be between {MIN_DOCUMENT_DATE} and {MAX_DOCUMENT_DATE}."
        )
    return value


class IssueCreditIn(serializers.Serializer):
    type = serializers.ChoiceField(choices=GrantType.choices)
    recipientAccountId = serializers.CharField(required=False, max_length=ID_MAX)
    accountId = serializers.CharField(required=False, max_length=ID_MAX)
    amount = MoneyField()
    currency = serializers.ChoiceField(choices=CURRENCY_CHOICES, required=False)
    price = MoneyField(required=False, allow_null=True)
    campaignId = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=200
    )
    description = serializers.CharField(required=False, allow_blank=True, max_length=500)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    referenceId = serializers.CharField(required=False, allow_blank=True, max_length=200)
    issuedBy = serializers.CharField(required=False, allow_blank=True, max_length=200)
    expirationDays = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=3650
    )
    expiresAt = serializers.DateTimeField(
        required=False, allow_null=True, validators=[_plausible_instant]
    )
    effectiveAt = serializers.DateTimeField(
        required=False, allow_null=True, validators=[_plausible_instant]
    )
    autoActivate = serializers.BooleanField(required=False, default=True)
    restrictions = RestrictionsIn(required=False)
    metadata = MetadataIn(required=False)


class ApplyIn(serializers.Serializer):
    invoiceId = serializers.CharField(max_length=ID_MAX)
    amount = MoneyField()


class TransferIn(serializers.Serializer):
    toAccountId = serializers.CharField(max_length=ID_MAX)
    amount = MoneyField(required=False, allow_null=True, help_text="Default: all available.")
    reason = serializers.CharField(required=False, allow_blank=True, max_length=5000)


class ReasonIn(serializers.Serializer):
    reason = serializers.CharField(max_length=5000)


class OptionalReasonIn(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=5000)


STRATEGIES = ["minimize_expiration", "expiring_first", "maximize_savings"]


class BulkApplyIn(serializers.Serializer):
    strategy = serializers.ChoiceField(
        choices=STRATEGIES,
        required=False,
        help_text="Default: minimize_expiration if prioritizeExpiring, else maximize_savings.",
    )
    invoiceTypes = serializers.ListField(
        child=serializers.ChoiceField(choices=["pending", "overdue"]),
        required=False,
        min_length=1,
        max_length=2,
    )
    prioritizeExpiring = serializers.BooleanField(required=False, default=True)
    maxAmount = MoneyField(required=False, allow_null=True)
    dryRun = serializers.BooleanField(
        required=False,
        default=True,
        help_text="Default true: answer the plan, write nothing. false applies it.",
    )
    accountIds = serializers.ListField(
        child=serializers.CharField(max_length=ID_MAX), required=False, max_length=1000
    )


class LineIn(serializers.Serializer):
    service = serializers.CharField(max_length=64)
    description = serializers.CharField(required=False, allow_blank=True, max_length=500)
    quantity = QuantityField(required=False)
    unitPrice = QuantityField()


def _plausible_date(value):
    if not MIN_DOCUMENT_DATE <= value <= MAX_DOCUMENT_DATE:
        raise serializers.ValidationError(
            f"must be between {MIN_DOCUMENT_DATE} and {MAX_DOCUMENT_DATE}."
        )
    return value


class InvoiceCreateIn(serializers.Serializer):
    accountId = serializers.CharField(max_length=ID_MAX)
    currency = serializers.ChoiceField(choices=CURRENCY_CHOICES, required=False)
    issueDate = serializers.DateField(required=False, validators=[_plausible_date])
    dueDate = serializers.DateField(required=False, allow_null=True, validators=[_plausible_date])
    lines = serializers.ListField(child=LineIn(), min_length=1, max_length=500)

    def validate_lines(self, lines):
        # The invoice's columns hold 16 integer digits: refuse what could not be stored.
        total = Decimal("0")
        for i, line in enumerate(lines):
            amount = line.get("quantity", Decimal("1")) * line["unitPrice"]
            if amount > MAX_LINE_AMOUNT:
                raise serializers.ValidationError(
                    f"lines[{i}]: quantity x unitPrice exceeds {MAX_LINE_AMOUNT}."
                )
            total += amount
        if total > MAX_LINE_AMOUNT:
            raise serializers.ValidationError(f"The invoice total exceeds {MAX_LINE_AMOUNT}.")
        return lines


class AccountCreateIn(serializers.Serializer):
    accountId = serializers.RegexField(r"^[A-Za-z0-9_.:\-]{1,64}$", max_length=ID_MAX)
    name = serializers.CharField(max_length=200)
    email = serializers.EmailField(required=False, allow_blank=True, max_length=254)
    currency = serializers.ChoiceField(choices=CURRENCY_CHOICES, required=False, default="USD")
    autoApplyCredits = serializers.BooleanField(required=False, default=True)


# ---------------------------------------------------------------------------------------------
# Output shapes (documentation of billing_api.presenters)

Money = MoneyField
Instant = serializers.DateTimeField


class AmountOut(serializers.Serializer):
    original = Money()
    remaining = Money()
    used = Money()
    reserved = Money()
    currency = serializers.ChoiceField(choices=CURRENCY_CHOICES)


class SourceOut(serializers.Serializer):
    description = serializers.CharField(allow_blank=True)
    referenceId = serializers.CharField(allow_null=True)
    issuedBy = serializers.CharField(allow_blank=True)
    reason = serializers.CharField(allow_null=True)


class DatesOut(serializers.Serializer):
    issued = Instant()
    activated = Instant(allow_null=True)
    expires = Instant(allow_null=True)
    lastUsed = Instant(allow_null=True)


class RestrictionsOut(serializers.Serializer):
    applicableServices = serializers.ListField(child=serializers.CharField())
    minimumSpend = Money()
    maximumDiscount = Money(allow_null=True)
    usageLimit = serializers.ChoiceField(choices=UsageLimit.choices)
    accountRestrictions = serializers.ListField(child=serializers.CharField())


class UsageOut(serializers.Serializer):
    appliedAt = Instant()
    amount = Money()
    invoiceId = serializers.CharField()
    invoiceNumber = serializers.CharField()
    description = serializers.CharField(allow_blank=True)


@extend_schema_field(
    {
        "type": "object",
        "properties": {
            "campaignId": {"type": "string", "nullable": True},
            "tags": {"type": "array", "items": {"type": "string"}},
            "notes": {"type": "string", "nullable": True},
            "transferable": {"type": "boolean"},
        },
        "required": ["campaignId", "tags", "notes", "transferable"],
        "additionalProperties": True,
    }
)
class MetadataOut(serializers.DictField):
    pass


class ApprovalOut(serializers.Serializer):
    required = serializers.BooleanField()
    approvedAt = Instant(allow_null=True)
    approvedBy = serializers.CharField(allow_null=True)


class CreditOut(serializers.Serializer):
    creditId = serializers.CharField()
    accountId = serializers.CharField()
    type = serializers.ChoiceField(choices=GrantType.choices)
    status = serializers.ChoiceField(choices=GrantStatus.choices)
    amount = AmountOut()
    price = Money()
    effectiveAt = Instant()
    source = SourceOut()
    dates = DatesOut()
    restrictions = RestrictionsOut()
    usage = UsageOut(many=True, required=False, help_text="With includeUsageHistory=true.")
    metadata = MetadataOut()
    approval = ApprovalOut()


class PaginationOut(serializers.Serializer):
    limit = serializers.IntegerField()
    hasMore = serializers.BooleanField()
    nextCursor = serializers.CharField(allow_null=True)


class BucketOut(serializers.Serializer):
    amount = Money()
    count = serializers.IntegerField()


class SummaryOut(serializers.Serializer):
    totalCredits = Money(help_text="Remaining credit of the listed credits.")
    totalUsed = Money()
    byType = serializers.DictField(child=BucketOut())
    byStatus = serializers.DictField(child=BucketOut())
    expiringWithin30Days = Money()
    currency = serializers.ChoiceField(choices=CURRENCY_CHOICES)
    count = serializers.IntegerField()


class RecommendationOut(serializers.Serializer):
    type = serializers.ChoiceField(choices=["expiration_warning", "unused_credit"])
    priority = serializers.ChoiceField(choices=["high", "medium", "low"])
    title = serializers.CharField()
    description = serializers.CharField()
    potentialSavings = Money()
    currency = serializers.ChoiceField(choices=CURRENCY_CHOICES)
    creditIds = serializers.ListField(child=serializers.CharField())


class CreditListOut(serializers.Serializer):
    credits = CreditOut(many=True)
    summary = SummaryOut()
    summaries = SummaryOut(many=True)
    recommendations = RecommendationOut(many=True)
    pagination = PaginationOut()


class ExpiringTotalOut(serializers.Serializer):
    currency = serializers.ChoiceField(choices=CURRENCY_CHOICES)
    amount = Money()
    count = serializers.IntegerField()


class ExpiringOut(serializers.Serializer):
    daysAhead = serializers.IntegerField()
    credits = CreditOut(many=True)
    totals = ExpiringTotalOut(many=True)
    pagination = PaginationOut()


class InvoiceAmountsOut(serializers.Serializer):
    subtotal = Money()
    credits = Money()
    total = Money()


@extend_schema_field({"type": "number"})
class NumberOut(serializers.Field):
    pass


class LineOut(serializers.Serializer):
    lineId = serializers.CharField()
    kind = serializers.ChoiceField(choices=LineKind.choices)
    service = serializers.CharField(allow_blank=True)
    description = serializers.CharField(allow_blank=True)
    quantity = NumberOut()
    unitPrice = NumberOut()
    amount = NumberOut(help_text="Negative for credit lines.")
    creditId = serializers.CharField(allow_null=True)


class InvoiceSummaryOut(serializers.Serializer):
    invoiceId = serializers.CharField()
    invoiceNumber = serializers.CharField()
    accountId = serializers.CharField()
    status = serializers.ChoiceField(choices=InvoiceStatus.choices)
    currency = serializers.ChoiceField(choices=CURRENCY_CHOICES)
    issueDate = serializers.DateField()
    dueDate = serializers.DateField(allow_null=True)
    finalizedAt = Instant(allow_null=True)
    paidAt = Instant(allow_null=True)
    voidedAt = Instant(allow_null=True)
    amounts = InvoiceAmountsOut()


class InvoiceOut(InvoiceSummaryOut):
    lines = LineOut(many=True)


class InvoiceListOut(serializers.Serializer):
    invoices = InvoiceSummaryOut(many=True)
    pagination = PaginationOut()


class BalanceOut(serializers.Serializer):
    currency = serializers.ChoiceField(choices=CURRENCY_CHOICES)
    available = Money()
    reserved = Money()
    pending = Money()
    expiringWithin30Days = Money()
    total = Money()


class AccountOut(serializers.Serializer):
    accountId = serializers.CharField()
    name = serializers.CharField()
    email = serializers.CharField(allow_blank=True)
    currency = serializers.ChoiceField(choices=CURRENCY_CHOICES)
    autoApplyCredits = serializers.BooleanField()
    createdAt = Instant()
    balances = BalanceOut(many=True)


class AccountListOut(serializers.Serializer):
    accounts = AccountOut(many=True)
    pagination = PaginationOut()


class LedgerEntryOut(serializers.Serializer):
    entryId = serializers.CharField()
    kind = serializers.ChoiceField(choices=EntryKind.choices)
    amount = NumberOut(help_text="Signed: + adds to the credit's balance, - takes from it.")
    currency = serializers.ChoiceField(choices=CURRENCY_CHOICES)
    balanceAfter = Money()
    creditId = serializers.CharField()
    accountId = serializers.CharField()
    invoiceId = serializers.CharField(allow_null=True)
    actor = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)
    createdAt = Instant()


class LedgerOut(serializers.Serializer):
    entries = LedgerEntryOut(many=True)
    pagination = PaginationOut()


class LedgerBalanceOut(serializers.Serializer):
    currency = serializers.ChoiceField(choices=CURRENCY_CHOICES)
    balance = Money(help_text="Sum of the ledger up to asOf.")
    available = Money(required=False)
    reserved = Money(required=False)
    pending = Money(required=False)
    expiringWithin30Days = Money(required=False)


class BalanceResponseOut(serializers.Serializer):
    accountId = serializers.CharField(allow_null=True)
    asOf = Instant()
    balances = LedgerBalanceOut(many=True)


class ApplyOut(serializers.Serializer):
    success = serializers.BooleanField()
    creditId = serializers.CharField()
    invoiceId = serializers.CharField()
    amountApplied = Money()
    credit = CreditOut()
    invoice = InvoiceOut()


class TransferOut(serializers.Serializer):
    # "from" is a Python keyword: the field is declared below.
    to = CreditOut()


TransferOut._declared_fields["from"] = CreditOut()


class PlannedCreditOut(serializers.Serializer):
    creditId = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    amount = Money()
    expires = Instant(allow_null=True)


class DecisionOut(serializers.Serializer):
    creditId = serializers.CharField()
    code = serializers.CharField()
    reason = serializers.CharField()
    amount = Money()


class RecommendationPlanOut(serializers.Serializer):
    invoiceId = serializers.CharField()
    invoiceNumber = serializers.CharField()
    accountId = serializers.CharField()
    currency = serializers.ChoiceField(choices=CURRENCY_CHOICES)
    invoiceAmount = Money(help_text="What the invoice owed before these credits.")
    totalCredits = Money()
    amountAfterCredits = Money()
    creditsToApply = PlannedCreditOut(many=True)


class BulkApplyOut(serializers.Serializer):
    strategy = serializers.CharField()
    dryRun = serializers.BooleanField()
    applied = serializers.BooleanField()
    totals = ExpiringTotalOut(many=True)
    recommendations = RecommendationPlanOut(many=True)


class OptimizeOut(serializers.Serializer):
    invoiceId = serializers.CharField()
    invoiceNumber = serializers.CharField()
    status = serializers.ChoiceField(choices=InvoiceStatus.choices)
    currency = serializers.ChoiceField(choices=CURRENCY_CHOICES)
    strategy = serializers.CharField()
    invoiceAmount = Money()
    totalCredits = Money()
    amountAfterCredits = Money()
    exact = serializers.BooleanField()
    creditsToApply = PlannedCreditOut(many=True)
    decisions = DecisionOut(many=True)


@extend_schema_field(OpenApiTypes.OBJECT)
class AnyObject(serializers.DictField):
    pass


class AnalyticsOut(serializers.Serializer):
    dateRange = serializers.CharField()
    startDate = Instant(allow_null=True)
    endDate = Instant(allow_null=True)
    currencies = AnyObject(help_text="Per currency: lifecycle, totals, sources, monthly trends.")


class ErrorBody(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = AnyObject()


class ErrorOut(serializers.Serializer):
    error = ErrorBody()


class WhoAmIOut(serializers.Serializer):
    partner = serializers.CharField()
    keyPrefix = serializers.CharField()
    scopes = serializers.ListField(child=serializers.CharField())
