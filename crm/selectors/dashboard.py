"""Manager reads: the dashboard's aggregates and the CLV run history.

Portfolio totals, value by salesperson and the trend come from the PortfolioSnapshot rows
the nightly run stored; the histogram and the at-risk list read the current run's
CustomerValue rows (one aggregate, one sliced query). Nothing here scans purchases.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Q, QuerySet, Sum

from accounts.models import Team, User
from crm.models import Opportunity
from crm.selectors.pages import RISK_P_ALIVE
from crm.selectors.values import clv_model, current_run, portfolio_trend

AT_RISK_LIMIT = 25
RUN_HISTORY_LIMIT = 50
# Histogram bin edges for CLV (currency units); the last bin is open-ended.
CLV_BIN_EDGES = [0, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000]


@dataclass
class Scope:
    """Whose portfolio a dashboard shows: owner ids (None: the whole book, admins only)."""

    owner_ids: list[int] | None
    teams: QuerySet
    people: QuerySet
    team: Team | None = None
    salesperson: User | None = None


def dashboard_scope(user, *, team_id: int | None = None, salesperson_id: int | None = None) -> Scope:
    """The teams and salespeople `user` may filter by, and the owners the chosen filter means."""
    if user.sees_everything:
        teams = Team.objects.all()
        people = User.objects.filter(role__in=[User.Role.SALESPERSON, User.Role.MANAGER])
    else:
        teams = Team.objects.filter(manager=user)
        people = User.objects.filter(Q(team__manager=user) | Q(pk=user.pk))
    people = people.select_related("team").order_by("first_name", "last_name", "username")
    team = teams.filter(pk=team_id).first() if team_id else None
    salesperson = people.filter(pk=salesperson_id).first() if salesperson_id else None
    if salesperson is not None:
        owner_ids = [salesperson.pk]
    elif team is not None:
        owner_ids = list(people.filter(team=team).values_list("pk", flat=True))
    elif user.sees_everything:
        owner_ids = None
    else:
        owner_ids = list(people.values_list("pk", flat=True))
    return Scope(owner_ids=owner_ids, teams=teams, people=people, team=team, salesperson=salesperson)


def _owner_filter(owner_ids: list[int] | None, path: str = "owner_id") -> Q:
    return Q() if owner_ids is None else Q(**{f"{path}__in": owner_ids})


def value_at_stake_field() -> str:
    """What an at-risk customer puts at stake: their value on the past pace of the relationship."""
    return "classic_value"


def dashboard(user, scope: Scope) -> dict[str, Any]:
    run = current_run()
    context: dict[str, Any] = {"run": run, "scope": scope}
    context["pipeline"] = pipeline(user, scope.owner_ids)
    if run is None:
        return context
    context["by_salesperson"] = value_by_salesperson(run, scope.owner_ids)
    context["totals"] = _totals(context["by_salesperson"])
    context["trend"] = portfolio_trend(scope.owner_ids)
    context["histogram"] = clv_histogram(user, run, scope.owner_ids)
    context["at_risk"] = accounts_at_risk(user, run, scope.owner_ids)
    return context


def value_by_salesperson(run, owner_ids: list[int] | None) -> list:
    PortfolioSnapshot = clv_model("PortfolioSnapshot")
    if PortfolioSnapshot is None:
        return []
    qs = PortfolioSnapshot.objects.filter(run=run).select_related("owner")
    qs = qs.filter(owner__isnull=False) if owner_ids is None else qs.filter(owner_id__in=owner_ids)
    return list(qs.order_by(F("total_clv").desc(nulls_last=True), "owner_id"))


def _totals(rows: list) -> dict[str, Any]:
    total = {"customers": 0, "total_clv": Decimal(0), "total_historical": Decimal(0), "at_risk_customers": 0,
             "value_at_risk": Decimal(0)}
    for row in rows:
        for key in total:
            total[key] += getattr(row, key) or 0
    return total


def clv_histogram(user, run, owner_ids: list[int] | None) -> list[dict[str, Any]]:
    """Customers per CLV bin in the current run, one conditional-count aggregate."""
    from crm.models import Customer

    CustomerValue = clv_model("CustomerValue")
    visible = Customer.objects.visible_to(user).filter(_owner_filter(owner_ids)).values("pk")
    qs = CustomerValue.objects.filter(run=run, customer_id__in=visible)
    edges = CLV_BIN_EDGES
    aggregates = {}
    for i, low in enumerate(edges):
        high = edges[i + 1] if i + 1 < len(edges) else None
        cond = Q(clv__gte=low) if i else Q()
        if high is not None:
            cond &= Q(clv__lt=high)
        aggregates[f"b{i}"] = Count("pk", filter=cond)
    counts = qs.aggregate(**aggregates)
    bins = []
    for i, low in enumerate(edges):
        high = edges[i + 1] if i + 1 < len(edges) else None
        label = f"{low:,}–{high:,}" if high is not None else f"{low:,}+"
        if i == 0:
            label = f"< {high:,}"
        bins.append({"label": label, "low": low, "high": high, "customers": counts[f"b{i}"]})
    while len(bins) > 1 and bins[-1]["customers"] == 0:
        bins.pop()
    return bins


def accounts_at_risk(user, run, owner_ids: list[int] | None, limit: int = AT_RISK_LIMIT) -> list:
    """Customers below the risk threshold, highest value at stake first."""
    from crm.models import Customer

    CustomerValue = clv_model("CustomerValue")
    visible = Customer.objects.visible_to(user).filter(_owner_filter(owner_ids)).exclude(lifecycle_stage="lost")
    stake = value_at_stake_field()
    return list(
        CustomerValue.objects.filter(run=run, p_alive__lt=RISK_P_ALIVE, customer_id__in=visible.values("pk"))
        .select_related("customer", "customer__owner")
        .order_by(F(stake).desc(nulls_last=True), "customer_id")[:limit]
    )


def pipeline(user, owner_ids: list[int] | None) -> list[dict[str, Any]]:
    """Opportunities by kind and status: how many and their expected value."""
    rows = (
        Opportunity.objects.visible_to(user)
        .filter(_owner_filter(owner_ids, "customer__owner_id"))
        .values("kind", "status")
        .annotate(count=Count("pk"), expected_value=Sum("expected_value"))
        .order_by("kind", "status")
    )
    kinds = dict(Opportunity.Kind.choices)
    statuses = dict(Opportunity.Status.choices)
    return [
        {**r, "kind_label": kinds.get(r["kind"], r["kind"]), "status_label": statuses.get(r["status"], r["status"])}
        for r in rows
    ]


def clv_runs(limit: int = RUN_HISTORY_LIMIT) -> list:
    ClvRun = clv_model("ClvRun")
    if ClvRun is None:
        return []
    return list(ClvRun.objects.order_by("-started_at", "-pk")[:limit])


def latest_run_since(since) -> Any:
    ClvRun = clv_model("ClvRun")
    if ClvRun is None:
        return None
    qs = ClvRun.objects.order_by("-started_at", "-pk")
    if since is not None:
        qs = qs.filter(started_at__gte=since)
    return qs.first()


def running_run() -> Any:
    ClvRun = clv_model("ClvRun")
    if ClvRun is None:
        return None
    return ClvRun.objects.filter(status="running").order_by("-started_at").first()
