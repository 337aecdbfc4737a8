"""What the job tests share: grants in bulk (thousands, with their `grant` ledger entries, so
the ledger invariant holds), a webhook receiver on loopback whose answers are scripted, and
Celery workers and beat started as real subprocesses."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from django.db import connection
from django.utils import timezone

from credits.models import CreditGrant, EntryKind, GrantStatus, LedgerEntry

ROOT = Path(__file__).resolve().parents[2]


def bulk_grants(
    accounts: Iterable,
    per_account: int,
    *,
    expires_at: datetime | None,
    status: str = GrantStatus.ACTIVE,
    amount: Decimal = Decimal("10.00"),
    effective_at: datetime | None = None,
    description: str = "bulk credit",
) -> list[int]:
    """Grants written in bulk, as a past grant_issue would have left them (grant row plus its
    `grant` entry). `expires_at` may be in the past: a credit whose expiry has come."""
    now = timezone.now()
    effective_at = effective_at or now - timedelta(days=60)
    grants = [
        CreditGrant(
            account=account,
            type="promotional",
            status=status,
            currency=account.currency,
            original=amount,
            remaining=amount,
            price=amount,
            description=description,
            issued_at=effective_at,
            effective_at=effective_at,
            activated_at=effective_at if status != GrantStatus.PENDING else None,
            expires_at=expires_at,
            issuer_actor="job:tests",
            issued_by="job:tests",
            applicable_services=["all"],
        )
        for account in accounts
        for _ in range(per_account)
    ]
    CreditGrant.objects.bulk_create(grants, batch_size=2000)
    LedgerEntry.objects.bulk_create(
        [
            LedgerEntry(
                account_id=g.account_id,
                grant=g,
                kind=EntryKind.GRANT,
                amount=g.original,
                currency=g.currency,
                balance_after=g.original,
                actor="job:tests",
                created_at=effective_at,
            )
            for g in grants
        ],
        batch_size=2000,
    )
    return [g.pk for g in grants]


# ---------------------------------------------------------------------------------------------
# Webhook receiver


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self):
        return json.loads(self.body, parse_float=Decimal)


@dataclass
class Receiver:
    """An HTTP endpoint on 127.0.0.1 answering POSTs with the scripted status codes in turn
    (the last one repeats), recording every request."""

    script: list[int] = field(default_factory=lambda: [200])
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    n = len(receiver.requests)
                    status = receiver.script[min(n, len(receiver.script) - 1)]
                    receiver.requests.append(Received(dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"receiver says no")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/credits"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(predicate: Callable[[], object], *, timeout: float, interval: float = 0.1, what=""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Celery processes


def database_url_for_subprocesses() -> str:
    """The pytest test database, for processes started by a test (transaction=True tests only:
    they must see committed rows)."""
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def redis_url(db: int = 13) -> str:
    """The Redis of TEST_REDIS_URL, else of REDIS_URL (CI), else 127.0.0.1:6379, on a database
    number of the tests' own so that nothing else's keys are touched."""
    from urllib.parse import urlsplit, urlunsplit

    base = (
        os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379"
    )
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", "", ""))


def redis_or_fail(url: str) -> None:
    import pytest
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        pytest.fail(f"these tests need Redis at {url} ({exc}); set TEST_REDIS_URL")


@dataclass
class CeleryProcess:
    name: str
    proc: subprocess.Popen
    log_path: Path
    hostname: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def wait_ready(self, marker: str) -> "CeleryProcess":
        try:
            wait_for(
                lambda: marker in self.log() or self.proc.poll() is not None,
                timeout=60,
                interval=0.1,
                what=f"{self.name} to start",
            )
        except AssertionError:
            self.stop()
            raise AssertionError(f"{self.name} did not start:\n{self.log()}") from None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
        return self


def stop_all(processes: Iterable[CeleryProcess]) -> None:
    """SIGTERM to all first (warm shutdowns run side by side), then wait for each."""
    processes = list(processes)
    for p in processes:
        p.terminate()
    for p in processes:
        p.stop()


def celery_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "JOBS_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="credits_project.settings",
        CONN_MAX_AGE="0",  # no idle connection may keep the test database from being flushed
        VAR_DIR=str(tmp / "var"),
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(tmp / "mail"),
        NOTIFICATIONS_BACKOFF_SECONDS="0.2",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def start_celery(args: list[str], *, name: str, env: dict, tmp: Path) -> CeleryProcess:
    """Start `celery -A credits_project ARGS` in its own process group; not yet waited for."""
    log_path = tmp / f"{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "credits_project", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends it and its children
        )
    return CeleryProcess(name, proc, log_path)


def start_worker(*, name: str, queue: str, env: dict, tmp: Path) -> CeleryProcess:
    """A worker whose hostname is `name@<random>` (kept in `hostname`)."""
    hostname = f"{name}@{uuid.uuid4().hex[:6]}"
    process = start_celery(
        [
            "worker",
            "--pool=solo",
            "-Q",
            queue,
            "-n",
            hostname,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "INFO",
        ],
        name=name,
        env=env,
        tmp=tmp,
    )
    process.hostname = hostname
    return process


WORKER_READY = "ready."


def mail_files(tmp: Path) -> list[str]:
    folder = tmp / "mail"
    if not folder.exists():
        return []
    return [p.read_text(errors="replace") for p in sorted(folder.iterdir())]


def forget_redis_keys(url: str, queue: str, workers: Iterable[str] = ()) -> None:
    """Remove what a test's workers left in Redis: the queue's kombu keys and the results
    (`celery-task-meta-*`) of runs by those workers; nothing else in that database."""
    import redis

    r = redis.Redis.from_url(url)
    for key in r.scan_iter(f"*{queue}*"):
        r.delete(key)
    names = [w.encode() for w in workers]
    if names:
        for key in r.scan_iter("celery-task-meta-*"):
            value = r.get(key) or b""
            if any(name in value for name in names):
                r.delete(key)
