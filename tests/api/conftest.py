"""Fixtures of the partner API tests: partners, keys with scopes, a client per key."""

import pytest
from rest_framework.test import APIClient

from billing_api.keys import SCOPES
from billing_api.services import api_key_create
from tests.factories import AccountFactory, PartnerFactory


@pytest.fixture(autouse=True)
def _generous_throttle(settings):
    # The throttle has its own test; elsewhere a test's burst must never be throttled.
    settings.BILLING_API_THROTTLE_RATE = "100000/min"


class KeyClient(APIClient):
    """An APIClient sending one partner key, with the partner and raw key at hand."""

    def __init__(self, key, raw, **kwargs):
        super().__init__(**kwargs)
        self.key = key
        self.raw = raw
        self.partner = key.partner
        self.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    def post_json(self, path, data=None, **extra):
        return self.post(path, data if data is not None else {}, format="json", **extra)


def make_client(partner_name: str, scopes=None) -> KeyClient:
    key, raw = api_key_create(partner_name=partner_name, scopes=list(scopes or SCOPES))
    return KeyClient(key, raw)


@pytest.fixture
def api(db) -> KeyClient:
    """A key of partner 'acme' holding every scope."""
    return make_client("acme")


@pytest.fixture
def other_api(db) -> KeyClient:
    """A key of another partner, 'globex'."""
    return make_client("globex")


@pytest.fixture
def account(api):
    return AccountFactory(partner=api.partner, account_id="account_123", name="Acme Corp")


@pytest.fixture
def other_account(other_api):
    return AccountFactory(partner=other_api.partner, account_id="account_999", name="Globex")


__all__ = ["PartnerFactory", "make_client"]
