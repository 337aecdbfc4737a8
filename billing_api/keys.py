"""API keys: the raw key format, its hash at rest, the scopes a key may hold.

A raw key is `ck_<prefix>_<secret>`: the prefix (12 hex) names the key in logs, the admin and
ledger actors; the secret (256 random bits) is never stored. Only SHA-256 of the whole raw key
is kept, and a request's key is looked up by that hash (a unique index), so verifying costs one
indexed query and leaks nothing about other keys.
"""

import hashlib
import secrets

# Scope -> what it allows. Documented in docs/api.md and the OpenAPI description.
SCOPES = {
    "credits:read": "list and read credits, expiring credits, balances, optimize plans",
    "credits:issue": "issue credits",
    "credits:apply": "apply a credit to an invoice, bulk-apply (including dry runs)",
    "credits:approve": "approve a credit above the approval threshold (maker-checker)",
    "credits:void": "void the unused remainder of a credit",
    "credits:transfer": "transfer remaining credit to another account",
    "invoices:read": "list and read invoices",
    "invoices:write": "create, finalize, void and mark invoices paid",
    "accounts:read": "list and read accounts",
    "accounts:write": "create accounts",
    "ledger:read": "read the credit ledger",
    "analytics:read": "read credit analytics",
}
KEY_PREFIX = "ck"


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def generate_key() -> tuple[str, str]:
    """(raw key, prefix). The raw key is shown once and never stored."""
    prefix = secrets.token_hex(6)
    return f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}", prefix


def parse_scopes(text: str) -> list[str]:
    scopes = sorted({s.strip() for s in text.split(",") if s.strip()})
    if "*" in scopes or "all" in scopes:
        return sorted(SCOPES)
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(
            f"Unknown scope(s): {', '.join(unknown)}. Known: {', '.join(sorted(SCOPES))}."
        )
    if not scopes:
        raise ValueError("A key needs at least one scope.")
    return scopes
