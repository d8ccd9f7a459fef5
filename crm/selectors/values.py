"""Access to the CLV run's stored values, written against the clv app's contract.

The clv tables (ClvRun, CustomerValue, PortfolioSnapshot) come from the nightly run. Pages
read them through these helpers so that a CRM with no run yet (or, while the clv app is
still being built, no tables yet) shows a "no CLV run yet" state instead of failing.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db.models import F, FilteredRelation, Q, QuerySet


def clv_model(name: str):
    """The clv model called `name`, or None when the clv app does not define it (yet)."""
    try:
        return apps.get_model("clv", name)
    except LookupError:
        return None


def clv_ready() -> bool:
    return clv_model("ClvRun") is not None and clv_model("CustomerValue") is not None


def current_run():
    """The run whose values are current, or None."""
    if not clv_ready():
        return None
    try:
        from clv.selectors import current_run as clv_current_run
    except ImportError:  # the clv selectors module has not landed: read the table directly
        return clv_model("ClvRun").objects.filter(is_current=True).first()
    return clv_current_run()


def previous_run(run):
    """The succeeded run before `run` (for "falling" probabilities), or None."""
    if run is None:
        return None
    ClvRun = clv_model("ClvRun")
    return (
        ClvRun.objects.filter(status="succeeded", as_of__lt=run.as_of)
        .exclude(pk=run.pk)
        .order_by("-as_of", "-pk")
        .first()
    )


def values_relation() -> str:
    """The lookup name from Customer to its CustomerValue rows (whatever related_name clv chose)."""
    return clv_model("CustomerValue")._meta.get_field("customer").related_query_name()


# The one place that says which stored field a page's "CLV" is. Every page, export, chart and
# the opportunity engine read CLV through clv_field(), so when the CLV engine renames or
# redefines its fields the switch is made here alone.
CLV_FIELD = "clv"
# The next-12-months value stored beside the lifetime CLV, under whichever of these names the
# CLV engine gives it (none yet: then the stored CLV itself covers the configured horizon).
NEXT_12M_FIELDS = ("horizon_value", "value_12m", "clv_12m", "next_12m_value", "next_12m")

VALUE_FIELDS = ("clv", "p_alive", "expected_purchases", "historical_value", "classic_value", "expected_avg_value")


def clv_field() -> str:
    """The CustomerValue field read wherever a page says "CLV"."""
    return CLV_FIELD


def next_12m_field() -> str | None:
    """The CustomerValue field holding the next-12-months value, or None while the engine stores none."""
    model = clv_model("CustomerValue")
    if model is None:
        return None
    names = {f.name for f in model._meta.get_fields()}
    return next((n for n in NEXT_12M_FIELDS if n in names), None)


def clv_is_lifetime() -> bool:
    """True once the stored CLV covers the whole remaining relationship (a 12-month value is stored beside it)."""
    return next_12m_field() is not None


def clv_horizon_label() -> str:
    """What the stored CLV covers, in words: "whole relationship" or "next 12 months"."""
    from django.conf import settings

    if clv_is_lifetime():
        return "whole remaining relationship"
    months = getattr(settings, "CLV_HORIZON_MONTHS", 12)
    return f"next {months} months"


def stored_field(name: str) -> str:
    """The CustomerValue column behind a logical value name ("clv" -> clv_field(), "value_12m" -> ...)."""
    if name == "clv":
        return clv_field()
    if name == "value_12m":
        return next_12m_field() or clv_field()
    return name


def run_cache_key(*runs) -> str:
    """A part of a cache key naming these CLV runs: their ids and start times (ids alone may come
    back after a restore), for what is computed once per run and kept."""
    return ":".join(f"{run.pk}.{run.started_at:%s%f}" for run in runs)


def annotate_run_values(qs: QuerySet, run, *, prefix: str = "", fields=VALUE_FIELDS) -> QuerySet:
    """Annotate customers with their values in `run` through one LEFT JOIN (no per-row subquery)."""
    if run is None:
        return qs
    rel = values_relation()
    alias = f"{prefix}cv"
    qs = qs.annotate(**{alias: FilteredRelation(rel, condition=Q(**{f"{rel}__run_id": run.pk}))})
    return qs.annotate(**{f"{prefix}{name}": F(f"{alias}__{stored_field(name)}") for name in fields})


def current_values() -> QuerySet | None:
    """CustomerValue rows of the current run, or None without a run."""
    run = current_run()
    if run is None:
        return None
    return clv_model("CustomerValue").objects.filter(run=run)


def customer_value_history(customer) -> list[Any]:
    """The customer's values across succeeded runs, oldest first."""
    if not clv_ready():
        return []
    try:
        from clv.selectors import customer_value_history as history
    except ImportError:
        history = None
    if history is not None:
        return list(history(customer))
    CustomerValue = clv_model("CustomerValue")
    return list(
        CustomerValue.objects.filter(customer=customer, run__status="succeeded")
        .select_related("run")
        .order_by("run__as_of", "run_id")
    )


def portfolio_trend(owner_ids) -> list[dict]:
    """Total CLV per succeeded run for the given owners (None: the whole book), oldest first."""
    PortfolioSnapshot = clv_model("PortfolioSnapshot")
    if PortfolioSnapshot is None:
        return []
    try:
        from clv.selectors import portfolio_trend as clv_portfolio_trend
    except ImportError:
        clv_portfolio_trend = None
    if clv_portfolio_trend is not None:
        return [_trend_point(p) for p in clv_portfolio_trend(owner_ids)]
    from django.db.models import Sum

    qs = PortfolioSnapshot.objects.filter(run__status="succeeded")
    qs = qs.filter(owner__isnull=False) if owner_ids is None else qs.filter(owner_id__in=owner_ids)
    return [
        _trend_point(row)
        for row in qs.values("run_id", "run__as_of")
        .annotate(total_clv=Sum("total_clv"), total_historical=Sum("total_historical"), customers=Sum("customers"))
        .order_by("run__as_of", "run_id")
    ]


def _trend_point(point) -> dict:
    """One trend point as a dict with as_of, total_clv (and whatever else was given)."""
    if isinstance(point, dict):
        out = dict(point)
        if "as_of" not in out and "run__as_of" in out:
            out["as_of"] = out["run__as_of"]
        return out
    return {
        "as_of": getattr(point, "as_of", None) or getattr(getattr(point, "run", None), "as_of", None),
        "total_clv": getattr(point, "total_clv", None),
    }
