"""Expiry warnings and their delivery.

- `ExpiryWarning`: the claim that a credit was warned at a threshold (30, 7 or 1 days). The
  unique (grant, threshold) constraint is what makes a rerun, or two workers at once, warn
  nobody twice.
- `ExpiryNotice`: one message about some of an account's credits (one currency) crossing one
  threshold in one run; the warnings of that run point at it.
- `Delivery`: a notice sent over one channel (email to the billing address, webhook to the
  partner), with its status, attempt count and next retry.
- `DeliveryAttempt`: one try of a delivery, with the HTTP status code or the error. Append-only.

Writes go through notifications.services.
"""

import pgtrigger
from django.db import models
from django.db.models import Q
from django.utils import timezone

from credits.models import Account, CreditGrant, money_field
from credits.money import CURRENCY_CHOICES


class ExpiryNotice(models.Model):
    notice_id = models.CharField(max_length=40, unique=True, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="expiry_notices")
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    threshold_days = models.PositiveSmallIntegerField(
        help_text="The warning threshold these credits crossed (days before expiry)."
    )
    part = models.PositiveIntegerField(
        default=0, help_text="Large groups are split into parts of a bounded size."
    )
    credit_count = models.PositiveIntegerField()
    total_remaining = money_field()
    earliest_expiry = models.DateTimeField()
    run_id = models.UUIDField(help_text="The job run that claimed these warnings.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run_id", "account", "currency", "threshold_days", "part"],
                name="notice_one_per_run_group",
            ),
        ]

    def __str__(self) -> str:
        return self.notice_id


class ExpiryWarning(models.Model):
    grant = models.ForeignKey(CreditGrant, on_delete=models.PROTECT, related_name="expiry_warnings")
    threshold_days = models.PositiveSmallIntegerField()
    notice = models.ForeignKey(ExpiryNotice, on_delete=models.PROTECT, related_name="warnings")
    # What the warning said: the credit's remaining amount and expiry when it was claimed. (No
    # account column: the notice has it, and one foreign key less is a third less checking
    # when a run inserts 10^6 warnings.)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES)
    remaining = money_field()
    expires_at = models.DateTimeField()
    run_id = models.UUIDField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["grant", "threshold_days"], name="expiry_warning_one_per_grant_threshold"
            ),
        ]
        # A deleted claim would let the same warning go out again.
        triggers = [
            pgtrigger.Protect(
                name="expiry_warning_append_only", operation=pgtrigger.Update | pgtrigger.Delete
            ),
        ]

    def __str__(self) -> str:
        return f"{self.grant_id} @ {self.threshold_days}d"


class Channel(models.TextChoices):
    EMAIL = "email"
    WEBHOOK = "webhook"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "pending (waiting for its next attempt)"
    SENDING = "sending", "sending (a worker holds it)"
    DELIVERED = "delivered"
    FAILED = "failed", "failed (out of attempts)"


class Delivery(models.Model):
    delivery_id = models.CharField(max_length=40, unique=True, editable=False)
    notice = models.ForeignKey(ExpiryNotice, on_delete=models.PROTECT, related_name="deliveries")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    target = models.CharField(
        max_length=500, help_text="Email address or webhook URL of the latest attempt."
    )
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField()
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    retried_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        permissions = [("retry_delivery", "Can retry failed deliveries")]
        constraints = [
            models.UniqueConstraint(
                fields=["notice", "channel"], name="delivery_one_per_notice_channel"
            ),
            models.CheckConstraint(
                condition=Q(status__in=DeliveryStatus.values), name="delivery_status_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status="delivered") | Q(delivered_at__isnull=False),
                name="delivery_delivered_has_time",
            ),
        ]
        indexes = [
            # The delivery loop's scan: what is due now.
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_pending_due",
                condition=Q(status="pending"),
            ),
            models.Index(
                fields=["lease_until"], name="delivery_sending_lease", condition=Q(status="sending")
            ),
        ]

    def __str__(self) -> str:
        return self.delivery_id


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.PROTECT, related_name="attempt_log")
    number = models.PositiveIntegerField()
    target = models.CharField(max_length=500)
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    succeeded = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["delivery", "number"], name="delivery_attempt_unique_number"
            ),
        ]
        triggers = [
            pgtrigger.Protect(
                name="delivery_attempt_append_only",
                operation=pgtrigger.Update | pgtrigger.Delete,
            ),
        ]

    def __str__(self) -> str:
        return f"{self.delivery_id}#{self.number}"
