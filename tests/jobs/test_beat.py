"""The issue's "Done when": a credit issued to expire shortly is expired by a running beat and
worker, with its ledger row and its warning.

- Against Redis and PostgreSQL: beat and a worker as real subprocesses on the pytest test
  database, every job every second (JOBS_EVERY_SECONDS), the schedule read by
  django-celery-beat's DatabaseScheduler as in production.
- On the embedded default: the README's run command itself (scripts/run: web, worker and beat on
  SQLite and the filesystem broker, no Redis, whatever database the suite runs on), then
  Ctrl-C, after which nothing may be left running.
"""

import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from credits.models import EntryKind, GrantStatus, LedgerEntry
from credits.services import grant_issue
from notifications.models import Delivery, DeliveryStatus, ExpiryWarning
from tests.factories import TEST_ACTOR, AccountFactory, PartnerFactory
from tests.jobs.helpers import (
    ROOT,
    WORKER_READY,
    Receiver,
    celery_env,
    database_url_for_subprocesses,
    forget_redis_keys,
    mail_files,
    redis_or_fail,
    redis_url,
    start_celery,
    start_worker,
    stop_all,
    wait_for,
)

EXPIRES_IN = timedelta(seconds=6)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_beat_and_worker_expire_a_credit_with_its_ledger_row_and_warning(tmp_path):
    # given beat and a worker running every job every second, on Redis and PostgreSQL
    url = redis_url(14)
    redis_or_fail(url)
    queue = f"beat-test-{uuid.uuid4().hex[:8]}"
    env = celery_env(
        tmp_path,
        DATABASE_URL=database_url_for_subprocesses(),
        REDIS_URL=url,
        CELERY_QUEUE=queue,
        JOBS_EVERY_SECONDS="1",
    )
    receiver = Receiver()
    processes = [
        start_worker(name="worker", queue=queue, env=env, tmp=tmp_path),
        start_celery(["beat", "-l", "INFO"], name="beat", env=env, tmp=tmp_path),
    ]
    try:
        processes[0].wait_ready(WORKER_READY)
        processes[1].wait_ready("beat: Starting")
        partner = PartnerFactory(webhook_url=receiver.url, webhook_secret="whsec_beat")
        account = AccountFactory(partner=partner, email="billing@beat.example")
        # when a credit is issued to expire in a few seconds
        grant = grant_issue(
            account=account,
            type="promotional",
            amount=Decimal("5.00"),
            currency="USD",
            actor=TEST_ACTOR,
            expires_at=timezone.now() + EXPIRES_IN,
            description="Done-when credit",
        )
        # then the running beat has it expired, with its ledger row...
        wait_for(
            lambda: LedgerEntry.objects.filter(grant=grant, kind=EntryKind.EXPIRATION).exists(),
            timeout=40,
            what="the expiry job to expire the credit",
        )
        # ...and its warning was delivered first, by email and by webhook
        wait_for(
            lambda: Delivery.objects.filter(status=DeliveryStatus.DELIVERED).count() == 2,
            timeout=20,
            what="both deliveries of the warning",
        )
    except AssertionError as exc:
        logs = "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in processes)
        raise AssertionError(f"{exc}\n{logs}") from None
    finally:
        stop_all(processes)
        receiver.close()
        forget_redis_keys(url, queue, [p.hostname for p in processes if p.hostname])

    grant.refresh_from_db()
    assert (grant.status, grant.remaining) == (GrantStatus.EXPIRED, Decimal("0.00"))
    entry = LedgerEntry.objects.get(grant=grant, kind=EntryKind.EXPIRATION)
    assert (entry.amount, entry.actor) == (Decimal("-5.00"), "job:expire_credits")
    warning = ExpiryWarning.objects.get(grant=grant)
    assert warning.threshold_days == 1
    assert warning.created_at < grant.expires_at <= entry.created_at
    [email] = [m for m in mail_files(tmp_path) if "billing@beat.example" in m]
    assert "Your credit of $5.00 expires on" in email
    assert receiver.requests[0].json()["expiringCredits"][0]["creditId"] == grant.credit_id
    # the schedule the finance team sees in the admin is the one that ran
    expire_task = PeriodicTask.objects.get(name="expire_credits")
    assert expire_task.task == "credits.tasks.expire_credits"
    assert expire_task.last_run_at is not None and expire_task.description
    assert set(PeriodicTask.objects.values_list("name", flat=True)) >= {
        "activate_credits",
        "expire_credits",
        "send_expiry_warnings",
        "mark_overdue_invoices",
        "auto_apply_expiring_credits",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


_ISSUE = """
from datetime import timedelta
from decimal import Decimal
from django.utils import timezone
from credits.actors import Actor
from credits.models import Account
from credits.services import grant_issue
account = Account.objects.create(account_id="acct_done_when", name="Done When Ltd",
                                 email="finance@donewhen.example")
grant = grant_issue(account=account, type="promotional", amount=Decimal("7.25"), currency="USD",
                    actor=Actor.for_job("done-when-test"), description="Two-minute credit",
                    expires_at=timezone.now() + timedelta(seconds={seconds}))
print(grant.credit_id)
"""


@pytest.mark.slow
def test_run_command_runs_web_worker_and_beat_on_sqlite_and_ctrl_c_stops_them(tmp_path):
    # given the README's run command on the embedded default (no DATABASE_URL, no REDIS_URL)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        VAR_DIR=str(tmp_path / "var"),
        PORT=str(port),
        JOBS_EVERY_SECONDS="1",
        WORKER_CONCURRENCY="1",
        PYTHONUNBUFFERED="1",
    )
    env = {k: v for k, v in env.items() if not k.startswith("CELERY_")}
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as out:
        run = subprocess.Popen(
            ["scripts/run"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    log = lambda: log_path.read_text(errors="replace")  # noqa: E731
    db = tmp_path / "var" / "db.sqlite3"
    try:
        wait_for(lambda: "ready." in log() and "beat: Starting" in log(), timeout=120,
                 what="scripts/run to start worker and beat")  # fmt: skip
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{port}/admin/login/"), timeout=30,
                 what="the web process")  # fmt: skip
        assert "Admin login:" in log()
        # when a credit is issued to expire a few seconds later
        issued = subprocess.run(
            [str(ROOT / ".venv/bin/python"), "manage.py", "shell", "-c",
             _ISSUE.format(seconds=int(EXPIRES_IN.total_seconds()) + 2)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        credit_id = issued.stdout.strip().splitlines()[-1]
        # then the running beat and worker expire it, with its ledger row and warning
        status = wait_for(
            lambda: _query(db, "SELECT status FROM credits_creditgrant WHERE credit_id = ?",
                           credit_id) == [("expired",)],
            timeout=60, what="the credit to be expired by the running jobs",
        )  # fmt: skip
        assert status
        [(_kind, amount, actor)] = _query(
            db,
            "SELECT e.kind, e.amount, e.actor FROM credits_ledgerentry e "
            "JOIN credits_creditgrant g ON g.id = e.grant_id "
            "WHERE g.credit_id = ? AND e.kind = 'expiration'",
            credit_id,
        )
        assert (Decimal(str(amount)), actor) == (Decimal("-7.25"), "job:expire_credits")
        assert _query(
            db,
            "SELECT w.threshold_days FROM notifications_expirywarning w "
            "JOIN credits_creditgrant g ON g.id = w.grant_id WHERE g.credit_id = ?",
            credit_id,
        ) == [(1,)]
        # the console email backend printed the warning in the worker's output
        assert "To: finance@donewhen.example" in log()
        assert "Your credit of $7.25 expires on" in log()
    finally:
        # when Ctrl-C is pressed (SIGINT to the whole foreground process group)
        if _group_alive(run.pid):
            os.killpg(run.pid, signal.SIGINT)
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            raise AssertionError(f"scripts/run did not stop on Ctrl-C:\n{log()[-3000:]}") from None
    # then web, worker and beat are all gone
    deadline = time.monotonic() + 15
    while _group_alive(run.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group_alive(run.pid), "a process of scripts/run survived Ctrl-C"
    assert not _http_ok(f"http://127.0.0.1:{port}/admin/login/")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except Exception:
        return False


def _query(db, sql: str, *params):
    if not db.exists():
        return None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(sql, params).fetchall()
