"""JSON rendering with Decimal written as a JSON number from its exact text (325.50, 1200).

The stdlib encoder turns Decimal into a float or a string; money must stay exact and numeric,
so Decimals are written from their own text (see _MARKED below). Amounts arrive already
quantized to their currency's precision (billing_api.presenters), which is kept as is, either as
Decimals or already marked by number() (cheaper: no Python callback per value).
"""

import json
import re
import secrets
from datetime import UTC, date, datetime
from decimal import Decimal

from django.utils.functional import Promise
from rest_framework.renderers import JSONRenderer


def iso(value: datetime | None) -> str | None:
    """UTC, `Z`-suffixed, whole seconds as in the seed unless the instant has a fraction."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if value.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return value.strftime(fmt)


# Decimals travel through the C JSON encoder as marked strings, then lose their quotes: the
# marker holds a per-process random nonce after a NUL (which no stored text contains: input with
# NUL is refused), so no user string can be mistaken for a number.
_NONCE = secrets.token_hex(6)
_MARK = "\x00" + _NONCE
_MARKED = re.compile(r'"\\u0000' + _NONCE + r'(-?[0-9]+(?:\.[0-9]+)?)"')


def _default(value):
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot render {value} as JSON")
        return _MARK + format(value, "f")
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Promise):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def number(amount: Decimal) -> str:
    """`amount` (a finite Decimal, already at its currency's precision) pre-rendered: the
    encoder then copies it as a plain string with no callback, and dumps() unquotes it. The
    presenters of the long lists use it; a Decimal left in the data is rendered the same way."""
    return _MARK + format(amount, "f")


def _unquote(match: re.Match) -> str:
    return match.group(1)


class RawJSON:
    """JSON text written elsewhere (by PostgreSQL: billing_api.credit_list), put in the output
    as it is. Its author answers for it being valid JSON."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


_RAW = _MARK + "raw"
_RAW_MARKED = re.compile(r'"\\u0000' + _NONCE + r'raw([0-9]+)"')


def dumps(value) -> str:
    raws: list[str] = []

    def default(value):
        if value.__class__ is RawJSON:
            raws.append(value.text)
            return f"{_RAW}{len(raws) - 1}"
        return _default(value)

    text = json.dumps(value, default=default, separators=(",", ":"), ensure_ascii=True)
    text = _MARKED.sub(_unquote, text)
    if raws:
        # After the numbers: the raw text is not scanned again.
        text = _RAW_MARKED.sub(lambda m: raws[int(m.group(1))], text)
    return text


class MoneyJSONRenderer(JSONRenderer):
    media_type = "application/json"
    format = "json"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        # ASCII but for RawJSON text, which PostgreSQL writes in UTF-8.
        return dumps(data).encode("utf-8")
