"""Money: currencies, their precision, parsing and conversion to minor units.

Every amount in the product is a Decimal quantized to its currency's minor unit. The allocation
engine works in integer minor units; these functions are the only bridge between the two.
"""

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from credits.exceptions import ValidationFailed

MINOR_UNITS = {"USD": 2, "EUR": 2, "GBP": 2, "JPY": 0, "CAD": 2, "AUD": 2}
CURRENCIES = tuple(MINOR_UNITS)
CURRENCY_CHOICES = [(c, c) for c in CURRENCIES]
CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CAD": "CA$", "AUD": "A$"}
# Column size for every money field: 18 digits, 2 decimals (JPY uses none of them).
MAX_DIGITS = 18
DECIMAL_PLACES = 2
MAX_AMOUNT = Decimal("9999999999999999.99")


def check_currency(currency: str) -> str:
    if currency not in MINOR_UNITS:
        raise ValidationFailed(
            f"Unknown currency {currency!r}; expected one of {', '.join(CURRENCIES)}.",
            field="currency",
        )
    return currency


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-MINOR_UNITS[check_currency(currency)])


def parse_amount(
    value: object, currency: str, *, field: str = "amount", allow_zero: bool = False
) -> Decimal:
    """Parse a user-supplied amount exactly, refusing what would need rounding.

    Accepts Decimal, int or str (JSON numbers reach here as text parsed into Decimal). A float is
    refused: it cannot carry an exact amount.
    """
    if isinstance(value, bool | float) or value is None:
        raise ValidationFailed(f"{field} must be a decimal number.", field=field)
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValidationFailed(
            f"{field} must be a decimal number, got {value!r}.", field=field
        ) from None
    if not amount.is_finite():
        raise ValidationFailed(f"{field} must be a finite number.", field=field)
    places = MINOR_UNITS[check_currency(currency)]
    if amount != amount.quantize(quantum(currency), rounding=ROUND_HALF_EVEN):
        unit = "no decimals" if places == 0 else f"at most {places} decimals"
        raise ValidationFailed(
            f"{field} {amount} has more precision than {currency} allows ({unit}).", field=field
        )
    if amount < 0 or (amount == 0 and not allow_zero):
        raise ValidationFailed(
            f"{field} must be {'zero or more' if allow_zero else 'greater than zero'}.",
            field=field,
        )
    if amount > MAX_AMOUNT:
        raise ValidationFailed(f"{field} is too large (max {MAX_AMOUNT}).", field=field)
    return amount.quantize(quantum(currency))


def to_minor(amount: Decimal, currency: str) -> int:
    """Exact conversion to integer minor units; an amount finer than the currency is a bug."""
    scaled = amount.scaleb(MINOR_UNITS[currency])
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} is not a whole number of {currency} minor units")
    return int(scaled)


def from_minor(units: int, currency: str) -> Decimal:
    return Decimal(units).scaleb(-MINOR_UNITS[currency]).quantize(quantum(currency))


def q(amount: Decimal, currency: str) -> Decimal:
    """Render an amount at its currency's precision (DB columns keep 2 places even for JPY)."""
    return amount.quantize(quantum(currency))


def fmt(amount: Decimal, currency: str) -> str:
    """Human form for messages: $1,234.50, ¥1,200."""
    symbol = CURRENCY_SYMBOLS.get(currency, "")
    return f"{symbol}{q(amount, currency):,}" + ("" if symbol else f" {currency}")
