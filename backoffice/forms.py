"""Forms of the back office. They only shape and pre-check input; amounts are parsed and
validated by the services (credits.money.parse_amount), whose errors come back onto the field
they name through backoffice.admin_base.apply_domain_error."""

import json

from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import AutocompleteSelect

from credits.models import Account, CreditGrant, GrantType, UsageLimit
from credits.money import CURRENCY_CHOICES

SERVICES = ["clusters", "ai-services", "storage", "network", "support"]
SERVICE_CHOICES = [(s, s) for s in SERVICES]

# Service error `field` names (API spelling) -> form field names.
ISSUE_FIELD_MAP = {
    "amount": "amount",
    "price": "price",
    "type": "type",
    "currency": "currency",
    "expirationDays": "expiration_days",
    "expiresAt": "expires_at",
    "minimumSpend": "minimum_spend",
    "maximumDiscount": "maximum_discount",
    "usageLimit": "usage_limit",
    "applicableServices": "applicable_services",
}

DATETIME_WIDGET = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")


def _account_widget(model, field_name: str = "account") -> AutocompleteSelect:
    # The admin's own autocomplete (select2 served from django.contrib.admin's static files),
    # searching AccountAdmin.search_fields: no select of 10^4 accounts in the page.
    return AutocompleteSelect(model._meta.get_field(field_name), admin.site)


def _split(text: str) -> list[str]:
    return [part.strip() for part in (text or "").replace(";", ",").split(",") if part.strip()]


class AmountField(forms.CharField):
    """Kept as text: the service parses it exactly for the currency (no float, no rounding)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("max_length", 40)
        kwargs.setdefault("widget", forms.TextInput(attrs={"inputmode": "decimal", "size": 14}))
        super().__init__(**kwargs)


class IssueCreditForm(forms.Form):
    account = forms.ModelChoiceField(Account.objects.all(), widget=_account_widget(CreditGrant))
    type = forms.ChoiceField(choices=GrantType.choices, initial=GrantType.PROMOTIONAL)
    amount = AmountField(help_text="In the currency's units, e.g. 250.00 (JPY: no decimals).")
    currency = forms.ChoiceField(
        choices=[("", "account's currency"), *CURRENCY_CHOICES], required=False
    )
    price = AmountField(
        required=False, help_text="What the customer pays for it (default: the amount)."
    )
    expiration_days = forms.IntegerField(
        required=False,
        min_value=1,
        label="Expires after (days)",
        help_text="Counted from the "
        "effective date. Leave both expiry fields empty for a credit that never expires.",
    )
    expires_at = forms.DateTimeField(
        required=False, widget=DATETIME_WIDGET, label="…or expires at (UTC)"
    )
    effective_at = forms.DateTimeField(
        required=False,
        widget=DATETIME_WIDGET,
        label="Effective at (UTC)",
        help_text="Default: now. A future date keeps the credit pending until then.",
    )
    auto_activate = forms.BooleanField(
        required=False, initial=True, help_text="Activate by itself at the effective date."
    )
    description = forms.CharField(max_length=500, required=False)
    reference_id = forms.CharField(max_length=200, required=False, label="Reference id")
    issued_by = forms.CharField(
        max_length=200,
        required=False,
        label="Issued by (source)",
        help_text="Source for analytics, e.g. marketing_team. Default: you.",
    )
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    applicable_services = forms.MultipleChoiceField(
        choices=SERVICE_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every service.",
    )
    other_services = forms.CharField(
        required=False, help_text="Other service names, comma separated."
    )
    minimum_spend = AmountField(required=False)
    maximum_discount = AmountField(required=False, help_text="Most it may take off one invoice.")
    usage_limit = forms.ChoiceField(choices=UsageLimit.choices, initial=UsageLimit.UNLIMITED)
    account_restrictions = forms.CharField(
        required=False, help_text="Account ids it may be transferred to, comma separated."
    )
    campaign_id = forms.CharField(max_length=200, required=False, label="Campaign id")
    tags = forms.CharField(required=False, help_text="Comma separated.")
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    transferable = forms.BooleanField(required=False)
    extra_metadata = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), required=False, label="Extra metadata (JSON)"
    )

    FIELDSETS = [
        ("Credit", ["account", "type", "amount", "currency", "price"]),
        ("Dates", ["effective_at", "auto_activate", "expiration_days", "expires_at"]),
        ("Source", ["description", "reference_id", "issued_by", "reason"]),
        (
            "Restrictions",
            [
                "applicable_services",
                "other_services",
                "minimum_spend",
                "maximum_discount",
                "usage_limit",
                "account_restrictions",
            ],
        ),
        ("Metadata", ["campaign_id", "tags", "notes", "transferable", "extra_metadata"]),
    ]

    def fieldsets(self):
        return [(title, [self[name] for name in names]) for title, names in self.FIELDSETS]

    def clean_extra_metadata(self):
        text = self.cleaned_data["extra_metadata"].strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg}.") from None
        if not isinstance(value, dict):
            raise forms.ValidationError('Give a JSON object, e.g. {"team": "growth"}.')
        return value

    def clean(self):
        data = super().clean()
        if data.get("expiration_days") and data.get("expires_at"):
            raise forms.ValidationError("Give an expiry in days or a date, not both.")
        return data

    def service_kwargs(self) -> dict:
        """grant_issue's keyword arguments (amounts as typed: the service parses them)."""
        d = self.cleaned_data
        account = d["account"]
        services = list(d["applicable_services"]) + _split(d["other_services"])
        return {
            "account": account,
            "type": d["type"],
            "amount": d["amount"].strip(),
            "currency": d["currency"] or account.currency,
            "price": d["price"].strip() or None,
            "expiration_days": d["expiration_days"],
            "expires_at": d["expires_at"],
            "effective_at": d["effective_at"],
            "auto_activate": d["auto_activate"],
            "description": d["description"],
            "reference_id": d["reference_id"],
            "issued_by": d["issued_by"],
            "reason": d["reason"],
            "applicable_services": services or None,
            "minimum_spend": d["minimum_spend"].strip() or "0",
            "maximum_discount": d["maximum_discount"].strip() or None,
            "usage_limit": d["usage_limit"],
            "account_restrictions": _split(d["account_restrictions"]),
            "campaign_id": d["campaign_id"],
            "tags": _split(d["tags"]),
            "notes": d["notes"],
            "transferable": d["transferable"],
            "extra_metadata": d["extra_metadata"],
        }


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Required. Recorded on the ledger and in the audit log.",
    )

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return reason


class TransferForm(ReasonForm):
    to_account = forms.ModelChoiceField(
        Account.objects.all(), widget=_account_widget(CreditGrant), label="To account"
    )
    amount = AmountField(required=False, help_text="Leave empty to move all that is available.")

    field_order = ["to_account", "amount", "reason"]


class BulkIssueForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text="Columns: account_id, amount, and optionally currency, type, expiration_days, "
        "expires_at, effective_at, description, reference_id, reason, campaign_id, "
        "applicable_services, minimum_spend, maximum_discount, usage_limit, tags, notes, "
        "transferable, price. Values below fill empty cells.",
    )
    type = forms.ChoiceField(choices=GrantType.choices, initial=GrantType.PROMOTIONAL)
    campaign_id = forms.CharField(max_length=200, required=False, label="Campaign id")
    expiration_days = forms.IntegerField(required=False, min_value=1, label="Expires after (days)")
    description = forms.CharField(max_length=500, required=False)
    reason = forms.CharField(max_length=500, required=False)

    def defaults(self) -> dict:
        d = self.cleaned_data
        return {
            "type": d["type"],
            "campaign_id": d["campaign_id"],
            "expiration_days": str(d["expiration_days"] or ""),
            "description": d["description"],
            "reason": d["reason"],
        }


class InvoiceDraftForm(forms.Form):
    account = forms.ModelChoiceField(Account.objects.all(), widget=_account_widget(CreditGrant))
    currency = forms.ChoiceField(
        choices=[("", "account's currency"), *CURRENCY_CHOICES], required=False
    )
    issue_date = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="Default: today."
    )
    due_date = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Default: set at finalization (issue date + the payment terms).",
    )


class InvoiceLineForm(forms.Form):
    service = forms.CharField(
        max_length=64, widget=forms.TextInput(attrs={"list": "bo-services", "size": 14})
    )
    description = forms.CharField(max_length=500, required=False)
    quantity = forms.DecimalField(max_digits=18, decimal_places=6, initial=1, min_value=0)
    unit_price = forms.DecimalField(max_digits=18, decimal_places=6, min_value=0)

    def as_service_line(self) -> dict:
        d = self.cleaned_data
        return {
            "service": d["service"],
            "description": d["description"],
            "quantity": d["quantity"],
            "unit_price": d["unit_price"],
        }


InvoiceLineFormSet = forms.formset_factory(
    InvoiceLineForm, extra=3, min_num=1, validate_min=True, max_num=500
)


class ApplyCreditForm(forms.Form):
    grant = forms.ModelChoiceField(CreditGrant.objects.none(), label="Credit")
    amount = AmountField()

    def __init__(self, *args, grants=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if grants is not None:
            self.fields["grant"].queryset = grants
            self.fields["grant"].label_from_instance = lambda g: (
                f"{g.credit_id} · {g.type} · {g.available} {g.currency} available"
                + (f" · expires {g.expires_at:%Y-%m-%d}" if g.expires_at else "")
            )


class AsOfForm(forms.Form):
    as_of = forms.DateTimeField(widget=DATETIME_WIDGET, label="Balance as of (UTC)")
