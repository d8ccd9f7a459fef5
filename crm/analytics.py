"""Read-only answers to a salesperson's seven questions, each bounded by the visibility rule (one SQL query each where possible).

Every selector takes the asking `user` and counts only customers that user may see
(`customer_visibility_q`). Periods are `since`/`until` dates (inclusive, on the fact's date);
windows are in days. Results are plain dicts and lists that pages, the API and the
`analytics` command render.
"""

from __future__ import annotations

import statistics
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import (
    Count,
    DateTimeField,
    DecimalField,
    ExpressionWrapper,
    F,
    Max,
    Min,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.selectors import customer_visibility_q
from crm.models import Contact, Customer, Event, Product, Purchase

MARGIN = ExpressionWrapper(
    F("amount") - F("quantity") * Coalesce("unit_cost", "product__unit_cost", Value(Decimal(0))),
    output_field=DecimalField(max_digits=20, decimal_places=2),
)


def _period(qs, field: str, since: date | None, until: date | None):
    if since:
        qs = qs.filter(**{f"{field}__date__gte": since})
    if until:
        qs = qs.filter(**{f"{field}__date__lte": until})
    return qs


def _product(product) -> Product:
    if isinstance(product, Product):
        return product
    try:
        return Product.objects.get(sku=product)
    except Product.DoesNotExist:
        raise ValueError(f"Unknown product SKU {product!r}.") from None


def _current_values_subquery(field: str):
    """The customer's value in the current CLV run (None when no run yet or the clv app is absent)."""
    try:
        from clv.models import CustomerValue  # noqa: PLC0415
    except ImportError:
        return Value(None, output_field=DecimalField(max_digits=14, decimal_places=2))
    return Subquery(
        CustomerValue.objects.filter(run__is_current=True, customer_id=OuterRef("pk")).values(field)[:1]
    )


# 1 ------------------------------------------------------------------------------------------
def product_buyers(user, *, product, since: date | None = None, until: date | None = None) -> dict:
    """How many customers bought `product` (SKU or Product) in the period, and how many more than once."""
    p = _product(product)
    qs = _period(Purchase.objects.filter(customer_visibility_q(user, "customer__"), product=p), "purchased_at", since, until)
    per_customer = qs.values("customer_id").annotate(n=Count("id"), total=Sum("amount"))
    agg = per_customer.aggregate(
        customers=Count("customer_id"),
        repeat_customers=Count("customer_id", filter=Q(n__gt=1)),
        purchases=Coalesce(Sum("n"), 0),
        amount=Sum("total"),
    )
    customers = agg["customers"]
    return {
        "sku": p.sku,
        "product": p.name,
        "customers": customers,
        "repeat_customers": agg["repeat_customers"],
        "repeat_share": round(agg["repeat_customers"] / customers, 4) if customers else 0.0,
        "purchases": agg["purchases"],
        "amount": agg["amount"] or Decimal(0),
    }


def product_buyer_list(
    user, *, product, since: date | None = None, until: date | None = None, limit: int | None = 50
) -> list[dict]:
    """The visible customers who bought `product` in the period: purchases, amount and last purchase, most purchases first."""
    p = _product(product)
    qs = _period(Purchase.objects.filter(customer_visibility_q(user, "customer__"), product=p), "purchased_at", since, until)
    rows = (
        qs.values("customer_id", "customer__name")
        .annotate(purchases=Count("id"), amount=Sum("amount"), last=Max("purchased_at"))
        .order_by("-purchases", "-amount", "customer_id")
    )
    if limit:
        rows = rows[:limit]
    return [
        {"customer_id": r["customer_id"], "customer": r["customer__name"], "purchases": r["purchases"],
         "repeat": r["purchases"] > 1, "amount": r["amount"], "last_purchase": r["last"]}
        for r in rows
    ]


def most_bought_product(user, *, since: date | None = None, until: date | None = None) -> Product | None:
    """The product bought by the most visible customers in the period (the default for question 1)."""
    qs = _period(
        Purchase.objects.filter(customer_visibility_q(user, "customer__"), product__isnull=False),
        "purchased_at", since, until,
    )
    top = qs.values("product_id").annotate(n=Count("customer_id", distinct=True)).order_by("-n", "product_id").first()
    return Product.objects.filter(pk=top["product_id"]).first() if top else None


# 2 ------------------------------------------------------------------------------------------
def contact_frequency(
    user, *, since: date | None = None, until: date | None = None, limit: int | None = 100
) -> list[dict]:
    """Per visible customer with contacts in the period: count, mean gap in days, first and last contact."""
    qs = _period(Contact.objects.filter(customer_visibility_q(user, "customer__")), "occurred_at", since, until)
    rows = (
        qs.values("customer_id", "customer__name")
        .annotate(contacts=Count("id"), first=Min("occurred_at"), last=Max("occurred_at"))
        .order_by("-contacts", "customer_id")
    )
    if limit:
        rows = rows[:limit]
    out = []
    for r in rows:
        n = r["contacts"]
        gap = (r["last"] - r["first"]).total_seconds() / 86400 / (n - 1) if n > 1 else None
        out.append(
            {
                "customer_id": r["customer_id"], "customer": r["customer__name"], "contacts": n,
                "mean_gap_days": round(gap, 1) if gap is not None else None,
                "first_contact": r["first"], "last_contact": r["last"],
            }
        )
    return out


def valuable_not_contacted(
    user, *, days: int = 60, as_of: date | None = None, top_share: float = 0.2, limit: int = 50
) -> list[dict]:
    """Visible active customers in the top `top_share` by value (CLV, else margin so far) with no contact in `days`."""
    as_of = as_of or timezone.localdate()
    cutoff = datetime.combine(as_of - timedelta(days=days), time.min, tzinfo=UTC)
    vis_sql, vis_params = _visible_clause(user, "c.id")
    vis_p, vis_p_params = _visible_clause(user, "p.customer_id")
    vis_k, vis_k_params = _visible_clause(user, "k.customer_id")
    clv_join, clv_col = "", "NULL"
    tables = _clv_tables()
    if tables:
        clv_join = (
            f" LEFT JOIN {tables[0]} cv ON cv.customer_id = c.id"
            f" AND cv.run_id = (SELECT id FROM {tables[1]} WHERE is_current LIMIT 1)"
        )
        clv_col = "cv.clv"
    # Hash aggregates over purchases and contacts (one pass each), then rank by value.
    sql = f"""
        WITH m AS (
            SELECT p.customer_id, SUM(p.amount - p.quantity * COALESCE(p.unit_cost, pr.unit_cost, 0)) AS margin
            FROM crm_purchase p LEFT JOIN crm_product pr ON pr.id = p.product_id
            WHERE {vis_p} GROUP BY p.customer_id
        ),
        lc AS (SELECT k.customer_id, MAX(k.occurred_at) AS last FROM crm_contact k WHERE {vis_k} GROUP BY k.customer_id),
        v AS (
            SELECT c.id, c.name, u.username, {clv_col} AS clv, COALESCE(m.margin, 0) AS margin,
                   COALESCE({clv_col}, m.margin, 0) AS value, lc.last,
                   ROW_NUMBER() OVER (ORDER BY COALESCE({clv_col}, m.margin, 0) DESC, c.id) AS rn,
                   COUNT(*) OVER () AS n
            FROM crm_customer c
            LEFT JOIN m ON m.customer_id = c.id
            LEFT JOIN lc ON lc.customer_id = c.id
            LEFT JOIN accounts_user u ON u.id = c.owner_id{clv_join}
            WHERE {vis_sql} AND c.lifecycle_stage <> 'lost'
        )
        SELECT id, name, username, value, clv, last FROM v
        WHERE (rn = 1 OR rn <= ROUND(n * %s)) AND (last IS NULL OR last < %s)
        ORDER BY rn LIMIT %s
    """
    rows = _run(sql, [*vis_p_params, *vis_k_params, *vis_params, top_share, cutoff, limit])
    out = []
    for pk, name, owner, value, clv, last in rows:
        if isinstance(last, str):  # SQLite returns text
            last = datetime.fromisoformat(last)
        out.append(
            {
                "customer_id": pk, "customer": name, "owner": owner,
                "value": Decimal(str(value)).quantize(Decimal("0.01")),
                "value_source": "clv" if clv is not None else "margin", "last_contact": last,
                "days_since_contact": (as_of - last.date()).days if last else None,
            }
        )
    return out


def _clv_tables() -> tuple[str, str] | None:
    """(CustomerValue table, ClvRun table) when the clv app provides them (contract in the design notes)."""
    try:
        from clv.models import ClvRun, CustomerValue  # noqa: PLC0415
    except ImportError:
        return None
    return CustomerValue._meta.db_table, ClvRun._meta.db_table


# 3 ------------------------------------------------------------------------------------------
def most_profitable(
    user, *, by: str = "margin", since: date | None = None, until: date | None = None, limit: int = 20
) -> list[dict]:
    """Top customers by margin so far (purchases in the period) or by predicted CLV of the current run."""
    if by not in {"margin", "clv"}:
        raise ValueError('by must be "margin" or "clv".')
    if by == "margin":
        qs = _period(
            Purchase.objects.filter(customer_visibility_q(user, "customer__")), "purchased_at", since, until
        )
        rows = (
            qs.values("customer_id", "customer__name")
            .annotate(margin=Sum(MARGIN), revenue=Sum("amount"), purchases=Count("id"))
            .order_by("-margin", "customer_id")[:limit]
        )
        return [
            {"customer_id": r["customer_id"], "customer": r["customer__name"], "margin": r["margin"],
             "revenue": r["revenue"], "purchases": r["purchases"]}
            for r in rows
        ]
    try:
        from clv.models import CustomerValue  # noqa: PLC0415
    except ImportError:
        raise ValueError("Predicted CLV is not available yet: no CLV run has been made.") from None
    rows = (
        CustomerValue.objects.filter(run__is_current=True)
        .filter(customer_visibility_q(user, "customer__"))
        .values("customer_id", "customer__name", "clv", "p_alive", "historical_value")
        .order_by("-clv", "customer_id")[:limit]
    )
    return [
        {"customer_id": r["customer_id"], "customer": r["customer__name"], "clv": r["clv"],
         "p_alive": r["p_alive"], "margin": r["historical_value"]}
        for r in rows
    ]


# 4 and 6 share a raw query each (PostgreSQL date arithmetic and FILTER), bounded by visibility
def _visible_ids_sql(user) -> tuple[str, list]:
    """SQL selecting the ids of the customers `user` may see (unordered: the model's ordering would force a sort)."""
    sql, params = Customer.objects.filter(customer_visibility_q(user)).order_by().values("pk").query.sql_with_params()
    return sql, list(params)


def _visible_clause(user, column: str) -> tuple[str, list]:
    """`column IN (visible ids)`, or TRUE for those who see every customer (saves a semi-join)."""
    if getattr(user, "is_authenticated", False) and user.is_active and user.sees_everything:
        return "TRUE", []
    sql, params = _visible_ids_sql(user)
    return f"{column} IN ({sql})", params


def _run(sql: str, params: list) -> list[tuple]:
    """Run an analytics query with enough sort memory that its sorts stay in RAM (PostgreSQL)."""
    with transaction.atomic(), connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute("SET LOCAL work_mem = '64MB'")
        cur.execute(sql, params)
        return cur.fetchall()


def _lifted(rows, n_group: int, n_base: int) -> list[dict]:
    out = []
    for kind, hit, base in rows:
        rate = hit / n_group if n_group else 0.0
        base_rate = base / n_base if n_base else 0.0
        out.append(
            {"kind": kind, "customers": hit, "rate": round(rate, 4), "base_customers": base,
             "base_rate": round(base_rate, 4), "lift": round(rate / base_rate, 3) if base_rate else None}
        )
    out.sort(key=lambda r: (-(r["lift"] if r["lift"] is not None else float("inf") if r["rate"] else 0), r["kind"]))
    return out


def events_before_loss(
    user, *, window_days: int = 90, since: date | None = None, until: date | None = None,
    as_of: date | None = None,
) -> dict:
    """Event kinds seen within `window_days` before a customer was lost, against their base rate.

    rate(kind) = share of lost customers (lost_on in the period) with >= 1 event of that kind in
    [lost_on - window, lost_on); base rate = share of customers not lost with >= 1 event of that kind
    in the same-length window before `as_of` (default today); lift = rate / base rate.

    PostgreSQL answers in one query; other databases (the embedded SQLite) through
    events_before_loss_portable, which gives the same answer.
    """
    as_of = as_of or timezone.localdate()
    if connection.vendor != "postgresql":
        return events_before_loss_portable(user, window_days=window_days, since=since, until=until, as_of=as_of)
    vis_sql, vis_params = _visible_clause(user, "c.id")
    period = ""
    params: list = []
    if since:
        period += " AND c.lost_on >= %s"
        params.append(since)
    if until:
        period += " AND c.lost_on <= %s"
        params.append(until)
    sql = f"""
        WITH cust AS (
            SELECT c.id, c.lost_on, (c.lost_on IS NOT NULL {period}) AS is_lost,
                   (c.lost_on IS NULL AND c.lifecycle_stage <> 'lost') AS is_base
            FROM crm_customer c WHERE {vis_sql}
        ),
        counts AS (SELECT COUNT(*) FILTER (WHERE is_lost) AS n_lost, COUNT(*) FILTER (WHERE is_base) AS n_base FROM cust),
        hits AS (
            SELECT e.kind,
                   COUNT(DISTINCT e.customer_id) FILTER (
                       WHERE cu.is_lost AND e.occurred_at >= (cu.lost_on - %s)::timestamptz
                         AND e.occurred_at < cu.lost_on::timestamptz) AS lost_hits,
                   COUNT(DISTINCT e.customer_id) FILTER (
                       WHERE cu.is_base AND e.occurred_at >= (%s::date - %s)::timestamptz
                         AND e.occurred_at < %s::date::timestamptz) AS base_hits
            FROM crm_event e JOIN cust cu ON cu.id = e.customer_id
            WHERE cu.is_lost OR cu.is_base
            GROUP BY e.kind
        )
        SELECT h.kind, h.lost_hits, h.base_hits, c.n_lost, c.n_base FROM hits h CROSS JOIN counts c
        UNION ALL SELECT NULL, 0, 0, c.n_lost, c.n_base FROM counts c
    """
    rows = _run(sql, [*params, *vis_params, window_days, as_of, window_days, as_of])
    n_lost, n_base = rows[-1][3], rows[-1][4]
    kinds = _lifted([(k, lh, bh) for k, lh, bh, _, _ in rows[:-1] if lh or bh], n_lost, n_base)
    return {"window_days": window_days, "lost_customers": n_lost, "base_customers": n_base, "kinds": kinds}


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def events_before_loss_portable(
    user, *, window_days: int = 90, since: date | None = None, until: date | None = None,
    as_of: date | None = None,
) -> dict:
    """events_before_loss in portable ORM queries (any database): the lost customers' events are read once."""
    as_of = as_of or timezone.localdate()
    window = timedelta(days=window_days)
    visible = Customer.objects.filter(customer_visibility_q(user)).order_by()
    lost = visible.filter(lost_on__isnull=False)
    if since:
        lost = lost.filter(lost_on__gte=since)
    if until:
        lost = lost.filter(lost_on__lte=until)
    lost_on = dict(lost.values_list("pk", "lost_on"))
    base = visible.filter(lost_on__isnull=True).exclude(lifecycle_stage=Customer.Stage.LOST)
    n_base = base.count()
    lost_hits: dict[str, set[int]] = {}
    events = Event.objects.filter(customer__in=lost.values("pk")).order_by().values_list("customer_id", "kind", "occurred_at")
    for cid, kind, at in events:
        day = lost_on[cid]
        if _midnight(day - window) <= at < _midnight(day):
            lost_hits.setdefault(kind, set()).add(cid)
    base_hits = dict(
        Event.objects.filter(
            customer__in=base.values("pk"), occurred_at__gte=_midnight(as_of - window), occurred_at__lt=_midnight(as_of)
        )
        .order_by()
        .values("kind")
        .annotate(n=Count("customer_id", distinct=True))
        .values_list("kind", "n")
    )
    kinds = sorted(set(lost_hits) | set(base_hits))
    rows = [(k, len(lost_hits.get(k, ())), base_hits.get(k, 0)) for k in kinds]
    return {"window_days": window_days, "lost_customers": len(lost_on), "base_customers": n_base,
            "kinds": _lifted([r for r in rows if r[1] or r[2]], len(lost_on), n_base)}


# 5 ------------------------------------------------------------------------------------------
def customer_products(
    user, *, product=None, customer_id: int | None = None, since: date | None = None, until: date | None = None,
    limit: int | None = 500,
) -> list[dict]:
    """Customer x product: purchases, quantity and amount per pair; with `product`, the customers of that product."""
    qs = _period(
        Purchase.objects.filter(customer_visibility_q(user, "customer__"), product__isnull=False),
        "purchased_at", since, until,
    )
    if product is not None:
        qs = qs.filter(product=_product(product))
    if customer_id is not None:
        qs = qs.filter(customer_id=customer_id)
    rows = (
        qs.values("customer_id", "customer__name", "product__sku", "product__name")
        .annotate(purchases=Count("id"), quantity=Sum("quantity"), amount=Sum("amount"), last=Max("purchased_at"))
        .order_by("customer__name", "customer_id", "product__sku")
    )
    if limit:
        rows = rows[:limit]
    return [
        {"customer_id": r["customer_id"], "customer": r["customer__name"], "sku": r["product__sku"],
         "product": r["product__name"], "purchases": r["purchases"], "quantity": r["quantity"],
         "amount": r["amount"], "last_purchase": r["last"]}
        for r in rows
    ]


def product_customer_counts(user, *, since: date | None = None, until: date | None = None) -> list[dict]:
    """Product -> customers: per product, how many visible customers bought it, how often and for how much."""
    qs = _period(
        Purchase.objects.filter(customer_visibility_q(user, "customer__"), product__isnull=False),
        "purchased_at", since, until,
    )
    rows = (
        qs.values("product__sku", "product__name")
        .annotate(customers=Count("customer_id", distinct=True), purchases=Count("id"), amount=Sum("amount"))
        .order_by("-customers", "product__sku")
    )
    return [{"sku": r["product__sku"], "product": r["product__name"], "customers": r["customers"],
             "purchases": r["purchases"], "amount": r["amount"]} for r in rows]


# 6 ------------------------------------------------------------------------------------------
def events_before_purchase(
    user, *, window_days: int = 60, product=None, since: date | None = None, until: date | None = None
) -> dict:
    """Event kinds that come before a purchase: rate, lift against the base rate, median lead time.

    For each event (in the period) of a visible customer: was there a purchase (of `product`, if
    given) by the same customer within (t, t + window]? rate(kind) = share of that kind's events
    followed by one; base rate = the same share over all events of every kind; lift = rate / base.
    Lead time = days from the event to the first such purchase (median, and quartiles).

    PostgreSQL answers in one query; other databases (the embedded SQLite) through
    events_before_purchase_portable, which gives the same answer.
    """
    if connection.vendor != "postgresql":
        return events_before_purchase_portable(user, window_days=window_days, product=product, since=since,
                                               until=until)
    vis_sql, vis_params = _visible_clause(user, "e.customer_id")
    period, period_params = "", []
    if since:
        period += " AND e.occurred_at >= %s::date::timestamptz"
        period_params.append(since)
    if until:
        period += " AND e.occurred_at < (%s::date + 1)::timestamptz"
        period_params.append(until)
    prod, prod_params = "", []
    if product is not None:
        prod = " AND p.product_id = %s"
        prod_params.append(_product(product).pk)
    # Per event, the nearest later purchase through purchase_customer_date_idx (an index-only
    # LIMIT 1 probe); measured faster than sorting events and purchases together.
    sql = f"""
        SELECT e.kind, COUNT(*) AS events, COUNT(n.ts) AS followed,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM n.ts - e.occurred_at) / 86400.0),
               percentile_cont(0.25) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM n.ts - e.occurred_at) / 86400.0),
               percentile_cont(0.75) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM n.ts - e.occurred_at) / 86400.0)
        FROM crm_event e
        LEFT JOIN LATERAL (
            SELECT p.purchased_at AS ts FROM crm_purchase p
            WHERE p.customer_id = e.customer_id AND p.purchased_at > e.occurred_at
              AND p.purchased_at <= e.occurred_at + make_interval(days => %s){prod}
            ORDER BY p.purchased_at LIMIT 1
        ) n ON true
        WHERE {vis_sql}{period}
        GROUP BY e.kind
    """
    rows = _run(sql, [window_days, *prod_params, *vis_params, *period_params])
    return _purchase_signals(rows, window_days)


def _quantile(values: list[float], q: float) -> float | None:
    """Linear-interpolation quantile, as PostgreSQL's percentile_cont."""
    if not values:
        return None
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def events_before_purchase_portable(
    user, *, window_days: int = 60, product=None, since: date | None = None, until: date | None = None
) -> dict:
    """events_before_purchase in portable ORM queries: each event's first later purchase through one correlated subquery."""
    events = Event.objects.filter(customer_visibility_q(user, "customer__")).order_by()
    if since:
        events = events.filter(occurred_at__gte=_midnight(since))
    if until:
        events = events.filter(occurred_at__lt=_midnight(until + timedelta(days=1)))
    purchases = Purchase.objects.filter(
        customer_id=OuterRef("customer_id"), purchased_at__gt=OuterRef("occurred_at"),
        purchased_at__lte=ExpressionWrapper(
            OuterRef("occurred_at") + timedelta(days=window_days), output_field=DateTimeField()
        ),
    )
    if product is not None:
        purchases = purchases.filter(product=_product(product))
    first = Subquery(purchases.order_by("purchased_at").values("purchased_at")[:1], output_field=DateTimeField())
    per_kind: dict[str, list] = {}
    for kind, at, nxt in events.annotate(next_purchase=first).values_list("kind", "occurred_at", "next_purchase"):
        entry = per_kind.setdefault(kind, [0, []])
        entry[0] += 1
        if nxt is not None:
            if isinstance(nxt, str):  # SQLite hands a subquery's datetime back as text
                nxt = datetime.fromisoformat(nxt)
            if timezone.is_naive(nxt):
                nxt = nxt.replace(tzinfo=UTC)
            entry[1].append((nxt - at).total_seconds() / 86400)
    rows = [
        (kind, n, len(leads), _quantile(leads, 0.5), _quantile(leads, 0.25), _quantile(leads, 0.75))
        for kind, (n, leads) in per_kind.items()
    ]
    return _purchase_signals(rows, window_days)


def _purchase_signals(rows, window_days: int) -> dict:
    total = sum(r[1] for r in rows)
    followed = sum(r[2] for r in rows)
    base_rate = followed / total if total else 0.0
    kinds = []
    for kind, events, hit, med, q1, q3 in rows:
        rate = hit / events if events else 0.0
        kinds.append(
            {"kind": kind, "events": events, "followed_by_purchase": hit, "rate": round(rate, 4),
             "base_rate": round(base_rate, 4), "lift": round(rate / base_rate, 3) if base_rate else None,
             "median_lead_days": round(med, 1) if med is not None else None,
             "lead_days_q1": round(q1, 1) if q1 is not None else None,
             "lead_days_q3": round(q3, 1) if q3 is not None else None}
        )
    kinds.sort(key=lambda r: (-(r["lift"] or 0), r["kind"]))
    return {"window_days": window_days, "events": total, "base_rate": round(base_rate, 4), "kinds": kinds}


# 7 ------------------------------------------------------------------------------------------
def loyalty_patterns(user, *, as_of: date | None = None, active_days: int = 365) -> list[dict]:
    """Per relationship type x lifecycle stage: customers, retention, purchases per customer-year, mean CLV and P(alive).

    retention = share of the group's customers not lost that bought within `active_days` before
    `as_of`; purchase frequency = purchases per customer per year of tenure (since the first purchase).
    """
    as_of = as_of or timezone.localdate()
    recent = as_of - timedelta(days=active_days)
    per_customer = (
        Customer.objects.filter(customer_visibility_q(user))
        .annotate(
            n=Count("purchases"),
            first=Min("purchases__purchased_at"),
            last=Max("purchases__purchased_at"),
            clv=_current_values_subquery("clv"),
            p_alive=_current_values_subquery("p_alive"),
        )
        .values("relationship_type", "lifecycle_stage", "n", "first", "last", "clv", "p_alive", "lost_on")
    )
    groups: dict[tuple[str, str], dict] = {}
    for r in per_customer:
        g = groups.setdefault(
            (r["relationship_type"], r["lifecycle_stage"]),
            {"customers": 0, "retained": 0, "purchases": 0, "years": 0.0, "clv": [], "p_alive": []},
        )
        g["customers"] += 1
        g["purchases"] += r["n"]
        if r["first"]:
            g["years"] += max((as_of - r["first"].date()).days, 1) / 365.25
        if r["lost_on"] is None and r["last"] and r["last"].date() >= recent:
            g["retained"] += 1
        if r["clv"] is not None:
            g["clv"].append(float(r["clv"]))
        if r["p_alive"] is not None:
            g["p_alive"].append(float(r["p_alive"]))
    out = []
    for (rel, stage), g in sorted(groups.items()):
        out.append(
            {"relationship_type": rel, "lifecycle_stage": stage, "customers": g["customers"],
             "retention": round(g["retained"] / g["customers"], 4),
             "purchases_per_customer_year": round(g["purchases"] / g["years"], 3) if g["years"] else 0.0,
             "avg_clv": round(statistics.fmean(g["clv"]), 2) if g["clv"] else None,
             "avg_p_alive": round(statistics.fmean(g["p_alive"]), 4) if g["p_alive"] else None}
        )
    return out
