"""A changelist paginator that never runs a full COUNT(*) over a big table.

Django's admin asks `paginator.count` on every changelist view (and, unless
`show_full_result_count = False`, a second COUNT of the unfiltered table). On 10^6 grants or
5x10^6 ledger rows an exact count is a scan of the table on every page view. Instead:

- unfiltered, on PostgreSQL: the planner's row estimate of the table (pg_class.reltuples, kept
  fresh by autovacuum/ANALYZE), when the table is big enough for that to matter;
- filtered: an exact count bounded to `exact_limit + 1` rows (a LIMITed subquery), so small
  result sets get their exact count and big ones stop early; past the bound, the planner's
  estimate of the filtered query (PostgreSQL EXPLAIN) or simply "more than the bound".

`estimated` tells the template to print "about N".
"""

import json

from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

# Below this many rows an exact count is cheaper than being vague about it.
ESTIMATE_FROM_ROWS = 20_000


class EstimatedCountPaginator(Paginator):
    exact_limit = 1_000

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.estimated = False

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        connection = connections[qs.db]
        is_postgres = connection.vendor == "postgresql"
        if is_postgres and not qs.query.where and not qs.query.distinct:
            estimate = _table_estimate(connection, qs.model._meta.db_table)
            if estimate >= ESTIMATE_FROM_ROWS:
                self.estimated = True
                return estimate
        bounded = qs.order_by()[: self.exact_limit + 1].count()
        if bounded <= self.exact_limit:
            return bounded
        self.estimated = True
        if is_postgres:
            return max(_query_estimate(connection, qs), bounded)
        return bounded


def _table_estimate(connection, table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
    # -1 (PostgreSQL 14+) means never analyzed: no estimate to offer.
    return int(row[0]) if row and row[0] is not None else -1


def _query_estimate(connection, qs) -> int:
    sql, params = qs.order_by().query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])
