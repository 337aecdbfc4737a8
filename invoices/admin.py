"""The finance back office for invoices: list and detail with lines (credit lines negative and
linked to their grant), a draft created with its lines, lines added to a draft, credit held
for and released from a draft, finalize with a preview of the credit plan, apply one credit,
void (credits come back), mark paid, and the optimize plan with its reasons.

Each action calls one service of invoices.services with the staff user as actor and is also
written to Django's admin log.
"""

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from backoffice import filters
from backoffice.admin_base import (
    FastChangelistMixin,
    ReadOnlyInline,
    actor_for,
    apply_domain_error,
    badge,
    money,
    render_page,
    require_perm,
    run_service,
)
from backoffice.forms import (
    ApplyCreditForm,
    InvoiceDraftForm,
    InvoiceLineFormSet,
    ReasonForm,
)
from backoffice.plans import STRATEGY_LABELS, preview
from credits import allocation
from credits.exceptions import DomainError
from credits.models import Account, CreditGrant, CreditHold, HoldStatus
from invoices import services
from invoices.models import (
    OPEN_INVOICE_STATUSES,
    Invoice,
    InvoiceEvent,
    InvoiceLine,
    InvoiceStatus,
    LineKind,
)
from invoices.selectors import active_holds, usable_grants_q

LINE_FIELD_MAP = {"dueDate": "due_date", "currency": "currency"}


def _link(obj, label=None):
    if obj is None:
        return "—"
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label or str(obj))


class LineInline(ReadOnlyInline):
    model = InvoiceLine
    verbose_name_plural = "Lines"
    fields = (
        "position",
        "kind",
        "service",
        "description",
        "qty",
        "price",
        "line_amount",
        "covered_by_credits",
        "credit",
    )
    readonly_fields = fields
    ordering = ("position",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("invoice", "grant")

    @admin.display(description="quantity")
    def qty(self, obj):
        return f"{obj.quantity.normalize():f}"

    @admin.display(description="unit price")
    def price(self, obj):
        return f"{obj.unit_price.normalize():f}"

    @admin.display(description="amount")
    def line_amount(self, obj):
        return money(obj.amount, obj.invoice.currency)

    @admin.display(description="covered by credits")
    def covered_by_credits(self, obj):
        return money(obj.credited, obj.invoice.currency) if obj.kind == LineKind.CHARGE else ""

    @admin.display(description="credit")
    def credit(self, obj):
        return _link(obj.grant, obj.grant.credit_id) if obj.grant_id else ""


class HoldInline(ReadOnlyInline):
    model = CreditHold
    fk_name = "invoice"
    verbose_name_plural = "Credit holds (drafts)"
    fields = ("credit", "held", "status", "actor", "created_at", "closed_at", "closed_by")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("grant")

    @admin.display(description="credit")
    def credit(self, obj):
        return _link(obj.grant, obj.grant.credit_id)

    @admin.display(description="amount")
    def held(self, obj):
        return money(obj.amount, obj.grant.currency)


class EventInline(ReadOnlyInline):
    model = InvoiceEvent
    verbose_name_plural = "History"
    fields = ("created_at", "kind", "actor", "reason", "data")
    readonly_fields = fields


@admin.register(Invoice)
class InvoiceAdmin(FastChangelistMixin, admin.ModelAdmin):
    list_display = (
        "invoice_number",
        "account_link",
        "status_badge",
        "currency",
        "subtotal_amount",
        "credits_amount",
        "total_amount",
        "issue_date",
        "due_date",
    )
    list_select_related = ("account",)
    list_filter = ("status", "currency", filters.IssueDateFilter, filters.AccountFilter)
    search_fields = ("invoice_number", "invoice_id", "account__account_id")
    search_help_text = "Exact invoice number, invoice id or account id."
    sortable_by = ("invoice_number", "issue_date", "due_date")
    actions = None
    inlines = (LineInline, HoldInline, EventInline)
    change_form_template = "admin/invoices/invoice/change_form.html"
    fieldsets = (
        (
            None,
            {"fields": (("invoice_number", "status_badge"), ("invoice_id", "account_link"))},
        ),
        (
            "Amounts",
            {"fields": (("subtotal_amount", "credits_amount", "total_amount"), "currency")},
        ),
        (
            "Dates",
            {
                "fields": (
                    ("issue_date", "due_date"),
                    ("finalized_at", "paid_at", "voided_at"),
                )
            },
        ),
        (
            "Audit",
            {"fields": (("created_by", "created_at"), ("void_reason", "purchased_credit"))},
        ),
    )

    @admin.display(description="account")
    def account_link(self, obj):
        return _link(obj.account, obj.account.account_id)

    @admin.display(description="status")
    def status_badge(self, obj):
        return badge(obj.status)

    @admin.display(description="subtotal")
    def subtotal_amount(self, obj):
        return money(obj.subtotal, obj.currency)

    @admin.display(description="credits")
    def credits_amount(self, obj):
        return money(-obj.credits_total if obj.credits_total else obj.credits_total, obj.currency)

    @admin.display(description="total due")
    def total_amount(self, obj):
        return money(obj.total, obj.currency)

    @admin.display(description="purchased credit")
    def purchased_credit(self, obj):
        return _link(obj.purchased_grant)

    def get_readonly_fields(self, request, obj=None):
        return flatten_fieldsets(self.fieldsets)

    # An invoice changes only through the actions below, each a service call.
    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        account_pk = Account.objects.filter(account_id=term).values_list("pk", flat=True).first()
        q = Q(invoice_number=term) | Q(invoice_id=term)
        if account_pk:
            q |= Q(account_id=account_pk)
        return queryset.filter(q), False

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name

        def route(suffix, view):
            return path(
                f"<int:pk>/{suffix}/",
                self.admin_site.admin_view(view),
                name="{}_{}_{}".format(*info, suffix.replace("-", "_")),
            )

        return [
            route("add-lines", self.add_lines_view),
            route("hold", self.hold_view),
            route("release", self.release_view),
            route("finalize", self.finalize_view),
            route("apply", self.apply_view),
            route("optimize", self.optimize_view),
            route("void", self.void_view),
            route("pay", self.pay_view),
            *super().get_urls(),
        ]

    def _url(self, name: str, invoice: Invoice) -> str:
        return reverse(f"admin:invoices_invoice_{name}", args=[invoice.pk])

    def _back(self, invoice: Invoice):
        return HttpResponseRedirect(self._url("change", invoice))

    # --- create a draft with its lines

    def add_view(self, request, form_url="", extra_context=None):
        require_perm(request, "invoices.add_invoice")
        form = InvoiceDraftForm(request.POST or None, prefix="invoice")
        lines = InvoiceLineFormSet(request.POST or None, prefix="lines")
        if request.method == "POST" and form.is_valid() and lines.is_valid():
            account = form.cleaned_data["account"]
            try:
                invoice = services.invoice_create(
                    account=account,
                    currency=form.cleaned_data["currency"] or account.currency,
                    lines=[f.as_service_line() for f in lines if f.has_changed()],
                    issue_date=form.cleaned_data["issue_date"],
                    due_date=form.cleaned_data["due_date"],
                    actor=actor_for(request),
                )
            except DomainError as exc:
                apply_domain_error(form, exc, LINE_FIELD_MAP)
            else:
                self.log_addition(request, invoice, f"Draft {invoice.invoice_number} created")
                self.message_user(
                    request,
                    f"Draft invoice {invoice.invoice_number} created for {account.account_id}.",
                    messages.SUCCESS,
                )
                return self._back(invoice)
        return render_page(
            self,
            request,
            "admin/invoices/invoice/draft_form.html",
            {"form": form, "lines": lines, "media": self.media + form.media},
            title="New draft invoice",
        )

    def add_lines_view(self, request, pk: int):
        require_perm(request, "invoices.change_invoice")
        invoice = get_object_or_404(Invoice.objects.select_related("account"), pk=pk)
        lines = InvoiceLineFormSet(request.POST or None, prefix="lines")
        if request.method == "POST" and lines.is_valid():
            ok, _ = run_service(
                self,
                request,
                services.invoice_add_lines,
                invoice=invoice,
                lines=[f.as_service_line() for f in lines if f.has_changed()],
                actor=actor_for(request),
            )
            if ok:
                self.log_change(request, invoice, "Lines added")
                self.message_user(request, "Lines added.", messages.SUCCESS)
                return self._back(invoice)
        return render_page(
            self,
            request,
            "admin/invoices/invoice/draft_form.html",
            {"invoice": invoice, "lines": lines, "media": self.media},
            title=f"Add lines to {invoice.invoice_number}",
            obj=invoice,
        )

    # --- holds on a draft

    def hold_view(self, request, pk: int):
        return self._simple_action(
            request,
            pk,
            perm="invoices.change_invoice",
            title="Reserve credit for this draft",
            explain="Holds available credit, in drawdown order, up to what the draft owes. Held "
            "credit is not available to other invoices until this draft is finalized (the "
            "hold becomes a deduction) or voided (the hold is released).",
            button="Reserve credit",
            call=services.invoice_hold_credits,
            done="Credit reserved",
        )

    def release_view(self, request, pk: int):
        return self._simple_action(
            request,
            pk,
            perm="invoices.change_invoice",
            title="Release the holds of this draft",
            explain="Every credit held for this draft becomes available again.",
            button="Release holds",
            call=services.invoice_release_holds,
            done="Holds released",
        )

    def pay_view(self, request, pk: int):
        return self._simple_action(
            request,
            pk,
            perm="invoices.pay_invoice",
            title="Mark invoice paid",
            explain="Records that the customer paid the total due.",
            button="Mark paid",
            call=services.invoice_pay,
            done="Marked paid",
        )

    def _simple_action(self, request, pk, *, perm, title, explain, button, call, done):
        require_perm(request, perm)
        invoice = get_object_or_404(Invoice.objects.select_related("account"), pk=pk)
        if request.method == "POST":
            ok, _ = run_service(self, request, call, invoice=invoice, actor=actor_for(request))
            if ok:
                self.log_change(request, invoice, done)
                self.message_user(request, f"{invoice.invoice_number}: {done}.", messages.SUCCESS)
            return self._back(invoice)
        return render_page(
            self,
            request,
            "admin/invoices/invoice/confirm.html",
            {"invoice": invoice, "explain": explain, "button": button},
            title=title,
            obj=invoice,
        )

    # --- finalize, with the plan first

    def finalize_view(self, request, pk: int):
        require_perm(request, "invoices.finalize_invoice")
        invoice = get_object_or_404(Invoice.objects.select_related("account"), pk=pk)
        if request.method == "POST" and "confirm" in request.POST:
            ok, result = run_service(
                self, request, services.invoice_finalize, invoice=invoice, actor=actor_for(request)
            )
            if ok:
                self.log_change(
                    request,
                    result,
                    f"Finalized; credits applied {result.credits_total} {result.currency}",
                )
                self.message_user(
                    request,
                    f"{result.invoice_number} finalized: {result.status}, credits applied "
                    f"{result.credits_total} {result.currency}, total due {result.total} "
                    f"{result.currency}.",
                    messages.SUCCESS,
                )
            return self._back(invoice)
        plan = preview(invoice, allocation.MINIMIZE_EXPIRATION)
        return render_page(
            self,
            request,
            "admin/invoices/invoice/finalize.html",
            {
                "invoice": invoice,
                "plan": plan,
                "strategy_label": STRATEGY_LABELS[plan.strategy],
                "auto_apply": invoice.account.auto_apply_credits,
                "holds": list(active_holds(invoice).values()),
                "is_draft": invoice.status == InvoiceStatus.DRAFT,
            },
            title=f"Finalize {invoice.invoice_number}",
            obj=invoice,
        )

    def optimize_view(self, request, pk: int):
        invoice = get_object_or_404(Invoice.objects.select_related("account"), pk=pk)
        if not self.has_view_permission(request, invoice):
            require_perm(request, "invoices.view_invoice")
        best = preview(invoice, allocation.MAXIMIZE_SAVINGS)
        ordered = preview(invoice, allocation.MINIMIZE_EXPIRATION)
        return render_page(
            self,
            request,
            "admin/invoices/invoice/optimize.html",
            {
                "invoice": invoice,
                "plan": best,
                "other": ordered,
                "strategy_label": STRATEGY_LABELS[best.strategy],
                "other_label": STRATEGY_LABELS[ordered.strategy],
                "can_apply": request.user.has_perm("invoices.change_invoice")
                and invoice.status in (InvoiceStatus.DRAFT, *OPEN_INVOICE_STATUSES),
            },
            title=f"Credit plan for {invoice.invoice_number}",
            obj=invoice,
        )

    def apply_view(self, request, pk: int):
        require_perm(request, "invoices.change_invoice")
        invoice = get_object_or_404(Invoice.objects.select_related("account"), pk=pk)
        grants = (
            CreditGrant.objects.filter(usable_grants_q(invoice))
            .exclude(remaining__lte=0)
            .order_by("expires_at", "effective_at", "pk")
        )
        initial = {}
        if request.GET.get("grant", "").isdigit():
            initial["grant"] = request.GET["grant"]
        form = ApplyCreditForm(request.POST or None, grants=grants, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                _, grant, amount = services.invoice_apply_credit(
                    grant=form.cleaned_data["grant"],
                    invoice=invoice,
                    amount=form.cleaned_data["amount"].strip(),
                    actor=actor_for(request),
                )
            except DomainError as exc:
                apply_domain_error(form, exc, {"amount": "amount"})
            else:
                what = "held for" if invoice.status == InvoiceStatus.DRAFT else "applied to"
                message = f"{amount} {invoice.currency} of {grant.credit_id} {what} the invoice"
                self.log_change(request, invoice, message)
                self.message_user(request, message + ".", messages.SUCCESS)
                return self._back(invoice)
        return render_page(
            self,
            request,
            "admin/invoices/invoice/apply.html",
            {"invoice": invoice, "form": form},
            title=f"Apply a credit to {invoice.invoice_number}",
            obj=invoice,
        )

    # --- void

    def void_view(self, request, pk: int):
        require_perm(request, "invoices.void_invoice")
        invoice = get_object_or_404(Invoice.objects.select_related("account"), pk=pk)
        form = ReasonForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            ok, _ = run_service(
                self,
                request,
                services.invoice_void,
                invoice=invoice,
                actor=actor_for(request),
                reason=form.cleaned_data["reason"],
            )
            if ok:
                self.log_change(request, invoice, f"Voided: {form.cleaned_data['reason']}")
                self.message_user(
                    request,
                    f"{invoice.invoice_number} voided; its credits are back on their grants.",
                    messages.SUCCESS,
                )
                return self._back(invoice)
        credit_lines = list(
            invoice.lines.filter(kind=LineKind.CREDIT).select_related("grant").order_by("position")
        )
        holds = list(
            CreditHold.objects.filter(invoice=invoice, status=HoldStatus.ACTIVE).select_related(
                "grant"
            )
        )
        return render_page(
            self,
            request,
            "admin/invoices/invoice/void.html",
            {"invoice": invoice, "form": form, "credit_lines": credit_lines, "holds": holds},
            title=f"Void {invoice.invoice_number}",
            obj=invoice,
        )

    # --- the invoice's page

    def change_view(self, request, object_id, form_url="", extra_context=None):
        invoice = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if invoice is not None:
            user = request.user
            status = invoice.status
            buttons = []
            is_draft = status == InvoiceStatus.DRAFT
            is_open = status in OPEN_INVOICE_STATUSES
            if is_draft and user.has_perm("invoices.change_invoice"):
                buttons.append(("Add lines", self._url("add_lines", invoice), ""))
                buttons.append(("Reserve credit", self._url("hold", invoice), ""))
                if invoice.holds.filter(status=HoldStatus.ACTIVE).exists():
                    buttons.append(("Release holds", self._url("release", invoice), ""))
            if (is_draft or is_open) and user.has_perm("invoices.change_invoice"):
                buttons.append(("Apply a credit", self._url("apply", invoice), ""))
            if is_draft or is_open:
                buttons.append(("Credit plan", self._url("optimize", invoice), ""))
            if is_draft and user.has_perm("invoices.finalize_invoice"):
                buttons.append(("Finalize…", self._url("finalize", invoice), "bo-primary"))
            if is_open and user.has_perm("invoices.pay_invoice"):
                buttons.append(("Mark paid…", self._url("pay", invoice), ""))
            voidable = is_draft or is_open or (status == InvoiceStatus.PAID and not invoice.total)
            if voidable and user.has_perm("invoices.void_invoice"):
                buttons.append(("Void…", self._url("void", invoice), "bo-danger"))
            extra["invoice_buttons"] = buttons
        return super().change_view(request, object_id, form_url, extra_context=extra)
