"""The grant summary (credits.models.GrantSummary) beyond its triggers: folding each account's
delta rows into one row per key (a beat job), and checking the rows against the grants
(`verify_ledger`). PostgreSQL only: elsewhere the table stays empty and nothing reads it.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.db import connection, transaction

from credits.models import SUMMARY_KEY_SQL

_KEY = "account_id, currency, type, status, unused, restricted"

# One account batch: delete every row of accounts that have delta rows and insert their sums
# back, one row per key. Sums are kept whatever runs at the same time: a delta a concurrent
# transaction has not committed is not seen, so not deleted, and stays; two compactions of one
# account serialize on its rows (the second finds them deleted and skips them).
_COMPACT_SQL = f"""
WITH accounts AS (
    SELECT DISTINCT account_id FROM credits_grantsummary WHERE NOT compacted
    ORDER BY account_id LIMIT %(accounts)s
), folded AS (
    DELETE FROM credits_grantsummary s USING accounts a
    WHERE s.account_id = a.account_id
    RETURNING s.*
), kept AS (
    INSERT INTO credits_grantsummary ({_KEY}, grants, remaining, used, compacted)
    SELECT {_KEY}, sum(grants), sum(remaining), sum(used), true
    FROM folded
    GROUP BY {_KEY}
    HAVING sum(grants) <> 0 OR sum(remaining) <> 0 OR sum(used) <> 0
    RETURNING 1
)
SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM folded), (SELECT count(*) FROM kept)
"""  # noqa: S608 (fixed text)


@dataclass(frozen=True)
class Compaction:
    accounts: int = 0
    rows_before: int = 0
    rows_after: int = 0


def grant_summaries_compact(*, accounts_per_batch: int = 1000) -> Compaction:
    """Fold every account's summary deltas, `accounts_per_batch` accounts per transaction.
    Changes no figure (the sums per key are the same before and after); writes no ledger row."""
    if connection.vendor != "postgresql":
        return Compaction()
    total = Compaction()
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_COMPACT_SQL, {"accounts": accounts_per_batch})
            accounts, before, after = cursor.fetchone()
        total = Compaction(
            total.accounts + accounts, total.rows_before + before, total.rows_after + after
        )
        if accounts < accounts_per_batch:
            return total


# The summary rows added up per key, next to the grants added up the same way.
_CHECK_SQL = f"""
WITH kept AS (
    SELECT {_KEY}, sum(grants) AS n, sum(remaining) AS remaining, sum(used) AS used
    FROM credits_grantsummary
    GROUP BY {_KEY}
    HAVING sum(grants) <> 0 OR sum(remaining) <> 0 OR sum(used) <> 0
), actual AS (
    SELECT {_KEY}, count(*) AS n, sum(remaining) AS remaining, sum(used) AS used
    FROM (SELECT {SUMMARY_KEY_SQL}, remaining, used FROM credits_creditgrant) g
    GROUP BY {_KEY}
)
SELECT acc.account_id, k.currency, k.type, k.status, k.unused, k.restricted,
       kept.n, kept.remaining, kept.used, actual.n, actual.remaining, actual.used
FROM kept FULL JOIN actual USING ({_KEY})
CROSS JOIN LATERAL (SELECT coalesce(kept.account_id, actual.account_id) AS account_id,
                           coalesce(kept.currency, actual.currency) AS currency,
                           coalesce(kept.type, actual.type) AS type,
                           coalesce(kept.status, actual.status) AS status,
                           coalesce(kept.unused, actual.unused) AS unused,
                           coalesce(kept.restricted, actual.restricted) AS restricted) k
JOIN credits_account acc ON acc.id = k.account_id
WHERE kept.n IS DISTINCT FROM actual.n
   OR kept.remaining IS DISTINCT FROM actual.remaining
   OR kept.used IS DISTINCT FROM actual.used
ORDER BY 1, 2, 3, 4, 5, 6
"""  # noqa: S608 (fixed text)


@dataclass(frozen=True)
class SummaryProblem:
    account_id: str
    key: str
    problem: str


def summary_problems() -> list[SummaryProblem]:
    """Every summary key whose rows do not add up to the account's grants (none, on a sound
    database). One set-based query."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(_CHECK_SQL)
        rows = cursor.fetchall()
    out = []
    for account_id, cur, type_, status, unused, restricted, *figures in rows:
        kept_n, kept_rem, kept_used, n, rem, used = (f or 0 for f in figures)
        key = (
            f"{cur} {type_} {status}"
            f"{' never-used' if unused else ''}{' restricted' if restricted else ''}"
        )
        out.append(
            SummaryProblem(
                account_id,
                key,
                f"summary says {kept_n} grant(s), remaining {Decimal(kept_rem)}, used "
                f"{Decimal(kept_used)}; the grants say {n}, {Decimal(rem)}, {Decimal(used)}",
            )
        )
    return out
