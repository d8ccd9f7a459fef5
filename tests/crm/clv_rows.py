"""Builders for stored CLV rows (a run, customer values, portfolio snapshots) in page tests.

Written against the clv app's contract; tests that need them skip while the clv tables are
not installed.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.db.models import Count, Q, Sum
from django.utils import timezone

from crm.selectors.pages import RISK_P_ALIVE
from crm.selectors.values import clv_model


def require_clv():
    if clv_model("ClvRun") is None or clv_model("CustomerValue") is None or clv_model("PortfolioSnapshot") is None:
        pytest.skip("the clv tables (ClvRun, CustomerValue, PortfolioSnapshot) are not installed yet")


def make_run(*, as_of: date, current: bool = True, status: str = "succeeded", **extra):
    ClvRun = clv_model("ClvRun")
    if current:
        ClvRun.objects.filter(is_current=True).update(is_current=False)
    started = timezone.now() - timedelta(minutes=5)
    fields = {
        "status": status, "is_current": current, "as_of": as_of, "started_at": started,
        "finished_at": started + timedelta(seconds=42) if status != "running" else None,
        "model": "bgnbd", "params": {"r": 0.24, "alpha": 4.4, "a": 0.79, "b": 2.43},
        "diagnostics": {"holdout": {"predicted": 120.5, "actual": 118.0, "mape": 0.021}},
        "timings": {"summary": 1.25, "fit": 3.5, "score": 2.0, "write": 0.8}, "counts": {"customers": 3},
    }
    fields.update(extra)
    concrete = {f.name for f in ClvRun._meta.get_fields()}
    return ClvRun.objects.create(**{k: v for k, v in fields.items() if k in concrete})


def set_value(run, customer, *, clv, p_alive, historical=None, classic=None, expected_purchases=1.5):
    CustomerValue = clv_model("CustomerValue")
    return CustomerValue.objects.create(
        run=run, customer=customer, clv=Decimal(str(clv)), p_alive=p_alive, expected_purchases=expected_purchases,
        expected_avg_value=Decimal("100.00"), historical_value=Decimal(str(historical if historical is not None else clv)),
        classic_value=Decimal(str(classic if classic is not None else clv)), frequency=3, recency=100.0, T=400.0,
    )


def snapshot(run):
    """Per-owner portfolio rows for `run`, computed from its values the way the nightly run stores them."""
    CustomerValue = clv_model("CustomerValue")
    PortfolioSnapshot = clv_model("PortfolioSnapshot")
    rows = (
        CustomerValue.objects.filter(run=run)
        .values("customer__owner_id")
        .annotate(
            customers=Count("pk"), total_clv=Sum("clv"), total_historical=Sum("historical_value"),
            at_risk_customers=Count("pk", filter=Q(p_alive__lt=RISK_P_ALIVE)),
            value_at_risk=Sum("clv", filter=Q(p_alive__lt=RISK_P_ALIVE)),
        )
    )
    for r in rows:
        PortfolioSnapshot.objects.create(
            run=run, owner_id=r["customer__owner_id"], customers=r["customers"], total_clv=r["total_clv"],
            total_historical=r["total_historical"], at_risk_customers=r["at_risk_customers"],
            value_at_risk=r["value_at_risk"] or 0,
        )
