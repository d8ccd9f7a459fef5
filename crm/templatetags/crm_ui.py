"""Display helpers for the pages: money and percentages, risk badges, an inline SVG sparkline."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from django import template
from django.conf import settings
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from crm.selectors.pages import risk_level

register = template.Library()


CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "CHF": "CHF ", "SEK": "SEK ", "NOK": "NOK ",
                    "DKK": "DKK ", "PLN": "PLN ", "CAD": "CA$", "AUD": "A$", "INR": "₹"}
MINUS = "−"  # a real minus sign, so a negative figure never reads as a hyphen


def _number(value) -> Decimal | float | None:
    if value is None or value == "":
        return None
    if isinstance(value, Decimal):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def currency_symbol() -> str:
    code = getattr(settings, "CRM_CURRENCY", "EUR")
    return CURRENCY_SYMBOLS.get(code, f"{code} ")


def format_money(value, decimals: int = 0, *, signed: bool = False) -> str:
    """1234567.8 -> "€1,234,568" in the configured currency (CRM_CURRENCY); "–" for nothing."""
    number = _number(value)
    if number is None:
        return "–"
    rounded = round(number, int(decimals))
    sign = MINUS if rounded < 0 else ("+" if signed and rounded > 0 else "")
    return f"{sign}{currency_symbol()}{abs(rounded):,.{int(decimals)}f}"


def format_number(value, decimals: int = 0) -> str:
    number = _number(value)
    if number is None:
        return "–"
    text = f"{abs(round(number, int(decimals))):,.{int(decimals)}f}"
    return (MINUS + text) if round(number, int(decimals)) < 0 else text


def format_percent(value, decimals: int = 0) -> str:
    """A share 0..1 as a percentage: 0.734 -> "73%"."""
    number = _number(value)
    if number is None:
        return "–"
    return format_number(float(number) * 100, decimals) + "%"


@register.filter
def money(value, decimals: int = 0):
    """An amount in the configured currency with thousands separators: "€1,234,568"."""
    return format_money(value, decimals)


@register.filter
def signed_money(value, decimals: int = 0):
    """A change in money with its sign: "+€120", "−€80"."""
    return format_money(value, decimals, signed=True)


@register.filter
def number(value, decimals: int = 0):
    """A count or quantity with thousands separators: 12345 -> "12,345"."""
    return format_number(value, decimals)


@register.filter
def num(value, decimals: int = 1):
    return format_number(value, decimals)


@register.filter
def percent(value, decimals: int = 0):
    """A share 0..1 as a percentage: 0.734 -> "73%"."""
    return format_percent(value, decimals)


@register.filter
def pct(value, decimals: int = 0):
    return format_percent(value, decimals)


@register.filter
def signed_percent(value, decimals: int = 0):
    """A relative change 0.12 -> "+12%", -0.05 -> "−5%"."""
    number = _number(value)
    if number is None:
        return "–"
    text = format_percent(value, decimals)
    return ("+" + text) if round(float(number) * 100, int(decimals)) > 0 else text


@register.filter
def day(value):
    """A date (or datetime, in the local time zone) in the one date format of the pages (CRM_DATE_FORMAT)."""
    if value in (None, ""):
        return "–"
    if isinstance(value, datetime):
        value = timezone.localtime(value) if timezone.is_aware(value) else value
    return date_format(value, getattr(settings, "CRM_DATE_FORMAT", "j M Y"))


@register.filter
def cell(value, kind: str = ""):
    """One table cell of an analytics answer, formatted by its column kind (money, percent, number, date...)."""
    if value is None or value == "":
        return "–"
    if kind == "money":
        return format_money(value)
    if kind == "percent":
        return format_percent(value)
    if kind == "percent1":
        return format_percent(value, 1)
    if kind == "ratio":
        return format_number(value, 2) + "×"
    if kind == "days":
        return format_number(value, 0) + " days"
    if kind == "number1":
        return format_number(value, 1)
    if kind == "date":
        return day(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float | Decimal):
        return format_number(value, 0 if isinstance(value, int) or value == int(value) else 1)
    if isinstance(value, date | datetime):
        return day(value)
    return value


@register.simple_tag
def hint(key: str):
    """A "what is this?" hint beside a figure: its one definition (crm.figures), keyboard and screen-reader friendly."""
    from crm.figures import figure

    label, text = figure(key)
    return format_html(
        '<details class="hint"><summary title="What is {}?"><span aria-hidden="true">?</span>'
        '<span class="visually-hidden">What is {}?</span></summary><span class="hint-text">{}</span></details>',
        label.lower(), label.lower(), text,
    )


@register.simple_tag
def figure_label(key: str):
    from crm.figures import figure

    return figure(key)[0]


@register.simple_tag
def currency_code():
    return getattr(settings, "CRM_CURRENCY", "EUR")


RISK_BADGES = {
    "high": ("High risk", "bad"),
    "watch": ("Watch", "warn"),
    "low": ("Low risk", "good"),
    "unscored": ("No CLV yet", ""),
}


@register.simple_tag
def risk_badge(p_alive):
    label, tone = RISK_BADGES[risk_level(p_alive)]
    return format_html('<span class="badge {}">{}</span>', tone, label)


@register.simple_tag
def stage_badge(customer):
    tone = {"lost": "bad", "advocate": "good", "retained": "good", "prospect": "info"}.get(customer.lifecycle_stage, "")
    return format_html('<span class="badge {}">{}</span>', tone, customer.get_lifecycle_stage_display())


@register.simple_tag
def sparkline(points, width: int = 300, height: int = 48, label: str = "Trend"):
    """An inline SVG polyline of `points` (numbers, oldest first), with a text alternative."""
    values = [float(p) for p in points if p is not None]
    if len(values) < 2:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    pad = 4
    step = (width - 2 * pad) / (len(values) - 1)
    coords = [
        (pad + i * step, height - pad - (v - lo) / span * (height - 2 * pad)) for i, v in enumerate(values)
    ]
    poly = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    last_x, last_y = coords[-1]
    summary = f"{label}: from {format_money(values[0])} to {format_money(values[-1])} over {len(values)} runs"
    return mark_safe(  # noqa: S308 - built only from numbers formatted above and an escaped label
        f'<svg class="sparkline" viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" '
        f'aria-label="{format_html("{}", summary)}"><polyline points="{poly}"/>'
        f'<circle cx="{last_x:.1f}" cy="{last_y:.1f}" r="3"/></svg>'
    )


@register.filter
def utilisation_tone(share):
    if share is None:
        return ""
    return "bad" if share >= 0.9 else "warn" if share >= 0.75 else ""


@register.filter
def width_pct(share):
    """A 0..1 share as a CSS width, capped at 100%."""
    if share is None:
        return "0%"
    return f"{min(float(share), 1.0) * 100:.0f}%"


@register.simple_tag
def clv_horizon():
    """What the stored CLV covers, in words ("next 12 months" or "whole remaining relationship")."""
    from crm.selectors.values import clv_horizon_label

    return clv_horizon_label()
