"""Back-office speed at scale: the grant and ledger changelists and the dashboard over 10^6
grants and 5x10^6 ledger rows in PostgreSQL.

    .venv/bin/python bench/admin.py [--db credits_bench_admin] [--runs 7] [--reload]

The dashboard's figures are computed in the database and cached for a few minutes
(BACKOFFICE_DASHBOARD_CACHE_SECONDS); the timed requests after the warm-up are served from that
cache, and a last row times the recomputation itself (`?refresh=1`), which is reported but not
held to the target.

Creates and migrates the bench database if needed and loads it once with bench/admin_data.sql
(INSERT ... SELECT generate_series; ~8 minutes here); later runs reuse it. Then, through the
Django test client as a logged-in superuser, it times each page `--runs` times (after one
warm-up) and counts its queries at two page sizes: the count must not grow with the page size,
and no query may be a COUNT(*) over a whole big table.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRANTS = 1_000_000
ACCOUNTS = 10_000
TARGET_MS = 300


def _psql(db: str, *args: str) -> str:
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-tAX", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def prepare(db: str, reload: bool) -> None:
    exists = _psql("postgres", "-c", f"SELECT 1 FROM pg_database WHERE datname = '{db}'")
    if exists and reload:
        _psql("postgres", "-c", f'DROP DATABASE "{db}"')
        exists = ""
    if not exists:
        _psql("postgres", "-c", f'CREATE DATABASE "{db}"')
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}"}
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--no-input", "-v0"],
        check=True,
        env=env,
    )
    have = int(_psql(db, "-c", "SELECT count(*) FROM credits_creditgrant") or 0)
    if have >= GRANTS:
        print(f"reusing {db}: {have:,} grants")
        return
    if have:
        sys.exit(f"{db} holds {have:,} grants, not {GRANTS:,}: rerun with --reload")
    print(f"loading {db} (10^6 grants, 5x10^6 ledger rows; takes several minutes)...")
    started = time.perf_counter()
    subprocess.run(
        [
            "psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1",
            "-v", f"accounts={ACCOUNTS}", "-v", f"grants={GRANTS}",
            "-f", str(ROOT / "bench" / "admin_data.sql"), "-q",
        ],
        check=True,
    )  # fmt: skip
    print(f"loaded in {time.perf_counter() - started:.0f} s")


def measure(db: str, runs: int) -> list[dict]:
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{db}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "credits_project.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    setup_test_environment()
    settings.ALLOWED_HOSTS = ["testserver"]
    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    pages = [
        ("grants changelist", "/admin/credits/creditgrant/"),
        ("grants, status=active", "/admin/credits/creditgrant/?status__exact=active"),
        ("grants, expiring in 30 days", "/admin/credits/creditgrant/?expiring_within=30"),
        ("grants, page 50", "/admin/credits/creditgrant/?p=50"),
        ("ledger changelist", "/admin/credits/ledgerentry/"),
        ("ledger, kind=deduction", "/admin/credits/ledgerentry/?kind__exact=deduction"),
        ("ledger, one account", "/admin/credits/ledgerentry/?account=bench_000042"),
        ("dashboard (12 months)", "/admin/backoffice/dashboard/"),
        ("dashboard (all time)", "/admin/backoffice/dashboard/?range=all"),
        # Informational: the report recomputed on every request (the cache bypassed), i.e.
        # what the first view after the cache's lifetime costs. Not held to the target.
        ("dashboard recomputed (refresh=1)", "/admin/backoffice/dashboard/?refresh=1"),
    ]
    from credits.admin import CreditGrantAdmin, LedgerEntryAdmin

    results = []
    for name, url in pages:
        client.get(url)  # warm-up: caches, plans, connection
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            response = client.get(url)
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        counts = {}
        full_counts = []
        for per_page in (20, 200):
            CreditGrantAdmin.list_per_page = LedgerEntryAdmin.list_per_page = per_page
            with CaptureQueriesContext(connection) as ctx:
                client.get(url)
            counts[per_page] = len(ctx.captured_queries)
            full_counts += [
                q["sql"]
                for q in ctx.captured_queries
                if "COUNT(*)" in q["sql"].upper() and "LIMIT" not in q["sql"].upper()
            ]
        CreditGrantAdmin.list_per_page = LedgerEntryAdmin.list_per_page = 50
        row = {
            "page": name,
            "url": url,
            "p50": statistics.median(timings),
            "max": max(timings),
            "q20": counts[20],
            "q200": counts[200],
            "full_counts": len(full_counts),
        }
        results.append(row)
        print(
            f"{name:32} p50 {row['p50']:7.1f} ms  max {row['max']:7.1f} ms  "
            f"queries {row['q20']} (20/page) {row['q200']} (200/page)  "
            f"unbounded COUNT: {row['full_counts']}",
            flush=True,
        )
    results.append(measure_export(client))
    return results


def measure_export(client) -> dict:
    """Stream the ledger export of 10^6 rows (the `grant` entries) and watch the process's
    peak memory: it must stay flat, as the rows are never all held at once."""
    import resource

    url = "/admin/credits/ledgerentry/export.csv?kind__exact=grant"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    response = client.get(url)
    rows = size = 0
    for chunk in response.streaming_content:
        rows += chunk.count(b"\n")
        size += len(chunk)
    elapsed = time.perf_counter() - started
    peak_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(
        f"ledger CSV export: {rows - 1:,} rows, {size / 1e6:.0f} MB in {elapsed:.1f} s "
        f"({(rows - 1) / elapsed:,.0f} rows/s); peak RSS grew {peak_growth_mb:.0f} MB",
        flush=True,
    )
    return {
        "page": f"ledger CSV export ({rows - 1:,} rows, streamed)",
        "url": url,
        "p50": elapsed * 1000,
        "max": elapsed * 1000,
        "q20": 0,
        "q200": 0,
        "full_counts": 0,
        "rss_mb": peak_growth_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="credits_bench_admin")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--reload", action="store_true", help="drop and reload the bench data")
    args = parser.parse_args()
    prepare(args.db, args.reload)
    results = measure(args.db, args.runs)
    print()
    print("| page | p50 ms | max ms | queries (20/page) | queries (200/page) | full COUNT(*) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['page']} | {r['p50']:.0f} | {r['max']:.0f} | {r['q20']} | {r['q200']} "
            f"| {r['full_counts']} |"
        )
    timed = [r for r in results if "refresh=1" not in r["url"] and "export" not in r["url"]]
    slow = [r["page"] for r in timed if r["p50"] >= TARGET_MS]
    growing = [r["page"] for r in results if r["q200"] != r["q20"]]
    export = results[-1]
    counted = [r["page"] for r in results if r["full_counts"]]
    print()
    print(f"p50 >= {TARGET_MS} ms: {', '.join(slow) or 'none'}")
    print(f"query count grows with page size: {', '.join(growing) or 'none'}")
    print(f"unbounded COUNT(*): {', '.join(counted) or 'none'}")
    print(f"export peak memory growth: {export['rss_mb']:.0f} MB")
    sys.exit(1 if slow or growing or counted or export["rss_mb"] > 200 else 0)


if __name__ == "__main__":
    main()
