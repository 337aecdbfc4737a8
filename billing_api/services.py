"""Writes the partner API owns: accounts created by partners, partners and their API keys.

Credits and invoices are written by credits.services and invoices.services; these are the
few entities that only the API (and its management command) creates.
"""

from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from billing_api.keys import generate_key, hash_key
from credits.models import ApiKey, Partner


@transaction.atomic
@transaction.atomic
def api_key_create(
    *, partner_name: str, scopes: Sequence[str], name: str = ""
) -> tuple[ApiKey, str]:
    """A new key for `partner_name` (the partner is created if new). Returns (key, raw key):
    the raw key exists only in this return value."""
    partner, _ = Partner.objects.get_or_create(
        name=partner_name, defaults={"display_name": partner_name}
    )
    raw, prefix = generate_key()
    key = ApiKey.objects.create(
        partner=partner, name=name, prefix=prefix, key_hash=hash_key(raw), scopes=list(scopes)
    )
    return key, raw


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key
