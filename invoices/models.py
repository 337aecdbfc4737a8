"""Invoices and their lines. Writes go through invoices.services."""

from decimal import Decimal

from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Round
from django.utils import timezone

from credits import ids
from credits.models import Account, CreditGrant, money_field
from credits.money import CURRENCY_CHOICES


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft"
    PENDING = "pending"
    PAID = "paid"
    OVERDUE = "overdue"
    VOID = "void"


OPEN_INVOICE_STATUSES = (InvoiceStatus.PENDING, InvoiceStatus.OVERDUE)


class InvoiceSequence(models.Model):
    """Last invoice number used per year. Incremented under a row lock in the same transaction
    as the invoice, so numbers are sequential with no gaps (a rollback takes back both)."""

    year = models.PositiveIntegerField(primary_key=True)
    last_number = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.year}: {self.last_number}"


class Invoice(models.Model):
    invoice_id = models.CharField(
        max_length=40, unique=True, default=ids.invoice_id, editable=False
    )
    invoice_number = models.CharField(max_length=20, unique=True, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="invoices")
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    status = models.CharField(
        max_length=8, choices=InvoiceStatus.choices, default=InvoiceStatus.DRAFT
    )
    issue_date = models.DateField(default=timezone.localdate)
    due_date = models.DateField(null=True, blank=True)
    subtotal = money_field(default=Decimal("0"))
    credits_total = money_field(default=Decimal("0"))
    total = money_field(default=Decimal("0"))
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200)
    finalized_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.TextField(blank=True)
    purchased_grant = models.OneToOneField(
        CreditGrant,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="purchase_invoice",
        help_text="For an invoice billing the price of purchased credits.",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("finalize_invoice", "Can finalize invoices"),
            ("void_invoice", "Can void invoices"),
            ("pay_invoice", "Can mark invoices paid"),
        ]
        indexes = [
            models.Index(fields=["account", "status"], name="invoice_account_status"),
            models.Index(
                fields=["due_date"], name="invoice_pending_due", condition=Q(status="pending")
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(subtotal__gte=0), name="invoice_subtotal_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(credits_total__gte=0) & Q(credits_total__lte=F("subtotal")),
                name="invoice_credits_within_subtotal",
            ),
            models.CheckConstraint(
                # Rounded to 2 places: SQLite computes this in binary floating point.
                condition=Q(total=Round(F("subtotal") - F("credits_total"), 2)),
                name="invoice_total_is_subtotal_less_credits",
            ),
            models.CheckConstraint(
                condition=Q(status__in=InvoiceStatus.values), name="invoice_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.invoice_number


class LineKind(models.TextChoices):
    CHARGE = "charge"
    CREDIT = "credit"


class InvoiceLine(models.Model):
    line_id = models.CharField(max_length=40, unique=True, default=ids.line_id, editable=False)
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=6, choices=LineKind.choices, default=LineKind.CHARGE)
    service = models.CharField(max_length=64, blank=True)
    description = models.CharField(max_length=500, blank=True)
    quantity = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal("1"))
    unit_price = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal("0"))
    amount = money_field()
    # For charge lines: how much of the line credits already cover (restrictions are per line).
    credited = money_field(default=Decimal("0"))
    grant = models.ForeignKey(
        CreditGrant, on_delete=models.PROTECT, null=True, blank=True, related_name="invoice_lines"
    )

    class Meta:
        ordering = ["invoice", "position"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(kind="charge") & Q(amount__gte=0) & Q(grant__isnull=True))
                | (Q(kind="credit") & Q(amount__lt=0) & Q(grant__isnull=False)),
                name="line_sign_matches_kind",
            ),
            models.CheckConstraint(
                condition=Q(credited__gte=0) & (Q(kind="credit") | Q(credited__lte=F("amount"))),
                name="line_credited_within_amount",
            ),
            models.UniqueConstraint(
                fields=["invoice", "grant"],
                condition=Q(kind="credit"),
                name="line_one_credit_line_per_grant",
            ),
            models.UniqueConstraint(fields=["invoice", "position"], name="line_position_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.invoice_id}#{self.position}"


class InvoiceEventKind(models.TextChoices):
    CREATED = "created"
    LINES_ADDED = "lines_added"
    FINALIZED = "finalized"
    CREDIT_APPLIED = "credit_applied"
    PAID = "paid"
    OVERDUE = "overdue"
    VOIDED = "voided"


class InvoiceEvent(models.Model):
    """Audit row for every change of an invoice's state, with its actor."""

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="events")
    kind = models.CharField(max_length=16, choices=InvoiceEventKind.choices)
    actor = models.CharField(max_length=200)
    reason = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["invoice"], condition=Q(kind="overdue"), name="invoice_event_one_overdue"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.invoice_id} {self.kind}"
