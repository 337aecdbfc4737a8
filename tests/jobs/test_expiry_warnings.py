"""Expiry warnings in-process (SQLite and PostgreSQL): who is warned at which threshold, once;
how notices group credits; the email's content; the signed webhook, its retries with backoff
and its attempt log; the admin's retry. The same code runs in the worker tests."""

import itertools
import json
import time
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.utils import timezone

from credits.actors import Actor
from credits.exceptions import Conflict
from credits.models import GrantStatus
from credits.services import grant_void
from notifications import signing
from notifications.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    ExpiryNotice,
    ExpiryWarning,
)
from notifications.services import (
    backoff_seconds,
    deliveries_send_due,
    delivery_retry,
    expiry_warnings_claim,
    expiry_warnings_send,
)
from tests.factories import AccountFactory, PartnerFactory, make_grant
from tests.jobs.helpers import Receiver, bulk_grants

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def fast_backoff(settings):
    settings.NOTIFICATIONS_BACKOFF_SECONDS = 0.05
    settings.NOTIFICATIONS_BACKOFF_MAX_SECONDS = 1
    return settings


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def warned(grant) -> list[int]:
    return sorted(
        ExpiryWarning.objects.filter(grant=grant).values_list("threshold_days", flat=True)
    )


def deliver_until_settled(timeout: float = 10.0):
    """Run the delivery loop as the retry task would, sleeping out each backoff."""
    deadline = time.monotonic() + timeout
    report = deliveries_send_due()
    while report.next_attempt_at is not None and time.monotonic() < deadline:
        time.sleep(max((report.next_attempt_at - timezone.now()).total_seconds(), 0) + 0.01)
        report = deliveries_send_due()
    return report


def test_credit_is_warned_at_the_most_urgent_threshold_it_has_reached():
    # given
    now = timezone.now()
    account = AccountFactory()
    far = make_grant(account, expires_at=now + 40 * DAY)
    month = make_grant(account, expires_at=now + 20 * DAY)
    week = make_grant(account, expires_at=now + 5 * DAY)
    day = make_grant(account, expires_at=now + timedelta(hours=12))
    # when
    result = expiry_warnings_claim(now=now)
    # then
    assert result.warnings == 3
    assert warned(far) == []
    assert warned(month) == [30]
    assert warned(week) == [7]
    assert warned(day) == [1]


def test_rerun_warns_nobody_twice_and_later_thresholds_follow_as_time_passes():
    now = timezone.now()
    account = AccountFactory()
    grant = make_grant(account, expires_at=now + 20 * DAY)

    first = expiry_warnings_claim(now=now)
    again = expiry_warnings_claim(now=now + timedelta(hours=1))
    assert (first.warnings, again.warnings, again.notices, again.deliveries) == (1, 0, 0, 0)
    assert warned(grant) == [30]

    # 14 days on the credit is 6 days from expiry: the 7-day warning, once.
    assert expiry_warnings_claim(now=now + 14 * DAY).warnings == 1
    assert expiry_warnings_claim(now=now + 14 * DAY).warnings == 0
    # 19.5 days on: the 1-day warning, once; then nothing until it expires.
    assert expiry_warnings_claim(now=now + 19 * DAY + timedelta(hours=12)).warnings == 1
    assert expiry_warnings_claim(now=now + 19 * DAY + timedelta(hours=13)).warnings == 0
    assert warned(grant) == [1, 7, 30]
    assert ExpiryNotice.objects.count() == 3
    assert Delivery.objects.filter(channel="email").count() == 3


def test_only_usable_credit_with_something_left_is_warned():
    now = timezone.now()
    account = AccountFactory()
    voided = make_grant(account, expires_at=now + 5 * DAY)
    grant_void(grant=voided, actor=Actor.for_job("tests"), reason="mistake")
    future = make_grant(account, expires_at=now + 5 * DAY, effective_at=now + DAY)
    no_expiry = make_grant(account)
    usable = make_grant(account, expires_at=now + 5 * DAY)
    assert future.status == GrantStatus.PENDING

    expiry_warnings_claim(now=now)

    assert list(ExpiryWarning.objects.values_list("grant_id", flat=True)) == [usable.pk]
    assert warned(no_expiry) == []


def test_a_notice_groups_one_accounts_credits_per_currency_and_threshold():
    now = timezone.now()
    alice, bob = AccountFactory(), AccountFactory()
    make_grant(alice, "100.00", expires_at=now + 3 * DAY)
    make_grant(alice, "50.25", expires_at=now + 6 * DAY)
    make_grant(alice, "5000", currency="JPY", expires_at=now + 6 * DAY)
    make_grant(alice, "7.00", expires_at=now + 25 * DAY)
    make_grant(bob, "1.00", expires_at=now + 2 * DAY)

    result = expiry_warnings_claim(now=now)

    assert (result.warnings, result.notices, result.deliveries) == (5, 4, 4)
    usd_week = ExpiryNotice.objects.get(account=alice, currency="USD", threshold_days=7)
    assert usd_week.credit_count == 2
    assert usd_week.total_remaining == Decimal("150.25")
    assert usd_week.earliest_expiry == now + 3 * DAY
    assert usd_week.warnings.count() == 2


def test_email_states_amount_and_expiry_date_in_text_and_html():
    # given a credit of $1,234.50 expiring in 5 days
    now = timezone.now()
    account = AccountFactory(name="Acme Robotics", email="ap@acme.example")
    grant = make_grant(account, "1234.50", expires_at=now + 5 * DAY, description="Spring promotion")
    expiry = grant.expires_at.astimezone(UTC)
    # when
    run = expiry_warnings_send(now=now)
    # then
    assert run.delivery.delivered == 1
    [message] = mail.outbox
    assert message.to == ["ap@acme.example"]
    assert message.subject == f"Your credit of $1,234.50 expires on {expiry:%Y-%m-%d}"
    html, mimetype = message.alternatives[0]
    assert mimetype == "text/html"
    for part in (message.body, html):
        assert "$1,234.50" in part
        assert f"{expiry:%Y-%m-%d %H:%M} UTC" in part
        assert grant.credit_id in part
        assert "Spring promotion" in part
        assert "Acme Robotics" in part
    assert "<table" in html and "<table" not in message.body
    assert message.extra_headers["X-Credits-Notice"] == ExpiryNotice.objects.get().notice_id


def test_email_for_several_credits_gives_their_count_and_total():
    now = timezone.now()
    account = AccountFactory()
    make_grant(account, "10.00", expires_at=now + timedelta(hours=10))
    make_grant(account, "0.05", expires_at=now + timedelta(hours=20))

    expiry_warnings_send(now=now)

    [message] = mail.outbox
    assert message.subject == "2 credits totalling $10.05 expire within 1 day"
    assert "$10.00" in message.body and "$0.05" in message.body


def test_no_delivery_without_a_billing_address_or_a_partner_endpoint():
    now = timezone.now()
    silent = AccountFactory(email="", partner=PartnerFactory(webhook_url=""))
    make_grant(silent, expires_at=now + 2 * DAY)

    run = expiry_warnings_send(now=now)

    assert run.claim.warnings == 1
    assert Delivery.objects.count() == 0
    assert mail.outbox == []


def test_webhook_fails_twice_then_succeeds_with_backoff_and_a_verifiable_signature(
    fast_backoff, receiver
):
    # given a partner endpoint that answers 500, 503, then 200
    receiver.script = [500, 503, 200]
    partner = PartnerFactory(webhook_url=receiver.url, webhook_secret="whsec_test_123")
    account = AccountFactory(partner=partner, email="")
    now = timezone.now()
    grant = make_grant(account, "75.10", expires_at=now + 3 * DAY, description="Goodwill")
    # when the job runs and its retries follow
    run = expiry_warnings_send(now=now)
    assert (run.delivery.delivered, run.delivery.retrying) == (0, 1)
    report = deliver_until_settled()
    # then it was delivered on the third attempt, each attempt logged with its status code
    delivery = Delivery.objects.get(channel="webhook")
    assert report.next_attempt_at is None
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.attempts == 3
    assert delivery.last_status_code == 200
    log = list(delivery.attempt_log.order_by("number"))
    assert [(a.number, a.status_code, a.succeeded) for a in log] == [
        (1, 500, False),
        (2, 503, False),
        (3, 200, True),
    ]
    assert "HTTP 500" in log[0].error and log[2].error == ""
    # the waits grew: at least the backoff of attempts 1 and 2 between the tries
    gaps = [(b.started_at - a.started_at).total_seconds() for a, b in itertools.pairwise(log)]
    assert gaps[0] >= backoff_seconds(1) and gaps[1] >= backoff_seconds(2)
    # every request is signed over timestamp + "." + body with the partner's secret
    assert len(receiver.requests) == 3
    for i, req in enumerate(receiver.requests, start=1):
        import hashlib
        import hmac

        ts = req.headers["X-Credits-Timestamp"]
        expected = hmac.new(b"whsec_test_123", ts.encode() + b"." + req.body, hashlib.sha256)
        assert req.headers["X-Credits-Signature"] == "sha256=" + expected.hexdigest()
        assert abs(int(ts) - time.time()) < 60
        assert req.headers["X-Credits-Delivery"] == delivery.delivery_id
        assert req.headers["X-Credits-Attempt"] == str(i)
        assert req.headers["X-Credits-Event"] == "credit.expiration_warning"
        assert req.headers["Content-Type"] == "application/json"
    # the same body every time, with exact amounts
    assert len({r.body for r in receiver.requests}) == 1
    payload = receiver.requests[0].json()
    assert payload["type"] == "credit_expiration_warning"
    assert payload["accountId"] == account.account_id
    assert payload["thresholdDays"] == 7
    assert payload["totalExpiring"] == Decimal("75.10")
    assert b'"totalExpiring":75.10' in receiver.requests[0].body
    assert payload["creditCount"] == 1
    [credit] = payload["expiringCredits"]
    assert credit["creditId"] == grant.credit_id
    assert credit["amount"] == {"remaining": Decimal("75.10"), "currency": "USD"}
    assert credit["dates"]["expires"].startswith(f"{grant.expires_at.astimezone(UTC):%Y-%m-%d}")


def test_signature_helper_refuses_a_tampered_body_or_a_stale_timestamp():
    body = json.dumps({"a": 1}).encode()
    ts = str(int(time.time()))
    sig = signing.sign("s3cret", ts, body)
    assert signing.verify("s3cret", ts, body, sig)
    assert not signing.verify("s3cret", ts, body + b" ", sig)
    assert not signing.verify("other", ts, body, sig)
    old = str(int(time.time()) - 3600)
    assert not signing.verify("s3cret", old, body, signing.sign("s3cret", old, body))


def test_webhook_out_of_attempts_fails_and_an_admin_retry_sends_it_again(
    fast_backoff, receiver, staff_user
):
    fast_backoff.NOTIFICATIONS_MAX_ATTEMPTS = 2
    receiver.script = [500, 500, 200]
    partner = PartnerFactory(webhook_url=receiver.url, webhook_secret="k")
    make_grant(AccountFactory(partner=partner), expires_at=timezone.now() + 2 * DAY)

    expiry_warnings_send()
    report = deliver_until_settled()

    delivery = Delivery.objects.get(channel="webhook")
    assert (delivery.status, delivery.attempts, report.failed) == (DeliveryStatus.FAILED, 2, 1)
    assert report.next_attempt_at is None

    delivery_retry(delivery=delivery, actor=Actor.for_user(staff_user))
    deliver_until_settled()

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.attempts == 3
    assert delivery.retried_by.startswith("user:fiona")
    with pytest.raises(Conflict):
        delivery_retry(delivery=delivery, actor=Actor.for_user(staff_user))


def test_partner_without_a_secret_gets_nothing_unsigned(receiver):
    partner = PartnerFactory(webhook_url=receiver.url, webhook_secret="")
    make_grant(AccountFactory(partner=partner), expires_at=timezone.now() + 2 * DAY)

    expiry_warnings_send()

    delivery = Delivery.objects.get(channel="webhook")
    assert delivery.status == DeliveryStatus.FAILED
    assert "no webhook secret" in delivery.last_error
    assert receiver.requests == []


def test_unreachable_endpoint_is_logged_and_retried(settings):
    # A backoff no run can outlast: with a short one, a slow machine retries within the run.
    settings.NOTIFICATIONS_BACKOFF_SECONDS = 60
    partner = PartnerFactory(webhook_url="http://127.0.0.1:9/closed", webhook_secret="k")
    make_grant(AccountFactory(partner=partner, email=""), expires_at=timezone.now() + 2 * DAY)

    run = expiry_warnings_send()

    assert run.delivery.retrying == 1
    attempt = DeliveryAttempt.objects.get()
    assert attempt.status_code is None
    assert "refused" in attempt.error.lower() or "error" in attempt.error.lower()
    assert Delivery.objects.get().next_attempt_at > attempt.started_at


class FlakyBackend(BaseEmailBackend):
    """Refuses the first message it is given in the process, then delivers to mail.outbox."""

    calls = 0

    def send_messages(self, email_messages):
        FlakyBackend.calls += 1
        if FlakyBackend.calls == 1:
            raise ConnectionRefusedError("smtp down")
        mail.outbox.extend(email_messages)
        return len(email_messages)


def test_email_failure_is_retried_with_backoff(fast_backoff):
    fast_backoff.EMAIL_BACKEND = "tests.jobs.test_expiry_warnings.FlakyBackend"
    FlakyBackend.calls = 0
    make_grant(AccountFactory(), expires_at=timezone.now() + 2 * DAY)

    first = expiry_warnings_send()
    report = deliver_until_settled()

    assert first.delivery.retrying == 1
    assert report.delivered == 1
    delivery = Delivery.objects.get()
    assert [(a.succeeded, "smtp down" in a.error) for a in delivery.attempt_log.all()] == [
        (False, True),
        (True, False),
    ]
    assert len(mail.outbox) == 1


def test_a_delivery_whose_worker_died_is_taken_again_after_its_lease(fast_backoff):
    make_grant(AccountFactory(), expires_at=timezone.now() + 2 * DAY)
    expiry_warnings_claim()
    # a worker claimed it, then died before recording anything
    Delivery.objects.update(
        status=DeliveryStatus.SENDING,
        attempts=1,
        lease_until=timezone.now() - timedelta(seconds=1),
    )

    report = deliveries_send_due()

    delivery = Delivery.objects.get()
    assert report.delivered == 1
    assert delivery.attempts == 2
    log = list(delivery.attempt_log.order_by("number"))
    assert [(a.number, a.succeeded) for a in log] == [(1, False), (2, True)]
    assert "lease expired" in log[0].error
    assert len(mail.outbox) == 1


def test_a_delivery_held_by_a_live_worker_is_left_alone():
    make_grant(AccountFactory(), expires_at=timezone.now() + 2 * DAY)
    expiry_warnings_claim()
    Delivery.objects.update(
        status=DeliveryStatus.SENDING, attempts=1, lease_until=timezone.now() + timedelta(hours=1)
    )

    assert deliveries_send_due().attempted == 0
    assert mail.outbox == []


def test_claims_in_bulk_split_large_groups_into_bounded_notices(monkeypatch):
    monkeypatch.setattr("notifications.services.NOTICE_PART_SIZE", 40)
    account = AccountFactory()
    bulk_grants([account], 100, expires_at=timezone.now() + 3 * DAY, amount=Decimal("1.25"))

    run = expiry_warnings_send()

    assert run.claim.warnings == 100
    notices = list(ExpiryNotice.objects.order_by("part"))
    assert [n.credit_count for n in notices] == [40, 40, 20]
    assert sum(n.total_remaining for n in notices) == Decimal("125.00")
    assert len(mail.outbox) == 3
