"""The dashboard's server-rendered SVG charts."""

from decimal import Decimal

import pytest

from backoffice import charts
from tests.factories import make_grant


def test_compact_axis_labels():
    assert charts.compact(Decimal("12500.00"), "USD") == "$12.5k"
    assert charts.compact(Decimal("3000000"), "JPY") == "¥3M"
    assert charts.compact(Decimal("750.00"), "USD") == "$750"
    assert charts.compact(Decimal("0"), "EUR") == "€0"


def test_bars_scale_to_the_largest_value_and_carry_exact_amounts():
    svg = charts.grouped_bars(
        ["Jan 26", "Feb 26"],
        [charts.Series("issued", charts.ISSUED, [Decimal("100.00"), Decimal("50.00")])],
        "USD",
    )
    assert svg.count("<rect") >= 2
    assert "Jan 26 · issued: $100.00" in svg and "Feb 26 · issued: $50.00" in svg


def test_progress_bars_show_used_over_issued_with_the_share():
    svg = charts.progress_bars(
        [("promotional", Decimal("200.00"), Decimal("50.00"))], "USD", title="t"
    )
    assert "$50 / $200 · 25.0%" in svg


def test_donut_prints_the_rate():
    assert "85.7%" in charts.donut(Decimal("85.7"))


@pytest.mark.django_db
def test_labels_from_data_are_escaped(viewer_client, account):
    make_grant(account, "10.00", issued_by="<script>alert(1)</script>")
    html = viewer_client.get("/admin/backoffice/dashboard/").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
