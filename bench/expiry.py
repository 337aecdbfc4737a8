"""Expiry benchmark (issue #2, item 9): 1,000,000 due grants expired with their ledger rows by one
run of the job's service (`credits.services.grants_expire`), in rows per second, next to a
single `INSERT ... SELECT` of the same expiration rows into the same ledger table, in the same
run.

Per run the tables are emptied and loaded set-based (INSERT ... SELECT generate_series): the
accounts, the due grants (active, expired some time ago, nothing used) and each grant's `grant`
ledger entry, then VACUUM ANALYZE and CHECKPOINT, as a table that has been live for a while.

The yardstick: one INSERT ... SELECT writing exactly the rows the job writes (same columns,
same expressions, same WHERE) into credits_ledgerentry, then `SET CONSTRAINTS ALL IMMEDIATE`
(the foreign keys are DEFERRABLE INITIALLY DEFERRED, so without it a rollback would skip their
checks, which the job pays at each batch's commit), then ROLLBACK. VACUUM and CHECKPOINT again,
and the job runs on the untouched data. Only the statement and the job are timed.

    .venv/bin/python bench/expiry.py                      # 3 runs x 1,000,000 grants
    .venv/bin/python bench/expiry.py --grants 10000       # quick
    .venv/bin/python bench/expiry.py --grants 200000 --batch-size 10000 --runs 1
    .venv/bin/python bench/expiry.py --grants 200000 --explain   # plan of one batch
    .venv/bin/python bench/expiry.py --without-summary-triggers   # what-if, bench copy only
"""

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

LOAD_ACCOUNTS = """
INSERT INTO credits_account
    (account_id, name, email, currency, auto_apply_credits, auto_apply_expiring_credits,
     created_at)
SELECT 'bench-' || lpad(a::text, 7, '0'), 'Bench customer ' || a, '', 'USD', true, false,
       %(now)s - interval '400 days'
FROM generate_series(1, %(accounts)s) AS a
"""

# Due grants: issued 100-130 days ago for 90 days, so every one expired 10-40 days ago; nothing
# used, so each gets an expiration entry of its whole amount.
LOAD_GRANTS = """
INSERT INTO credits_creditgrant
    (credit_id, account_id, type, status, currency, original, remaining, used, reserved, price,
     description, reference_id, issued_by, reason, issued_at, effective_at, activated_at,
     expires_at, auto_activate, approval_required, approved_by, issuer_actor,
     applicable_services, minimum_spend, usage_limit, account_restrictions, campaign_id, tags,
     notes, transferable, extra_metadata)
SELECT 'cred_' || substr(md5(g::text || random()::text), 1, 24),
       1 + g %% %(accounts)s,
       (ARRAY['promotional', 'refund', 'bonus', 'support', 'migration'])[1 + g %% 5],
       'active', 'USD', amount, amount, 0, 0, amount,
       'bench grant ' || g, '', 'user:fiona', '', t, t, t, t + interval '90 days', true, false,
       '', 'user:fiona', '["all"]'::jsonb, 0, 'unlimited', '[]'::jsonb,
       CASE WHEN g %% 4 = 0 THEN 'spring-' || (g %% 7) ELSE '' END, '[]'::jsonb, '', false,
       '{}'::jsonb
FROM (
    SELECT g, (10 + g %% 50)::numeric(18, 2) AS amount,
           %(now)s - interval '100 days' - (g %% 43200) * interval '1 minute' AS t
    FROM generate_series(1, %(grants)s) AS g
) AS s
"""

LOAD_GRANT_ENTRIES = """
INSERT INTO credits_ledgerentry
    (entry_id, account_id, grant_id, kind, amount, currency, balance_after, actor, reason,
     created_at)
SELECT 'led_' || substr(md5(id::text || random()::text), 1, 24), account_id, id, 'grant',
       original, currency, original, issuer_actor, description, issued_at
FROM credits_creditgrant ORDER BY id
"""

# The rows the job's `entries` CTE writes, for the same grants, in one statement.
INSERT_SELECT = """
INSERT INTO credits_ledgerentry
    (entry_id, account_id, grant_id, kind, amount, currency, balance_after, actor, reason,
     created_at)
SELECT 'led_' || substr(md5(random()::text || g.id::text), 1, 24),
       g.account_id, g.id, 'expiration', -g.remaining, g.currency, 0, %(actor)s, 'expired',
       %(now)s
FROM credits_creditgrant g
WHERE g.status IN ('pending', 'active', 'reserved')
  AND g.expires_at IS NOT NULL AND g.expires_at <= %(now)s
  AND g.remaining > 0
"""

TABLES = ["credits_account", "credits_creditgrant", "credits_ledgerentry", "credits_credithold"]


def sql(statement: str, params=None, fetch: bool = False):
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall() if fetch else cur.rowcount


def load(grants: int, accounts: int, now: datetime) -> float:
    t0 = time.perf_counter()
    sql(
        "TRUNCATE credits_ledgerentry, credits_credithold, credits_grantevent, "
        "credits_grantsummary, credits_creditgrant, credits_account RESTART IDENTITY CASCADE"
    )
    sql(LOAD_ACCOUNTS, {"accounts": accounts, "now": now})
    sql(LOAD_GRANTS, {"accounts": accounts, "grants": grants, "now": now})
    sql(LOAD_GRANT_ENTRIES)
    settle()
    return time.perf_counter() - t0


def settle() -> None:
    """What a live table has had: vacuum (visibility map, hint bits, freed space), statistics,
    and no checkpoint pending to land in the middle of a timed section."""
    for tbl in TABLES:
        sql(f"VACUUM (ANALYZE) {tbl}")
    sql("CHECKPOINT")


def index_sizes(table: str) -> dict[str, int]:
    rows = sql(
        "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
        "WHERE indrelid = %s::regclass",
        [table],
        fetch=True,
    )
    return dict(rows)


def table_stats(table: str) -> tuple[int, int]:
    sql("SELECT pg_stat_force_next_flush()")
    [(upd, hot)] = sql(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = %s",
        [table],
        fetch=True,
    )
    return upd, hot


def time_insert_select(now: datetime, actor: str) -> tuple[int, float]:
    from django.db import transaction

    with transaction.atomic():
        t0 = time.perf_counter()
        rows = sql(INSERT_SELECT, {"now": now, "actor": actor})
        sql("SET CONSTRAINTS ALL IMMEDIATE")  # the foreign-key checks a commit would run
        elapsed = time.perf_counter() - t0
        transaction.set_rollback(True)
    return rows, elapsed


def time_job(now: datetime, actor, batch_size: int | None) -> tuple[int, float, list[float]]:
    from django.db import connection

    from credits.services import grants_expire

    batches: list[float] = []

    def per_batch(execute, statement, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(statement, params, many, context)
        finally:
            if "credits_ledgerentry" in statement:
                batches.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with connection.execute_wrapper(per_batch):
        expired = grants_expire(actor=actor, now=now, batch_size=batch_size)
    return expired, time.perf_counter() - t0, batches


def explain_one_batch(now: datetime, actor: str, batch_size: int) -> None:
    from django.db import transaction

    from credits.services import _EXPIRE_SQL

    with transaction.atomic():
        rows = sql(
            "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) " + _EXPIRE_SQL,
            {"now": now, "batch": batch_size, "actor": actor, "after": 0},
            fetch=True,
        )
        transaction.set_rollback(True)
    print("\n".join(r[0] for r in rows))


def verify(grants: int, now: datetime) -> None:
    from credits.selectors import ledger_problems

    [(open_due, expired, entries)] = sql(
        """SELECT
             (SELECT count(*) FROM credits_creditgrant
               WHERE status IN ('pending', 'active', 'reserved') AND expires_at <= %(now)s),
             (SELECT count(*) FROM credits_creditgrant WHERE status = 'expired'),
             (SELECT count(*) FROM credits_ledgerentry WHERE kind = 'expiration')""",
        {"now": now},
        fetch=True,
    )
    if (open_due, expired, entries) != (0, grants, grants):
        raise SystemExit(f"job left {open_due} due, {expired} expired, {entries} entries")
    problems = ledger_problems()
    if problems:
        raise SystemExit(f"verify_ledger: {len(problems)} broken grants, e.g. {problems[0]}")
    from credits.summaries import summary_problems

    wrong = summary_problems()
    if wrong:
        raise SystemExit(f"grant summary: {len(wrong)} wrong keys, e.g. {wrong[0]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--grants", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=None, help="default: grants / 50")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--batch-size", type=int, default=None, help="default: settings.CREDIT_EXPIRE_BATCH_SIZE"
    )
    ap.add_argument("--db", default="credits_bench_expiry")
    ap.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE one batch and stop")
    ap.add_argument(
        "--without-summary-triggers",
        action="store_true",
        help="what-if: drop the grant summary triggers in the bench database first",
    )
    ap.add_argument("--fillfactor", type=int, default=None, help="what-if: grant table fillfactor")
    ap.add_argument("--no-verify", action="store_true", help="skip the ledger check after a run")
    args = ap.parse_args()
    accounts = args.accounts or max(1, args.grants // 50)

    common.setup_django(args.db)
    from django.conf import settings
    from django.db import connection

    from credits.actors import Actor

    batch_size = args.batch_size or settings.CREDIT_EXPIRE_BATCH_SIZE
    actor = Actor.for_job("expire_credits")
    if args.without_summary_triggers:
        names = sql(
            "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'pgtrigger_grant_summary%%'",
            fetch=True,
        )
        for (name,) in names:
            sql(f"DROP TRIGGER {name} ON credits_creditgrant")
    if args.fillfactor:
        sql(f"ALTER TABLE credits_creditgrant SET (fillfactor = {args.fillfactor})")
    indexes = index_sizes("credits_creditgrant")
    print(
        f"# Expiry: {args.grants:,} due grants over {accounts:,} accounts, batch {batch_size:,}; "
        f"credits_creditgrant has {len(indexes)} indexes"
        + (" (what-if: no summary triggers)" if args.without_summary_triggers else "")
        + (f", fillfactor {args.fillfactor}" if args.fillfactor else ""),
        flush=True,
    )

    results = []
    for run in range(args.runs):
        now = datetime.now(UTC)
        load_s = load(args.grants, accounts, now)
        if args.explain:
            explain_one_batch(now, actor.label, batch_size)
            return
        rows, t_ins = time_insert_select(now, actor.label)
        if rows != args.grants:
            raise SystemExit(f"INSERT ... SELECT wrote {rows} rows, expected {args.grants}")
        settle()
        before_sizes, before_stats = (
            index_sizes("credits_creditgrant"),
            table_stats("credits_creditgrant"),
        )
        expired, t_job, batches = time_job(now, actor, batch_size)
        after_stats = table_stats("credits_creditgrant")
        growth = sum(index_sizes("credits_creditgrant").values()) - sum(before_sizes.values())
        if expired != args.grants:
            raise SystemExit(f"the job expired {expired} grants, expired {args.grants}")
        upd, hot = (a - b for a, b in zip(after_stats, before_stats, strict=True))
        if not args.no_verify:
            verify(args.grants, now)
        results.append((rows / t_ins, expired / t_job))
        ordered = sorted(batches)
        last_full = batches[-2] if len(batches) > 1 else batches[-1]
        print(
            f"run {run + 1}: load {load_s:.0f} s; INSERT...SELECT {rows:,} rows in {t_ins:.1f} s "
            f"= {rows / t_ins:,.0f} rows/s; job {expired:,} grants in {t_job:.1f} s = "
            f"{expired / t_job:,.0f} rows/s ({len(batches)} batches, each {ordered[0]:.2f}-"
            f"{ordered[-1]:.2f} s, median {common.median(batches):.2f} s, first "
            f"{batches[0]:.2f} s, last full {last_full:.2f} s); ratio "
            f"{100 * t_ins / t_job:.1f}%; grant updates {upd:,}, HOT {hot:,}; grant indexes "
            f"+{growth / 2**20:.0f} MiB",
            flush=True,
        )
    connection.close()

    rows = [
        [i + 1, f"{ins:,.0f}", f"{job:,.0f}", f"{100 * job / ins:.1f}%"]
        for i, (ins, job) in enumerate(results)
    ]
    ratios = [job / ins for ins, job in results]
    rows.append(
        [
            "median",
            f"{common.median([r[0] for r in results]):,.0f}",
            f"{common.median([r[1] for r in results]):,.0f}",
            f"{100 * common.median(ratios):.1f}%",
        ]
    )
    print()
    print(f"Expiry, {args.grants:,} due grants, batch {batch_size:,}")
    print(common.machine())
    print(common.table(["run", "INSERT...SELECT rows/s", "job rows/s", "job / INSERT"], rows))
    print(f"ratio (median of per-run ratios): {100 * common.median(ratios):.1f}% (target >= 50%)")
    if not args.no_verify:
        print("ledger verified after each run: every grant expired once, no broken grant")


if __name__ == "__main__":
    main()
