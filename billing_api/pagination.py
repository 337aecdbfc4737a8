"""Keyset (cursor) pagination for every list: `limit` and `cursor` in, `pagination: {limit,
hasMore, nextCursor}` out.

A cursor encodes the last row's sort value and primary key, so a page is one indexed range
query whatever its depth (no OFFSET), and rows inserted meanwhile never shift a page.
"""

import base64
import json
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime

from credits.exceptions import ValidationFailed

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True)
class Ordering:
    """Rows sorted by `field` then primary key, both ascending or both descending."""

    name: str  # tags cursors, so one list's cursor is refused by another
    field: str
    descending: bool

    def order_by(self) -> list[str]:
        sign = "-" if self.descending else ""
        return [f"{sign}{self.field}", f"{sign}pk"]


def parse_limit(raw: str | None) -> int:
    if raw in (None, ""):
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise ValidationFailed(
            f"limit must be a whole number, got {raw!r}.", field="limit"
        ) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(f"limit must be between 1 and {MAX_LIMIT}.", field="limit")
    return limit


def encode_cursor(ordering: Ordering, value, pk: int) -> str:
    if isinstance(value, datetime):
        value = {"t": value.isoformat()}
    payload = json.dumps([ordering.name, value, pk], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(ordering: Ordering, cursor: str):
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        name, value, pk = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if name != ordering.name or not isinstance(pk, int) or isinstance(pk, bool):
            raise ValueError
        if isinstance(value, dict):
            value = parse_datetime(value["t"])
            if value is None:
                raise ValueError
        elif not isinstance(value, str):
            raise ValueError
        return value, pk
    except (ValueError, TypeError, KeyError, UnicodeError):
        raise ValidationFailed(
            "cursor is not valid for this list; use the nextCursor of its previous page.",
            field="cursor",
        ) from None


def paginate(qs: QuerySet, ordering: Ordering, params, *, sort_value=None) -> tuple[list, dict]:
    """One page of `qs` and its pagination block; one query (limit + 1 rows). Rows are model
    instances, or values() dicts with "id" and the sort value: `sort_value(row)` when given (for
    a sort field read in another form, e.g. an instant as text), else row[field]."""
    limit = parse_limit(params.get("limit"))
    qs = qs.order_by(*ordering.order_by())
    cursor = params.get("cursor")
    if cursor:
        value, pk = decode_cursor(ordering, cursor)
        op = "lt" if ordering.descending else "gt"
        qs = qs.filter(
            Q(**{f"{ordering.field}__{op}": value}) | Q(**{ordering.field: value, f"pk__{op}": pk})
        )
    rows = list(qs[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if has_more:
        last = rows[-1]
        if sort_value is not None:
            value = sort_value(last)
        elif isinstance(last, dict):
            value = last[ordering.field]
        else:
            value = _attr(last, ordering.field)
        pk = last["id"] if isinstance(last, dict) else last.pk
        next_cursor = encode_cursor(ordering, value, pk)
    return rows, {"limit": limit, "hasMore": has_more, "nextCursor": next_cursor}


def _attr(obj, path: str):
    for part in path.split("__"):
        obj = getattr(obj, part)
    return obj
