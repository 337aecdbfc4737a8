"""The finance team's view of expiry warnings in the admin: deliveries with their status, each
attempt with its status code or error, the failed ones retried by an action; and the beat
schedule (django-celery-beat's periodic tasks) listed with the reason for each job."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from notifications.models import Delivery, DeliveryStatus, ExpiryNotice
from notifications.services import deliveries_send_due, expiry_warnings_claim
from tests.factories import AccountFactory, PartnerFactory, make_grant

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed_webhook(settings):
    settings.NOTIFICATIONS_MAX_ATTEMPTS = 1
    partner = PartnerFactory(webhook_url="http://127.0.0.1:9/refused", webhook_secret="k")
    make_grant(AccountFactory(partner=partner, email=""), expires_at=timezone.now() + timedelta(2))
    expiry_warnings_claim()
    deliveries_send_due()
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    return delivery


def test_delivery_list_and_page_show_status_and_every_attempt(admin_client, failed_webhook):
    listing = admin_client.get(reverse("admin:notifications_delivery_changelist"))
    page = admin_client.get(
        reverse("admin:notifications_delivery_change", args=[failed_webhook.pk])
    )

    assert listing.status_code == page.status_code == 200
    assert failed_webhook.delivery_id in listing.text and "failed" in listing.text
    assert "Connection refused" in page.text or "URLError" in page.text
    notice = admin_client.get(
        reverse("admin:notifications_expirynotice_change", args=[ExpiryNotice.objects.get().pk])
    )
    assert notice.status_code == 200 and failed_webhook.delivery_id in notice.text


def test_retry_action_queues_a_failed_delivery_again(admin_client, failed_webhook):
    response = admin_client.post(
        reverse("admin:notifications_delivery_changelist"),
        {"action": "retry_deliveries", "_selected_action": [failed_webhook.pk]},
        follow=True,
    )

    assert response.status_code == 200
    failed_webhook.refresh_from_db()
    assert failed_webhook.status == DeliveryStatus.PENDING
    assert failed_webhook.max_attempts == 2
    assert failed_webhook.retried_by.startswith("user:admin")


def test_warning_rows_cannot_be_added_or_deleted_in_the_admin(admin_client, failed_webhook):
    assert admin_client.get(reverse("admin:notifications_delivery_add")).status_code == 403
    assert (
        admin_client.get(
            reverse("admin:notifications_delivery_delete", args=[failed_webhook.pk])
        ).status_code
        == 403
    )


def test_beat_schedule_is_listed_with_the_reason_for_each_job(admin_client):
    from django.conf import settings
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import ModelEntry

    from credits_project.celery import app

    # What beat's DatabaseScheduler does at start for each entry of CELERY_BEAT_SCHEDULE.
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        ModelEntry.from_entry(name, app=app, **entry)

    page = admin_client.get(reverse("admin:django_celery_beat_periodictask_changelist"))

    assert page.status_code == 200
    for name in settings.CELERY_BEAT_SCHEDULE:
        assert name in page.text
    task = PeriodicTask.objects.get(name="expire_credits")
    detail = admin_client.get(
        reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])
    )
    assert "ledger entry" in task.description and task.description in detail.text
    assert task.interval.every == 60 and task.interval.period == "seconds"


def test_warning_list_shows_each_warned_credit_with_its_account(admin_client, failed_webhook):
    page = admin_client.get(reverse("admin:notifications_expirywarning_changelist"))

    notice = ExpiryNotice.objects.select_related("account").get()
    assert page.status_code == 200
    assert notice.account.account_id in page.text and notice.notice_id in page.text
