"""A real browser (Debian's Chromium driven by Playwright) against the live back office: log in,
issue a credit through the form (account picked with the autocomplete), void it with a reason,
and screenshot the dashboard to var/screenshots/."""

from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from credits.models import CreditGrant, EntryKind, GrantStatus, LedgerEntry
from tests.factories import AccountFactory, make_grant

CHROMIUM = Path("/usr/bin/chromium")
# Flags for Chromium on these machines (no network but loopback): no background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]


@pytest.fixture
def browser_page(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; Django then refuses ORM calls
    # from it unless told the test knows what it is doing.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # The live server answers each browser connection in a thread of its own; with persistent
    # database connections those threads would still hold a session when the test database is
    # dropped. Close them at the end of each request instead.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            browser.close()
            # While Playwright's loop runs, the test's ORM calls get connections local to that
            # context (asgiref), which Django's teardown would not see: close them here.
            connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_issue_void_and_dashboard_in_a_real_browser(live_server, browser_page, django_user_model):
    # given: a staff user (a superuser: a transactional test's flush may have emptied the
    # migration-made groups) and a customer with some history for the charts
    user = django_user_model.objects.create_superuser(
        "fin-admin", password="pw-fin-admin-42", email="fin@example.com"
    )
    account = AccountFactory(account_id="account_browser", name="Browser Ltd")
    make_grant(account, "300.00", issued_by="marketing_team", expiration_days=20)
    make_grant(account, "120.00", type="refund", issued_by="support_team")
    page = browser_page

    # log in
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "fin-admin")
    page.fill("#id_password", "pw-fin-admin-42")
    page.click("input[type=submit]")
    page.wait_for_selector("text=Finance back office")

    # issue a credit through the form, picking the account with the autocomplete
    page.goto(f"{live_server.url}/admin/credits/creditgrant/add/")
    page.click(".field-account .select2-selection")
    page.fill(".select2-search__field", "account_browser")
    page.click(".select2-results__option:has-text('account_browser')")
    page.fill("#id_amount", "125.00")
    page.fill("#id_expiration_days", "30")
    page.fill("#id_description", "Browser test credit")
    page.fill("#id_reason", "Goodwill")
    page.click("input[name=_save]")
    page.wait_for_selector("text=Issued")
    grant = CreditGrant.objects.get(description="Browser test credit")
    assert grant.original.to_eng_string() == "125.00" and grant.status == GrantStatus.ACTIVE

    # void it with a reason, from its page
    page.click("a:has-text('Void…')")
    page.fill("#id_reason", "Issued by mistake")
    page.click("input[name=confirm]")
    page.wait_for_selector(".bo-badge:has-text('voided')")
    grant.refresh_from_db()
    assert grant.status == GrantStatus.VOIDED
    void = LedgerEntry.objects.get(grant=grant, kind=EntryKind.VOID)
    assert void.reason == "Issued by mistake" and void.actor_user_id == user.pk

    # the dashboard, as a person sees it
    page.goto(f"{live_server.url}/admin/backoffice/dashboard/")
    page.wait_for_selector("#chart-monthly svg")
    assert page.locator(".bo-kpi").count() >= 6
    shots = Path(settings.VAR_DIR) / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    target = shots / "dashboard.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 20_000
