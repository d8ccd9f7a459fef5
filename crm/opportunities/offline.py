"""Offline evaluation on the CRM's own history: load purchase lines and holdings, split at a date, measure.

The math is in crm.opportunities.evaluation (no Django); this module only reads the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
from django.db.models import Q

from crm.models import Customer, Holding, Product
from crm.opportunities import engine, evaluation
from crm.opportunities.services import fit_purchase_model, product_groups, purchase_pairs

LEVELS = ("product", "family", "category")


@dataclass
class EvaluationReport:
    as_of: date
    horizon_days: int
    level: str
    k: int
    model: str  # the product's model (settings.OPPORTUNITY_PURCHASE_MODEL)
    items: int
    rows: list[evaluation.Metrics]

    def row(self, name: str) -> evaluation.Metrics:
        return next(r for r in self.rows if r.model == name)


def evaluate_history(
    *, as_of: date, horizon_days: int, k: int = 3, level: str = "product", models: tuple[str, ...] = ()
) -> EvaluationReport:
    """Train on every purchase line before as_of (and holdings active on that day), measure against the
    products (or families, categories) each customer first bought in [as_of, as_of + horizon_days).

    Rows: "product" (the configured model), "popularity", "cooccurrence", then any extra engine models.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}")
    from django.conf import settings  # noqa: PLC0415

    customer_ids = list(Customer.objects.order_by("pk").values_list("pk", flat=True))
    c_index = {c: i for i, c in enumerate(customer_ids)}
    products = list(
        Product.objects.order_by("pk").values_list(
            "pk", "sku", "name", "family", "tier", "list_price", "unit_cost", "capacity_unit", "capacity_per_unit",
            "category",
        )
    )
    p_index = {p[0]: i for i, p in enumerate(products)}
    end = as_of + timedelta(days=horizon_days - 1)
    pc, pp, day = purchase_pairs(since=None, until=end, c_index=c_index, p_index=p_index, with_day=True)
    held = (
        Holding.objects.filter(since__lte=as_of)
        .filter(Q(until__isnull=True, status=Holding.Status.ACTIVE) | Q(until__gte=as_of))
        .values_list("customer_id", "product_id")
    )
    hc = np.array([c_index[c] for c, p in held if c in c_index and p in p_index], dtype=np.int64)
    hp = np.array([p_index[p] for c, p in held if c in c_index and p in p_index], dtype=np.int64)
    group_of, names = product_groups(products, level)
    n_items = len(names)
    split = evaluation.time_split(
        pc, group_of[pp], day, as_of=as_of.toordinal() - 719163, horizon=horizon_days,
        n_customers=len(customer_ids), n_items=n_items, owned_extra=(hc, group_of[hp]),
    )
    model = settings.OPPORTUNITY_PURCHASE_MODEL
    # The adoption model learns from the dated lines before the split, for the horizon measured.
    day0 = as_of.toordinal() - 719163
    before = day < day0
    dated = {"history": (pc[before], group_of[pp[before]], day[before]), "as_of": day0, "window": horizon_days}
    recs = {
        "product": fit_purchase_model(split.owned, model, **dated),
        "popularity": engine.fit_recommender(split.owned, "popularity"),
        "cooccurrence": engine.fit_recommender(split.owned, "cooccurrence"),
    }
    for m in models:
        recs[m] = fit_purchase_model(split.owned, m, **dated)
    rows = evaluation.evaluate(split, recs, n_items=n_items, k=k)
    return EvaluationReport(as_of, horizon_days, level, k, model, n_items, rows)
