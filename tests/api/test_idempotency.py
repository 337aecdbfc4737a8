"""Idempotency-Key on POSTs: replay, 409 on another body, stored 4xx, concurrent duplicates."""

import json
import threading
from decimal import Decimal

import pytest
from django.db import connection

from billing_api.models import IdempotencyRecord
from credits.models import Account, CreditGrant, LedgerEntry
from tests.api.conftest import KeyClient, make_client
from tests.factories import AccountFactory

ISSUE = "/v2/billing/credits/issue"
PAYLOAD = {"type": "promotional", "recipientAccountId": "account_123", "amount": "10.00"}


def test_same_key_and_body_replays_the_first_response_without_executing_again(api, account):
    first = api.post_json(ISSUE, PAYLOAD, HTTP_IDEMPOTENCY_KEY="issue-1")
    again = api.post_json(ISSUE, dict(reversed(PAYLOAD.items())), HTTP_IDEMPOTENCY_KEY="issue-1")
    assert first.status_code == again.status_code == 201
    assert json.loads(again.content) == json.loads(first.content)
    assert again["Idempotent-Replayed"] == "true"
    assert CreditGrant.objects.count() == 1 and LedgerEntry.objects.count() == 1


def test_same_key_with_another_body_or_path_is_a_409(api, account):
    api.post_json(ISSUE, PAYLOAD, HTTP_IDEMPOTENCY_KEY="k")
    other = api.post_json(ISSUE, PAYLOAD | {"amount": "11.00"}, HTTP_IDEMPOTENCY_KEY="k")
    assert other.status_code == 409
    assert json.loads(other.content)["error"]["code"] == "idempotency_key_reused"
    elsewhere = api.post_json(
        "/v2/billing/accounts", {"accountId": "a1", "name": "A"}, HTTP_IDEMPOTENCY_KEY="k"
    )
    assert elsewhere.status_code == 409
    assert CreditGrant.objects.count() == 1 and not Account.objects.filter(account_id="a1")


def test_keys_are_per_partner(api, other_api, account, other_account):
    mine = api.post_json(ISSUE, PAYLOAD, HTTP_IDEMPOTENCY_KEY="shared")
    theirs = other_api.post_json(
        ISSUE, PAYLOAD | {"recipientAccountId": "account_999"}, HTTP_IDEMPOTENCY_KEY="shared"
    )
    assert mine.status_code == theirs.status_code == 201
    assert CreditGrant.objects.count() == 2


def test_a_4xx_is_stored_and_replayed_and_writes_nothing(api, account):
    bad = PAYLOAD | {"amount": "10.001"}
    first = api.post_json(ISSUE, bad, HTTP_IDEMPOTENCY_KEY="bad")
    again = api.post_json(ISSUE, bad, HTTP_IDEMPOTENCY_KEY="bad")
    assert first.status_code == again.status_code == 400
    assert again.content == first.content and again["Idempotent-Replayed"] == "true"
    assert not CreditGrant.objects.exists()
    assert IdempotencyRecord.objects.get(key="bad").response_status == 400


def test_a_server_error_stores_nothing_so_the_key_can_be_retried(api, account, monkeypatch):
    from billing_api import views

    def boom(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(views, "grant_issue", boom)
    api.raise_request_exception = False
    assert api.post_json(ISSUE, PAYLOAD, HTTP_IDEMPOTENCY_KEY="retry").status_code == 500
    assert not IdempotencyRecord.objects.exists()
    monkeypatch.undo()
    assert api.post_json(ISSUE, PAYLOAD, HTTP_IDEMPOTENCY_KEY="retry").status_code == 201


def test_invalid_keys_are_refused(api, account):
    for key in ("", "x" * 256, "naïve"):
        response = api.post_json(ISSUE, PAYLOAD, HTTP_IDEMPOTENCY_KEY=key)
        assert response.status_code == 400, key
    assert not CreditGrant.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_execute_once():
    # given: one key, eight threads sending the same issue request at once
    client = make_client("racer")
    AccountFactory(partner=client.partner, account_id="account_123")
    barrier = threading.Barrier(8)
    results = []

    def send():
        c = KeyClient(client.key, client.raw)
        barrier.wait()
        try:
            r = c.post_json(ISSUE, PAYLOAD, HTTP_IDEMPOTENCY_KEY="race-1")
            results.append((r.status_code, r.content))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # then: one credit, one ledger entry; every thread got the first response (the others
    # waited on the unique index and replayed it)
    assert CreditGrant.objects.count() == 1
    assert LedgerEntry.objects.count() == 1
    assert {status for status, _ in results} == {201}
    assert len({content for _, content in results}) == 1
    assert json.loads(results[0][1])["amount"]["original"] == 10.0
    assert Decimal(json.loads(results[0][1], parse_float=Decimal)["amount"]["original"]) == (
        Decimal("10.00")
    )
