"""JSON bodies parsed with numbers as Decimal (never float), refusing text no column can hold."""

import json
from decimal import Decimal

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_DEPTH = 32


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a valid JSON number")


def check_text(value: object, where: str = "body", depth: int = 0) -> None:
    """NUL characters and lone surrogates cannot be stored (PostgreSQL refuses them); refuse them
    here, as a 400, rather than fail at the database."""
    if depth > MAX_DEPTH:
        raise ParseError("JSON body is nested too deeply.")
    if isinstance(value, str):
        if "\x00" in value:
            raise ParseError(f"{where} contains a NUL character.")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ParseError(f"{where} contains an invalid Unicode character.") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(k, where, depth + 1)
            check_text(v, f"{where}.{k}" if where != "body" else k, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_text(v, f"{where}[{i}]", depth + 1)


class DecimalJSONParser(JSONParser):
    """JSON numbers with a fraction or exponent become Decimal from their text (SPEC §2)."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        if not raw.strip():
            return {}
        try:
            data = json.loads(
                raw.decode("utf-8"), parse_float=Decimal, parse_constant=_refuse_constant
            )
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ParseError(f"Malformed JSON: {exc}") from None
        check_text(data)
        return data
