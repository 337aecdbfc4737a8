"""Auth (Bearer keys hashed at rest, revocation), scopes per endpoint, partner scoping (another
partner's objects are a 404 on every endpoint taking an id), throttling, error shape."""

import hashlib
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing_api.services import api_key_revoke
from credits.models import ApiKey, CreditGrant, LedgerEntry
from tests.api.conftest import make_client
from tests.factories import AccountFactory, make_grant, make_invoice


def error(response):
    data = json.loads(response.content)
    assert set(data) == {"error"} and set(data["error"]) == {"code", "message", "details"}
    return data["error"]


def test_create_api_key_prints_the_raw_key_last_and_stores_only_its_hash(db):
    out = StringIO()
    call_command("create_api_key", "newco", "--scopes", "credits:read,ledger:read", stdout=out)
    raw = out.getvalue().strip().splitlines()[-1]
    key = ApiKey.objects.get(partner__name="newco")
    assert raw.startswith(f"ck_{key.prefix}_")
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in str(list(ApiKey.objects.values()))  # only the hash is at rest
    assert key.scopes == ["credits:read", "ledger:read"]
    with pytest.raises(CommandError, match="Unknown scope"):
        call_command("create_api_key", "newco", "--scopes", "credits:steal", stdout=StringIO())


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer nope", "Basic abc", "Bearer a b", "bearer  "]
)
def test_missing_or_unknown_keys_are_401(api, header):
    api.credentials(**({"HTTP_AUTHORIZATION": header} if header else {}))
    response = api.get("/v2/billing/credits")
    assert response.status_code == 401
    assert error(response)["code"] in {"unauthenticated", "invalid_api_key",
                                       "invalid_authorization"}  # fmt: skip
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_key_is_refused_at_once(api, db):
    assert api.get("/v2/billing/accounts").status_code == 200
    api_key_revoke(key=api.key)
    response = api.get("/v2/billing/accounts")
    assert response.status_code == 401 and error(response)["code"] == "api_key_revoked"
    call_command("revoke_api_key", api.key.prefix, stdout=StringIO())


def test_last_used_at_is_recorded_at_most_once_a_minute(api):
    api.get("/v2/billing/accounts")
    first = ApiKey.objects.get(pk=api.key.pk).last_used_at
    assert first is not None
    api.get("/v2/billing/accounts")
    assert ApiKey.objects.get(pk=api.key.pk).last_used_at == first


SCOPED = [
    ("get", "/v2/billing/credits", "credits:read"),
    ("get", "/v2/billing/credits/expiring", "credits:read"),
    ("get", "/v2/billing/credits/balance", "credits:read"),
    ("get", "/v2/billing/credits/ledger", "ledger:read"),
    ("get", "/v2/billing/credits/analytics", "analytics:read"),
    ("post", "/v2/billing/credits/issue", "credits:issue"),
    ("post", "/v2/billing/credits/bulk-apply", "credits:apply"),
    ("get", "/v2/billing/invoices", "invoices:read"),
    ("post", "/v2/billing/invoices", "invoices:write"),
    ("get", "/v2/billing/accounts", "accounts:read"),
    ("post", "/v2/billing/accounts", "accounts:write"),
]


@pytest.mark.parametrize(("method", "path", "scope"), SCOPED)
def test_each_endpoint_needs_its_scope(db, method, path, scope):
    without = make_client(
        "acme", ["invoices:read"] if scope != "invoices:read" else ["ledger:read"]
    )
    response = getattr(without, method)(path, {}, format="json")
    assert response.status_code == 403
    assert error(response)["code"] == "insufficient_scope"
    assert error(response)["details"]["required"] == [scope]
    allowed = make_client("acme", [scope])
    assert getattr(allowed, method)(path, {}, format="json").status_code != 403


@pytest.fixture
def theirs(other_api, other_account):
    grant = make_grant(other_account, "80.00", transferable=True)
    invoice = make_invoice(other_account, ("clusters", "50.00"))
    return {"credit": grant.credit_id, "invoice": invoice.invoice_id,
            "account": other_account.account_id}  # fmt: skip


def test_another_partners_objects_are_404_on_every_endpoint_with_an_id(api, account, theirs):
    mine = make_grant(account, "10.00", transferable=True)
    my_invoice = make_invoice(account, ("clusters", "5.00"))
    c, i, a = theirs["credit"], theirs["invoice"], theirs["account"]
    calls = [
        ("get", f"/v2/billing/credits/{c}", None),
        ("post", f"/v2/billing/credits/{c}/void", {"reason": "x"}),
        ("post", f"/v2/billing/credits/{c}/apply", {"invoiceId": my_invoice.invoice_id,
                                                     "amount": "1.00"}),
        ("post", f"/v2/billing/credits/{c}/transfer", {"toAccountId": "account_123"}),
        ("post", f"/v2/billing/credits/{c}/approve", {}),
        ("get", f"/v2/billing/credits/optimize/{i}", None),
        ("get", f"/v2/billing/invoices/{i}", None),
        ("post", f"/v2/billing/invoices/{i}/finalize", {}),
        ("post", f"/v2/billing/invoices/{i}/void", {"reason": "x"}),
        ("post", f"/v2/billing/invoices/{i}/pay", {}),
        ("get", f"/v2/billing/accounts/{a}", None),
        # ids of theirs inside bodies and filters of endpoints taking mine
        ("post", f"/v2/billing/credits/{mine.credit_id}/apply", {"invoiceId": i,
                                                                  "amount": "1.00"}),
        ("post", f"/v2/billing/credits/{mine.credit_id}/transfer", {"toAccountId": a}),
        ("post", "/v2/billing/credits/issue", {"type": "bonus", "recipientAccountId": a,
                                               "amount": "1.00"}),
        ("post", "/v2/billing/invoices", {"accountId": a, "lines": [{"service": "x",
                                                                    "unitPrice": 1}]}),
        ("post", "/v2/billing/credits/bulk-apply", {"accountIds": [a]}),
        ("get", "/v2/billing/credits/balance?accountId=" + a, None),
        ("get", "/v2/billing/credits/expiring?accountId=" + a, None),
        ("get", "/v2/billing/credits/analytics?accountId=" + a, None),
    ]  # fmt: skip
    ledger_before = LedgerEntry.objects.count()
    for method, path, payload in calls:
        response = api.get(path) if method == "get" else api.post_json(path, payload)
        assert response.status_code == 404, (path, response.content)
        assert error(response)["code"].endswith("not_found")
    assert LedgerEntry.objects.count() == ledger_before
    # and lists never show theirs
    assert json.loads(api.get("/v2/billing/credits").content)["credits"][0]["creditId"] == (
        mine.credit_id
    )
    assert all(e["creditId"] != c for e in json.loads(
        api.get("/v2/billing/credits/ledger").content)["entries"])  # fmt: skip
    assert [x["accountId"] for x in json.loads(api.get("/v2/billing/accounts").content)[
        "accounts"]] == ["account_123"]  # fmt: skip
    assert CreditGrant.objects.get(credit_id=c).status == "active"


def test_throttle_is_per_key(settings, api, other_api):
    from django.core.cache import caches

    caches["billing_api"].clear()
    settings.BILLING_API_THROTTLE_RATE = "3/min"
    for _ in range(3):
        assert api.get("/v2/billing/accounts").status_code == 200
    limited = api.get("/v2/billing/accounts")
    assert limited.status_code == 429
    assert error(limited)["code"] == "rate_limited" and int(limited["Retry-After"]) > 0
    assert other_api.get("/v2/billing/accounts").status_code == 200
    caches["billing_api"].clear()


@pytest.mark.parametrize(
    "raw",
    [b"{", b"[1, 2", b'{"amount": NaN}', b'{"type": "\\u0000"}', b"\xff\xfe", b'"just text"'],
)
def test_malformed_bodies_are_400_never_500(api, account, raw):
    response = api.post("/v2/billing/credits/issue", raw, content_type="application/json")
    assert response.status_code == 400
    assert error(response)["code"] in {"malformed_json", "validation_error"}
    assert not CreditGrant.objects.exists()


def test_unknown_paths_and_trailing_slashes_are_json_404s(api):
    for path in ("/v2/billing/credits/", "/v2/billing/nothing", "/v2/billing/credits/a%00b"):
        response = api.get(path)
        assert response.status_code == 404 and error(response)["code"] == "not_found"


def test_nul_in_a_query_parameter_is_a_400(api):
    response = api.get("/v2/billing/credits", {"accountId": "a\x00b"})
    assert response.status_code == 400


def test_docs_page_and_schema_are_served_without_a_cdn(client, db):
    schema = client.get("/v2/billing/schema?format=json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert "/v2/billing/credits/{creditId}/apply" in paths
    assert "/v2/billing/credits/optimize/{invoiceId}" in paths
    docs = client.get("/v2/billing/docs")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "/v2/billing/docs/assets/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn." not in html and "unpkg" not in html
    asset = client.get("/v2/billing/docs/assets/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200
    assert client.get("/v2/billing/redoc").status_code == 200
    assert (
        client.get("/v2/billing/docs/assets/redoc/bundles/redoc.standalone.js").status_code == 200
    )


def test_accounts_of_other_partners_are_invisible_even_by_factory(api, db):
    AccountFactory(partner=None, account_id="orphan")
    assert api.get("/v2/billing/accounts/orphan").status_code == 404
