"""Accounts, partners and their API keys, credit grants, holds and the append-only ledger.

Models hold fields, constraints and tiny properties; every write goes through credits.services.
Every invariant that must never break is also a named database constraint or trigger.
"""

from decimal import Decimal

import pgtrigger
from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Round
from django.utils import timezone

from credits import ids
from credits.money import CURRENCY_CHOICES, DECIMAL_PLACES, MAX_DIGITS


def money_field(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=MAX_DIGITS, decimal_places=DECIMAL_PLACES, **kwargs)


class Partner(models.Model):
    """A partner system; its API keys see only the accounts it owns."""

    name = models.SlugField(max_length=64, unique=True)
    display_name = models.CharField(max_length=200, blank=True)
    webhook_url = models.URLField(blank=True)
    webhook_secret = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.display_name or self.name


class ApiKey(models.Model):
    """A partner's Bearer key. Only its SHA-256 is stored; the raw key is shown once."""

    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.partner})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Account(models.Model):
    account_id = models.CharField("account id", max_length=64, unique=True)
    name = models.CharField(max_length=200)
    email = models.EmailField("billing email", blank=True)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES, default="USD")
    auto_apply_credits = models.BooleanField(
        default=True, help_text="Finalizing an invoice draws available credits automatically."
    )
    auto_apply_expiring_credits = models.BooleanField(
        default=False,
        help_text="Credits expiring within 7 days are applied to pending invoices by a daily job.",
    )
    partner = models.ForeignKey(
        Partner, on_delete=models.PROTECT, null=True, blank=True, related_name="accounts"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["account_id"]

    def __str__(self) -> str:
        return f"{self.account_id} ({self.name})"


class GrantType(models.TextChoices):
    PROMOTIONAL = "promotional"
    REFUND = "refund"
    BONUS = "bonus"
    PARTNER = "partner"
    SUPPORT = "support"
    REFERRAL = "referral"
    MIGRATION = "migration"
    PURCHASED = "purchased"


class GrantStatus(models.TextChoices):
    PENDING = "pending"
    ACTIVE = "active"
    RESERVED = "reserved"
    APPLIED = "applied"
    EXPIRED = "expired"
    VOIDED = "voided"


USABLE_STATUSES = (GrantStatus.ACTIVE, GrantStatus.RESERVED)
OPEN_STATUSES = (GrantStatus.PENDING, GrantStatus.ACTIVE, GrantStatus.RESERVED)


class UsageLimit(models.TextChoices):
    UNLIMITED = "unlimited"
    ONE_TIME = "one_time"
    MONTHLY = "monthly"


# The grant columns a summary row is keyed on, as the trigger computes them from a grant row.
SUMMARY_KEY_SQL = """account_id, currency, type, status,
    (used = 0 AND remaining > 0) AS unused,
    NOT coalesce(applicable_services IN ('["all"]'::jsonb, '[]'::jsonb), false) AS restricted"""


def _summary_delta_func(*, new: str | None = None, old: str | None = None) -> str:
    """Body of a statement-level trigger on the grant table: the statement's net change to the
    per-account summary, aggregated from its transition tables and appended as delta rows
    (credits.models.GrantSummary). Inserts only, so it takes no lock that could make two
    transactions wait for each other."""
    parts = []
    if new:
        parts.append(f"SELECT {SUMMARY_KEY_SQL}, 1, remaining, used FROM {new}")  # noqa: S608
    if old:
        parts.append(f"SELECT {SUMMARY_KEY_SQL}, -1, -remaining, -used FROM {old}")  # noqa: S608
    return f"""
    INSERT INTO credits_grantsummary
        (account_id, currency, type, status, unused, restricted, grants, remaining, used,
         compacted)
    SELECT account_id, currency, type, status, unused, restricted, sum(n), sum(rem), sum(usd),
           false
    FROM ({" UNION ALL ".join(parts)}) AS delta (account_id, currency, type, status, unused,
                                                 restricted, n, rem, usd)
    GROUP BY account_id, currency, type, status, unused, restricted
    HAVING sum(n) <> 0 OR sum(rem) <> 0 OR sum(usd) <> 0;
    RETURN NULL;
    """  # noqa: S608 (table names are literals)


def _summary_trigger(name: str, operation, *, old: str | None = None, new: str | None = None):
    return pgtrigger.Trigger(
        name=name,
        level=pgtrigger.Statement,
        when=pgtrigger.After,
        operation=operation,
        referencing=pgtrigger.Referencing(old=old, new=new),
        func=_summary_delta_func(new=new, old=old),
    )


GRANT_SUMMARY_TRIGGERS = [
    _summary_trigger("grant_summary_on_insert", pgtrigger.Insert, new="new_rows"),
    # Every UPDATE (PostgreSQL allows no column list with transition tables); one that changes
    # no summary column nets to zero and appends nothing.
    _summary_trigger("grant_summary_on_update", pgtrigger.Update, old="old_rows", new="new_rows"),
    _summary_trigger("grant_summary_on_delete", pgtrigger.Delete, old="old_rows"),
]


class GrantSummary(models.Model):
    """An account's grants added up per (currency, type, status, never used, restricted to
    some services): how many, their remaining and used credit. Kept by triggers on the grant
    table (PostgreSQL), so no write path can forget it: each statement that changes grants
    appends its net change as a delta row; `grant_summaries_compact` (a beat job) folds an
    account's deltas into one row per key. A reader sums the account's rows, compacted or not,
    so the figure is exact at any moment. The API's credits summary reads it instead of adding
    up 10^4 grants per request; `verify_ledger` checks it against the grants themselves.
    On SQLite (no triggers) it stays empty and the summary is computed from the grants."""

    # No foreign key constraint: the rows are copied by the triggers from grants, whose own
    # constraint holds the account; checking it again at each commit would cost the expiry job
    # one check per account per batch.
    account = models.ForeignKey(
        Account,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    currency = models.CharField(max_length=3)
    type = models.CharField(max_length=16)
    status = models.CharField(max_length=10)
    unused = models.BooleanField(help_text="used = 0 and remaining > 0")
    restricted = models.BooleanField(help_text="applicable services other than all")
    grants = models.BigIntegerField()
    remaining = models.DecimalField(max_digits=24, decimal_places=DECIMAL_PLACES)
    used = models.DecimalField(max_digits=24, decimal_places=DECIMAL_PLACES)
    compacted = models.BooleanField(default=False)

    class Meta:
        indexes = [
            models.Index(fields=["account", "currency"], name="grant_summary_account"),
            # What the compaction job looks for: accounts with deltas not yet folded.
            models.Index(
                fields=["account"], name="grant_summary_pending", condition=Q(compacted=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.currency} {self.type} {self.status}"


class CreditGrant(models.Model):
    # Indexes are chosen for the write path too: every expired or drawn grant writes an entry in
    # each index its new row belongs to (no update is HOT, status being indexed). So no
    # varchar_pattern_ops twins (unique=True / db_index=True would add them), no index that is
    # a prefix of another, and the sparse columns indexed only where set (Meta.indexes).
    credit_id = models.CharField(max_length=40, default=ids.credit_id, editable=False)
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="grants", db_index=False
    )
    type = models.CharField(max_length=16, choices=GrantType.choices)
    status = models.CharField(max_length=10, choices=GrantStatus.choices)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    original = money_field()
    remaining = money_field()
    used = money_field(default=Decimal("0"))
    reserved = money_field(default=Decimal("0"), help_text="Held by draft invoices.")
    price = money_field(help_text="What the customer pays for this credit (Octane).")
    # source
    description = models.CharField(max_length=500, blank=True)
    reference_id = models.CharField(max_length=200, blank=True)
    issued_by = models.CharField(max_length=200, blank=True)
    reason = models.TextField(blank=True)
    # dates
    issued_at = models.DateTimeField(default=timezone.now, db_index=True)
    effective_at = models.DateTimeField()
    activated_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    auto_activate = models.BooleanField(default=True)
    # maker-checker
    approval_required = models.BooleanField(default=False)
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.CharField(max_length=200, blank=True)
    issuer_actor = models.CharField(
        max_length=200, help_text="Who issued it (user:…, api_key:…, job:…)."
    )
    # restrictions
    applicable_services = models.JSONField(default=list, blank=True)  # [] means all
    minimum_spend = money_field(default=Decimal("0"))
    maximum_discount = money_field(null=True, blank=True)
    usage_limit = models.CharField(
        max_length=10, choices=UsageLimit.choices, default=UsageLimit.UNLIMITED
    )
    account_restrictions = models.JSONField(default=list, blank=True)
    # metadata
    campaign_id = models.CharField(max_length=200, blank=True)
    tags = models.JSONField(default=list, blank=True)
    notes = models.TextField(blank=True)
    transferable = models.BooleanField(default=False)
    extra_metadata = models.JSONField(default=dict, blank=True)
    transferred_from = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="transfers",
        db_index=False,
    )

    class Meta:
        ordering = ["-issued_at", "-id"]
        permissions = [
            ("approve_creditgrant", "Can approve credit grants"),
            ("void_creditgrant", "Can void credit grants"),
            ("transfer_creditgrant", "Can transfer credit grants"),
        ]
        indexes = [
            # Drawdown candidates of one account.
            # (Open grants only: a grant that expires, is voided or used up leaves it, so those
            # updates write one index entry fewer.)
            models.Index(
                fields=["account", "currency", "status"],
                name="grant_account_cur_status",
                condition=Q(status__in=["pending", "active", "reserved"]),
            ),
            # The expiry job's and the expiry warnings' scan.
            models.Index(
                fields=["expires_at"],
                name="grant_open_expiry",
                condition=Q(status__in=["pending", "active", "reserved"])
                & Q(expires_at__isnull=False),
            ),
            # An account's credits newest first (the API's and admin's lists), and its open
            # credits soonest-expiring first: range scans instead of filtering 10^6 rows.
            models.Index(fields=["account", "-issued_at", "-id"], name="grant_account_issued"),
            models.Index(
                fields=["account", "expires_at", "id"],
                name="grant_account_open_expiry",
                condition=Q(status__in=["pending", "active", "reserved"])
                & Q(expires_at__isnull=False),
            ),
            models.Index(
                fields=["effective_at"],
                name="grant_pending_effective",
                condition=Q(status="pending"),
            ),
            models.Index(fields=["issued_by"], name="grant_issued_by"),
            models.Index(
                fields=["reference_id"], name="grant_reference_id", condition=~Q(reference_id="")
            ),
            models.Index(
                fields=["campaign_id"], name="grant_campaign_id", condition=~Q(campaign_id="")
            ),
            models.Index(
                fields=["transferred_from"],
                name="grant_transferred_from",
                condition=Q(transferred_from__isnull=False),
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["credit_id"], name="grant_credit_id_unique"),
            models.CheckConstraint(condition=Q(original__gt=0), name="grant_original_positive"),
            models.CheckConstraint(
                condition=Q(remaining__gte=0), name="grant_remaining_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(remaining__lte=F("original")), name="grant_remaining_within_original"
            ),
            models.CheckConstraint(
                # Rounded to the column's 2 places: SQLite does CHECK arithmetic in binary
                # floating point (0.30 - 0.20 < 0.10 there); on PostgreSQL it is exact anyway.
                condition=Q(used__gte=0) & Q(used__lte=Round(F("original") - F("remaining"), 2)),
                name="grant_used_within_original",
            ),
            models.CheckConstraint(
                condition=Q(reserved__gte=0) & Q(reserved__lte=F("remaining")),
                name="grant_reserved_within_remaining",
            ),
            models.CheckConstraint(
                condition=Q(expires_at__isnull=True) | Q(expires_at__gt=F("effective_at")),
                name="grant_expires_after_effective",
            ),
            models.CheckConstraint(condition=Q(price__gte=0), name="grant_price_non_negative"),
            models.CheckConstraint(
                condition=Q(minimum_spend__gte=0), name="grant_minimum_spend_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(maximum_discount__isnull=True) | Q(maximum_discount__gt=0),
                name="grant_maximum_discount_positive",
            ),
            models.CheckConstraint(
                condition=Q(status__in=GrantStatus.values), name="grant_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(currency__in=[c for c, _ in CURRENCY_CHOICES]),
                name="grant_currency_valid",
            ),
        ]
        triggers = GRANT_SUMMARY_TRIGGERS

    def __str__(self) -> str:
        return self.credit_id

    @property
    def available(self) -> Decimal:
        return self.remaining - self.reserved

    @property
    def services(self) -> frozenset[str] | None:
        """None means every service ([] or ["all"] in the API)."""
        services = [s for s in self.applicable_services or [] if s != "all"]
        return frozenset(services) if services and "all" not in self.applicable_services else None

    def derive_status(self) -> str:
        """The status this grant's fields imply. Services call it after every change."""
        if self.voided_at is not None:
            return GrantStatus.VOIDED
        if self.expired_at is not None:
            return GrantStatus.EXPIRED
        if self.activated_at is None:
            return GrantStatus.PENDING
        if self.remaining == 0:
            return GrantStatus.APPLIED
        if self.reserved == self.remaining:
            return GrantStatus.RESERVED
        return GrantStatus.ACTIVE


class HoldStatus(models.TextChoices):
    ACTIVE = "active"
    RELEASED = "released"
    CONSUMED = "consumed"


class CreditHold(models.Model):
    """Credit reserved for a draft invoice. Not a balance change, so not a ledger row; this row
    is its own audit trail (who held it, who released or consumed it, when)."""

    hold_id = models.CharField(max_length=40, unique=True, default=ids.hold_id, editable=False)
    grant = models.ForeignKey(CreditGrant, on_delete=models.PROTECT, related_name="holds")
    invoice = models.ForeignKey("invoices.Invoice", on_delete=models.PROTECT, related_name="holds")
    amount = money_field()
    status = models.CharField(max_length=10, choices=HoldStatus.choices, default=HoldStatus.ACTIVE)
    actor = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="hold_amount_positive"),
            models.UniqueConstraint(
                fields=["grant", "invoice"],
                condition=Q(status="active"),
                name="hold_one_active_per_grant_invoice",
            ),
        ]

    def __str__(self) -> str:
        return self.hold_id


class EntryKind(models.TextChoices):
    GRANT = "grant"
    DEDUCTION = "deduction"
    REVERSAL = "reversal"
    VOID = "void"
    EXPIRATION = "expiration"
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"


CREDIT_KINDS = (EntryKind.GRANT, EntryKind.REVERSAL, EntryKind.TRANSFER_IN)
DEBIT_KINDS = (EntryKind.DEDUCTION, EntryKind.VOID, EntryKind.EXPIRATION, EntryKind.TRANSFER_OUT)


class LedgerEntry(models.Model):
    """One change of one grant's balance. Append-only: the database refuses UPDATE and DELETE.

    `related_entry` names the entry that caused this one: the deduction a reversal undoes, the
    deduction whose one_time remainder an expiration forfeits, the reversal that an immediate
    re-expiry or re-void follows, the transfer_out a transfer_in receives. Unique per (cause,
    kind), so nothing can be reversed, forfeited or re-expired twice.
    """

    entry_id = models.CharField(max_length=40, unique=True, default=ids.entry_id, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="ledger_entries")
    grant = models.ForeignKey(CreditGrant, on_delete=models.PROTECT, related_name="ledger_entries")
    kind = models.CharField(max_length=12, choices=EntryKind.choices)
    amount = money_field(help_text="Signed: + adds to the grant's balance, - takes from it.")
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    balance_after = money_field()
    invoice = models.ForeignKey(
        "invoices.Invoice",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_entries",
    )
    invoice_line = models.ForeignKey(
        "invoices.InvoiceLine",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_entries",
    )
    related_entry = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="consequences"
    )
    actor = models.CharField(max_length=200)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["grant", "created_at"], name="ledger_grant_time"),
            models.Index(fields=["account", "created_at"], name="ledger_account_time"),
            models.Index(fields=["created_at"], name="ledger_time"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(Q(kind__in=CREDIT_KINDS) & Q(amount__gt=0))
                | (Q(kind__in=DEBIT_KINDS) & Q(amount__lt=0)),
                name="ledger_sign_matches_kind",
            ),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0), name="ledger_balance_after_non_negative"
            ),
            models.CheckConstraint(
                condition=~Q(kind=EntryKind.DEDUCTION) | Q(invoice__isnull=False),
                name="ledger_deduction_has_invoice",
            ),
            models.CheckConstraint(
                condition=~Q(kind=EntryKind.REVERSAL) | Q(related_entry__isnull=False),
                name="ledger_reversal_names_deduction",
            ),
            models.UniqueConstraint(
                fields=["grant"], condition=Q(kind="grant"), name="ledger_one_grant_entry"
            ),
            models.UniqueConstraint(
                fields=["grant"],
                condition=Q(kind="expiration", related_entry__isnull=True),
                name="ledger_one_expiration_per_grant",
            ),
            models.UniqueConstraint(
                fields=["grant"],
                condition=Q(kind="void", related_entry__isnull=True),
                name="ledger_one_void_per_grant",
            ),
            models.UniqueConstraint(
                fields=["related_entry", "kind"],
                condition=Q(related_entry__isnull=False),
                name="ledger_one_consequence_per_cause",
            ),
        ]
        triggers = [
            pgtrigger.Protect(
                name="ledger_append_only", operation=pgtrigger.Update | pgtrigger.Delete
            ),
        ]

    def __str__(self) -> str:
        return self.entry_id


class GrantEventKind(models.TextChoices):
    APPROVED = "approved"
    ACTIVATED = "activated"
    HOLD_PLACED = "hold_placed"
    HOLD_RELEASED = "hold_released"


class GrantEvent(models.Model):
    """Audit row for a change of a grant that moves no money (approval, activation, holds).
    Balance changes are ledger entries instead. Append-only like the ledger."""

    grant = models.ForeignKey(CreditGrant, on_delete=models.PROTECT, related_name="events")
    kind = models.CharField(max_length=16, choices=GrantEventKind.choices)
    actor = models.CharField(max_length=200)
    reason = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        triggers = [
            pgtrigger.Protect(
                name="grant_event_append_only", operation=pgtrigger.Update | pgtrigger.Delete
            ),
        ]

    def __str__(self) -> str:
        return f"{self.grant_id} {self.kind}"
