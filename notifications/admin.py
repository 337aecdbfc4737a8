"""Admin for expiry warnings: what was sent to whom, each delivery's status and every attempt
(HTTP status code or error). Everything is read-only; the one action, "retry", calls
notifications.services.delivery_retry."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from backoffice.admin_base import ReadOnlyInline, ReadOnlyMixin
from credits.actors import Actor
from credits.exceptions import DomainError
from credits.money import fmt
from notifications.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    ExpiryNotice,
    ExpiryWarning,
)
from notifications.services import delivery_retry

STATUS_COLOURS = {
    DeliveryStatus.DELIVERED: "#15803d",
    DeliveryStatus.PENDING: "#b45309",
    DeliveryStatus.SENDING: "#1d4ed8",
    DeliveryStatus.FAILED: "#b91c1c",
}


def status_badge(status: str):
    return format_html(
        '<strong style="color: {}">{}</strong>', STATUS_COLOURS.get(status, "inherit"), status
    )


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Rows written by the jobs only: nobody adds, edits or deletes them here."""


class DeliveryInline(ReadOnlyInline):
    model = Delivery
    fields = (
        "delivery_id",
        "channel",
        "target",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "delivered_at",
    )
    readonly_fields = fields
    show_change_link = True


class WarningInline(ReadOnlyInline):
    model = ExpiryWarning
    fields = ("grant", "threshold_days", "remaining", "currency", "expires_at")
    readonly_fields = fields


@admin.register(ExpiryNotice)
class ExpiryNoticeAdmin(ReadOnlyAdmin):
    list_display = (
        "notice_id",
        "account",
        "threshold_days",
        "total",
        "credit_count",
        "earliest_expiry",
        "created_at",
    )
    list_filter = ("threshold_days", "currency", "created_at")
    search_fields = ("notice_id", "account__account_id", "account__name")
    list_select_related = ("account",)
    raw_id_fields = ("account",)
    date_hierarchy = "created_at"
    inlines = [DeliveryInline, WarningInline]
    readonly_fields = (
        "notice_id",
        "account",
        "currency",
        "threshold_days",
        "part",
        "credit_count",
        "total_remaining",
        "earliest_expiry",
        "run_id",
        "created_at",
    )

    @admin.display(description="total expiring", ordering="total_remaining")
    def total(self, obj: ExpiryNotice) -> str:
        return fmt(obj.total_remaining, obj.currency)


class AttemptInline(ReadOnlyInline):
    model = DeliveryAttempt
    fields = (
        "number",
        "started_at",
        "succeeded",
        "status_code",
        "error",
        "duration_ms",
        "target",
        "worker",
    )
    readonly_fields = fields


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "delivery_id",
        "channel",
        "target",
        "status_badge",
        "attempts",
        "last_status_code",
        "short_error",
        "next_attempt_at",
        "delivered_at",
        "notice_link",
    )
    list_filter = ("status", "channel", "created_at")
    search_fields = ("delivery_id", "target", "notice__notice_id", "notice__account__account_id")
    list_select_related = ("notice",)
    date_hierarchy = "created_at"
    inlines = [AttemptInline]
    actions = ["retry_deliveries"]
    readonly_fields = (
        "delivery_id",
        "notice",
        "channel",
        "target",
        "status",
        "attempts",
        "max_attempts",
        "next_attempt_at",
        "lease_until",
        "last_status_code",
        "last_error",
        "delivered_at",
        "retried_by",
        "created_at",
    )

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Delivery):
        return status_badge(obj.status)

    @admin.display(description="last error")
    def short_error(self, obj: Delivery) -> str:
        return (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else obj.last_error

    @admin.display(description="notice")
    def notice_link(self, obj: Delivery):
        return format_html(
            '<a href="../expirynotice/{}/change/">{}</a>', obj.notice_id, obj.notice.notice_id
        )

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("notifications.retry_delivery")

    @admin.action(description="Retry selected deliveries now", permissions=["retry"])
    def retry_deliveries(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = 0
        for delivery in queryset.order_by("pk"):
            try:
                delivery_retry(delivery=delivery, actor=Actor.for_user(request.user))
                done += 1
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
        if done:
            self.message_user(
                request,
                f"{done} deliver{'y' if done == 1 else 'ies'} queued for the next delivery run.",
                messages.SUCCESS,
            )


@admin.register(ExpiryWarning)
class ExpiryWarningAdmin(ReadOnlyAdmin):
    list_display = (
        "grant",
        "threshold_days",
        "account",
        "amount",
        "expires_at",
        "notice",
        "created_at",
    )
    list_filter = ("threshold_days", "currency", "created_at")
    search_fields = ("grant__credit_id", "notice__account__account_id", "notice__notice_id")
    list_select_related = ("grant", "notice__account")
    raw_id_fields = ("grant", "notice")
    date_hierarchy = "created_at"

    @admin.display(description="account")
    def account(self, obj: ExpiryWarning):
        return obj.notice.account

    @admin.display(description="remaining when warned", ordering="remaining")
    def amount(self, obj: ExpiryWarning) -> str:
        return fmt(obj.remaining, obj.currency)
