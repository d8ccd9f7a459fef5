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
from accounts.selectors import visible_owner_ids
from crm.models import Customer, Opportunity
from crm.selectors.pages import RISK_P_ALIVE
from crm.selectors.values import clv_field, clv_model, current_run, portfolio_trend, previous_run
from crm.templatetags.crm_ui import format_money as money

# Opportunities still in play: what the pipeline adds up.
PIPELINE_STATUSES = (Opportunity.Status.OPEN, Opportunity.Status.ACCEPTED)
MOVERS_PER_SALESPERSON = 3

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
    visible = visible_owner_ids(user)
    if visible is not None:  # never more than the visibility rule allows, whatever the filter said
        owner_ids = sorted(set(visible) if owner_ids is None else set(owner_ids) & set(visible))
    return Scope(owner_ids=owner_ids, teams=teams, people=people, team=team, salesperson=salesperson)


def _owner_filter(owner_ids: list[int] | None, path: str = "owner_id") -> Q:
    return Q() if owner_ids is None else Q(**{f"{path}__in": owner_ids})


def value_at_stake_field() -> str:
    """What an at-risk customer puts at stake: their CLV (so the at-risk list adds up to the value at risk)."""
    return clv_field()


def _owners(user, owner_ids: list[int] | None) -> list[int] | None:
    """The owner ids to filter by: the scope's, or (for a caller without a scope) the visibility rule's."""
    if owner_ids is not None:
        return owner_ids
    return visible_owner_ids(user)


def dashboard(user, scope: Scope) -> dict[str, Any]:
    run = current_run()
    context: dict[str, Any] = {"run": run, "scope": scope}
    context["pipeline"] = pipeline(user, scope.owner_ids)
    context["pipeline_total"] = pipeline_total(context["pipeline"])
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


# A run's values never change once it is current, so aggregates of a run are cached by its id
# (a new run has a new id: nothing to invalidate).
RUN_CACHE_SECONDS = 7 * 24 * 3600


def _bins_by_owner(run) -> dict[int | None, list[int]]:
    """Customers per CLV bin for every owner in `run`: one grouped aggregate, cached for the run."""
    from django.core.cache import cache  # noqa: PLC0415

    field = clv_field()
    stamp = run.started_at.timestamp() if run.started_at else ""
    key = f"crm:dashboard:bins:{run.pk}:{stamp}:{field}:{len(CLV_BIN_EDGES)}"
    cached = cache.get(key)
    if cached is not None:
        return {None if k == "" else int(k): v for k, v in cached.items()}
    CustomerValue = clv_model("CustomerValue")
    edges = CLV_BIN_EDGES
    aggregates = {}
    for i, low in enumerate(edges):
        high = edges[i + 1] if i + 1 < len(edges) else None
        cond = Q(**{f"{field}__gte": low}) if i else Q()
        if high is not None:
            cond &= Q(**{f"{field}__lt": high})
        aggregates[f"b{i}"] = Count("pk", filter=cond)
    rows = CustomerValue.objects.filter(run=run).values("customer__owner_id").annotate(**aggregates).order_by()
    result = {r["customer__owner_id"]: [r[f"b{i}"] for i in range(len(edges))] for r in rows}
    cache.set(key, {("" if k is None else str(k)): v for k, v in result.items()}, RUN_CACHE_SECONDS)
    return result


def clv_histogram(user, run, owner_ids: list[int] | None) -> list[dict[str, Any]]:
    """Customers per CLV bin in the current run for the scope's owners (summed from the per-owner bins)."""
    owners = _owners(user, owner_ids)
    per_owner = _bins_by_owner(run)
    edges = CLV_BIN_EDGES
    counts = [0] * len(edges)
    for owner, bins in per_owner.items():
        if owners is None or owner in owners:
            counts = [a + b for a, b in zip(counts, bins, strict=True)]
    bins = []
    for i, low in enumerate(edges):
        high = edges[i + 1] if i + 1 < len(edges) else None
        label = f"{money(low)}–{money(high)}" if high is not None else f"{money(low)}+"
        if i == 0:
            label = f"< {money(high)}"
        bins.append({"label": label, "low": low, "high": high, "customers": counts[i]})
    while len(bins) > 1 and bins[-1]["customers"] == 0:
        bins.pop()
    return bins


def accounts_at_risk(user, run, owner_ids: list[int] | None, limit: int = AT_RISK_LIMIT) -> list:
    """Customers below the risk threshold, highest CLV (the value at risk they carry) first."""
    CustomerValue = clv_model("CustomerValue")
    stake = value_at_stake_field()
    return list(
        CustomerValue.objects.filter(run=run, p_alive__lt=RISK_P_ALIVE)
        .filter(_owner_filter(_owners(user, owner_ids), "customer__owner_id"))
        .exclude(customer__lifecycle_stage=Customer.Stage.LOST)
        .select_related("customer", "customer__owner")
        .order_by(F(stake).desc(nulls_last=True), "customer_id")[:limit]
    )


def biggest_movers(user, run, owner_ids: list[int] | None, per_owner: int = MOVERS_PER_SALESPERSON) -> list[dict]:
    """Per salesperson, the accounts whose CLV rose most and fell most since the previous run.

    One query: the current and previous values joined on the customer, ranked within each owner
    by the change (up and down), filtered by the resolved owner ids.
    """
    prev = previous_run(run)
    if prev is None:
        return []
    CustomerValue = clv_model("CustomerValue")
    field = clv_field()
    owners = _owners(user, owner_ids)
    table = CustomerValue._meta.db_table
    cust_table = Customer._meta.db_table
    owner_sql, params = "", [run.pk, prev.pk]
    if owners is not None:
        if not owners:
            return []
        owner_sql = f" AND c.owner_id IN ({', '.join(['%s'] * len(owners))})"
        params += list(owners)
    sql = f"""
        SELECT owner_id, customer_id, name, clv, prev_clv, delta, up_rank, down_rank FROM (
            SELECT c.owner_id, c.id AS customer_id, c.name, cur.{field} AS clv, old.{field} AS prev_clv,
                   cur.{field} - old.{field} AS delta,
                   ROW_NUMBER() OVER (PARTITION BY c.owner_id ORDER BY cur.{field} - old.{field} DESC, c.id) AS up_rank,
                   ROW_NUMBER() OVER (PARTITION BY c.owner_id ORDER BY cur.{field} - old.{field} ASC, c.id) AS down_rank
            FROM {table} cur
            JOIN {table} old ON old.customer_id = cur.customer_id AND old.run_id = %s
            JOIN {cust_table} c ON c.id = cur.customer_id
            WHERE cur.run_id = %s AND c.owner_id IS NOT NULL{owner_sql}
        ) ranked
        WHERE (up_rank <= {int(per_owner)} AND delta > 0) OR (down_rank <= {int(per_owner)} AND delta < 0)
        ORDER BY owner_id, delta DESC
    """
    params = [prev.pk, run.pk, *params[2:]]  # in the order of the placeholders: old run, current run, owners
    from django.core.cache import cache  # noqa: PLC0415
    from django.db import connection  # noqa: PLC0415

    stamp = run.started_at.timestamp() if run.started_at else ""
    key = f"crm:dashboard:movers:{run.pk}:{stamp}:{prev.pk}:{field}:{per_owner}:" + (
        "all" if owners is None else ",".join(map(str, sorted(owners))))
    rows = cache.get(key)
    if rows is None:
        with connection.cursor() as cur:
            cur.execute(sql, params)
            rows = [tuple(str(x) if isinstance(x, Decimal) else x for x in r) for r in cur.fetchall()]
        cache.set(key, rows, RUN_CACHE_SECONDS)
    people = {u.pk: u for u in User.objects.filter(pk__in={r[0] for r in rows})}
    by_owner: dict[int, dict] = {}
    for owner_id, customer_id, name, clv, prev_clv, delta, _up, _down in rows:
        entry = by_owner.setdefault(owner_id, {"owner": people.get(owner_id), "up": [], "down": []})
        item = {"customer_id": customer_id, "name": name, "clv": Decimal(str(clv)), "prev_clv": Decimal(str(prev_clv)),
                "delta": Decimal(str(delta))}
        (entry["up"] if item["delta"] > 0 else entry["down"]).append(item)
    for entry in by_owner.values():
        entry["down"].sort(key=lambda r: r["delta"])
    return sorted(by_owner.values(), key=lambda e: str(e["owner"] or ""))


def pipeline(user, owner_ids: list[int] | None) -> list[dict[str, Any]]:
    """Opportunities by kind and status: how many and their expected value."""
    rows = (
        Opportunity.objects.filter(_owner_filter(_owners(user, owner_ids), "customer__owner_id"))
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


def pipeline_total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The pipeline: how many opportunities are still in play (open or accepted) and the sum of their expected values."""
    live = [r for r in rows if r["status"] in PIPELINE_STATUSES]
    return {
        "count": sum(r["count"] for r in live),
        "expected_value": sum((r["expected_value"] or Decimal(0) for r in live), Decimal(0)),
    }


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
