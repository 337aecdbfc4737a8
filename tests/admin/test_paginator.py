"""The changelist paginator: never a full COUNT(*) over a big table."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backoffice import paginators
from backoffice.paginators import EstimatedCountPaginator
from credits.models import CreditGrant
from tests.factories import make_grant

pytestmark = pytest.mark.django_db


@pytest.fixture
def grants(account):
    return [make_grant(account, "1.00") for _ in range(5)]


def test_small_filtered_results_get_their_exact_count(grants):
    paginator = EstimatedCountPaginator(CreditGrant.objects.filter(currency="USD"), 2)
    assert paginator.count == 5 and not paginator.estimated


def test_big_filtered_results_stop_counting_at_the_bound(grants, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "exact_limit", 3)
    paginator = EstimatedCountPaginator(CreditGrant.objects.filter(currency="USD"), 2)
    with CaptureQueriesContext(connection) as ctx:
        count = paginator.count
    assert paginator.estimated and count >= 4
    assert all("LIMIT" in q["sql"].upper() for q in ctx.captured_queries if "COUNT" in q["sql"])


@pytest.mark.postgres
def test_unfiltered_big_table_uses_the_planners_estimate(grants, monkeypatch):
    monkeypatch.setattr(paginators, "ESTIMATE_FROM_ROWS", 1)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE credits_creditgrant")
    paginator = EstimatedCountPaginator(CreditGrant.objects.all(), 2)
    with CaptureQueriesContext(connection) as ctx:
        count = paginator.count
    assert paginator.estimated and count == 5
    assert [q["sql"] for q in ctx.captured_queries if "COUNT" in q["sql"].upper()] == []
    assert "reltuples" in ctx.captured_queries[0]["sql"]


def test_changelist_says_about_when_the_count_is_estimated(viewer_client, grants, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "exact_limit", 3)
    html = viewer_client.get("/admin/credits/creditgrant/?currency__exact=USD").content.decode()
    assert "about " in html
