"""Jobs benchmark (issue #5, item 6): `expire_credits` and `send_expiry_warnings` over 10^6 due
grants on PostgreSQL, next to a single `INSERT ... SELECT` baseline in the same run.

    .venv/bin/python bench/jobs.py                          # 10^6 grants, 3 runs
    .venv/bin/python bench/jobs.py --grants 100000 --runs 1  # quick
    .venv/bin/python bench/jobs.py --webhooks               # also sign and POST every webhook

Own database (`credits_bench_jobs`, dropped, recreated and migrated at start). Each run, for
each job: empty the tables, load the due grants set-based (generate_series: accounts, grants and
their `grant` ledger entries), VACUUM ANALYZE, then time

- the baseline: ONE `INSERT ... SELECT` writing as many rows as the job must write, into a copy
  of the job's table (`CREATE TABLE ... (LIKE ... INCLUDING ALL)`: same columns, indexes and
  checks; no foreign keys, no triggers), selected from the same grants: the floor for writing
  that many rows on this machine;
- the job itself, through the same function its Celery task and management command call
  (credits.jobs), with its job actor:
  - expire_credits: every grant is past its expiry; each must become `expired` with one
    `expiration` ledger entry (batches of CREDIT_EXPIRE_BATCH_SIZE, one statement each);
  - send_expiry_warnings: every grant expires within the next 30 days (spread so that all three
    thresholds occur); each must get one warning, grouped into notices (one per account,
    currency, threshold) with one email delivery each, then delivered. Email goes through
    Django's locmem backend (messages rendered from the real templates and kept in memory, not
    sent over SMTP); webhooks are off unless --webhooks, which posts them to a loopback
    receiver with signatures.

Correctness is checked after each timed job (every grant expired once / warned once; every
email delivered once), so a fast wrong answer cannot pass.
"""

import argparse
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

DB = "credits_bench_jobs"

_ACCOUNTS_SQL = """
INSERT INTO credits_account (id, account_id, name, email, currency, auto_apply_credits,
                             auto_apply_expiring_credits, created_at, partner_id)
SELECT a, 'bench_' || lpad(a::text, 7, '0'), 'Bench customer ' || a,
       'billing+' || a || '@example.com', 'USD', true, false, now() - interval '400 days',
       %(partner)s
FROM generate_series(1, %(accounts)s) a
"""

# expires: an SQL expression of g.i (1..N) and now().
_GRANTS_SQL = """
INSERT INTO credits_creditgrant (
    id, credit_id, type, status, currency, original, remaining, used, reserved, price,
    description, reference_id, issued_by, reason, issued_at, effective_at, activated_at,
    expires_at, auto_activate, approval_required, approved_by, issuer_actor,
    applicable_services, minimum_spend, usage_limit, account_restrictions, campaign_id, tags,
    notes, transferable, extra_metadata, account_id)
SELECT g.i, 'cred_' || substr(md5('cred' || g.i), 1, 24), 'promotional', 'active', 'USD',
       10 + g.i %% 90, 10 + g.i %% 90, 0, 0, 10 + g.i %% 90,
       'Bench credit ' || g.i, '', 'job:bench', 'bench',
       now() - interval '60 days', now() - interval '60 days', now() - interval '60 days',
       {expires}, true, false, '', 'job:bench', '["all"]'::jsonb, 0, 'unlimited', '[]'::jsonb,
       '', '[]'::jsonb, '', false, '{{}}'::jsonb, 1 + g.i %% %(accounts)s
FROM generate_series(1, %(grants)s) AS g(i)
"""

_GRANT_ENTRIES_SQL = """
INSERT INTO credits_ledgerentry (entry_id, kind, amount, currency, balance_after, actor, reason,
                                 created_at, account_id, grant_id)
SELECT 'led_' || substr(md5('led' || g.id), 1, 24), 'grant', g.original, g.currency,
       g.original, 'job:bench', 'bench', g.issued_at, g.account_id, g.id
FROM credits_creditgrant g
"""

EXPIRED = "now() - interval '1 minute' - (g.i %% 1440) * interval '1 minute'"
# Spread over the next 30 days: about 3% within 1 day, 20% within 7, the rest within 30.
EXPIRING = "now() + interval '1 hour' + (g.i %% 719) * interval '1 hour'"

_EXPIRE_BASELINE_SQL = """
INSERT INTO bench_baseline (entry_id, kind, amount, currency, balance_after, actor, reason,
                            created_at, account_id, grant_id)
SELECT 'led_' || substr(md5(random()::text || g.id::text), 1, 24), 'expiration', -g.remaining,
       g.currency, 0, 'job:expire_credits', 'expired', now(), g.account_id, g.id
FROM credits_creditgrant g
WHERE g.status IN ('pending', 'active', 'reserved') AND g.expires_at <= now()
"""

_WARN_BASELINE_SQL = """
INSERT INTO bench_baseline (grant_id, threshold_days, notice_id, currency, remaining, expires_at,
                            run_id, created_at)
SELECT g.id, 30, 0, g.currency, g.remaining, g.expires_at, gen_random_uuid(), now()
FROM credits_creditgrant g
WHERE g.status IN ('active', 'reserved') AND g.remaining > 0
  AND g.expires_at > now() AND g.expires_at <= now() + interval '30 days'
"""


def sql(statement: str, params=None):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount


def reset() -> None:
    sql(
        "TRUNCATE notifications_deliveryattempt, notifications_delivery, "
        "notifications_expirywarning, notifications_expirynotice, credits_ledgerentry, "
        "credits_grantevent, credits_credithold, credits_grantsummary, credits_creditgrant, "
        "credits_account, credits_partner RESTART IDENTITY CASCADE"
    )
    sql("DROP TABLE IF EXISTS bench_baseline")


def load(*, grants: int, accounts: int, expires: str, webhook_url: str = "") -> float:
    from django.db import connection

    t0 = time.monotonic()
    partner = None
    if webhook_url:
        sql(
            "INSERT INTO credits_partner (id, name, display_name, webhook_url, webhook_secret, "
            "created_at) VALUES (1, 'bench', 'Bench', %s, 'whsec_bench', now())",
            [webhook_url],
        )
        partner = 1
    sql(_ACCOUNTS_SQL, {"accounts": accounts, "partner": partner})
    sql(_GRANTS_SQL.format(expires=expires), {"grants": grants, "accounts": accounts})
    sql(_GRANT_ENTRIES_SQL)
    for table in ("credits_account", "credits_creditgrant", "credits_ledgerentry"):
        sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}")
    connection.commit() if not connection.get_autocommit() else None
    old = connection.get_autocommit()
    connection.set_autocommit(True)
    sql("VACUUM ANALYZE credits_account, credits_creditgrant, credits_ledgerentry")
    connection.set_autocommit(old)
    return time.monotonic() - t0


def baseline(like: str, statement: str) -> tuple[int, float]:
    sql(f"CREATE TABLE bench_baseline (LIKE {like} INCLUDING ALL)")
    t0 = time.monotonic()
    rows = sql(statement)
    elapsed = time.monotonic() - t0
    sql("DROP TABLE bench_baseline")
    return rows, elapsed


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def run_expire(grants: int, accounts: int) -> dict:
    from credits import jobs
    from credits.models import EntryKind, GrantStatus, LedgerEntry

    reset()
    load_s = load(grants=grants, accounts=accounts, expires=EXPIRED)
    base_rows, base_s = baseline("credits_ledgerentry", _EXPIRE_BASELINE_SQL)
    t0 = time.monotonic()
    result = jobs.expire_credits(worker="bench")
    job_s = time.monotonic() - t0
    expired = result.counts["expired"]
    entries = LedgerEntry.objects.filter(kind=EntryKind.EXPIRATION).count()
    left = sql(
        "SELECT 1 FROM credits_creditgrant WHERE status <> %s LIMIT 1", [GrantStatus.EXPIRED]
    )
    assert expired == entries == base_rows == grants and not left, (expired, entries, base_rows)
    return {"load_s": load_s, "base_rows": base_rows, "base_s": base_s, "rows": expired,
            "job_s": job_s}  # fmt: skip


def run_warnings(grants: int, accounts: int, webhooks: bool) -> dict:
    from django.core import mail

    from notifications.models import Delivery, DeliveryStatus, ExpiryWarning
    from notifications.services import deliveries_send_due, expiry_warnings_claim

    reset()
    server = None
    url = ""
    if webhooks:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    load_s = load(grants=grants, accounts=accounts, expires=EXPIRING, webhook_url=url)
    base_rows, base_s = baseline("notifications_expirywarning", _WARN_BASELINE_SQL)
    mail.outbox = []
    # The job in its two steps (what expiry_warnings_send does), timed apart.
    t0 = time.monotonic()
    claim = expiry_warnings_claim()
    claim_s = time.monotonic() - t0
    t1 = time.monotonic()
    report = deliveries_send_due(worker="bench")
    deliver_s = time.monotonic() - t1
    if server:
        server.shutdown()
    warnings = ExpiryWarning.objects.count()
    undelivered = Delivery.objects.exclude(status=DeliveryStatus.DELIVERED).count()
    assert claim.warnings == warnings == base_rows == grants, (claim.warnings, warnings, base_rows)
    assert undelivered == 0 and len(mail.outbox) == Delivery.objects.filter(channel="email").count()
    return {
        "load_s": load_s,
        "base_rows": base_rows,
        "base_s": base_s,
        "rows": claim.warnings,
        "claim_s": claim_s,
        "notices": claim.notices,
        "deliveries": report.delivered,
        "emails": len(mail.outbox),
        "deliver_s": deliver_s,
        "job_s": claim_s + deliver_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--webhooks", action="store_true")
    parser.add_argument("--db", default=DB)
    args = parser.parse_args()

    import os

    os.environ["EMAIL_BACKEND"] = "django.core.mail.backends.locmem.EmailBackend"
    common.setup_django(args.db)
    from django.conf import settings

    print(common.machine())
    print(
        f"{args.grants:,} grants over {args.accounts:,} accounts, {args.runs} run(s); "
        f"CREDIT_EXPIRE_BATCH_SIZE={settings.CREDIT_EXPIRE_BATCH_SIZE}; email: locmem; "
        f"webhooks: {'loopback' if args.webhooks else 'off'}"
    )
    expire, warn = [], []
    for n in range(args.runs):
        e = run_expire(args.grants, args.accounts)
        expire.append(e)
        print(f"run {n + 1} expire_credits: load {e['load_s']:.1f}s, baseline {e['base_s']:.2f}s,"
              f" job {e['job_s']:.2f}s")  # fmt: skip
        w = run_warnings(args.grants, args.accounts, args.webhooks)
        warn.append(w)
        print(f"run {n + 1} send_expiry_warnings: load {w['load_s']:.1f}s, baseline "
              f"{w['base_s']:.2f}s, claim {w['claim_s']:.2f}s ({w['notices']:,} notices), "
              f"deliver {w['deliver_s']:.2f}s ({w['deliveries']:,} deliveries)")  # fmt: skip
    reset()

    med = common.median

    def rate(rows: int, seconds: float) -> str:
        return f"{rows / seconds:,.0f}"

    rows = []
    for name, results, key in (
        ("expire_credits (job)", expire, "job_s"),
        ("expire: INSERT ... SELECT baseline", expire, "base_s"),
        ("send_expiry_warnings: claim", warn, "claim_s"),
        ("send_expiry_warnings: deliver", warn, "deliver_s"),
        ("send_expiry_warnings (job, both steps)", warn, "job_s"),
        ("warnings: INSERT ... SELECT baseline", warn, "base_s"),
    ):
        seconds = med([r[key] for r in results])
        n = results[0]["rows"]
        rows.append([name, f"{n:,}", f"{seconds:.2f}", rate(n, seconds)])
    print()
    print(f"Medians of {args.runs} run(s):")
    print(common.table(["what", "grants", "wall s", "grants/s"], rows))
    w = warn[0]
    print(
        f"\nsend_expiry_warnings wrote {w['notices']:,} notices and delivered "
        f"{w['deliveries']:,} messages ({w['emails']:,} emails) per run; delivery: "
        f"{rate(w['deliveries'], med([r['deliver_s'] for r in warn]))} messages/s."
    )


if __name__ == "__main__":
    main()
