"""Reads of CLV results: the current run, its values, a customer's history, portfolio trends."""

from __future__ import annotations

from django.db.models import QuerySet, Sum

from clv.models import ClvRun, CustomerValue, PortfolioSnapshot


def current_run() -> ClvRun | None:
    return ClvRun.objects.filter(is_current=True).first()


def current_values() -> QuerySet[CustomerValue]:
    """Values of the current run (empty before the first successful run)."""
    return CustomerValue.objects.filter(run__is_current=True)


def customer_value_history(customer) -> QuerySet[CustomerValue]:
    """The customer's values across succeeded runs, oldest first."""
    return (
        CustomerValue.objects.filter(customer=customer, run__status=ClvRun.Status.SUCCEEDED)
        .select_related("run")
        .order_by("run__as_of", "run_id")
    )


def portfolio_trend(owner_ids) -> list[dict]:
    """Total CLV per succeeded run for the given owners (None: every owner), oldest first."""
    qs = PortfolioSnapshot.objects.filter(run__status=ClvRun.Status.SUCCEEDED)
    qs = qs.filter(owner__isnull=False) if owner_ids is None else qs.filter(owner_id__in=owner_ids)
    return list(
        qs.values("run_id", "run__as_of")
        .annotate(total_clv=Sum("total_clv"), total_historical=Sum("total_historical"), customers=Sum("customers"))
        .order_by("run__as_of", "run_id")
    )
