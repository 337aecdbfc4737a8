"""API keys are revoked from the admin; a revoked key is refused by the API at once."""

import pytest
from django.urls import reverse

from billing_api.services import api_key_create
from credits.models import ApiKey

pytestmark = pytest.mark.django_db


def test_admin_revokes_a_key_and_the_api_refuses_it(admin_client):
    key, raw = api_key_create(partner_name="acme", scopes=["credits:read"])
    assert (
        admin_client.get("/v2/billing/credits", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code
        == 200
    )
    response = admin_client.post(
        reverse("admin:credits_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [key.pk]},
        follow=True,
    )
    assert "Revoked 1 API key(s)" in response.content.decode()
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    refused = admin_client.get("/v2/billing/credits", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"]
