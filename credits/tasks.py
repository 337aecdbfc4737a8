"""Celery tasks of the scheduled jobs (SPEC §9). Thin: each runs the job function that its
management command also runs (credits.jobs) and returns the run's summary.

Task names are fixed strings: the beat schedule in settings and django-celery-beat's rows
refer to them, so renaming a function must not silently orphan a schedule.
"""

import logging

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from credits import jobs

log = logging.getLogger(__name__)


def _done(result: jobs.JobResult) -> dict:
    log.info(result.summary)
    return result.as_dict()


@shared_task(name="credits.tasks.activate_credits", bind=True)
def activate_credits(self) -> dict:
    return _done(jobs.activate_credits(worker=self.request.hostname or ""))


@shared_task(name="credits.tasks.expire_credits", bind=True)
def expire_credits(self) -> dict:
    return _done(jobs.expire_credits(worker=self.request.hostname or ""))


@shared_task(name="credits.tasks.mark_overdue_invoices", bind=True)
def mark_overdue_invoices(self) -> dict:
    return _done(jobs.mark_overdue_invoices(worker=self.request.hostname or ""))


@shared_task(name="credits.tasks.auto_apply_expiring_credits", bind=True)
def auto_apply_expiring_credits(self) -> dict:
    return _done(jobs.auto_apply_expiring_credits(worker=self.request.hostname or ""))


@shared_task(name="credits.tasks.compact_grant_summaries", bind=True)
def compact_grant_summaries(self) -> dict:
    return _done(jobs.compact_grant_summaries(worker=self.request.hostname or ""))


@shared_task(name="credits.tasks.send_expiry_warnings", bind=True)
def send_expiry_warnings(self) -> dict:
    result = jobs.send_expiry_warnings(worker=self.request.hostname or "")
    _schedule_retry(result)
    return _done(result)


@shared_task(name="credits.tasks.deliver_notifications", bind=True)
def deliver_notifications(self) -> dict:
    """Retries of failed deliveries, at the moment their backoff ends rather than at the next
    beat tick. Idempotent: each due delivery is claimed by one worker only."""
    result = jobs.deliver_notifications(worker=self.request.hostname or "")
    _schedule_retry(result)
    return _done(result)


def _schedule_retry(result: jobs.JobResult) -> None:
    """A retry due before the next beat tick of send_expiry_warnings gets a task of its own at
    that moment; later ones are left to the tick, so waiting retries never pile up as queued
    tasks."""
    if result.next_retry_at is None:
        return
    delay = (result.next_retry_at - timezone.now()).total_seconds()
    if delay < _tick_seconds():
        deliver_notifications.apply_async(countdown=max(delay, 0.0))


def _tick_seconds() -> float:
    entry = settings.CELERY_BEAT_SCHEDULE.get("send_expiry_warnings", {})
    schedule = entry.get("schedule")
    return float(schedule) if isinstance(schedule, int | float) else 60.0
