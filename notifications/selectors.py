"""Reads of the notifications app shared by the delivery loop, the admin and the jobs."""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Min

from notifications.models import Delivery, DeliveryStatus, ExpiryWarning


@dataclass(frozen=True)
class WarnedCredit:
    """One credit as a notice states it: the warning's snapshot and the credit's ids."""

    credit_id: str
    type: str
    description: str
    remaining: Decimal
    expires_at: datetime


def warned_credits_by_notice(notice_ids: Iterable[int]) -> dict[int, list[WarnedCredit]]:
    """The credits each notice carries, soonest expiry first (plain values: a delivery batch
    renders thousands of them)."""
    out: dict[int, list[WarnedCredit]] = defaultdict(list)
    rows = (
        ExpiryWarning.objects.filter(notice_id__in=list(notice_ids))
        .order_by("notice_id", "expires_at", "grant_id")
        .values_list(
            "notice_id",
            "grant__credit_id",
            "grant__type",
            "grant__description",
            "remaining",
            "expires_at",
        )
    )
    for notice_id, *fields in rows:
        out[notice_id].append(WarnedCredit(*fields))
    return out


def next_pending_attempt_at() -> datetime | None:
    """When the earliest delivery waiting for a retry is due (None: nothing waits)."""
    return Delivery.objects.filter(status=DeliveryStatus.PENDING).aggregate(
        at=Min("next_attempt_at")
    )["at"]
