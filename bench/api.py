"""Benchmark of the partner API's credits list (issue #4): GET /v2/billing/credits with its
summary and recommendations, page of 100, for an account holding 10^4 grants in a table of 10^6,
served by gunicorn (3 workers) and loaded by wrk, next to the trivial endpoint GET
/v2/billing/whoami (same authentication, scopes and throttle) in the same run.

    .venv/bin/python bench/api.py [--grants 1000000] [--account-grants 10000] [--duration 15]

Creates (drops first) the PostgreSQL database credits_bench_api, migrates it, bulk-loads the
grants and their ledger rows with INSERT ... SELECT, then prints the query counts per page size,
req/s and p50/p99 latencies, and a markdown table for bench/README.md.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

DB = "credits_bench_api"
INVOICES = 100

LOAD_SQL = """
INSERT INTO credits_partner (name, display_name, webhook_url, webhook_secret, created_at)
VALUES ('bench', 'Bench', '', '', now());

INSERT INTO credits_account (account_id, name, email, currency, auto_apply_credits,
    auto_apply_expiring_credits, partner_id, created_at)
SELECT CASE WHEN a = 0 THEN 'bench_account' ELSE 'other_' || a END, 'Account ' || a, '', 'USD',
       true, false, (SELECT id FROM credits_partner WHERE name = 'bench'), now()
FROM generate_series(0, %(accounts)s) a;

-- Invoices the target account's used grants were drawn on (usage history needs them).
INSERT INTO invoices_invoice (invoice_id, invoice_number, account_id, currency, status,
    issue_date, subtotal, credits_total, total, created_at, created_by, void_reason)
SELECT 'inv_bench_' || i, 'B-' || lpad(i::text, 6, '0'),
       (SELECT id FROM credits_account WHERE account_id = 'bench_account'), 'USD', 'paid',
       current_date, 1000000, 0, 1000000, now(), 'bench', ''
FROM generate_series(1, %(invoices)s) i;

-- 10^6 grants: the first %(target)s belong to bench_account, the rest are spread over the others.
-- 1 in 20 applied, 1 in 20 voided, 1 in 20 pending, the rest active (1 in 5 of them 40%% used).
INSERT INTO credits_creditgrant (credit_id, account_id, type, status, currency, original,
    remaining, used, reserved, price, description, reference_id, issued_by, reason, issued_at,
    effective_at, activated_at, expires_at, last_used_at, voided_at, auto_activate,
    approval_required, approved_by, issuer_actor, applicable_services, minimum_spend,
    usage_limit, account_restrictions, campaign_id, tags, notes, transferable, extra_metadata)
SELECT 'cred_' || md5(g::text),
       CASE WHEN g <= %(target)s THEN target.id ELSE first.id + 1 + (g %% %(accounts)s) END,
       (ARRAY['promotional','refund','bonus','partner','support','referral','migration'])
           [1 + g %% 7],
       status, 'USD', 100.00, 100.00 - used - CASE WHEN status = 'voided' THEN 100 ELSE 0 END,
       used, 0, 100.00, 'Bench credit ' || g || ' - load test', '', 'bench_loader', '', issued,
       issued, CASE WHEN status = 'pending' THEN NULL ELSE issued END,
       CASE WHEN g %% 3 = 0 THEN NULL ELSE now() + (1 + g %% 200) * interval '1 day' END,
       CASE WHEN used > 0 THEN issued + interval '1 hour' END,
       CASE WHEN status = 'voided' THEN issued END,
       true, false, '', 'bench', '["all"]'::jsonb, 0, 'unlimited', '[]'::jsonb, '',
       '["bench"]'::jsonb, '', false, '{}'::jsonb
FROM (
    SELECT g, now() - (g %% 365) * interval '1 day' AS issued, s.status,
           CASE WHEN s.status = 'applied' THEN 100.00
                WHEN s.status = 'active' AND g %% 5 = 0 THEN 40.00 ELSE 0 END AS used
    FROM generate_series(1, %(grants)s) g,
    LATERAL (SELECT CASE WHEN g %% 20 = 1 THEN 'applied' WHEN g %% 20 = 2 THEN 'voided'
                         WHEN g %% 20 = 3 THEN 'pending' ELSE 'active' END AS status) s
) rows,
(SELECT id FROM credits_account WHERE account_id = 'bench_account') target,
(SELECT min(id) AS id FROM credits_account) first;

-- The ledger: a grant entry per grant, a deduction per used grant, a void per voided one.
INSERT INTO credits_ledgerentry (entry_id, account_id, grant_id, kind, amount, currency,
    balance_after, actor, reason, created_at)
SELECT 'led_g' || id, account_id, id, 'grant', original, currency, original, 'bench', '',
       issued_at
FROM credits_creditgrant;

INSERT INTO credits_ledgerentry (entry_id, account_id, grant_id, kind, amount, currency,
    balance_after, invoice_id, actor, reason, created_at)
SELECT 'led_d' || g.id, g.account_id, g.id, 'deduction', -g.used, g.currency,
       g.original - g.used,
       (SELECT min(id) FROM invoices_invoice) + (g.id %% %(invoices)s),
       'bench', 'applied to an invoice', g.issued_at + interval '1 hour'
FROM credits_creditgrant g WHERE g.used > 0;

INSERT INTO credits_ledgerentry (entry_id, account_id, grant_id, kind, amount, currency,
    balance_after, actor, reason, created_at)
SELECT 'led_v' || id, account_id, id, 'void', -original, currency, 0, 'bench', 'bench void',
       issued_at + interval '2 hours'
FROM credits_creditgrant WHERE status = 'voided';
"""


def load(grants: int, target: int) -> None:
    from django.db import connection

    params = {"accounts": 99, "invoices": INVOICES, "target": target, "grants": grants}
    started = time.perf_counter()
    with connection.cursor() as cur:
        for statement in LOAD_SQL.split(";\n"):
            if not statement.strip():
                continue
            t0 = time.perf_counter()
            cur.execute(statement, params)
            first = next(
                line for line in statement.strip().splitlines() if not line.startswith("--")
            )
            print(f"  {time.perf_counter() - t0:6.1f} s  {first[:70]}", flush=True)
        # What autovacuum does in production: statistics and the visibility map.
        cur.execute("VACUUM ANALYZE")
    print(f"loaded {grants} grants + ledger in {time.perf_counter() - started:.0f} s")


def query_counts(raw: str, path: str) -> dict[int, int]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    counts = {}
    for limit in (10, 100):
        client.get(f"{path}&limit={limit}")  # warm
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(f"{path}&limit={limit}")
        assert response.status_code == 200, response.content[:300]
        counts[limit] = len(ctx.captured_queries)
    return counts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wrk(url: str, raw: str, duration: int) -> dict:
    command = ["wrk", "-t2", "-c20", f"-d{duration}s", "--latency"]
    command += ["-H", f"Authorization: Bearer {raw}", url]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p: str) -> str:
        return re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1)

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": pct("50"), "p99": pct("99"), "errors": non2xx.group(1) if non2xx
            else "0"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=1_000_000)
    parser.add_argument("--account-grants", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--runs", type=int, default=5, help="pairs of wrk runs (median reported)")
    parser.add_argument(
        "--reuse", action="store_true", help="Keep an already loaded database (skip the load)."
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install -y wrk")

    url = common.setup_django(DB, keep=args.reuse)
    from credits.models import CreditGrant

    if not CreditGrant.objects.exists():
        load(args.grants, args.account_grants)
    from billing_api.keys import SCOPES
    from billing_api.services import api_key_create

    _, raw = api_key_create(partner_name="bench", scopes=sorted(SCOPES))
    list_path = "/v2/billing/credits?accountId=bench_account&includeUsageHistory=true"
    counts = query_counts(raw, list_path)
    print(f"queries per request: page 10 -> {counts[10]}, page 100 -> {counts[100]}")

    port = free_port()
    env = dict(os.environ, DATABASE_URL=url, CONN_MAX_AGE="600", DEBUG="0",
               BILLING_API_THROTTLE_RATE="100000000/min", LOG_LEVEL="WARNING")  # fmt: skip
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "credits_project.wsgi",
         "-b", f"127.0.0.1:{port}", "-w", "3", "--no-control-socket", "--log-level", "warning"],
        cwd=common.ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                req = urllib.request.Request(
                    f"{base}/v2/billing/whoami", headers={"Authorization": f"Bearer {raw}"}
                )
                urllib.request.urlopen(req, timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        page = f"{base}{list_path}&limit=100"
        req = urllib.request.Request(page, headers={"Authorization": f"Bearer {raw}"})
        size = len(urllib.request.urlopen(req, timeout=30).read())
        wrk(page, raw, 3)  # warm every worker
        runs = []
        for _ in range(args.runs):
            trivial = wrk(f"{base}/v2/billing/whoami", raw, args.duration)
            listing = wrk(page, raw, args.duration)
            runs.append((trivial, listing, listing["rps"] / trivial["rps"]))
            print(
                f"run {len(runs)}: whoami {trivial['rps']:.0f} req/s, credits "
                f"{listing['rps']:.0f} req/s (p50 {listing['p50']}, p99 {listing['p99']}), "
                f"ratio {runs[-1][2]:.2f}",
                flush=True,
            )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    rows = [
        [str(i + 1), f"{t['rps']:.0f}", f"{t['p50']} / {t['p99']}", f"{c['rps']:.0f}",
         f"{c['p50']} / {c['p99']}", f"{r:.2f}", f"{t['errors']} / {c['errors']}"]
        for i, (t, c, r) in enumerate(runs)
    ]  # fmt: skip
    ratio = common.median([r for _, _, r in runs])
    rows.append(["median", f"{common.median([t['rps'] for t, _, _ in runs]):.0f}", "",
                 f"{common.median([c['rps'] for _, c, _ in runs]):.0f}", "", f"{ratio:.2f}",
                 ""])  # fmt: skip
    print()
    print(common.machine())
    print(f"{args.grants} grants, {args.account_grants} on the listed account; page of 100 is "
          f"{size} bytes; wrk -t2 -c20 -d{args.duration}s; gunicorn -w 3")  # fmt: skip
    print(common.table(["run", "whoami req/s", "whoami p50 / p99", "credits req/s",
                        "credits p50 / p99", "credits / whoami", "non-2xx"], rows))  # fmt: skip
    print(f"credits list / trivial = {ratio:.2f}, median of {len(runs)} (target >= 0.33)")
    print(f"queries per request: page 10 -> {counts[10]}, page 100 -> {counts[100]}")


if __name__ == "__main__":
    main()
