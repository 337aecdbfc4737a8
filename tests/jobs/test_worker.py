"""The jobs in real Celery workers against Redis and PostgreSQL: each job end to end through
the broker, run twice, and run by two worker processes at once, writing nothing twice; the
expiry webhook retried by the worker until the loopback receiver accepts it.

Two workers (separate processes, solo pool) consume a queue of this module's own on Redis and
use the pytest test database; the test sends tasks by name through a Celery app of its own and
waits for each run's summary on the Redis result backend. transaction=True: the workers must
see what the test committed.
"""

import hashlib
import hmac
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from celery import Celery
from django.db.models import Count
from django.utils import timezone

from credits.models import EntryKind, GrantEvent, GrantStatus, LedgerEntry
from credits.selectors import ledger_problems
from invoices.models import InvoiceEvent, InvoiceStatus
from invoices.services import invoice_finalize
from notifications.models import Delivery, DeliveryStatus, ExpiryNotice, ExpiryWarning
from tests.factories import TEST_ACTOR, AccountFactory, PartnerFactory, make_grant, make_invoice
from tests.jobs.helpers import (
    WORKER_READY,
    Receiver,
    bulk_grants,
    celery_env,
    database_url_for_subprocesses,
    forget_redis_keys,
    mail_files,
    redis_or_fail,
    redis_url,
    start_worker,
    stop_all,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TASK = "credits.tasks.{}"
TIMEOUT = 60


@pytest.fixture(scope="module")
def cluster(django_db_setup, tmp_path_factory):
    """Two worker processes on one Redis queue, and a client app to send tasks to them."""
    url = redis_url()
    redis_or_fail(url)
    tmp = tmp_path_factory.mktemp("workers")
    queue = f"jobs-test-{uuid.uuid4().hex[:8]}"
    env = celery_env(
        tmp,
        DATABASE_URL=database_url_for_subprocesses(),
        REDIS_URL=url,
        CELERY_RESULT_BACKEND=url,
        CELERY_QUEUE=queue,
        # Small batches so that two expiry runs at once interleave batch by batch.
        CREDIT_EXPIRE_BATCH_SIZE="100",
    )
    workers = []
    try:
        workers = [start_worker(name=f"w{i}", queue=queue, env=env, tmp=tmp) for i in (1, 2)]
        for w in workers:
            w.wait_ready(WORKER_READY)
        client = Celery("jobs-tests", broker=url, backend=url)
        client.conf.task_default_queue = queue
        yield Cluster(client, queue, tmp, workers)
    finally:
        stop_all(workers)
        forget_redis_keys(url, queue, [w.hostname for w in workers])


@pytest.fixture(autouse=True)
def empty_mailbox(cluster):
    """The workers' mail folder is shared by the module's tests; each starts with none."""
    folder = cluster.tmp / "mail"
    if folder.exists():
        for path in folder.iterdir():
            path.unlink()


class Cluster:
    def __init__(self, client: Celery, queue: str, tmp, workers):
        self.client, self.queue, self.tmp, self.workers = client, queue, tmp, workers

    def send(self, job: str):
        return self.client.send_task(TASK.format(job), queue=self.queue)

    def run(self, job: str) -> dict:
        return self.get(self.send(job))

    def run_at_once(self, job: str) -> list[dict]:
        pending = [self.send(job), self.send(job)]
        return [self.get(p) for p in pending]

    def get(self, pending) -> dict:
        try:
            return pending.get(timeout=TIMEOUT)
        except Exception:
            logs = "\n".join(f"--- {w.name}\n{w.log()[-4000:]}" for w in self.workers)
            raise AssertionError(f"task {pending.id} failed or timed out:\n{logs}") from None

    def emails(self) -> list[str]:
        """Messages the workers sent (file backend; a file may hold several)."""
        return [
            part
            for text in mail_files(self.tmp)
            for part in text.split("-" * 79)
            if "X-Credits-Notice:" in part
        ]


def overlapping(a: dict, b: dict) -> bool:
    return a["startedAt"] < b["finishedAt"] and b["startedAt"] < a["finishedAt"]


# ---------------------------------------------------------------------------------------------
# Each job end to end, and run twice


def test_each_job_runs_end_to_end_in_a_worker_and_a_second_run_writes_nothing(cluster):
    now = timezone.now()
    today = timezone.localdate()
    account = AccountFactory(auto_apply_credits=False, auto_apply_expiring_credits=True)
    [pending] = bulk_grants([account], 1, status=GrantStatus.PENDING, expires_at=None,
                            effective_at=now - timedelta(minutes=1))  # fmt: skip
    [due] = bulk_grants([account], 1, expires_at=now - timedelta(minutes=1), amount=Decimal("4"))
    expiring = make_grant(account, "25.00", expires_at=now + timedelta(days=5))
    late = make_invoice(
        account, ("storage", "10.00"), issue_date=today - timedelta(days=40),
        due_date=today - timedelta(days=1),
    )  # fmt: skip
    open_invoice = make_invoice(account, ("clusters", "100.00"))
    for invoice in (late, open_invoice):
        invoice_finalize(invoice=invoice, actor=TEST_ACTOR)

    results = {
        job: cluster.run(job)
        for job in (
            "activate_credits",
            "expire_credits",
            "send_expiry_warnings",
            "mark_overdue_invoices",
            "auto_apply_expiring_credits",
        )
    }

    assert results["activate_credits"]["counts"] == {"activated": 1}
    assert results["expire_credits"]["counts"] == {"expired": 1}
    assert results["send_expiry_warnings"]["counts"]["warnings"] == 1
    assert results["send_expiry_warnings"]["counts"]["emails_delivered"] == 1
    assert results["mark_overdue_invoices"]["counts"] == {"overdue": 1}
    assert results["auto_apply_expiring_credits"]["amounts"] == {"USD": "25.00"}
    assert GrantEvent.objects.get(grant_id=pending, kind="activated").actor == (
        "job:activate_credits"
    )
    assert LedgerEntry.objects.get(grant_id=due, kind=EntryKind.EXPIRATION).amount == Decimal(
        "-4.00"
    )
    assert ExpiryWarning.objects.get().grant_id == expiring.pk
    [email] = cluster.emails()
    assert "$25.00" in email and expiring.credit_id in email
    assert InvoiceEvent.objects.get(invoice=late, kind="overdue").actor == (
        "job:mark_overdue_invoices"
    )
    # The credit expiring within 7 days then paid the overdue invoice (due first) and the rest
    # went to the open one.
    late.refresh_from_db()
    open_invoice.refresh_from_db()
    assert (late.status, late.total) == (InvoiceStatus.PAID, Decimal("0.00"))
    assert (open_invoice.credits_total, open_invoice.total) == (Decimal("15.00"), Decimal("85.00"))
    expiring.refresh_from_db()
    assert expiring.remaining == Decimal("0.00")

    before = _writes()
    again = {job: cluster.run(job) for job in results}
    assert all(not any(r["counts"].values()) for r in again.values()), again
    assert _writes() == before
    assert len(cluster.emails()) == 1
    assert ledger_problems() == []


def _writes():
    return (
        LedgerEntry.objects.count(),
        GrantEvent.objects.count(),
        InvoiceEvent.objects.count(),
        ExpiryWarning.objects.count(),
        ExpiryNotice.objects.count(),
        Delivery.objects.count(),
    )


# ---------------------------------------------------------------------------------------------
# Two workers at once


def test_two_workers_expiring_at_once_expire_each_credit_once(cluster):
    accounts = [AccountFactory() for _ in range(20)]
    bulk_grants(accounts, 150, expires_at=timezone.now() - timedelta(minutes=5))

    a, b = cluster.run_at_once("expire_credits")

    assert {a["worker"].split("@")[0], b["worker"].split("@")[0]} == {"w1", "w2"}
    assert overlapping(a, b), (a, b)  # they really ran at the same time
    assert a["counts"]["expired"] + b["counts"]["expired"] == 3000
    expirations = LedgerEntry.objects.filter(kind=EntryKind.EXPIRATION)
    assert expirations.count() == 3000
    assert not expirations.values("grant").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert ledger_problems() == []


def test_two_workers_warning_at_once_warn_and_email_each_credit_once(cluster):
    accounts = [AccountFactory() for _ in range(40)]
    bulk_grants(accounts, 50, expires_at=timezone.now() + timedelta(days=4))

    a, b = cluster.run_at_once("send_expiry_warnings")

    assert {a["worker"].split("@")[0], b["worker"].split("@")[0]} == {"w1", "w2"}
    assert a["counts"]["warnings"] + b["counts"]["warnings"] == 2000
    assert ExpiryWarning.objects.count() == 2000
    assert ExpiryNotice.objects.count() == 40
    assert a["counts"]["emails_delivered"] + b["counts"]["emails_delivered"] == 40
    emails = cluster.emails()
    assert len(emails) == 40
    assert len({e.split("X-Credits-Notice: ")[1].split()[0] for e in emails}) == 40
    assert set(Delivery.objects.values_list("status", "attempts").distinct()) == {
        (DeliveryStatus.DELIVERED, 1)
    }


def test_two_workers_activating_marking_and_auto_applying_at_once_write_each_change_once(
    cluster,
):
    # given credits to activate, invoices past due, and opted-in accounts with expiring credit
    now, today = timezone.now(), timezone.localdate()
    accounts = [AccountFactory() for _ in range(4)]
    bulk_grants(accounts, 50, status=GrantStatus.PENDING, expires_at=None,
                effective_at=now - timedelta(minutes=1))  # fmt: skip
    late_payer = AccountFactory(auto_apply_credits=False)
    for _ in range(20):
        invoice_finalize(
            invoice=make_invoice(late_payer, issue_date=today - timedelta(days=40),
                                 due_date=today - timedelta(days=3)),
            actor=TEST_ACTOR,
        )  # fmt: skip
    for _ in range(8):
        account = AccountFactory(auto_apply_credits=False, auto_apply_expiring_credits=True)
        make_grant(account, "30.00", expires_at=now + timedelta(days=2))
        make_grant(account, "30.00", expires_at=now + timedelta(days=20))  # outside the window
        invoice_finalize(invoice=make_invoice(account, ("clusters", "45.00")), actor=TEST_ACTOR)
    # when each job is run by both workers at once
    activate = cluster.run_at_once("activate_credits")
    overdue = cluster.run_at_once("mark_overdue_invoices")
    apply = cluster.run_at_once("auto_apply_expiring_credits")
    # then every change was written once
    assert sum(r["counts"]["activated"] for r in activate) == 200
    assert GrantEvent.objects.filter(kind="activated").count() == 200
    assert not GrantEvent.objects.values("grant").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert sum(r["counts"]["overdue"] for r in overdue) == 20
    assert InvoiceEvent.objects.filter(kind="overdue").count() == 20
    assert sum(Decimal(r["amounts"].get("USD", "0")) for r in apply) == Decimal("240.00")
    deductions = LedgerEntry.objects.filter(kind=EntryKind.DEDUCTION)
    assert deductions.count() == 8
    assert sum(-d.amount for d in deductions) == Decimal("240.00")
    assert ledger_problems() == []


# ---------------------------------------------------------------------------------------------
# Webhook retried by the worker


def test_worker_retries_the_webhook_with_backoff_until_the_receiver_accepts(cluster):
    receiver = Receiver(script=[500, 500, 200])
    try:
        partner = PartnerFactory(webhook_url=receiver.url, webhook_secret="whsec_worker")
        account = AccountFactory(partner=partner, email="")
        grant = make_grant(account, "19.99", expires_at=timezone.now() + timedelta(hours=20))

        first = cluster.run("send_expiry_warnings")
        assert first["counts"]["retrying"] == 1 and first["nextRetryAt"]
        delivery = wait_for(
            lambda: Delivery.objects.filter(status=DeliveryStatus.DELIVERED).first(),
            timeout=30,
            what="the webhook to be delivered by the retry tasks",
        )
    finally:
        receiver.close()

    assert delivery.attempts == 3
    assert [(a.status_code, a.succeeded) for a in delivery.attempt_log.order_by("number")] == [
        (500, False),
        (500, False),
        (200, True),
    ]
    assert len(receiver.requests) == 3
    for req in receiver.requests:
        ts = req.headers["X-Credits-Timestamp"]
        mac = hmac.new(b"whsec_worker", f"{ts}.".encode() + req.body, hashlib.sha256).hexdigest()
        assert req.headers["X-Credits-Signature"] == f"sha256={mac}"
    payload = receiver.requests[-1].json()
    assert payload["thresholdDays"] == 1
    assert payload["expiringCredits"][0]["creditId"] == grant.credit_id
    assert payload["totalExpiring"] == Decimal("19.99")
    time.sleep(0.5)
    assert len(receiver.requests) == 3  # nothing after the success
