"""What an expiry notice says: the email (text and HTML templates under
templates/notifications/) and the webhook's JSON body. Built from the warnings' snapshots (the
amount and expiry the warning was about), so every retry sends the same content."""

import json
import secrets
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from credits.money import fmt, q
from notifications.models import ExpiryNotice
from notifications.selectors import WarnedCredit

EVENT_TYPE = "credit_expiration_warning"
EMAIL_MAX_LISTED = 50


def iso(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if value.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def human_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def dumps(payload: dict) -> bytes:
    """JSON with Decimal amounts as exact JSON numbers (325.50), never floats or strings."""
    literals: dict[str, str] = {}
    marker = secrets.token_hex(8)

    def default(value):
        if isinstance(value, Decimal):
            key = f"{marker}:{len(literals)}"
            literals[key] = format(value, "f")
            return key
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    text = json.dumps(payload, default=default, separators=(",", ":"), ensure_ascii=False)
    for key, literal in literals.items():
        text = text.replace(f'"{key}"', literal, 1)
    return text.encode()


def webhook_payload(notice: ExpiryNotice, credits: list[WarnedCredit]) -> dict:
    """The seed's notification_data (type, totalExpiring, creditCount, expiringCredits), with
    the ids a partner needs to act on it. The notice id is stable across retries."""
    cur = notice.currency
    return {
        "id": notice.notice_id,
        "type": EVENT_TYPE,
        "createdAt": iso(notice.created_at),
        "accountId": notice.account.account_id,
        "thresholdDays": notice.threshold_days,
        "currency": cur,
        "totalExpiring": q(notice.total_remaining, cur),
        "creditCount": notice.credit_count,
        "expiringCredits": [
            {
                "creditId": c.credit_id,
                "type": c.type,
                "description": c.description,
                "amount": {"remaining": q(c.remaining, cur), "currency": cur},
                "dates": {"expires": iso(c.expires_at)},
            }
            for c in credits
        ],
    }


def expiry_email(
    notice: ExpiryNotice, credits: list[WarnedCredit], to: str
) -> EmailMultiAlternatives:
    cur = notice.currency
    rows = [
        {
            "credit_id": c.credit_id,
            "description": c.description or f"{c.type.title()} credit",
            "amount": fmt(c.remaining, cur),
            "expires": human_time(c.expires_at),
        }
        for c in credits[:EMAIL_MAX_LISTED]
    ]
    context = {
        "account": notice.account,
        "notice": notice,
        "threshold_days": notice.threshold_days,
        "total": fmt(notice.total_remaining, cur),
        "count": notice.credit_count,
        "credits": rows,
        "more": max(notice.credit_count - len(rows), 0),
        "first_expiry": human_time(notice.earliest_expiry),
        "first_expiry_date": notice.earliest_expiry.astimezone(UTC).date().isoformat(),
        "auto_apply": notice.account.auto_apply_credits,
        "from_name": settings.NOTIFICATIONS_SENDER_NAME,
    }
    subject = " ".join(
        render_to_string("notifications/expiry_warning_subject.txt", context).split()
    )
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("notifications/expiry_warning.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
        headers={"X-Credits-Notice": notice.notice_id},
    )
    message.attach_alternative(
        render_to_string("notifications/expiry_warning.html", context), "text/html"
    )
    return message
