"""The finance back office for credits: partners, API keys, accounts, credit grants (issue,
approve, activate, void, transfer, bulk issue from CSV), the ledger (read-only, streaming CSV
export) and the grants' audit events.

Every business action calls one service of credits.services with the staff user as actor, and
is also written to Django's admin log. Nothing here computes money: amounts are parsed by the
services and balances come from credits.selectors.
"""

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from backoffice import filters
from backoffice.admin_base import (
    FastChangelistMixin,
    ReadOnlyInline,
    ReadOnlyMixin,
    actor_for,
    apply_domain_error,
    badge,
    money,
    money_column,
    render_page,
    require_perm,
    run_service,
)
from backoffice.exports import ledger_csv_response
from backoffice.forms import (
    ISSUE_FIELD_MAP,
    AsOfForm,
    IssueCreditForm,
    ReasonForm,
    TransferForm,
)
from credits import selectors, services
from credits.exceptions import DomainError
from credits.models import (
    OPEN_STATUSES,
    USABLE_STATUSES,
    Account,
    ApiKey,
    CreditGrant,
    CreditHold,
    GrantEvent,
    GrantStatus,
    GrantSummary,
    LedgerEntry,
    Partner,
)
from invoices.models import Invoice, InvoiceLine, LineKind

# Bulk actions call the service once per grant; more than this at once is a job, not a click.
MAX_ACTION_GRANTS = 500


def _admin_link(obj, label=None):
    if obj is None:
        return "—"
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label or str(obj))


def _changelist(model, **params) -> str:
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


# ---------------------------------------------------------------------------------------------
# Partners and API keys


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    list_display = ("name", "display_name", "webhook_url", "created_at")
    search_fields = ("name", "display_name")
    fields = ("name", "display_name", "webhook_url", "webhook_secret", "created_at")
    readonly_fields = ("created_at",)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Keys are made by `manage.py create_api_key` (the raw key is printed once); here they are
    only listed. Only the hash is stored, so there is nothing secret to show."""

    list_display = ("prefix", "partner", "name", "scopes", "created_at", "last_used_at", "revoked")
    list_select_related = ("partner",)
    list_filter = ("partner",)
    search_fields = ("=prefix", "name")
    exclude = ("key_hash",)
    actions = ["revoke_keys"]

    @admin.display(boolean=True)
    def revoked(self, obj) -> bool:
        return obj.revoked_at is not None

    @admin.action(permissions=["revoke"], description="Revoke selected API keys")
    def revoke_keys(self, request, queryset):
        from billing_api.services import api_key_revoke

        revoked = 0
        for key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(key=key)
            self.log_change(request, key, "Revoked")
            revoked += 1
        self.message_user(request, f"Revoked {revoked} API key(s); they are refused from now on.")

    def has_revoke_permission(self, request) -> bool:
        # Revoking is the one change a key allows; whoever may change keys may revoke them.
        return request.user.has_perm("credits.change_apikey")


# ---------------------------------------------------------------------------------------------
# Accounts


@admin.register(Account)
class AccountAdmin(FastChangelistMixin, admin.ModelAdmin):
    list_display = (
        "account_id",
        "name",
        "email",
        "currency",
        "partner",
        "auto_apply_credits",
        "created_at",
    )
    list_select_related = ("partner",)
    list_filter = ("currency", "auto_apply_credits", "partner")
    search_fields = ("account_id", "name", "email")
    search_help_text = "Account id, name or billing email."
    sortable_by = ("account_id", "name", "created_at")
    fields = (
        "account_id",
        "name",
        "email",
        "currency",
        "partner",
        "auto_apply_credits",
        "auto_apply_expiring_credits",
        "created_at",
    )
    readonly_fields = ("created_at",)
    change_form_template = "admin/credits/account/change_form.html"

    def get_readonly_fields(self, request, obj=None):
        # The account id is what partners and invoices refer to: fixed once created.
        return ("account_id", "created_at") if obj else ("created_at",)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        account = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if account is not None:
            extra.update(self._panels(request, account))
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def _panels(self, request, account: Account) -> dict:
        now = timezone.now()
        as_of_form = AsOfForm(request.GET if "as_of" in request.GET else None)
        as_of = None
        if as_of_form.is_bound and as_of_form.is_valid():
            at = as_of_form.cleaned_data["as_of"]
            as_of = {"at": at, "balances": sorted(selectors.balance_as_of(account, at).items())}
        expiring = list(
            selectors.expiring_grants(
                within_days=30, now=now, accounts=Account.objects.filter(pk=account.pk)
            )[:20]
        )
        return {
            "balances": selectors.account_balances(account, now=now),
            "as_of_form": as_of_form,
            "as_of": as_of,
            "expiring": expiring,
            "recent_grants": list(account.grants.order_by("-issued_at", "-id")[:10]),
            "recent_invoices": list(account.invoices.order_by("-created_at", "-id")[:10]),
            "recent_ledger": list(
                account.ledger_entries.select_related("grant", "invoice").order_by(
                    "-created_at", "-id"
                )[:15]
            ),
            "grants_url": _changelist(CreditGrant, account=account.account_id),
            "ledger_url": _changelist(LedgerEntry, account=account.account_id),
            "invoices_url": _changelist(Invoice, account=account.account_id),
            "issue_url": reverse("admin:credits_creditgrant_add") + f"?account={account.pk}",
            "can_issue": request.user.has_perm("credits.add_creditgrant"),
        }


# ---------------------------------------------------------------------------------------------
# Credit grants


class LedgerInline(ReadOnlyInline):
    model = LedgerEntry
    fk_name = "grant"
    verbose_name = "ledger entry"
    verbose_name_plural = "Ledger"
    fields = ("created_at", "kind", "signed_amount", "balance", "invoice_link", "actor", "reason")
    readonly_fields = fields
    ordering = ("created_at", "id")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("invoice")

    @admin.display(description="amount")
    def signed_amount(self, obj):
        return money(obj.amount, obj.currency, signed=True)

    @admin.display(description="balance after")
    def balance(self, obj):
        return money(obj.balance_after, obj.currency)

    @admin.display(description="invoice")
    def invoice_link(self, obj):
        return _admin_link(obj.invoice)


class UsageInline(ReadOnlyInline):
    """The grant's applications: its credit lines on invoices (negative amounts)."""

    model = InvoiceLine
    fk_name = "grant"
    verbose_name = "application"
    verbose_name_plural = "Usage (credit lines on invoices)"
    fields = ("invoice_link", "invoice_status", "applied_amount", "description")
    readonly_fields = fields

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .filter(kind=LineKind.CREDIT)
            .select_related("invoice")
            .order_by("invoice__created_at", "id")
        )

    @admin.display(description="invoice")
    def invoice_link(self, obj):
        return _admin_link(obj.invoice)

    @admin.display(description="invoice status")
    def invoice_status(self, obj):
        return badge(obj.invoice.status)

    @admin.display(description="amount")
    def applied_amount(self, obj):
        return money(obj.amount, obj.invoice.currency)


class HoldInline(ReadOnlyInline):
    model = CreditHold
    fk_name = "grant"
    verbose_name_plural = "Holds by draft invoices"
    fields = ("invoice", "held", "status", "actor", "created_at", "closed_at", "closed_by")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("invoice", "grant")

    @admin.display(description="amount")
    def held(self, obj):
        return money(obj.amount, obj.grant.currency)


class EventInline(ReadOnlyInline):
    model = GrantEvent
    verbose_name_plural = "Events (approval, activation, holds)"
    fields = ("created_at", "kind", "actor", "reason", "data")
    readonly_fields = fields


@admin.register(CreditGrant)
class CreditGrantAdmin(FastChangelistMixin, admin.ModelAdmin):
    list_display = (
        "credit_id",
        "account_link",
        "type",
        "status_badge",
        "original_amount",
        "remaining_amount",
        "expires_at",
        "issued_at",
        "issued_by",
        "campaign_id",
    )
    list_select_related = ("account",)
    list_filter = (
        "status",
        "type",
        "currency",
        filters.ExpiringWithinFilter,
        filters.IssuedDateFilter,
        filters.CampaignFilter,
        filters.IssuerFilter,
        filters.AccountFilter,
    )
    # Exact matches only: each one is an index lookup (see get_search_results).
    search_fields = ("credit_id", "account__account_id", "reference_id", "campaign_id")
    search_help_text = "Exact credit id, account id, reference id or campaign id."
    # Only indexed columns sort: a sort on any other column of 10^6 rows is a full scan.
    sortable_by = ("credit_id", "issued_at", "expires_at")
    actions = ("approve_selected", "void_selected", "transfer_selected")
    inlines = (LedgerInline, UsageInline, HoldInline, EventInline)
    change_form_template = "admin/credits/creditgrant/change_form.html"
    change_list_template = "admin/credits/creditgrant/change_list.html"
    fieldsets = (
        (None, {"fields": (("credit_id", "status_badge"), ("account_link", "type"))}),
        (
            "Amount",
            {
                "fields": (
                    ("original_amount", "remaining_amount", "used_amount"),
                    ("reserved_amount", "available_amount", "price_amount"),
                )
            },
        ),
        ("Source", {"fields": (("description", "reference_id"), ("issued_by", "reason"))}),
        (
            "Dates",
            {
                "fields": (
                    ("issued_at", "effective_at", "activated_at"),
                    ("expires_at", "last_used_at", "auto_activate"),
                    ("voided_at", "expired_at"),
                )
            },
        ),
        (
            "Approval (maker-checker)",
            {"fields": (("issuer_actor", "approval_required"), ("approved_by", "approved_at"))},
        ),
        (
            "Restrictions",
            {
                "fields": (
                    ("applicable_services", "usage_limit"),
                    ("minimum_spend_amount", "maximum_discount_amount"),
                    "account_restrictions",
                )
            },
        ),
        (
            "Metadata",
            {
                "fields": (
                    ("campaign_id", "tags", "transferable"),
                    ("notes", "extra_metadata"),
                    "transferred_from_link",
                )
            },
        ),
    )

    # --- columns

    @admin.display(description="account", ordering=None)
    def account_link(self, obj):
        return _admin_link(obj.account, obj.account.account_id)

    @admin.display(description="status")
    def status_badge(self, obj):
        return badge(obj.status)

    original_amount = money_column("original", "original")
    remaining_amount = money_column("remaining", "remaining")
    used_amount = money_column("used", "used")
    reserved_amount = money_column("reserved", "reserved by drafts")
    available_amount = money_column("available", "available")
    price_amount = money_column("price", "price")
    minimum_spend_amount = money_column("minimum_spend", "minimum spend")
    maximum_discount_amount = money_column("maximum_discount", "maximum discount")

    @admin.display(description="transferred from")
    def transferred_from_link(self, obj):
        return _admin_link(obj.transferred_from)

    # --- permissions: a grant changes only through the actions below

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_approve_permission(self, request) -> bool:
        return request.user.has_perm("credits.approve_creditgrant")

    def has_void_permission(self, request) -> bool:
        return request.user.has_perm("credits.void_creditgrant")

    def has_transfer_permission(self, request) -> bool:
        return request.user.has_perm("credits.transfer_creditgrant")

    def get_readonly_fields(self, request, obj=None):
        return flatten_fieldsets(self.fieldsets)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        account_pk = Account.objects.filter(account_id=term).values_list("pk", flat=True).first()
        q = Q(credit_id=term) | Q(reference_id=term) | Q(campaign_id=term)
        if account_pk:
            q |= Q(account_id=account_pk)
        return queryset.filter(q), False

    # --- URLs

    def get_urls(self):
        from backoffice.views import bulk_issue_view

        def wrap(view):
            return self.admin_site.admin_view(view)

        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "bulk-issue/",
                wrap(lambda request: bulk_issue_view(request, model_admin=self)),
                name="{}_{}_bulk_issue".format(*info),
            ),
            path(
                "actions/<str:action>/",
                wrap(self.action_view),
                name="{}_{}_action".format(*info),
            ),
            *super().get_urls(),
        ]

    # --- Issue credits (the add view)

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            require_perm(request, "credits.add_creditgrant")
        initial = {}
        if request.method == "GET" and request.GET.get("account", "").isdigit():
            initial["account"] = request.GET["account"]
        form = IssueCreditForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                grant = services.grant_issue(actor=actor_for(request), **form.service_kwargs())
            except DomainError as exc:
                apply_domain_error(form, exc, ISSUE_FIELD_MAP)
            else:
                self.log_addition(
                    request,
                    grant,
                    [{"added": {"name": "credit grant", "object": grant.credit_id}}],
                )
                self.message_user(request, self._issued_message(grant), messages.SUCCESS)
                if "_addanother" in request.POST:
                    return HttpResponseRedirect(request.path)
                return HttpResponseRedirect(
                    reverse("admin:credits_creditgrant_change", args=[grant.pk])
                )
        return render_page(
            self,
            request,
            "admin/credits/creditgrant/issue.html",
            {"form": form, "media": self.media + form.media},
            title="Issue credits",
        )

    @staticmethod
    def _issued_message(grant: CreditGrant) -> str:
        text = f"Issued {grant.credit_id} ({grant.original} {grant.currency}) to "
        text += f"{grant.account.account_id}, status {grant.status}."
        if grant.approval_required and grant.approved_at is None:
            text += (
                " It is above the approval threshold: another person must approve it before "
                "it can be used."
            )
        return text

    # --- Actions: each goes to a confirmation page with a required reason

    @admin.action(description="Approve selected credits…", permissions=["approve"])
    def approve_selected(self, request, queryset):
        return self._to_action("approve", queryset)

    @admin.action(description="Void selected credits…", permissions=["void"])
    def void_selected(self, request, queryset):
        return self._to_action("void", queryset)

    @admin.action(description="Transfer selected credits…", permissions=["transfer"])
    def transfer_selected(self, request, queryset):
        return self._to_action("transfer", queryset)

    def _to_action(self, action: str, queryset):
        pks = list(queryset.order_by("pk").values_list("pk", flat=True)[: MAX_ACTION_GRANTS + 1])
        url = reverse("admin:credits_creditgrant_action", args=[action])
        return HttpResponseRedirect(f"{url}?{urlencode({'ids': ','.join(map(str, pks))})}")

    ACTIONS = {
        "approve": {
            "perm": "credits.approve_creditgrant",
            "title": "Approve credits",
            "verb": "Approve",
            "form": ReasonForm,
            "statuses": (GrantStatus.PENDING,),
            "explain": "Approving makes a credit above the approval threshold usable (at once, "
            "or at its effective date). You cannot approve a credit you issued yourself.",
        },
        "activate": {
            "perm": "credits.approve_creditgrant",
            "title": "Activate credits",
            "verb": "Activate",
            "form": ReasonForm,
            "statuses": (GrantStatus.PENDING,),
            "explain": "Activates pending credits now (auto-activation off, or a referral "
            "credit released by hand).",
        },
        "void": {
            "perm": "credits.void_creditgrant",
            "title": "Void credits",
            "verb": "Void",
            "form": ReasonForm,
            "statuses": OPEN_STATUSES,
            "danger": True,
            "explain": "Voiding removes the unused remainder of each credit; what was already "
            "used stays used. Holds by draft invoices are released. This cannot be undone.",
        },
        "transfer": {
            "perm": "credits.transfer_creditgrant",
            "title": "Transfer credits",
            "verb": "Transfer",
            "form": TransferForm,
            "statuses": USABLE_STATUSES,
            "explain": "Moves available credit to another account: a transfer_out entry here "
            "and a new credit (same type, expiry and restrictions) on the target account.",
        },
    }

    def action_view(self, request, action: str):
        spec = self.ACTIONS.get(action)
        if spec is None:
            return HttpResponseRedirect(_changelist(CreditGrant))
        require_perm(request, spec["perm"])
        raw_ids = request.POST.get("ids") or request.GET.get("ids", "")
        pks = sorted({int(p) for p in raw_ids.split(",") if p.strip().isdigit()})
        if len(pks) > MAX_ACTION_GRANTS:
            self.message_user(
                request,
                f"Select at most {MAX_ACTION_GRANTS} credits for one action.",
                messages.ERROR,
            )
            return HttpResponseRedirect(_changelist(CreditGrant))
        grants = list(CreditGrant.objects.filter(pk__in=pks).select_related("account"))
        if not grants:
            self.message_user(request, "No credits selected.", messages.WARNING)
            return HttpResponseRedirect(_changelist(CreditGrant))
        form = spec["form"](request.POST or None)
        if action == "transfer" and len(grants) > 1:
            # One amount cannot fit several credits: each moves all it has available.
            del form.fields["amount"]
        if request.method == "POST" and "confirm" in request.POST and form.is_valid():
            done = self._run_action(request, action, grants, form)
            if len(grants) == 1:
                target = grants[0].pk
                return HttpResponseRedirect(
                    reverse("admin:credits_creditgrant_change", args=[target])
                )
            if done:
                return HttpResponseRedirect(_changelist(CreditGrant))
        ineligible = [
            g
            for g in grants
            if g.status not in spec["statuses"] or (action == "transfer" and not g.transferable)
        ]
        return render_page(
            self,
            request,
            "admin/backoffice/confirm_grant_action.html",
            {
                "action": action,
                "spec": spec,
                "grants": grants,
                "ineligible": ineligible,
                "ids": ",".join(str(g.pk) for g in grants),
                "form": form,
                "media": self.media + form.media,
            },
            title=spec["title"],
            obj=grants[0] if len(grants) == 1 else None,
        )

    def _run_action(self, request, action: str, grants, form) -> int:
        actor = actor_for(request)
        reason = form.cleaned_data["reason"]
        done = 0
        for grant in grants:
            if action == "approve":
                ok, result = run_service(
                    self, request, services.grant_approve, grant=grant, actor=actor, reason=reason
                )
                message = f"Approved: {reason}"
            elif action == "activate":
                ok, result = run_service(
                    self, request, services.grant_activate, grant=grant, actor=actor, reason=reason
                )
                message = f"Activated: {reason}"
            elif action == "void":
                ok, result = run_service(
                    self, request, services.grant_void, grant=grant, actor=actor, reason=reason
                )
                message = f"Voided: {reason}"
            else:
                to_account = form.cleaned_data["to_account"]
                amount = form.cleaned_data.get("amount", "").strip() or None
                ok, result = run_service(
                    self,
                    request,
                    services.grant_transfer,
                    grant=grant,
                    to_account=to_account,
                    amount=amount,
                    actor=actor,
                    reason=reason,
                )
                if ok:
                    source, target = result
                    message = f"Transferred to {to_account.account_id} as {target.credit_id}: "
                    message += reason
                    self.log_addition(
                        request, target, f"Transfer from {source.credit_id}: {reason}"
                    )
                    result = source
            if ok:
                done += 1
                self.log_change(request, result, message)
        if done:
            self.message_user(
                request,
                f"{self.ACTIONS[action]['verb']}: {done} of {len(grants)} credit(s) done.",
                messages.SUCCESS if done == len(grants) else messages.WARNING,
            )
        return done

    # --- the grant's page

    def change_view(self, request, object_id, form_url="", extra_context=None):
        grant = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if grant is not None:
            url = reverse("admin:credits_creditgrant_action", args=["_"]).replace("/_/", "/{}/")
            user = request.user
            buttons = []
            awaiting = grant.approval_required and grant.approved_at is None
            if grant.status == GrantStatus.PENDING and awaiting:
                if user.has_perm("credits.approve_creditgrant"):
                    buttons.append(("Approve…", url.format("approve"), ""))
            elif grant.status == GrantStatus.PENDING and user.has_perm(
                "credits.approve_creditgrant"
            ):
                buttons.append(("Activate now…", url.format("activate"), ""))
            transferable = grant.transferable and grant.status in USABLE_STATUSES
            if transferable and user.has_perm("credits.transfer_creditgrant"):
                buttons.append(("Transfer…", url.format("transfer"), ""))
            if grant.status in OPEN_STATUSES and user.has_perm("credits.void_creditgrant"):
                buttons.append(("Void…", url.format("void"), "bo-danger"))
            extra["grant_buttons"] = [
                (label, f"{href}?ids={grant.pk}", css) for label, href, css in buttons
            ]
            extra["ledger_url"] = _changelist(LedgerEntry, credit=grant.credit_id)
            extra["awaiting_approval"] = awaiting and grant.status == GrantStatus.PENDING
        return super().change_view(request, object_id, form_url, extra_context=extra)


# ---------------------------------------------------------------------------------------------
# The ledger: read-only everywhere


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyMixin, FastChangelistMixin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "kind",
        "signed_amount",
        "balance",
        "credit_link",
        "account_link",
        "invoice_link",
        "actor",
        "short_reason",
    )
    list_display_links = ("created_at",)
    list_select_related = ("grant", "account", "invoice")
    list_filter = (
        "kind",
        "currency",
        filters.AccountFilter,
        filters.CreditFilter,
        filters.InvoiceFilter,
        filters.ActorFilter,
        filters.CreatedDateFilter,
    )
    sortable_by = ("created_at",)
    actions = None
    change_list_template = "admin/credits/ledgerentry/change_list.html"
    fields = (
        "entry_id",
        "created_at",
        "kind",
        "signed_amount",
        "balance",
        "currency",
        "credit_link",
        "account_link",
        "invoice_link",
        "invoice_line",
        "related_entry",
        "actor",
        "actor_user",
        "reason",
    )
    readonly_fields = fields

    @admin.display(description="amount")
    def signed_amount(self, obj):
        return money(obj.amount, obj.currency, signed=True)

    @admin.display(description="balance after")
    def balance(self, obj):
        return money(obj.balance_after, obj.currency)

    @admin.display(description="credit")
    def credit_link(self, obj):
        return _admin_link(obj.grant, obj.grant.credit_id)

    @admin.display(description="account")
    def account_link(self, obj):
        return _admin_link(obj.account, obj.account.account_id)

    @admin.display(description="invoice")
    def invoice_link(self, obj):
        return _admin_link(obj.invoice)

    @admin.display(description="reason")
    def short_reason(self, obj):
        return obj.reason if len(obj.reason) <= 40 else obj.reason[:39] + "…"

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "export.csv",
                self.admin_site.admin_view(self.export_view),
                name="{}_{}_export".format(*info),
            ),
            *super().get_urls(),
        ]

    def export_view(self, request):
        """The changelist's rows (same filters and search) as a streamed CSV."""
        if not self.has_view_permission(request):
            require_perm(request, "credits.view_ledgerentry")
        changelist = self.get_changelist_instance(request)
        queryset = changelist.get_queryset(request)
        return ledger_csv_response(queryset)


@admin.register(GrantEvent)
class GrantEventAdmin(ReadOnlyMixin, FastChangelistMixin, admin.ModelAdmin):
    list_display = ("created_at", "grant", "kind", "actor", "reason")
    list_select_related = ("grant",)
    list_filter = ("kind", filters.ActorFilter)
    sortable_by = ("created_at",)
    actions = None
    readonly_fields = ("grant", "kind", "actor", "reason", "data", "created_at")
    fields = readonly_fields


@admin.register(GrantSummary)
class GrantSummaryAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """The per-account grant summary the database keeps (read-only: triggers write it, the
    compact_grant_summaries job folds it, verify_ledger checks it)."""

    list_display = (
        "account",
        "currency",
        "type",
        "status",
        "unused",
        "restricted",
        "grants",
        "remaining",
        "used",
        "compacted",
    )
    list_select_related = ("account",)
    list_filter = ("currency", "type", "status", "compacted")
    search_fields = ("account__account_id",)
    actions = None
    readonly_fields = list_display
    fields = readonly_fields
