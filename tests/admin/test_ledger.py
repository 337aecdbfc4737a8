"""The ledger in the admin: read-only everywhere, filters, and a CSV export that streams."""

import csv
import io
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models.query import QuerySet
from django.http import StreamingHttpResponse
from django.urls import reverse

from backoffice import exports
from credits.actors import Actor
from credits.models import LedgerEntry
from credits.services import grant_void
from invoices.services import invoice_finalize
from tests.factories import TEST_ACTOR, AccountFactory, make_grant, make_invoice

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/credits/ledgerentry/"
EXPORT = "/admin/credits/ledgerentry/export.csv"


@pytest.fixture
def history(account, staff_user):
    grant = make_grant(account, "100.00")
    other = make_grant(AccountFactory(account_id="account_999"), "50.00")
    invoice = make_invoice(account, ("clusters", "30.00"))
    invoice_finalize(invoice=invoice, actor=TEST_ACTOR)
    grant_void(grant=other, actor=Actor.for_user(staff_user), reason="=HYPERLINK(evil)")
    return {"grant": grant, "other": other, "invoice": invoice}


def test_ledger_is_read_only_for_everyone(admin_client, history):
    # even a superuser: no add, no change, no delete, no actions
    entry = LedgerEntry.objects.first()
    assert admin_client.get(CHANGELIST + "add/").status_code == 403
    change = reverse("admin:credits_ledgerentry_change", args=[entry.pk])
    page = admin_client.get(change)
    assert page.status_code == 200 and 'name="amount"' not in page.content.decode()
    assert admin_client.post(change, {"reason": "edited"}).status_code == 403
    delete = reverse("admin:credits_ledgerentry_delete", args=[entry.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    listing = admin_client.get(CHANGELIST).content.decode()
    assert "delete_selected" not in listing and 'name="action"' not in listing
    response = admin_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"}
    )
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()
    assert response.status_code in (200, 302)


def test_ledger_filters(viewer_client, history, staff_user):
    def kinds(query):
        response = viewer_client.get(CHANGELIST + query)
        assert response.status_code == 200, query
        return sorted(e.kind for e in response.context["cl"].result_list)

    assert kinds("?kind__exact=deduction") == ["deduction"]
    assert kinds("?account=account_999") == ["grant", "void"]
    assert kinds(f"?credit={history['grant'].credit_id}") == ["deduction", "grant"]
    assert kinds(f"?invoice={history['invoice'].invoice_number}") == ["deduction"]
    assert kinds(f"?invoice={history['invoice'].invoice_id}") == ["deduction"]
    assert kinds("?actor=user:fiona") == ["void"]
    assert kinds("?created_at_to=2000-01-01") == []
    assert kinds("?account=nobody") == []


def test_export_streams_the_filtered_ledger_as_csv(viewer_client, history):
    response = viewer_client.get(EXPORT + "?account=account_999")
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == exports.HEADER
    body = {row[2]: row for row in rows[1:]}
    assert set(body) == {"grant", "void"}
    assert body["void"][3] == "-50.00" and body["void"][4] == "USD"
    assert body["void"][6] == history["other"].credit_id and body["void"][7] == "account_999"
    # a reason starting like a formula is defused for spreadsheets
    assert body["void"][11] == "'=HYPERLINK(evil)"


def test_export_never_loads_the_whole_queryset(viewer_client, account, monkeypatch):
    for _ in range(5):
        make_grant(account, "1.00")
    monkeypatch.setattr(exports, "CHUNK_SIZE", 2)

    def refuse(self):
        raise AssertionError("the export must iterate, not fetch every row at once")

    response = viewer_client.get(EXPORT)
    monkeypatch.setattr(QuerySet, "_fetch_all", refuse)
    chunks = list(response.streaming_content)
    # header, then the 5 grant entries two at a time
    assert len(chunks) == 1 + 3
    assert sum(chunk.count(b"\n") for chunk in chunks) == 6


@pytest.mark.postgres
def test_export_reads_through_a_server_side_cursor(viewer_client, account, monkeypatch):
    for _ in range(5):
        make_grant(account, "1.00")
    monkeypatch.setattr(exports, "CHUNK_SIZE", 2)
    response = viewer_client.get(EXPORT)
    stream = iter(response.streaming_content)
    next(stream)  # header
    next(stream)  # first chunk: the cursor is open and holds the rest
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_cursors")
        open_cursors = cursor.fetchone()[0]
    assert open_cursors >= 1
    rest = list(stream)
    assert sum(chunk.count(b"\n") for chunk in rest) == 3


def test_viewer_can_export_but_a_user_without_ledger_access_cannot(client, django_user_model):
    nobody = django_user_model.objects.create_user("nobody", password="pw-nobody-1", is_staff=True)
    client.force_login(nobody)
    assert client.get(EXPORT).status_code == 403
    assert client.get(CHANGELIST).status_code == 403


def test_ledger_amounts_render_signed_at_currency_precision(viewer_client, history):
    html = viewer_client.get(CHANGELIST).content.decode()
    assert "+$100.00" in html and "\u2212$30.00" in html
    assert LedgerEntry.objects.filter(amount=Decimal("-30.00")).exists()
