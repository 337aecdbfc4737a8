"""Query filters of the lists (django-filter), validated: an unknown enum or a malformed date
is a 400 naming the parameter, never an empty list or a 500."""

import functools
from datetime import UTC, date, datetime, time, timedelta
from types import MappingProxyType

import django_filters as df
from dateutil.relativedelta import relativedelta
from django.utils import timezone
from django.utils.datastructures import MultiValueDict
from django_filters.utils import translate_validation
from rest_framework.exceptions import ValidationError

from credits.models import CreditGrant, EntryKind, GrantStatus, GrantType, LedgerEntry
from credits.money import CURRENCIES
from invoices.models import Invoice, InvoiceStatus

DATE_RANGES = ["last_month", "last_3_months", "last_6_months", "current_year", "all", "custom"]
MIN_DATE = date(1970, 1, 1)
MAX_DATE = date(9998, 12, 31)


def _choices(values):
    return [(v, v) for v in values]


def day_start(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def check_date(d: date | None, name: str) -> date | None:
    if d is not None and not MIN_DATE <= d <= MAX_DATE:
        raise ValidationError({name: [f"must be between {MIN_DATE} and {MAX_DATE}."]})
    return d


def date_window(
    date_range: str | None, start: date | None, end: date | None, now: datetime | None = None
):
    """(from, to) instants of a dateRange, `to` exclusive; None for an open end.

    last_month is the last 30 days (the seed's own definition); last_3/6_months are calendar
    months back from now; current_year starts on 1 January UTC; custom needs startDate and
    endDate (whole days, both included)."""
    now = now or timezone.now()
    check_date(start, "startDate")
    check_date(end, "endDate")
    if date_range in (None, "", "all"):
        if start or end:
            return (
                day_start(start) if start else None,
                day_start(end) + timedelta(days=1) if end else None,
            )
        return None, None
    if date_range == "custom":
        if start is None or end is None:
            raise ValidationError(
                {"dateRange": ["custom needs both startDate and endDate (YYYY-MM-DD)."]}
            )
        if end < start:
            raise ValidationError({"endDate": ["must not be before startDate."]})
        return day_start(start), day_start(end) + timedelta(days=1)
    if date_range == "last_month":
        return now - timedelta(days=30), None
    if date_range == "last_3_months":
        return now - relativedelta(months=3), None
    if date_range == "last_6_months":
        return now - relativedelta(months=6), None
    if date_range == "current_year":
        return datetime(now.year, 1, 1, tzinfo=UTC), None
    raise ValidationError({"dateRange": [f"must be one of {', '.join(DATE_RANGES)}."]})


class CreditFilter(df.FilterSet):
    """The credits list's parameters: validated here (filters.validated) and documented in the
    schema; the view turns the cleaned values into a billing_api.credit_list.CreditQuery."""

    type = df.MultipleChoiceFilter(field_name="type", choices=_choices(GrantType.values))
    status = df.MultipleChoiceFilter(field_name="status", choices=_choices(GrantStatus.values))
    currency = df.ChoiceFilter(field_name="currency", choices=_choices(CURRENCIES))
    accountId = df.CharFilter(method="filter_noop", max_length=64)
    dateRange = df.ChoiceFilter(choices=_choices(DATE_RANGES), method="filter_noop")
    startDate = df.DateFilter(method="filter_noop")
    endDate = df.DateFilter(method="filter_noop")

    class Meta:
        model = CreditGrant
        fields = []

    def filter_noop(self, queryset, name, value):
        return queryset


# The seed sends `status[]=active&status[]=pending`; plain `status=` is accepted too.
CreditFilter.base_filters["status[]"] = df.MultipleChoiceFilter(
    field_name="status", choices=_choices(GrantStatus.values)
)
CreditFilter.base_filters["type[]"] = df.MultipleChoiceFilter(
    field_name="type", choices=_choices(GrantType.values)
)


class LedgerFilter(df.FilterSet):
    # Resolved by the view to primary keys (the ledger's (account, created_at) index).
    accountId = df.CharFilter(method="filter_noop", max_length=64)
    creditId = df.CharFilter(method="filter_noop", max_length=64)
    invoiceId = df.CharFilter(field_name="invoice__invoice_id", max_length=64)
    kind = df.MultipleChoiceFilter(field_name="kind", choices=_choices(EntryKind.values))
    currency = df.ChoiceFilter(field_name="currency", choices=_choices(CURRENCIES))
    startDate = df.DateFilter(method="filter_noop", help_text="From this day (UTC), included.")
    endDate = df.DateFilter(method="filter_noop", help_text="Up to this day (UTC), included.")

    class Meta:
        model = LedgerEntry
        fields = []

    def filter_noop(self, queryset, name, value):
        return queryset

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        data = self.form.cleaned_data
        start, end = (
            check_date(data.get("startDate"), "startDate"),
            check_date(data.get("endDate"), "endDate"),
        )
        if start and end and end < start:
            raise ValidationError({"endDate": ["must not be before startDate."]})
        if start:
            queryset = queryset.filter(created_at__gte=day_start(start))
        if end:
            queryset = queryset.filter(created_at__lt=day_start(end) + timedelta(days=1))
        return queryset


class InvoiceFilter(df.FilterSet):
    status = df.MultipleChoiceFilter(field_name="status", choices=_choices(InvoiceStatus.values))
    accountId = df.CharFilter(field_name="account__account_id", max_length=64)
    currency = df.ChoiceFilter(field_name="currency", choices=_choices(CURRENCIES))

    class Meta:
        model = Invoice
        fields = []


InvoiceFilter.base_filters["status[]"] = df.MultipleChoiceFilter(
    field_name="status", choices=_choices(InvoiceStatus.values)
)


@functools.cache
def _form_class(filterset_class: type[df.FilterSet]):
    return filterset_class(queryset=filterset_class._meta.model.objects.none()).form.__class__


def validated(filterset_class: type[df.FilterSet], params) -> MappingProxyType:
    """The cleaned values of a filterset's parameters (read-only), or the 400 its backend would
    raise, without building a FilterSet (it deep-copies every filter on each request). Cleaning
    is a pure function of the parameters, so the last few hundred answers are remembered."""
    names = _form_class(filterset_class).base_fields
    relevant = tuple((name, tuple(params.getlist(name))) for name in names if name in params)
    return _clean(filterset_class, relevant)


@functools.lru_cache(maxsize=512)
def _clean(filterset_class: type[df.FilterSet], relevant: tuple) -> MappingProxyType:
    data = MultiValueDict({name: list(values) for name, values in relevant})
    form = _form_class(filterset_class)(data)
    if not form.is_valid():
        raise translate_validation(form.errors)
    return MappingProxyType(form.cleaned_data)
