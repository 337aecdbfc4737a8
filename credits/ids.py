"""External ids: a type prefix and 96 random bits, so they cannot be guessed or enumerated.

Integer primary keys stay inside the database; these are what the API and the admin show.
"""

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def credit_id() -> str:
    return new_id("cred")


def invoice_id() -> str:
    return new_id("inv")


def line_id() -> str:
    return new_id("line")


def entry_id() -> str:
    return new_id("led")


def hold_id() -> str:
    return new_id("hold")
