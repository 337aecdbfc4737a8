"""Shared pieces of the finance ModelAdmins: money and status rendering, calling a service with
its domain errors shown as admin messages, read-only inlines, and rendering a back-office page
inside the admin's chrome."""

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.utils.html import format_html

from backoffice.paginators import EstimatedCountPaginator
from credits.actors import Actor
from credits.exceptions import DomainError
from credits.money import fmt

STATUS_COLOURS = {
    # grants
    "pending": "#b26b00",
    "active": "#1f7a3a",
    "reserved": "#2a5db0",
    "applied": "#555",
    "expired": "#8a8a8a",
    "voided": "#b3261e",
    # invoices
    "draft": "#6b4fa0",
    "paid": "#1f7a3a",
    "overdue": "#b3261e",
    "void": "#8a8a8a",
}


def money(amount: Decimal | None, currency: str, *, signed: bool = False) -> str:
    """An amount at its currency's precision, right-aligned; negatives in red."""
    if amount is None:
        return "—"
    css = "bo-money bo-neg" if amount < 0 else "bo-money"
    text = fmt(abs(amount), currency)
    if amount < 0:
        text = "\u2212" + text
    elif signed and amount > 0:
        text = "+" + text
    return format_html('<span class="{}">{}</span>', css, text)


def money_column(field: str, description: str):
    """A read-only admin column showing a money field of a row that has a `currency`."""

    @admin.display(description=description)
    def column(self, obj) -> str:
        return money(getattr(obj, field), obj.currency)

    return column


def badge(status: str) -> str:
    return format_html(
        '<span class="bo-badge" style="background:{}">{}</span>',
        STATUS_COLOURS.get(status, "#555"),
        status,
    )


def actor_for(request) -> Actor:
    return Actor.for_user(request.user)


def require_perm(request, perm: str) -> None:
    if not request.user.has_perm(perm):
        raise PermissionDenied(f"You need the permission {perm!r} for this.")


def run_service(model_admin: admin.ModelAdmin, request, fn: Callable[..., Any], /, **kwargs):
    """Call one service; a domain error becomes an error message. Returns (ok, result)."""
    try:
        return True, fn(**kwargs)
    except DomainError as exc:
        model_admin.message_user(request, exc.message, messages.ERROR)
        return False, exc


def apply_domain_error(form, exc: DomainError, field_map: dict[str, str]) -> None:
    """Show a service's validation error on the form field it names (else on the form)."""
    field = field_map.get(str(exc.details.get("field", "")))
    form.add_error(field if field in form.fields else None, exc.message)


def render_page(model_admin, request, template: str, context: dict, *, title: str, obj=None):
    """A back-office page in the admin's chrome (header, breadcrumbs, sidebar)."""
    opts = model_admin.model._meta
    ctx = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "app_label": opts.app_label,
        "title": title,
        "original": obj,
        "has_view_permission": model_admin.has_view_permission(request, obj),
        **context,
    }
    return TemplateResponse(request, template, ctx)


class FastChangelistMixin:
    """Changelist settings for tables of millions of rows: no exact counts, no facets."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50


class ReadOnlyMixin:
    """A ModelAdmin whose rows nobody adds, changes or deletes, superusers included (written by
    services, triggers or jobs only)."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    """History rows shown on a parent's page: never added, changed or deleted from there."""

    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
