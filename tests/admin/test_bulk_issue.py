"""Bulk issue of a campaign from a CSV: a preview with per-row errors, then all or nothing."""

from decimal import Decimal
from unittest import mock

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile

from credits import services
from credits.models import CreditGrant, LedgerEntry
from tests.factories import AccountFactory

pytestmark = pytest.mark.django_db

URL = "/admin/credits/creditgrant/bulk-issue/"


def _upload(client, text, **defaults):
    data = {
        "file": SimpleUploadedFile("campaign.csv", text.encode(), content_type="text/csv"),
        "type": "promotional",
        "campaign_id": "spring-26",
        "expiration_days": "90",
        "description": "Spring",
        "reason": "campaign",
    }
    data.update(defaults)
    return client.post(URL, data)


@pytest.fixture
def accounts():
    return [
        AccountFactory(account_id="acc_a"),
        AccountFactory(account_id="acc_b"),
        AccountFactory(account_id="acc_j", currency="JPY"),
    ]


def test_preview_shows_each_rows_error_and_issues_nothing(issuer_client, accounts):
    text = (
        "account_id,amount,currency,expires_at\n"
        "acc_a,50.00,,\n"
        "missing,10.00,,\n"
        "acc_j,1500.5,,\n"
        "acc_b,20.00,,not-a-date\n"
    )
    response = _upload(issuer_client, text)
    assert response.status_code == 200
    batch = response.context["batch"]
    errors = {row.line: row.errors for row in batch.rows}
    assert errors[2] == []
    assert "does not exist" in errors[3][0]
    assert "more precision than JPY allows" in errors[4][0]
    assert "is not a date" in errors[5][0]
    assert 'name="confirm"' not in response.content.decode()
    assert not CreditGrant.objects.exists() and not LedgerEntry.objects.exists()


def test_preview_then_confirm_issues_every_row(issuer_client, issuer, accounts):
    text = "account_id,amount,type\nacc_a,50.00,\nacc_b,20.00,bonus\nacc_j,7500,\n"
    preview = _upload(issuer_client, text)
    batch = preview.context["batch"]
    assert batch.ok and [r.status for r in batch.rows] == ["active"] * 3
    assert batch.totals() == [("JPY", 1, Decimal("7500")), ("USD", 2, Decimal("70.00"))]
    assert not CreditGrant.objects.exists()  # the preview was a dry run
    response = issuer_client.post(URL, {"payload": preview.context["payload"], "confirm": "1"})
    assert response.status_code == 302 and "campaign=spring-26" in response["Location"]
    grants = CreditGrant.objects.order_by("account__account_id")
    assert [(g.account.account_id, g.original, g.type, g.campaign_id) for g in grants] == [
        ("acc_a", Decimal("50.00"), "promotional", "spring-26"),
        ("acc_b", Decimal("20.00"), "bonus", "spring-26"),
        ("acc_j", Decimal("7500.00"), "promotional", "spring-26"),
    ]
    assert all(g.expires_at is not None for g in grants)
    assert {e.actor_user_id for e in LedgerEntry.objects.all()} == {issuer.pk}
    assert LogEntry.objects.filter(user=issuer, action_flag=ADDITION).count() == 3


def test_a_row_failing_at_confirmation_rolls_back_every_row(issuer_client, accounts):
    text = "account_id,amount\nacc_a,50.00\nacc_b,20.00\nacc_j,7500\n"
    preview = _upload(issuer_client, text)
    real = services.grant_issue
    calls = []

    def flaky(**kwargs):
        calls.append(kwargs["account"].account_id)
        if kwargs["account"].account_id == "acc_j":
            raise services.ValidationFailed("simulated failure on the last row")
        return real(**kwargs)

    with mock.patch("backoffice.bulk.grant_issue", side_effect=flaky):
        response = issuer_client.post(URL, {"payload": preview.context["payload"], "confirm": "1"})
    assert calls == ["acc_a", "acc_b", "acc_j"]
    assert response.status_code == 200
    assert "simulated failure on the last row" in response.content.decode()
    assert not CreditGrant.objects.exists() and not LedgerEntry.objects.exists()


def test_a_tampered_payload_is_refused(issuer_client, accounts):
    response = issuer_client.post(URL, {"payload": "forged", "confirm": "1"}, follow=True)
    assert "expired or was altered" in response.content.decode()
    assert not CreditGrant.objects.exists()


def test_missing_columns_are_reported_for_the_file(issuer_client, accounts):
    response = _upload(issuer_client, "account,value\nacc_a,1\n")
    assert "Missing column(s): account_id, amount" in response.content.decode()


def test_viewer_cannot_bulk_issue(viewer_client, accounts):
    assert viewer_client.get(URL).status_code == 403
    assert _upload(viewer_client, "account_id,amount\nacc_a,1.00\n").status_code == 403
