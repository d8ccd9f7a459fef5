"""Display helpers for the pages: money and percentages, risk badges, an inline SVG sparkline."""

from __future__ import annotations

from decimal import Decimal

from django import template
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from crm.selectors.pages import risk_level

register = template.Library()


@register.filter
def money(value, decimals: int = 0):
    """1234567.8 -> "1,234,568"; empty for None."""
    if value is None or value == "":
        return "–"
    try:
        number = float(value) if not isinstance(value, Decimal) else value
        return f"{number:,.{int(decimals)}f}"
    except (TypeError, ValueError):
        return value


@register.filter
def pct(value, decimals: int = 0):
    """0.734 -> "73%"."""
    if value is None or value == "":
        return "–"
    try:
        return f"{float(value) * 100:.{int(decimals)}f}%"
    except (TypeError, ValueError):
        return value


@register.filter
def num(value, decimals: int = 1):
    if value is None or value == "":
        return "–"
    try:
        return f"{float(value):,.{int(decimals)}f}"
    except (TypeError, ValueError):
        return value


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
    summary = f"{label}: from {values[0]:,.0f} to {values[-1]:,.0f} over {len(values)} runs"
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
