"""Streaming CSV export of the ledger.

The rows are read through `QuerySet.iterator(chunk_size=...)` (a server-side cursor on
PostgreSQL, fetchmany elsewhere) and written one chunk at a time into a
StreamingHttpResponse, so an export of 10^6 rows holds one chunk in memory, not the table.
"""

import csv
from collections.abc import Iterable, Iterator

from django.http import StreamingHttpResponse
from django.utils import timezone

from credits.money import q

CHUNK_SIZE = 2000

HEADER = [
    "entry_id",
    "created_at",
    "kind",
    "amount",
    "currency",
    "balance_after",
    "credit_id",
    "account_id",
    "invoice_id",
    "invoice_number",
    "actor",
    "reason",
]

_COLUMNS = (
    "entry_id",
    "created_at",
    "kind",
    "amount",
    "currency",
    "balance_after",
    "grant__credit_id",
    "account__account_id",
    "invoice__invoice_id",
    "invoice__invoice_number",
    "actor",
    "reason",
)

# Cells a spreadsheet would run as a formula (CSV injection): prefixed with a quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class _Echo:
    """csv.writer wants a file; this one hands each written line straight back."""

    def write(self, value: str) -> str:
        return value


def _safe(text: str | None) -> str:
    text = text or ""
    return "'" + text if text.startswith(_FORMULA_START) else text


def ledger_rows(queryset) -> Iterator[list[str]]:
    rows = queryset.order_by("-created_at", "-id").values_list(*_COLUMNS)
    for (
        entry_id,
        created_at,
        kind,
        amount,
        currency,
        balance_after,
        credit_id,
        account_id,
        invoice_id,
        invoice_number,
        actor,
        reason,
    ) in rows.iterator(chunk_size=CHUNK_SIZE):
        yield [
            entry_id,
            created_at.isoformat(),
            kind,
            str(q(amount, currency)),
            currency,
            str(q(balance_after, currency)),
            credit_id,
            account_id,
            invoice_id or "",
            invoice_number or "",
            _safe(actor),
            _safe(reason),
        ]


def _chunks(rows: Iterable[list[str]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(HEADER)
    buffer = []
    for row in rows:
        buffer.append(writer.writerow(row))
        if len(buffer) >= CHUNK_SIZE:
            yield "".join(buffer)
            buffer = []
    if buffer:
        yield "".join(buffer)


def ledger_csv_response(queryset) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_chunks(ledger_rows(queryset)), content_type="text/csv")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="ledger-{stamp}.csv"'
    return response
