"""The scheduled jobs of SPEC §9, one function each, shared by the Celery tasks (credits.tasks)
and the management commands of the same names: each calls its service with the job's actor
and returns a JobResult (counts and a one-line summary) that the task returns and the command
prints. No business rule lives here; the services decide.
"""

import socket
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from credits.actors import Actor
from credits.models import Account, CreditGrant, GrantStatus
from credits.money import fmt, from_minor
from credits.services import grants_activate_due, grants_expire


@dataclass
class JobResult:
    job: str
    started_at: datetime
    finished_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)
    amounts: dict[str, str] = field(default_factory=dict)  # currency -> Decimal text
    summary: str = ""
    worker: str = ""
    next_retry_at: datetime | None = None  # earliest delivery waiting for a retry

    def as_dict(self) -> dict:
        """JSON-safe, for a Celery result backend and logs."""
        return {
            "job": self.job,
            "startedAt": self.started_at.isoformat(),
            "finishedAt": self.finished_at.isoformat() if self.finished_at else None,
            "counts": self.counts,
            "amounts": self.amounts,
            "summary": self.summary,
            "worker": self.worker,
            "nextRetryAt": self.next_retry_at.isoformat() if self.next_retry_at else None,
        }


def _run(name: str, worker: str, body: Callable[[Actor, JobResult], None]) -> JobResult:
    result = JobResult(job=name, started_at=timezone.now(), worker=worker or socket.gethostname())
    t0 = time.monotonic()
    body(Actor.for_job(name), result)
    result.finished_at = timezone.now()
    result.summary += f" ({time.monotonic() - t0:.2f}s)"
    return result


def activate_credits(*, now: datetime | None = None, worker: str = "") -> JobResult:
    def body(actor: Actor, result: JobResult) -> None:
        activated = grants_activate_due(actor=actor, now=now)
        result.counts = {"activated": activated}
        result.summary = f"activate_credits: {activated} credit(s) activated"

    return _run("activate_credits", worker, body)


def expire_credits(
    *, now: datetime | None = None, batch_size: int | None = None, worker: str = ""
) -> JobResult:
    def body(actor: Actor, result: JobResult) -> None:
        expired = grants_expire(actor=actor, now=now, batch_size=batch_size)
        result.counts = {"expired": expired}
        result.summary = f"expire_credits: {expired} credit(s) expired"

    return _run("expire_credits", worker, body)


def send_expiry_warnings(*, now: datetime | None = None, worker: str = "") -> JobResult:
    from notifications.services import expiry_warnings_send

    def body(actor: Actor, result: JobResult) -> None:
        run = expiry_warnings_send(now=now, worker=worker)
        d = run.delivery
        result.counts = {
            "warnings": run.claim.warnings,
            "notices": run.claim.notices,
            "deliveries_created": run.claim.deliveries,
            "delivered": d.delivered,
            "emails_delivered": d.by_channel.get("email", 0),
            "webhooks_delivered": d.by_channel.get("webhook", 0),
            "retrying": d.retrying,
            "failed": d.failed,
        }
        result.next_retry_at = d.next_attempt_at
        result.summary = (
            f"send_expiry_warnings: {run.claim.warnings} warning(s) in {run.claim.notices} "
            f"notice(s); {d.delivered} delivered ({d.by_channel.get('email', 0)} email, "
            f"{d.by_channel.get('webhook', 0)} webhook), {d.retrying} waiting to retry, "
            f"{d.failed} failed"
        )

    return _run("send_expiry_warnings", worker, body)


def deliver_notifications(*, worker: str = "") -> JobResult:
    """Deliveries whose retry is due, without claiming new warnings (the retry task)."""
    from notifications.services import deliveries_send_due

    def body(actor: Actor, result: JobResult) -> None:
        d = deliveries_send_due(worker=worker)
        result.counts = {"delivered": d.delivered, "retrying": d.retrying, "failed": d.failed}
        result.next_retry_at = d.next_attempt_at
        result.summary = (
            f"deliver_notifications: {d.delivered} delivered, {d.retrying} waiting to retry, "
            f"{d.failed} failed"
        )

    return _run("deliver_notifications", worker, body)


def mark_overdue_invoices(*, now: datetime | None = None, worker: str = "") -> JobResult:
    from invoices.services import invoices_mark_overdue

    def body(actor: Actor, result: JobResult) -> None:
        changed = invoices_mark_overdue(actor=actor, now=now)
        result.counts = {"overdue": changed}
        result.summary = f"mark_overdue_invoices: {changed} invoice(s) marked overdue"

    return _run("mark_overdue_invoices", worker, body)


def accounts_with_expiring_credits_to_apply(*, now: datetime, within: timedelta):
    """Opted-in accounts holding active credit that expires within the window and an open
    invoice it could pay (the same currency is checked by the plan)."""
    from invoices.models import OPEN_INVOICE_STATUSES, Invoice

    return (
        Account.objects.filter(auto_apply_expiring_credits=True)
        .filter(
            Exists(
                CreditGrant.objects.filter(
                    account=OuterRef("pk"),
                    status=GrantStatus.ACTIVE,
                    remaining__gt=0,
                    expires_at__gt=now,
                    expires_at__lte=now + within,
                )
            ),
            Exists(
                Invoice.objects.filter(account=OuterRef("pk"), status__in=OPEN_INVOICE_STATUSES)
            ),
        )
        .order_by("pk")
    )


def auto_apply_expiring_credits(*, now: datetime | None = None, worker: str = "") -> JobResult:
    """The seed's auto_apply_expiring_credits: for opted-in accounts, credits expiring within
    AUTO_APPLY_EXPIRING_WITHIN_DAYS are applied to their pending and overdue invoices, soonest
    expiring first. A batch of accounts per transaction, so one run scales with the number of
    accounts without one huge lock set; a second run finds nothing left to apply."""
    from credits.allocation import MINIMIZE_EXPIRATION
    from invoices.models import OPEN_INVOICE_STATUSES
    from invoices.services import credits_bulk_apply

    def body(actor: Actor, result: JobResult) -> None:
        at = now or timezone.now()
        within = timedelta(days=settings.AUTO_APPLY_EXPIRING_WITHIN_DAYS)
        account_pks = list(
            accounts_with_expiring_credits_to_apply(now=at, within=within).values_list(
                "pk", flat=True
            )
        )
        size = settings.AUTO_APPLY_ACCOUNTS_PER_BATCH
        applied: dict[str, Decimal] = defaultdict(Decimal)
        invoices = 0
        for start in range(0, len(account_pks), size):
            batch = Account.objects.filter(pk__in=account_pks[start : start + size])
            bulk = credits_bulk_apply(
                accounts=list(batch),
                actor=actor,
                strategy=MINIMIZE_EXPIRATION,
                invoice_statuses=OPEN_INVOICE_STATUSES,
                expiring_before=at + within,
                now=at,
            )
            for invs, _, plan in bulk.plans:
                if not invs or not plan.total:
                    continue
                applied[invs[0].currency] += from_minor(plan.total, invs[0].currency)
                invoices += sum(1 for inv in invs if plan.total_for_invoice(inv.invoice_id))
        result.counts = {"accounts": len(account_pks), "invoices": invoices}
        result.amounts = {cur: str(amount) for cur, amount in sorted(applied.items())}
        total = ", ".join(fmt(a, c) for c, a in sorted(applied.items())) or "nothing"
        result.summary = (
            f"auto_apply_expiring_credits: {total} applied to {invoices} invoice(s) of "
            f"{len(account_pks)} account(s)"
        )

    return _run("auto_apply_expiring_credits", worker, body)


def compact_grant_summaries(*, worker: str = "") -> JobResult:
    """Fold the grant summary's delta rows (credits.summaries): no figure changes, the rows a
    credits list reads stay few."""
    from credits.summaries import grant_summaries_compact

    def body(actor: Actor, result: JobResult) -> None:
        done = grant_summaries_compact()
        result.counts = {
            "accounts": done.accounts,
            "rows_before": done.rows_before,
            "rows_after": done.rows_after,
        }
        result.summary = (
            f"compact_grant_summaries: {done.accounts} account(s), {done.rows_before} summary "
            f"row(s) folded into {done.rows_after}"
        )

    return _run("compact_grant_summaries", worker, body)


JOBS: dict[str, Callable[..., JobResult]] = {
    "activate_credits": activate_credits,
    "expire_credits": expire_credits,
    "send_expiry_warnings": send_expiry_warnings,
    "mark_overdue_invoices": mark_overdue_invoices,
    "auto_apply_expiring_credits": auto_apply_expiring_credits,
    "compact_grant_summaries": compact_grant_summaries,
}
