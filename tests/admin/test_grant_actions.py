"""Void, approve (maker-checker), activate and transfer from the admin: a confirmation page, a
required reason, the service doing the work, and both the ledger and the admin log naming the
staff user."""

from decimal import Decimal

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.urls import reverse

from credits.actors import Actor
from credits.models import CreditGrant, EntryKind, GrantEvent, GrantStatus, LedgerEntry
from tests.factories import AccountFactory, make_grant

pytestmark = pytest.mark.django_db


def _action_url(action, *grants):
    url = reverse("admin:credits_creditgrant_action", args=[action])
    return f"{url}?ids={','.join(str(g.pk) for g in grants)}"


def test_void_asks_for_confirmation_and_a_reason(approver_client, approver, account):
    grant = make_grant(account, "80.00")
    url = _action_url("void", grant)
    # the confirmation page lists the credit
    page = approver_client.get(url)
    assert page.status_code == 200 and grant.credit_id in page.content.decode()
    # without a reason nothing happens
    response = approver_client.post(url, {"ids": str(grant.pk), "confirm": "1", "reason": " "})
    assert response.status_code == 200 and "reason" in response.context["form"].errors
    grant.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE
    # with one, the service voids it
    response = approver_client.post(
        url, {"ids": str(grant.pk), "confirm": "1", "reason": "customer churned"}
    )
    assert response.status_code == 302
    grant.refresh_from_db()
    assert grant.status == GrantStatus.VOIDED and grant.remaining == Decimal("0.00")
    entry = LedgerEntry.objects.get(grant=grant, kind=EntryKind.VOID)
    assert entry.amount == Decimal("-80.00") and entry.reason == "customer churned"
    assert entry.actor == "user:anna" and entry.actor_user == approver
    log = LogEntry.objects.get(object_id=str(grant.pk), action_flag=CHANGE)
    assert log.user == approver and "customer churned" in log.change_message


def test_viewer_and_issuer_cannot_void(viewer_client, issuer_client, account):
    grant = make_grant(account, "80.00")
    url = _action_url("void", grant)
    for client in (viewer_client, issuer_client):
        assert client.get(url).status_code == 403
        data = {"ids": str(grant.pk), "confirm": "1", "reason": "x"}
        assert client.post(url, data).status_code == 403
    grant.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE


def test_void_action_from_the_changelist_goes_to_the_confirmation_page(approver_client, account):
    a, b = make_grant(account, "1.00"), make_grant(account, "2.00")
    response = approver_client.post(
        "/admin/credits/creditgrant/",
        {"action": "void_selected", "_selected_action": [a.pk, b.pk]},
    )
    assert response.status_code == 302
    assert response["Location"] == _action_url("void", a, b).replace(",", "%2C")


def test_viewer_sees_no_actions_on_the_changelist(viewer_client, account):
    make_grant(account, "1.00")
    response = viewer_client.get("/admin/credits/creditgrant/")
    assert "void_selected" not in response.content.decode()


def test_issuer_cannot_approve_their_own_grant(django_user_model, account):
    # given: a person who may both issue and approve issues a grant above the threshold
    from django.contrib.auth.models import Group
    from django.test import Client

    from backoffice import roles

    maker = django_user_model.objects.create_user("max", password="pw-max-123", is_staff=True)
    maker.groups.set(Group.objects.filter(name__in=[roles.ISSUER, roles.APPROVER]))
    client = Client()
    client.force_login(maker)
    grant = make_grant(account, "20000.00", actor=Actor.for_user(maker))
    assert grant.status == GrantStatus.PENDING and grant.approval_required
    # when they approve it themselves
    response = client.post(
        _action_url("approve", grant), {"ids": str(grant.pk), "confirm": "1", "reason": "ok"}
    )
    # then the service refuses and says why
    assert response.status_code == 302
    messages = [m.message for m in response.wsgi_request._messages]
    assert any("cannot approve" in m for m in messages)
    grant.refresh_from_db()
    assert grant.status == GrantStatus.PENDING and grant.approved_at is None


def test_issuer_group_cannot_approve_at_all(issuer_client, account):
    grant = make_grant(account, "20000.00")
    response = issuer_client.post(
        _action_url("approve", grant), {"ids": str(grant.pk), "confirm": "1", "reason": "ok"}
    )
    assert response.status_code == 403


def test_another_person_approves_and_the_grant_becomes_usable(
    approver_client, approver, issuer, account
):
    grant = make_grant(account, "20000.00", actor=Actor.for_user(issuer))
    page = approver_client.get(reverse("admin:credits_creditgrant_change", args=[grant.pk]))
    assert "Approve…" in page.content.decode()
    assert "not usable until someone other than its issuer" in page.content.decode()
    approver_client.post(
        _action_url("approve", grant),
        {"ids": str(grant.pk), "confirm": "1", "reason": "checked the contract"},
    )
    grant.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE and grant.approved_by == "user:anna"
    event = GrantEvent.objects.get(grant=grant, kind="approved")
    assert event.actor == "user:anna" and event.reason == "checked the contract"
    assert LogEntry.objects.filter(object_id=str(grant.pk), user=approver).exists()


def test_activate_a_pending_grant_by_hand(approver_client, account):
    grant = make_grant(account, "30.00", auto_activate=False)
    assert grant.status == GrantStatus.PENDING
    approver_client.post(
        _action_url("activate", grant), {"ids": str(grant.pk), "confirm": "1", "reason": "go"}
    )
    grant.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE


def test_transfer_moves_credit_to_another_account(approver_client, approver, account):
    target = AccountFactory(account_id="account_456")
    grant = make_grant(account, "100.00", transferable=True)
    response = approver_client.post(
        _action_url("transfer", grant),
        {
            "ids": str(grant.pk),
            "confirm": "1",
            "to_account": target.pk,
            "amount": "40.00",
            "reason": "account merge",
        },
    )
    assert response.status_code == 302
    grant.refresh_from_db()
    assert grant.remaining == Decimal("60.00")
    moved = CreditGrant.objects.get(account=target)
    assert moved.original == Decimal("40.00") and moved.reference_id == grant.credit_id
    out = LedgerEntry.objects.get(grant=grant, kind=EntryKind.TRANSFER_OUT)
    assert out.amount == Decimal("-40.00") and out.actor_user == approver
    assert LedgerEntry.objects.get(grant=moved, kind=EntryKind.TRANSFER_IN).actor == "user:anna"


def test_transfer_of_a_non_transferable_credit_is_refused_with_the_services_message(
    approver_client, account
):
    target = AccountFactory()
    grant = make_grant(account, "100.00")
    response = approver_client.post(
        _action_url("transfer", grant),
        {"ids": str(grant.pk), "confirm": "1", "to_account": target.pk, "reason": "x"},
        follow=True,
    )
    assert "is not transferable" in response.content.decode()
    assert not CreditGrant.objects.filter(account=target).exists()


def test_void_of_an_already_voided_credit_reports_the_domain_error(approver_client, account):
    grant = make_grant(account, "10.00")
    data = {"ids": str(grant.pk), "confirm": "1", "reason": "dup"}
    approver_client.post(_action_url("void", grant), data)
    response = approver_client.post(_action_url("void", grant), data, follow=True)
    assert "only pending, active or reserved credits can be voided" in response.content.decode()


def test_transfer_of_several_credits_moves_all_of_each(approver_client, account):
    target = AccountFactory()
    a = make_grant(account, "10.00", transferable=True)
    b = make_grant(account, "15.00", transferable=True)
    page = approver_client.get(_action_url("transfer", a, b))
    assert "amount" not in page.context["form"].fields
    approver_client.post(
        _action_url("transfer", a, b),
        {"ids": f"{a.pk},{b.pk}", "confirm": "1", "to_account": target.pk, "reason": "merge"},
    )
    moved = sorted(g.original for g in CreditGrant.objects.filter(account=target))
    assert moved == [Decimal("10.00"), Decimal("15.00")]
