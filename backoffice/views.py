"""Back-office pages that are not a model's change pages: the analytics dashboard and the bulk
issue of a campaign from a CSV upload."""

from decimal import Decimal

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, LogEntry
from django.core import signing
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from backoffice import bulk, charts
from backoffice.admin_base import actor_for, render_page, require_perm
from backoffice.forms import BulkIssueForm
from credits import selectors
from credits.models import CreditGrant, GrantType
from credits.money import CURRENCIES

RANGES = {
    "3m": ("Last 3 months", 3),
    "6m": ("Last 6 months", 6),
    "12m": ("Last 12 months", 12),
    "24m": ("Last 24 months", 24),
    "all": ("All time", None),
}
DEFAULT_RANGE = "12m"
SIGNING_SALT = "backoffice.bulk-issue"


def _month_start(moment, months_back: int):
    year, month = divmod(moment.year * 12 + moment.month - 1 - months_back, 12)
    month += 1
    return moment.replace(year=year, month=month, day=1, hour=0, minute=0, second=0, microsecond=0)


def _months(start, end) -> list:
    out, cursor = [], start
    while cursor <= end:
        out.append(cursor)
        cursor = _month_start(cursor, -1)
    return out


def dashboard_view(request):
    if not request.user.has_perm("credits.view_creditgrant"):
        raise PermissionDenied("You need to be able to view credit grants.")
    now = timezone.now()
    range_key = request.GET.get("range", DEFAULT_RANGE)
    if range_key not in RANGES:
        range_key = DEFAULT_RANGE
    months = RANGES[range_key][1]
    grants = CreditGrant.objects.all()
    start = None
    if months:
        start = _month_start(now, months - 1)
        grants = grants.filter(issued_at__gte=start)
    currency = request.GET.get("currency", "USD")
    if currency not in CURRENCIES:
        currency = "USD"
    figures = _figures(grants, currency, range_key, now, refresh="refresh" in request.GET)
    report = figures["report"]
    expiring = figures["expiring"]
    context = {
        "title": "Credits dashboard",
        "currency": currency,
        "currencies": CURRENCIES,
        "range_key": range_key,
        "ranges": [(k, label) for k, (label, _) in RANGES.items()],
        "report": report,
        "computed_at": figures["computed_at"],
        "cache_seconds": _cache_seconds(),
        "expiring_total": expiring.get(currency, Decimal("0")),
        "expiring_other": sorted((c, v) for c, v in expiring.items() if c != currency and v),
        "soonest": figures["soonest"],
        "expiring_url": reverse("admin:credits_creditgrant_changelist")
        + "?"
        + urlencode({"expiring_within": "30", "currency__exact": currency}),
        "links": _links(request),
    }
    if report:
        context.update(_charts(report, currency, start or _first_month(report), now))
    return TemplateResponse(
        request,
        "backoffice/dashboard.html",
        {**admin.site.each_context(request), **context},
    )


def _cache_seconds() -> int:
    return int(getattr(settings, "BACKOFFICE_DASHBOARD_CACHE_SECONDS", 300))


def _figures(grants, currency: str, range_key: str, now, *, refresh: bool) -> dict:
    """The report, computed in the database by credits.selectors, and kept in the cache for a
    few minutes: over 10^6 grants the aggregates take seconds, and a dashboard that is a few
    minutes old (it says when it was computed, with a refresh link) is what people expect."""
    key = f"backoffice:dashboard:{currency}:{range_key}"
    figures = None if refresh else cache.get(key)
    if figures is None:
        figures = {
            "report": selectors.credit_report(grants, currency=currency).get(currency),
            "expiring": selectors.expiring_totals(within_days=30, now=now),
            "soonest": list(
                selectors.expiring_grants(within_days=30, now=now).filter(currency=currency)[:8]
            ),
            "computed_at": now,
        }
        cache.set(key, figures, _cache_seconds())
    return figures


def _first_month(report):
    months = [row["month"] for row in report["monthly"] if row["month"]]
    return min(months) if months else timezone.now()


def _charts(report: dict, currency: str, start, now) -> dict:
    by_month = {row["month"].strftime("%Y-%m"): row for row in report["monthly"] if row["month"]}
    months = _months(_month_start(start, 0), now)
    zero = Decimal("0")
    labels = [m.strftime("%b %y") for m in months]
    keys = [m.strftime("%Y-%m") for m in months]
    monthly = charts.grouped_bars(
        labels,
        [
            charts.Series(
                "issued", charts.ISSUED, [by_month.get(k, {}).get("issued", zero) for k in keys]
            ),
            charts.Series(
                "used", charts.USED, [by_month.get(k, {}).get("used", zero) for k in keys]
            ),
            charts.Series(
                "expired unused",
                charts.EXPIRED,
                [by_month.get(k, {}).get("expired", zero) for k in keys],
            ),
        ],
        currency,
    )
    type_rows = {row["type"]: row for row in report["by_type"]}
    by_type = charts.progress_bars(
        [
            (t, type_rows[t]["issued"], type_rows[t]["used"])
            for t in GrantType.values
            if t in type_rows
        ],
        currency,
        title="Issued and used by credit type",
    )
    sources = report["by_source"][:10]
    by_source = charts.progress_bars(
        [(row["issued_by"] or "(none)", row["issued"], row["used"]) for row in sources],
        currency,
        title="Issued and used by source (issuedBy)",
    )
    return {
        "monthly_chart": monthly,
        "type_chart": by_type,
        "source_chart": by_source,
        "utilization_chart": charts.donut(report["utilization_rate"]),
        "more_sources": max(len(report["by_source"]) - len(sources), 0),
    }


def _links(request) -> list[tuple[str, str]]:
    user = request.user
    links = [("Credit grants", reverse("admin:credits_creditgrant_changelist"))]
    if user.has_perm("credits.add_creditgrant"):
        links.append(("Issue credits", reverse("admin:credits_creditgrant_add")))
        links.append(("Bulk issue (CSV)", reverse("admin:credits_creditgrant_bulk_issue")))
    if user.has_perm("credits.view_ledgerentry"):
        links.append(("Ledger", reverse("admin:credits_ledgerentry_changelist")))
    if user.has_perm("invoices.view_invoice"):
        links.append(("Invoices", reverse("admin:invoices_invoice_changelist")))
    return links


# ---------------------------------------------------------------------------------------------
# Bulk issue


def bulk_issue_view(request, *, model_admin):
    require_perm(request, "credits.add_creditgrant")
    actor = actor_for(request)
    context = {"max_rows": bulk.MAX_ROWS}
    if request.method == "POST" and "payload" in request.POST:
        return _bulk_confirm(request, model_admin, actor, context)
    form = BulkIssueForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            text = bulk.decode(form.cleaned_data["file"].read())
            batch = bulk.parse(text, form.defaults())
        except bulk.BulkError as exc:
            form.add_error("file", str(exc))
        else:
            bulk.dry_run(batch, actor)
            payload = signing.dumps(
                {"csv": text, "defaults": form.defaults()}, salt=SIGNING_SALT, compress=True
            )
            context.update({"batch": batch, "payload": payload, "defaults": form.defaults()})
            return _render_bulk(request, model_admin, context, "Bulk issue: preview")
    context["form"] = form
    return _render_bulk(request, model_admin, context, "Bulk issue credits from a CSV file")


def _bulk_confirm(request, model_admin, actor, context):
    try:
        data = signing.loads(request.POST["payload"], salt=SIGNING_SALT, max_age=3600)
    except signing.BadSignature:
        model_admin.message_user(
            request, "The preview has expired or was altered; upload the file again.", "error"
        )
        return HttpResponseRedirect(request.path)
    batch = bulk.parse(data["csv"], data["defaults"])
    grants = bulk.issue(batch, actor)
    if not grants:
        model_admin.message_user(
            request,
            "Nothing was issued: a row failed, so the whole file was rolled back.",
            messages.ERROR,
        )
        context.update({"batch": batch, "payload": request.POST["payload"], "failed": True})
        return _render_bulk(request, model_admin, context, "Bulk issue: preview")
    campaign = data["defaults"].get("campaign_id") or "no campaign"
    LogEntry.objects.log_actions(
        user_id=request.user.pk,
        queryset=grants,
        action_flag=ADDITION,
        change_message=f"Bulk issue ({campaign}, {len(grants)} credits)",
    )
    model_admin.message_user(
        request, f"Issued {len(grants)} credits ({campaign}).", messages.SUCCESS
    )
    url = reverse("admin:credits_creditgrant_changelist")
    if data["defaults"].get("campaign_id"):
        url += "?" + urlencode({"campaign": data["defaults"]["campaign_id"]})
    return HttpResponseRedirect(url)


def _render_bulk(request, model_admin, context, title):
    return render_page(
        model_admin, request, "admin/credits/creditgrant/bulk_issue.html", context, title=title
    )
