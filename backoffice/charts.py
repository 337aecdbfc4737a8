"""Server-rendered SVG charts for the dashboard: no JavaScript and no CDN, so the back office
works offline and a chart is readable in a screenshot or a printout.

Amounts arrive as Decimal from the selectors; only pixel positions are derived from them
(integer arithmetic on Decimal ratios), and every bar carries a <title> with its exact amount.
"""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from credits.money import fmt

ISSUED = "#4c78a8"
USED = "#2f9e44"
EXPIRED = "#e8590c"
TRACK = "#e9ecef"
AXIS = "#868e96"
TEXT = "#343a40"
FONT = "font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif"


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    values: list[Decimal]


def _px(value: Decimal, top: Decimal, span: int) -> int:
    if top <= 0 or value <= 0:
        return 0
    return int((Decimal(span) * value / top).to_integral_value(ROUND_HALF_UP))


def _nice_top(value: Decimal) -> Decimal:
    """The axis maximum: the next 1, 2, 2.5 or 5 x 10^n above the largest value."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    for step in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        top = step.scaleb(exponent)
        if top >= value:
            return top
    return Decimal(10).scaleb(exponent)


def compact(amount: Decimal, currency: str) -> str:
    """Axis labels: $12.5k, ¥3M."""
    symbol = fmt(Decimal(0), currency).rstrip("0.,")
    for divisor, suffix in ((Decimal(10) ** 9, "B"), (Decimal(10) ** 6, "M"), (Decimal(1000), "k")):
        if abs(amount) >= divisor:
            short = (amount / divisor).quantize(Decimal("0.1")).normalize()
            return f"{symbol}{short:f}{suffix}"
    return f"{symbol}{amount.quantize(Decimal(1)):f}"


def grouped_bars(
    labels: list[str], series: list[Series], currency: str, *, width: int = 1000, height: int = 280
) -> SafeString:
    """Vertical grouped bars, one group per label (e.g. months), with a y axis and legend."""
    left, right, top_pad, bottom = 64, 12, 28, 36
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    peak = max((v for s in series for v in s.values), default=Decimal(0))
    top = _nice_top(peak)
    parts = [_svg_open(width, height, "Issued, used and expired per month")]
    for i in range(5):
        value = top * i / 4
        y = top_pad + plot_h - _px(value, top, plot_h)
        parts.append(
            f'<line x1="{left}" y1="{y}" x2="{width - right}" y2="{y}" stroke="{TRACK}"/>'
            f'<text x="{left - 6}" y="{y + 4}" text-anchor="end" font-size="11" '
            f'fill="{AXIS}">{escape(compact(value, currency))}</text>'
        )
    groups = max(len(labels), 1)
    group_w = plot_w / groups
    bar_w = max(2, int(group_w * 0.8 / max(len(series), 1)))
    for g, label in enumerate(labels):
        x0 = left + int(g * group_w + group_w * 0.1)
        for k, s in enumerate(series):
            value = s.values[g]
            h = _px(value, top, plot_h)
            x = x0 + k * bar_w
            y = top_pad + plot_h - h
            parts.append(
                f'<rect x="{x}" y="{y}" width="{max(bar_w - 1, 1)}" height="{h}" '
                f'fill="{s.colour}"><title>{escape(label)} · {escape(s.name)}: '
                f"{escape(fmt(value, currency))}</title></rect>"
            )
        if groups <= 13 or g % 2 == 0:
            parts.append(
                f'<text x="{x0 + bar_w * len(series) / 2:.0f}" y="{height - bottom + 16}" '
                f'text-anchor="middle" font-size="11" fill="{TEXT}">{escape(label)}</text>'
            )
    parts.append(_legend(series, left, 16))
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped above


def progress_bars(
    rows: list[tuple[str, Decimal, Decimal]],
    currency: str,
    *,
    title: str,
    width: int = 520,
    first: str = "issued",
    second: str = "used",
) -> SafeString:
    """Horizontal bars: per label, `first` as the track and `second` drawn over it, with the
    exact figures and the share printed at the end of the row."""
    row_h, label_w, value_w = 26, 150, 170
    height = 24 + row_h * max(len(rows), 1)
    bar_w = width - label_w - value_w
    peak = max((a for _, a, _ in rows), default=Decimal(0))
    parts = [_svg_open(width, height, title)]
    parts.append(
        _legend([Series(first, ISSUED, []), Series(second, USED, [])], label_w, 14, opacity=True)
    )
    for i, (label, whole, part) in enumerate(rows):
        y = 24 + i * row_h
        w_whole = _px(whole, peak, bar_w)
        w_part = _px(min(part, whole) if whole else part, peak, bar_w)
        share = _share(part, whole)
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" font-size="12" '
            f'fill="{TEXT}">{escape(_clip(label, 22))}<title>{escape(label)}</title></text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{bar_w}" height="14" fill="{TRACK}"/>'
            f'<rect x="{label_w}" y="{y + 4}" width="{w_whole}" height="14" fill="{ISSUED}" '
            f'opacity="0.35"><title>{escape(label)} · {first}: {escape(fmt(whole, currency))}'
            f"</title></rect>"
            f'<rect x="{label_w}" y="{y + 4}" width="{w_part}" height="14" fill="{USED}">'
            f"<title>{escape(label)} · {second}: {escape(fmt(part, currency))}</title></rect>"
            f'<text x="{label_w + bar_w + 8}" y="{y + 15}" font-size="11" fill="{TEXT}">'
            f"{escape(compact(part, currency))} / {escape(compact(whole, currency))}"
            f" · {share}</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped above


def donut(rate: Decimal, *, label: str = "utilization", size: int = 150) -> SafeString:
    """A ring filled to `rate` percent."""
    radius = Decimal(size) / 2 - 12
    circumference = Decimal("6.283185307") * radius
    filled = (circumference * max(min(rate, Decimal(100)), Decimal(0)) / 100).quantize(
        Decimal("0.1")
    )
    rest = (circumference - filled).quantize(Decimal("0.1"))
    c = size // 2
    return mark_safe(  # noqa: S308 - only numbers and an escaped label are interpolated
        f'<svg class="bo-chart" viewBox="0 0 {size} {size}" width="{size}" height="{size}" '
        f'role="img" aria-label="{escape(label)} {rate}%" style="{FONT}">'
        f'<circle cx="{c}" cy="{c}" r="{radius}" fill="none" stroke="{TRACK}" stroke-width="16"/>'
        f'<circle cx="{c}" cy="{c}" r="{radius}" fill="none" stroke="{USED}" stroke-width="16" '
        f'stroke-dasharray="{filled} {rest}" transform="rotate(-90 {c} {c})"/>'
        f'<text x="{c}" y="{c + 2}" text-anchor="middle" font-size="24" font-weight="600" '
        f'fill="{TEXT}">{rate}%</text>'
        f'<text x="{c}" y="{c + 22}" text-anchor="middle" font-size="11" fill="{AXIS}">'
        f"{escape(label)}</text></svg>"
    )


def _share(part: Decimal, whole: Decimal) -> str:
    if not whole:
        return "—"
    return f"{(Decimal(100) * part / whole).quantize(Decimal('0.1'))}%"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _svg_open(width: int, height: int, title: str) -> str:
    return (
        f'<svg class="bo-chart" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet" role="img" aria-label="{escape(title)}" '
        f'style="max-width:{width}px;{FONT}">'
    )


def _legend(series: list[Series], x: int, y: int, *, opacity: bool = False) -> str:
    out = []
    for s in series:
        alpha = ' opacity="0.35"' if opacity and s.colour == ISSUED else ""
        out.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{s.colour}"{alpha}/>'
            f'<text x="{x + 14}" y="{y}" font-size="11" fill="{TEXT}">{escape(s.name)}</text>'
        )
        x += 22 + 7 * len(s.name)
    return "".join(out)
