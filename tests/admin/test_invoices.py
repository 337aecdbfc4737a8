"""Invoices in the admin: list and detail with lines, a draft created with its lines, lines
added, credit held and released, finalize after a preview of the credit plan, apply one credit,
void (credits come back), mark paid, and the optimize plan with its reasons."""

from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from credits.models import CreditHold, EntryKind, GrantStatus, HoldStatus, LedgerEntry
from invoices.models import Invoice, InvoiceStatus, LineKind
from invoices.services import invoice_finalize
from tests.factories import TEST_ACTOR, make_grant, make_invoice

pytestmark = pytest.mark.django_db


def _url(name, invoice):
    return reverse(f"admin:invoices_invoice_{name}", args=[invoice.pk])


def _lines(*rows, prefix="lines"):
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "1",
        f"{prefix}-MAX_NUM_FORMS": "500",
    }
    for i, (service, description, quantity, unit_price) in enumerate(rows):
        data.update(
            {
                f"{prefix}-{i}-service": service,
                f"{prefix}-{i}-description": description,
                f"{prefix}-{i}-quantity": quantity,
                f"{prefix}-{i}-unit_price": unit_price,
            }
        )
    return data


def test_create_a_draft_with_lines(issuer_client, issuer, account):
    data = {"invoice-account": account.pk, "invoice-currency": "", "invoice-due_date": ""}
    data.update(
        _lines(("clusters", "GPU hours", "10", "12.50"), ("storage", "TB-month", "2", "20"))
    )
    response = issuer_client.post("/admin/invoices/invoice/add/", data)
    invoice = Invoice.objects.get()
    assert response.status_code == 302
    assert invoice.status == InvoiceStatus.DRAFT and invoice.currency == "USD"
    assert invoice.subtotal == Decimal("165.00") and invoice.total == Decimal("165.00")
    assert invoice.created_by == "user:ivan"
    assert LogEntry.objects.filter(object_id=str(invoice.pk), user=issuer).exists()


def test_viewer_cannot_create_or_finalize_or_void(viewer_client, account):
    invoice = make_invoice(account, ("clusters", "10.00"))
    assert viewer_client.get("/admin/invoices/invoice/add/").status_code == 403
    assert viewer_client.post(_url("finalize", invoice), {"confirm": "1"}).status_code == 403
    assert viewer_client.post(_url("void", invoice), {"reason": "x"}).status_code == 403
    assert viewer_client.post(_url("pay", invoice)).status_code == 403
    # but may read the plan
    assert viewer_client.get(_url("optimize", invoice)).status_code == 200


def test_add_lines_to_a_draft(issuer_client, account):
    invoice = make_invoice(account, ("clusters", "10.00"))
    issuer_client.post(_url("add_lines", invoice), _lines(("network", "egress", "3", "1.10")))
    invoice.refresh_from_db()
    assert invoice.subtotal == Decimal("13.30")
    assert invoice.lines.count() == 2


def test_finalize_shows_the_plan_then_draws_credits(admin_client_fin, finance_admin, account):
    soon = make_grant(account, "30.00", expiration_days=10)
    later = make_grant(account, "100.00", expiration_days=200)
    invoice = make_invoice(account, ("clusters", "50.00"))
    # the preview writes nothing and shows what each credit would draw, and why
    page = admin_client_fin.get(_url("finalize", invoice))
    html = page.content.decode()
    plan = page.context["plan"]
    assert [(r.credit_id, r.amount) for r in plan.used_rows] == [
        (soon.credit_id, Decimal("30.00")),
        (later.credit_id, Decimal("20.00")),
    ]
    assert plan.total == Decimal("50.00") and plan.due_after == Decimal("0.00")
    assert "applied" in html and soon.credit_id in html
    invoice.refresh_from_db()
    assert (
        invoice.status == InvoiceStatus.DRAFT
        and not LedgerEntry.objects.filter(kind=EntryKind.DEDUCTION).exists()
    )
    # confirming finalizes through the service
    admin_client_fin.post(_url("finalize", invoice), {"confirm": "1"})
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID and invoice.credits_total == Decimal("50.00")
    credit_lines = list(invoice.lines.filter(kind=LineKind.CREDIT).order_by("position"))
    assert [(line.grant_id, line.amount) for line in credit_lines] == [
        (soon.pk, Decimal("-30.00")),
        (later.pk, Decimal("-20.00")),
    ]
    deduction = LedgerEntry.objects.filter(kind=EntryKind.DEDUCTION).first()
    assert deduction.actor_user == finance_admin
    # the detail page shows the negative credit lines linked to their grants
    detail = admin_client_fin.get(_url("change", invoice)).content.decode()
    assert (
        "\u2212$30.00" in detail
        and reverse("admin:credits_creditgrant_change", args=[soon.pk]) in detail
    )


def test_void_brings_the_credits_back(admin_client_fin, account):
    grant = make_grant(account, "100.00")
    invoice = make_invoice(account, ("clusters", "140.00"))
    invoice_finalize(invoice=invoice, actor=TEST_ACTOR)
    grant.refresh_from_db()
    assert grant.remaining == Decimal("0.00")
    page = admin_client_fin.get(_url("void", invoice))
    assert "deduction reversed" in page.content.decode()
    # a reason is required
    admin_client_fin.post(_url("void", invoice), {"reason": ""})
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PENDING
    admin_client_fin.post(_url("void", invoice), {"reason": "billed twice"})
    invoice.refresh_from_db()
    grant.refresh_from_db()
    assert invoice.status == InvoiceStatus.VOID and invoice.void_reason == "billed twice"
    assert grant.remaining == Decimal("100.00")
    reversal = LedgerEntry.objects.get(kind=EntryKind.REVERSAL)
    assert reversal.amount == Decimal("100.00") and reversal.actor == "user:adele"


def test_mark_paid(approver_client, account):
    invoice = make_invoice(account, ("clusters", "40.00"))
    invoice_finalize(invoice=invoice, actor=TEST_ACTOR)
    assert approver_client.get(_url("pay", invoice)).status_code == 200
    approver_client.post(_url("pay", invoice))
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID and invoice.paid_at is not None


def test_pay_a_draft_reports_the_services_refusal(approver_client, account):
    invoice = make_invoice(account, ("clusters", "40.00"))
    response = approver_client.post(_url("pay", invoice), follow=True)
    assert "Cannot mark paid invoice" in response.content.decode()
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.DRAFT


def test_optimize_shows_the_plan_and_reasons(viewer_client, account):
    usable = make_grant(account, "20.00")
    storage_only = make_grant(account, "20.00", applicable_services=["storage"])
    invoice = make_invoice(account, ("clusters", "50.00"))
    response = viewer_client.get(_url("optimize", invoice))
    html = response.content.decode()
    plan = response.context["plan"]
    assert plan.strategy == "maximize_savings" and plan.total == Decimal("20.00")
    codes = {r.credit_id: r.code for r in plan.rows}
    assert codes == {usable.credit_id: "applied", storage_only.credit_id: "no_applicable_lines"}
    assert "only applies to services (storage)" in html


def test_hold_and_release_credit_on_a_draft(issuer_client, account):
    grant = make_grant(account, "100.00")
    invoice = make_invoice(account, ("clusters", "30.00"))
    issuer_client.post(_url("hold", invoice))
    hold = CreditHold.objects.get(invoice=invoice)
    assert hold.amount == Decimal("30.00") and hold.status == HoldStatus.ACTIVE
    grant.refresh_from_db()
    assert grant.reserved == Decimal("30.00")
    issuer_client.post(_url("release", invoice))
    grant.refresh_from_db()
    assert grant.reserved == Decimal("0.00")


def test_apply_one_credit_to_a_pending_invoice(issuer_client, account):
    grant = make_grant(account, "100.00")
    invoice = make_invoice(account, ("clusters", "70.00"))
    account.auto_apply_credits = False
    account.save()
    invoice_finalize(invoice=invoice, actor=TEST_ACTOR)
    page = issuer_client.get(_url("apply", invoice))
    assert grant.credit_id in page.content.decode()
    issuer_client.post(_url("apply", invoice), {"grant": grant.pk, "amount": "25.00"})
    invoice.refresh_from_db()
    assert invoice.credits_total == Decimal("25.00") and invoice.total == Decimal("45.00")
    # too much is refused with the service's reason, nothing applied
    response = issuer_client.post(_url("apply", invoice), {"grant": grant.pk, "amount": "0.001"})
    assert "more precision than USD allows" in response.content.decode()


def test_invoice_list_and_search(viewer_client, account):
    invoice = make_invoice(account, ("clusters", "10.00"))
    listing = viewer_client.get("/admin/invoices/invoice/")
    assert invoice.invoice_number in listing.content.decode()
    found = viewer_client.get(f"/admin/invoices/invoice/?q={invoice.invoice_number}")
    assert list(found.context["cl"].result_list) == [invoice]
    by_status = viewer_client.get("/admin/invoices/invoice/?status__exact=paid")
    assert list(by_status.context["cl"].result_list) == []
    page = viewer_client.get(_url("change", invoice))
    assert page.status_code == 200 and "Finalize…" not in page.content.decode()


def test_purchased_credit_links_its_invoice(viewer_client, account):
    grant = make_grant(account, "500.00", type="purchased", price="450.00")
    assert grant.status == GrantStatus.ACTIVE
    invoice = Invoice.objects.get(purchased_grant=grant)
    html = viewer_client.get(_url("change", invoice)).content.decode()
    assert grant.credit_id in html and "$450.00" in html
