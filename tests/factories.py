"""factory_boy factories. Grants and invoices are made through the services, as in production,
so every row a test sees has its ledger entries."""

import factory

from credits.actors import Actor
from credits.models import Account, Partner
from credits.services import grant_issue
from invoices.services import invoice_create

TEST_ACTOR = Actor.for_job("tests")


class PartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Partner

    name = factory.Sequence(lambda n: f"partner-{n}")
    display_name = factory.LazyAttribute(lambda o: o.name.title())


class AccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Account

    account_id = factory.Sequence(lambda n: f"account_{n:04d}")
    name = factory.Sequence(lambda n: f"Customer {n}")
    email = factory.LazyAttribute(lambda o: f"billing+{o.account_id}@example.com")
    currency = "USD"


def make_grant(account=None, amount="100.00", *, actor=TEST_ACTOR, **kwargs):
    kwargs.setdefault("type", "promotional")
    kwargs.setdefault("currency", (account.currency if account else "USD"))
    return grant_issue(account=account or AccountFactory(), amount=amount, actor=actor, **kwargs)


def make_invoice(account, *lines, currency=None, actor=TEST_ACTOR, **kwargs):
    """lines: (service, amount) pairs or dicts; an amount pair is one unit at that price."""
    built = [
        line
        if isinstance(line, dict)
        else {"service": line[0], "description": line[0], "quantity": "1", "unit_price": line[1]}
        for line in (lines or [("clusters", "100.00")])
    ]
    return invoice_create(
        account=account,
        currency=currency or account.currency,
        lines=built,
        actor=actor,
        **kwargs,
    )
