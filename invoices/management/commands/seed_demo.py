"""Demo data for the back office: every grant type and status, invoices in every state, credit
lines, holds, transfers, expiring and expired credits, six months of history. Idempotent: a
second run only resets the demo admin's password and prints the login again."""

import secrets
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from credits.actors import Actor
from credits.models import Account, CreditGrant, Partner
from credits.services import (
    grant_approve,
    grant_issue,
    grant_transfer,
    grant_void,
    grants_expire,
)
from invoices.services import (
    invoice_apply_credit,
    invoice_create,
    invoice_finalize,
    invoice_hold_credits,
    invoice_pay,
    invoice_void,
    invoices_mark_overdue,
)

D = Decimal


class Command(BaseCommand):
    help = "Load demo data (once) and print the demo admin login."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options):
        User = get_user_model()
        password = secrets.token_urlsafe(9)
        admin, _ = User.objects.get_or_create(
            username=username,
            defaults={"is_staff": True, "is_superuser": True, "email": "admin@credits.local"},
        )
        admin.set_password(password)
        admin.save()
        checker, _ = User.objects.get_or_create(
            username="approver",
            defaults={"is_staff": True, "is_superuser": True, "email": "approver@credits.local"},
        )
        checker.set_password(password)
        checker.save()
        if Account.objects.filter(account_id="account_123").exists():
            self.stdout.write("Demo data already loaded.")
        else:
            self._load(Actor.for_user(admin), Actor.for_user(checker))
            self.stdout.write(
                self.style.SUCCESS(
                    f"Demo data loaded: {Account.objects.count()} accounts, "
                    f"{CreditGrant.objects.count()} credits."
                )
            )
        self.stdout.write(
            f"Admin login: {username} / {password}   (second approver: approver / {password})"
        )

    @transaction.atomic
    def _load(self, staff: Actor, checker: Actor) -> None:
        now = timezone.now()
        job = Actor.for_job("seed_demo")
        acme = Partner.objects.create(
            name="acme-cloud",
            display_name="Acme Cloud",
            webhook_url="http://127.0.0.1:9/webhooks/credits",
            webhook_secret=secrets.token_hex(16),
        )
        globex = Partner.objects.create(name="globex", display_name="Globex Reseller")
        acct = {}
        for account_id, name, currency, partner in [
            ("account_123", "Initech Labs", "USD", acme),
            ("account_456", "Hooli AI", "USD", acme),
            ("account_789", "Umbrella Research", "EUR", acme),
            ("account_tokyo", "Kaiju Compute KK", "JPY", globex),
            ("account_globex", "Globex Corp", "USD", globex),
        ]:
            acct[account_id] = Account.objects.create(
                account_id=account_id,
                name=name,
                email=f"billing@{name.split()[0].lower()}.example",
                currency=currency,
                partner=partner,
                auto_apply_expiring_credits=account_id == "account_456",
            )

        def ago(days, hours=0):
            return now - timedelta(days=days, hours=hours)

        def issue(account, amount, *, at, **kw):
            kw.setdefault("type", "promotional")
            kw.setdefault("currency", account.currency)
            kw.setdefault("actor", staff)
            return grant_issue(account=account, amount=D(amount), now=at, **kw)

        def invoice(account, lines, *, at, **kw):
            return invoice_create(
                account=account,
                currency=kw.pop("currency", account.currency),
                lines=[
                    {"service": s, "description": d, "quantity": q, "unit_price": p}
                    for s, d, q, p in lines
                ],
                actor=staff,
                now=at,
                **kw,
            )

        a123 = acct["account_123"]
        # Six months of history: credits issued, used on monthly invoices, some expiring.
        for month in range(6, 0, -1):
            at = ago(30 * month)
            issue(
                a123,
                "500.00",
                at=at,
                description=f"Monthly promo #{7 - month}",
                campaign_id="welcome_2026",
                issued_by="marketing_system",
                expiration_days=90,
                applicable_services=["clusters", "ai-services"],
                tags=["promotional", "marketing"],
            )
            issue(
                a123,
                "120.00",
                at=at,
                type="support",
                description="Support credit: degraded storage",
                issued_by="support_team",
                reason="Apology for incident",
                expiration_days=45,
            )
            if month == 2:
                # Drawn on by one invoice, then left to expire: expired with part used.
                issue(
                    a123,
                    "1000.00",
                    at=at + timedelta(days=10),
                    type="bonus",
                    description="Conference voucher",
                    campaign_id="summit_2026",
                    issued_by="events_team",
                    expiration_days=30,
                )
            inv = invoice(
                a123,
                [
                    ("clusters", "GPU cluster hours", "120", "4.50"),
                    ("ai-services", "Inference API", "1", "210.00"),
                    ("storage", "Object storage", "800", "0.05"),
                ],
                at=at + timedelta(days=20),
            )
            invoice_finalize(invoice=inv, actor=staff, now=at + timedelta(days=21))
            if month > 2:
                invoice_pay(
                    invoice=inv.__class__.objects.get(pk=inv.pk),
                    actor=staff,
                    now=at + timedelta(days=25),
                )
        grants_expire(actor=Actor.for_job("expire_credits"), now=now)
        invoices_mark_overdue(actor=Actor.for_job("mark_overdue_invoices"), now=now)

        # Every type and status.
        issue(
            a123,
            "200.00",
            at=ago(10),
            type="refund",
            description="Refund for Service Downtime",
            reference_id="incident_2026_10",
            issued_by="support_team",
            usage_limit="one_time",
            tags=["refund", "service_credit"],
        )
        issue(
            a123,
            "100.00",
            at=ago(3),
            type="referral",
            description="Referral Bonus - Friend Signup",
            reference_id="ref_user_abc123",
            issued_by="referral_system",
            minimum_spend="50000.00",
            expiration_days=180,
            tags=["referral", "friend_bonus"],
        )
        issue(
            a123,
            "75.00",
            at=ago(2),
            type="bonus",
            description="Hackathon winner bonus",
            issued_by="community_team",
            expires_at=now + timedelta(days=5),
        )
        issue(
            a123,
            "60.00",
            at=ago(1),
            type="partner",
            description="Partner program Q4",
            issued_by="partner_program",
            effective_at=now + timedelta(days=10),
            expiration_days=60,
        )
        big = issue(
            acct["account_456"],
            "25000.00",
            at=ago(1),
            type="migration",
            description="Migration credit from legacy platform",
            issued_by="sales_ops",
            reason="Contracted migration incentive",
            transferable=True,
        )
        pending_big = issue(
            acct["account_456"],
            "15000.00",
            at=ago(0, 5),
            type="migration",
            description="Second-phase migration credit (awaiting approval)",
            issued_by="sales_ops",
        )
        del pending_big
        grant_approve(grant=big, actor=checker, reason="Contract SO-2291 checked", now=ago(0, 20))
        grant_transfer(
            grant=big,
            to_account=acct["account_globex"],
            amount=D("2500.00"),
            actor=staff,
            reason="Moved to sister company",
            now=ago(0, 12),
        )
        mistake = issue(
            acct["account_456"], "100.00", at=ago(4), description="Sign-on bonus (duplicate)"
        )
        grant_void(grant=mistake, actor=staff, reason="Issued twice by mistake", now=ago(4, -1))
        monthly = issue(
            acct["account_456"],
            "300.00",
            at=ago(40),
            type="support",
            description="Monthly support allowance",
            usage_limit="monthly",
            maximum_discount="100.00",
            issued_by="support_team",
        )
        del monthly
        soon = issue(
            acct["account_456"],
            "400.00",
            at=ago(80),
            description="Spring promo",
            campaign_id="spring_2026",
            issued_by="marketing_system",
            expires_at=now + timedelta(days=6),
        )
        del soon
        issue(
            acct["account_456"],
            "1000.00",
            at=ago(15),
            type="purchased",
            price="800.00",
            description="Prepaid credit pack (1000 for 800)",
            issued_by="billing_portal",
        )
        inv = invoice(
            acct["account_456"],
            [
                ("clusters", "A100 hours", "200", "2.10"),
                ("support", "Premium support", "1", "99.00"),
            ],
            at=ago(5),
        )
        invoice_finalize(invoice=inv, actor=staff, now=ago(5))
        draft = invoice(
            acct["account_456"],
            [("ai-services", "Fine-tuning", "1", "650.00")],
            at=ago(0, 3),
        )
        invoice_hold_credits(invoice=draft, actor=staff, now=ago(0, 2))
        invoice(acct["account_123"], [("network", "Egress", "1200", "0.08")], at=ago(0, 1))

        eur = acct["account_789"]
        issue(eur, "250.00", at=ago(20), description="Bienvenue credit", expiration_days=30)
        e_inv = invoice(eur, [("storage", "Archive storage", "1", "180.00")], at=ago(12))
        invoice_finalize(invoice=e_inv, actor=staff, now=ago(12))
        e_inv2 = invoice(eur, [("clusters", "CPU hours", "10", "9.90")], at=ago(8))
        invoice_finalize(invoice=e_inv2, actor=staff, now=ago(8))
        invoice_void(invoice=e_inv2, actor=staff, reason="Billed the wrong project", now=ago(7))

        jpy = acct["account_tokyo"]
        issue(jpy, "50000", at=ago(25), description="Launch credit", expiration_days=20)
        issue(jpy, "12000", at=ago(9), type="support", description="Latency incident credit")
        j_inv = invoice(jpy, [("clusters", "H100 hours", "3", "9800")], at=ago(2))
        invoice_finalize(invoice=j_inv, actor=staff, now=ago(2))
        grants_expire(actor=Actor.for_job("expire_credits"), now=now)

        # Billed before the customer had any credit and never paid: overdue.
        late = invoice(
            acct["account_globex"], [("support", "Onboarding", "1", "1200.00")], at=ago(50)
        )
        invoice_finalize(invoice=late, actor=staff, now=ago(50))
        invoices_mark_overdue(actor=Actor.for_job("mark_overdue_invoices"), now=now)
        g_inv = invoice(acct["account_globex"], [("clusters", "GPU", "1", "5000.00")], at=ago(0, 4))
        invoice_finalize(invoice=g_inv, actor=staff, now=ago(0, 4))
        # A credit fully held by a draft: `reserved` until the draft is finalized or voided.
        issue(
            acct["account_globex"],
            "300.00",
            at=ago(0, 3),
            type="bonus",
            description="Reseller volume bonus",
            issued_by="partner_program",
        )
        g_draft = invoice(
            acct["account_globex"], [("storage", "Backups", "1", "1000.00")], at=ago(0, 2)
        )
        invoice_hold_credits(invoice=g_draft, actor=staff, now=ago(0, 1))
        pending_inv = invoice(
            acct["account_123"], [("storage", "Block storage", "1", "45.00")], at=ago(1)
        )
        # An account that settles its credits by hand: the refund credit is applied explicitly.
        Account.objects.filter(pk=a123.pk).update(auto_apply_credits=False)
        invoice_finalize(invoice=pending_inv, actor=job, now=ago(1))
        Account.objects.filter(pk=a123.pk).update(auto_apply_credits=True)
        refund = CreditGrant.objects.get(account=a123, type="refund")
        invoice_apply_credit(
            grant=refund, invoice=pending_inv, amount=D("45.00"), actor=staff, now=ago(0, 6)
        )
