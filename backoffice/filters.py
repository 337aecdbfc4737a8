"""Changelist filters that stay cheap on tables of millions of rows.

Django's stock filters for a free-text column (AllValuesFieldListFilter) or a foreign key
(RelatedFieldListFilter) list every distinct value, i.e. scan the table on each page view.
Campaign, issuer, account, credit, invoice and actor are therefore typed into a small box and
matched exactly (an index lookup), and dates are a from/to range instead of date_hierarchy
(which also scans for its distinct dates).
"""

from datetime import datetime, time, timedelta

from django.contrib import admin
from django.utils import timezone
from django.utils.dateparse import parse_date

from credits.models import OPEN_STATUSES


class InputFilter(admin.ListFilter):
    """A text box; the typed value is matched exactly by `lookup` (override `filter_value` for
    anything smarter)."""

    template = "admin/backoffice/input_filter.html"
    parameter_name = ""
    lookup = ""
    placeholder = ""

    def __init__(self, request, params, model, model_admin) -> None:
        super().__init__(request, params, model, model_admin)
        self.value = ""
        if self.parameter_name in params:
            raw = params.pop(self.parameter_name)
            self.value = (raw[-1] if isinstance(raw, list) else raw).strip()
            self.used_parameters[self.parameter_name] = self.value

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str]:
        return [self.parameter_name]

    def queryset(self, request, queryset):
        if not self.value:
            return queryset
        return self.filter_value(queryset, self.value)

    def filter_value(self, queryset, value: str):
        return queryset.filter(**{self.lookup: value})

    def choices(self, changelist):
        yield {
            "parameter": self.parameter_name,
            "value": self.value,
            "placeholder": self.placeholder,
            "hidden": _other_params(changelist, [self.parameter_name]),
            "clear_url": changelist.get_query_string(remove=[self.parameter_name]),
        }


class DateRangeFilter(admin.ListFilter):
    """From / to dates (inclusive, UTC days) on one datetime column."""

    template = "admin/backoffice/date_range_filter.html"
    field_name = ""

    def __init__(self, request, params, model, model_admin) -> None:
        super().__init__(request, params, model, model_admin)
        self.start = self.end = None
        self.raw = {}
        for bound in ("from", "to"):
            name = self._param(bound)
            if name in params:
                raw = params.pop(name)
                value = (raw[-1] if isinstance(raw, list) else raw).strip()
                self.raw[bound] = value
                self.used_parameters[name] = value
                parsed = parse_date(value) if value else None
                if bound == "from":
                    self.start = parsed
                else:
                    self.end = parsed

    def _param(self, bound: str) -> str:
        return f"{self.field_name}_{bound}"

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str]:
        return [self._param("from"), self._param("to")]

    def queryset(self, request, queryset):
        tz = timezone.get_current_timezone()
        if self.start:
            start = timezone.make_aware(datetime.combine(self.start, time.min), tz)
            queryset = queryset.filter(**{f"{self.field_name}__gte": start})
        if self.end:
            end = timezone.make_aware(datetime.combine(self.end + timedelta(days=1), time.min), tz)
            queryset = queryset.filter(**{f"{self.field_name}__lt": end})
        return queryset

    def choices(self, changelist):
        params = self.expected_parameters()
        yield {
            "from_param": params[0],
            "to_param": params[1],
            "from_value": self.raw.get("from", ""),
            "to_value": self.raw.get("to", ""),
            "hidden": _other_params(changelist, params),
            "clear_url": changelist.get_query_string(remove=params),
        }


def _other_params(changelist, own: list[str]) -> list[tuple[str, str]]:
    """The changelist's other query parameters, kept as hidden inputs of a filter's form."""
    return [
        (key, value)
        for key, values in changelist.filter_params.items()
        if key not in own
        for value in values
    ]


# --- Grants


class ExpiringWithinFilter(admin.SimpleListFilter):
    """Open grants with credit left whose expiry falls within N days (the partial expiry index
    serves it)."""

    title = "expiring"
    parameter_name = "expiring_within"

    def lookups(self, request, model_admin):
        return [("7", "within 7 days"), ("30", "within 30 days")]

    def queryset(self, request, queryset):
        if self.value() not in ("7", "30"):
            return queryset
        now = timezone.now()
        return queryset.filter(
            status__in=OPEN_STATUSES,
            remaining__gt=0,
            expires_at__gt=now,
            expires_at__lte=now + timedelta(days=int(self.value())),
        )


class IssuedDateFilter(DateRangeFilter):
    title = "issue date"
    field_name = "issued_at"


class CampaignFilter(InputFilter):
    title = "campaign"
    parameter_name = "campaign"
    lookup = "campaign_id"
    placeholder = "campaign id"


class IssuerFilter(InputFilter):
    title = "issuer (issuedBy)"
    parameter_name = "issuer"
    lookup = "issued_by"
    placeholder = "e.g. marketing_team"


class AccountFilter(InputFilter):
    title = "account"
    parameter_name = "account"
    lookup = "account__account_id"
    placeholder = "account id"

    def filter_value(self, queryset, value):
        from credits.models import Account

        # Resolve the account first: a join filter would not let the planner use the
        # (account, created_at) index together with the ordering.
        pk = Account.objects.filter(account_id=value).values_list("pk", flat=True).first()
        return queryset.filter(account_id=pk) if pk else queryset.none()


# --- Ledger


class CreditFilter(InputFilter):
    title = "credit"
    parameter_name = "credit"
    placeholder = "cred_…"

    def filter_value(self, queryset, value):
        from credits.models import CreditGrant

        pk = CreditGrant.objects.filter(credit_id=value).values_list("pk", flat=True).first()
        return queryset.filter(grant_id=pk) if pk else queryset.none()


class InvoiceFilter(InputFilter):
    title = "invoice"
    parameter_name = "invoice"
    placeholder = "inv_… or invoice number"

    def filter_value(self, queryset, value):
        from invoices.models import Invoice

        pk = (
            Invoice.objects.filter(invoice_id=value).values_list("pk", flat=True).first()
            or Invoice.objects.filter(invoice_number=value).values_list("pk", flat=True).first()
        )
        return queryset.filter(invoice_id=pk) if pk else queryset.none()


class ActorFilter(InputFilter):
    title = "actor"
    parameter_name = "actor"
    lookup = "actor"
    placeholder = "user:alice, job:expire_credits"


class CreatedDateFilter(DateRangeFilter):
    title = "date"
    field_name = "created_at"


# --- Invoices


class InvoiceAccountFilter(AccountFilter):
    pass


class IssueDateFilter(admin.ListFilter):
    """Invoice issue date range (a DateField, so no time-zone arithmetic)."""

    template = "admin/backoffice/date_range_filter.html"
    title = "issue date"

    def __init__(self, request, params, model, model_admin) -> None:
        super().__init__(request, params, model, model_admin)
        self.raw = {}
        for name in self.expected_parameters():
            if name in params:
                raw = params.pop(name)
                self.raw[name] = (raw[-1] if isinstance(raw, list) else raw).strip()
                self.used_parameters[name] = self.raw[name]

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str]:
        return ["issue_date_from", "issue_date_to"]

    def queryset(self, request, queryset):
        start = parse_date(self.raw.get("issue_date_from") or "")
        end = parse_date(self.raw.get("issue_date_to") or "")
        if start:
            queryset = queryset.filter(issue_date__gte=start)
        if end:
            queryset = queryset.filter(issue_date__lte=end)
        return queryset

    def choices(self, changelist):
        params = self.expected_parameters()
        yield {
            "from_param": params[0],
            "to_param": params[1],
            "from_value": self.raw.get(params[0], ""),
            "to_value": self.raw.get(params[1], ""),
            "hidden": _other_params(changelist, params),
            "clear_url": changelist.get_query_string(remove=params),
        }
