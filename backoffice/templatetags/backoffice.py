"""Template filters of the back office: money at its currency's precision, status badges."""

from django import template

from backoffice.admin_base import badge as _badge
from backoffice.admin_base import money as _money

register = template.Library()


@register.filter
def money(amount, currency):
    return _money(amount, currency)


@register.filter
def signed_money(amount, currency):
    return _money(amount, currency, signed=True)


@register.filter
def badge(status):
    return _badge(status)
