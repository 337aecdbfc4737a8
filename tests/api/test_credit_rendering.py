"""The credit objects' fast rendering path (billing_api.selectors.credit_rows, IsoInstant,
renderers.number) writes exactly what the reference formatting (renderers.iso, the Decimal's
text at the currency's precision) would, on SQLite and PostgreSQL alike."""

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from billing_api.renderers import dumps, iso, number
from billing_api.selectors import IsoInstant, credit_rows
from credits.models import CreditGrant
from tests.factories import make_grant

INSTANTS = [
    datetime(2024, 1, 15, 10, 0, 0, tzinfo=UTC),  # whole seconds: no fraction
    datetime(2024, 1, 15, 10, 0, 0, 1, tzinfo=UTC),  # one microsecond: six digits
    datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2024, 6, 1, 1, 2, 3, 500000, tzinfo=timezone(timedelta(hours=5))),  # not UTC
]


@pytest.mark.parametrize("at", INSTANTS)
def test_iso_instant_matches_the_reference_formatting(account, at):
    grant = make_grant(account, "10.00")
    CreditGrant.objects.filter(pk=grant.pk).update(issued_at=at, expires_at=None)
    row = credit_rows(CreditGrant.objects.filter(pk=grant.pk)).get()
    value = row["iso_issued_at"]
    text = value if isinstance(value, str) else iso(value)
    assert text == iso(at)
    assert row["iso_expires_at"] is None


def test_list_and_detail_write_instants_and_amounts_like_the_reference(api, account):
    grant = make_grant(account, "325.50", expiration_days=90)
    whole = datetime(2024, 1, 15, 10, 0, 0, tzinfo=UTC)
    fraction = datetime(2024, 1, 15, 10, 0, 0, 120000, tzinfo=UTC)
    CreditGrant.objects.filter(pk=grant.pk).update(
        issued_at=whole, effective_at=whole, activated_at=fraction
    )
    listed = api.get("/v2/billing/credits?accountId=account_123").content.decode()
    detail = api.get(f"/v2/billing/credits/{grant.credit_id}").content.decode()
    for text in (listed, detail):
        assert '"issued":"2024-01-15T10:00:00Z"' in text
        assert '"effectiveAt":"2024-01-15T10:00:00Z"' in text
        assert '"activated":"2024-01-15T10:00:00.120000Z"' in text
        assert '"original":325.50,"remaining":325.50,"used":0.00' in text
    credit = json.loads(detail, parse_float=Decimal)
    assert credit["amount"]["original"] == Decimal("325.50")


def test_pre_rendered_numbers_and_decimals_render_alike():
    data = {"a": Decimal("1200"), "b": number(Decimal("1200")), "c": [number(Decimal("-0.50"))]}
    assert dumps(data) == '{"a":1200,"b":1200,"c":[-0.50]}'
    # A user's string that merely looks like the marker stays a string.
    assert dumps({"s": "\x00abc1.00"}) == '{"s":"\\u0000abc1.00"}'


@pytest.mark.parametrize("at", INSTANTS[:2])
def test_iso_instant_of_a_value(account, at):
    from django.db.models import DateTimeField, Value

    grant = make_grant(account, "1.00")
    value = (
        CreditGrant.objects.filter(pk=grant.pk)
        .annotate(x=IsoInstant(Value(at, output_field=DateTimeField())))
        .values_list("x", flat=True)
        .get()
    )
    assert (value if isinstance(value, str) else iso(value)) == iso(at)
