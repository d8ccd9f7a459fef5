"""Reads of contract values: holding values of a run, and the renewals at risk, with their reasons.

A renewal at risk is an active subscription holding of a visible customer whose next renewal
falls in the next RENEWAL_WINDOW_DAYS days, valued by the current CLV run. They are ranked by
value at stake: (1 - probability of renewing) x residual value, the part of the contract's
future margin that the coming renewal decides.
"""

from __future__ import annotations

from datetime import date, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from clv.models import ClvRun, HoldingValue
from crm.models import Customer, Holding, Usage

RENEWAL_WINDOW_DAYS = 90
LIST_LIMIT = 8  # rows on My day and the dashboard
LOW_USE = 0.5  # latest usage below half the capacity held is named in the reason
MODEL_NAMES = {"sbg": "shifted-beta-geometric", "bdw": "beta-discrete-Weibull"}
OPEN_STATUSES = (Holding.Status.ACTIVE, Holding.Status.SUSPENDED)


def holding_values(user, *, run: ClvRun | int | None = None) -> QuerySet[HoldingValue]:
    """Holding values of the current run (or the given run) for customers `user` may see."""
    qs = HoldingValue.objects.filter(customer__in=Customer.objects.visible_to(user).values("pk"))
    qs = qs.filter(run__is_current=True) if run is None else qs.filter(run=run)
    return qs.select_related("run", "customer", "holding__product")


def renewals_at_risk(
    user, *, owner_ids: list[int] | None = None, days: int = RENEWAL_WINDOW_DAYS, today: date | None = None
) -> QuerySet[HoldingValue]:
    """Visible contracts renewing in the next `days` days, most value at stake first.

    owner_ids narrows to the customers of those owners (a dashboard's team or salesperson filter).
    Holdings cancelled or expired since the run are left out.
    """
    today = today or timezone.localdate()
    visible = Customer.objects.visible_to(user)
    if owner_ids is not None:
        visible = visible.filter(owner_id__in=owner_ids)
    return (
        HoldingValue.objects.filter(
            run__is_current=True, customer__in=visible.values("pk"), next_renewal__gte=today,
            next_renewal__lte=today + timedelta(days=days), holding__status__in=OPEN_STATUSES, value_at_stake__gt=0,
        )
        .select_related("run", "customer__owner", "holding__product")
        .order_by("-value_at_stake", "-id")
    )


def with_reasons(values: list[HoldingValue], *, today: date | None = None) -> list[HoldingValue]:
    """Set `.reason` on each value: why its renewal is at risk, in words a salesperson can say aloud.

    One query for the latest usage of the listed holdings.
    """
    today = today or timezone.localdate()
    latest: dict[int, Usage] = {}
    for usage in (Usage.objects.filter(holding_id__in=[v.holding_id for v in values], capacity__gt=0)
                  .order_by("holding_id", "-period_end", "-id")):
        latest.setdefault(usage.holding_id, usage)
    for value in values:
        value.reason = renewal_reason(value, today=today, usage=latest.get(value.holding_id))
    return values


def renewal_reason(value: HoldingValue, *, today: date, usage: Usage | None = None) -> str:
    from crm.templatetags.crm_ui import money  # display formatting lives with the pages

    product = value.holding.product
    period = product.renewal_period  # "month", "quarter" or "year"
    days = (value.next_renewal - today).days
    when = "today" if days == 0 else f"in {days} day{'s' if days != 1 else ''}"
    words = [
        f"Renews {when} ({value.next_renewal:%d %b %Y}).",
        f"{_share(1 - value.p_renew)} of {value.segment} contracts in their {_ordinal(value.periods)} {period} "
        f"do not renew ({MODEL_NAMES.get(value.model, value.model)} fit on past renewals).",
        f"It is worth {money(value.residual_value)} over its expected remaining life "
        f"({money(value.period_value)} margin a {period}).",
    ]
    if usage is not None and usage.capacity and float(usage.used) / float(usage.capacity) < LOW_USE:
        words.append(f"It used only {float(usage.used) / float(usage.capacity):.0%} of its capacity in the period "
                     f"to {usage.period_end:%d %b}.")
    if value.holding.status == Holding.Status.SUSPENDED:
        words.append("The holding is suspended.")
    return " ".join(words)


def _share(p: float) -> str:
    """0.23 -> "23%"; below 1% -> "Under 1%"."""
    return "Under 1%" if p < 0.005 else f"{p:.0%}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def renewals_card(user, *, owner_ids: list[int] | None) -> dict:
    """Context for the renewals-at-risk card (crm/partials/renewals_at_risk.html): the top rows with reasons."""
    rows = list(renewals_at_risk(user, owner_ids=owner_ids)[:LIST_LIMIT])
    return {"renewals_at_risk": with_reasons(rows), "renewal_window_days": RENEWAL_WINDOW_DAYS}


def attach_contract_values(holdings: list[Holding]) -> list[Holding]:
    """Set `.contract` on each holding: its HoldingValue in the current run, or None (one query)."""
    by_holding = {
        v.holding_id: v
        for v in HoldingValue.objects.filter(run__is_current=True, holding_id__in=[h.pk for h in holdings])
    }
    for holding in holdings:
        holding.contract = by_holding.get(holding.pk)
    return holdings
