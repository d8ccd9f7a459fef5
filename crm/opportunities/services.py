"""Regenerate cross-sell and up-sell opportunities from the database, keeping what people did with earlier ones."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, DecimalField, ExpressionWrapper, F, Q, Sum, Value, Window
from django.db.models.functions import Coalesce, RowNumber
from django.utils import timezone

from crm.bulk import among, bulk_insert
from crm.models import Customer, Holding, Opportunity, Product, Purchase, Usage
from crm.opportunities import engine

log = logging.getLogger(__name__)
BATCH = 5000
VACUUM_AFTER_ROWS = 10_000  # new rows after which the opportunity table is vacuumed at once
SUPPRESSING_REASONS = (Opportunity.DismissReason.ALREADY_HAS, Opportunity.DismissReason.NOT_RELEVANT)


@dataclass
class RegenerationResult:
    created: int = 0
    updated: int = 0
    reopened: int = 0
    expired: int = 0
    unchanged: int = 0  # open suggestions the run confirmed as they were: not written at all
    kept: int = 0  # suggestions whose accepted/dismissed/won/lost status was left alone
    returned: int = 0  # dismissed longer ago than CRM_SUPPRESS_DAYS, suggested again: open once more
    suppressed: int = 0  # (customer, product) pairs held back by a recent "already has it"/"not relevant"
    cross_sell: int = 0
    purchase_cross_sell: int = 0  # of which from purchase lines (rule purchases:...)
    up_sell: int = 0
    value_source: str = "historical"
    timings: dict[str, float] = field(default_factory=dict)


def _customer_values(
    customer_ids: np.ndarray, index: dict[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(value, p_alive, cap) per customer.

    With a current CLV run: value = CLV, cap = CLV for scored customers (inf for those the run
    did not score). Without one: historical margin, p_alive = 1 and no cap.
    """
    from crm.selectors.values import clv_field  # noqa: PLC0415

    n = len(customer_ids)
    value = np.zeros(n)
    p_alive = np.ones(n)
    cap = np.full(n, np.inf)
    source = "historical"
    try:
        from clv.models import CustomerValue  # noqa: PLC0415 - the clv tables may not exist yet

        rows = list(
            CustomerValue.objects.filter(run__is_current=True).values_list("customer_id", clv_field(), "p_alive")
        )
    except Exception:  # noqa: BLE001 - no clv app/tables yet: start with historical value
        rows = []
    if rows:
        source = "clv"
        for cid, clv, pa in rows:
            i = index.get(cid)
            if i is not None:
                value[i] = float(clv or 0)
                cap[i] = max(value[i], 0.0)
                p_alive[i] = float(pa if pa is not None else 1.0)
        return value, p_alive, cap, source
    margin = (
        Purchase.objects.values("customer_id")
        .annotate(
            m=Sum(
                ExpressionWrapper(
                    F("amount") - F("quantity") * Coalesce("unit_cost", "product__unit_cost", Value(Decimal(0))),
                    output_field=DecimalField(max_digits=20, decimal_places=2),
                )
            )
        )
        .values_list("customer_id", "m")
    )
    for cid, m in margin:
        i = index.get(cid)
        if i is not None:
            value[i] = float(m or 0)
    return value, p_alive, cap, source


def win_rates() -> dict[str, float]:
    """Per kind, how often its suggestions were won out of those decided (won, lost, dismissed), with a Beta prior."""
    return {kind: r.win_rate for kind, r in outcome_rates().kinds.items()}


@dataclass
class OutcomeRate:
    """Outcomes of one kind (rule "") or one (kind, rule): counts and the smoothed rates used for ranking.

    win_rate is the posterior mean of P(won | decided), decided = won + lost + dismissed. For a
    kind the prior is Beta(OPPORTUNITY_WIN_PRIOR_A, OPPORTUNITY_WIN_PRIOR_B); for a rule it is a
    Beta centred on its kind's win rate with OPPORTUNITY_RULE_PRIOR_STRENGTH pseudo-decisions, so
    a new rule starts at its kind's rate and moves only as its own outcomes accumulate.
    dismiss_rate is smoothed the same way (kind prior: the kind's own raw rate).
    """

    kind: str
    rule: str
    suggested: int = 0  # every suggestion made, whatever became of it (earlier cycles included)
    open: int = 0
    accepted: int = 0
    dismissed: int = 0
    won: int = 0
    lost: int = 0
    win_rate: float = 0.0
    dismiss_rate: float = 0.0

    @property
    def decided(self) -> int:
        return self.won + self.lost + self.dismissed

    @property
    def acted(self) -> int:
        return self.accepted + self.decided


@dataclass
class OutcomeRates:
    kinds: dict[str, OutcomeRate]
    rules: dict[tuple[str, str], OutcomeRate]
    prior_a: float
    prior_b: float
    rule_strength: float

    def for_suggestion(self, kind: str, rule: str) -> float:
        """The win rate a suggestion of this kind and rule is weighted by: the rule's, else the kind's."""
        r = self.rules.get((kind, rule)) if rule else None
        return r.win_rate if r is not None else self.kinds[kind].win_rate


def outcome_rates() -> OutcomeRates:
    """Observed outcomes per kind and per (kind, rule), from the opportunities and their archived earlier cycles.

    Two grouped queries. Rows with an empty rule (made before rules were recorded) count for
    their kind only.
    """
    from crm.models import OpportunityOutcome  # noqa: PLC0415

    a, b = settings.OPPORTUNITY_WIN_PRIOR_A, settings.OPPORTUNITY_WIN_PRIOR_B
    m = settings.OPPORTUNITY_RULE_PRIOR_STRENGTH
    kinds = {k: OutcomeRate(kind=k, rule="") for k in Opportunity.Kind.values}
    rules: dict[tuple[str, str], OutcomeRate] = {}
    status_field = {
        Opportunity.Status.OPEN: "open", Opportunity.Status.ACCEPTED: "accepted",
        Opportunity.Status.DISMISSED: "dismissed", Opportunity.Status.WON: "won", Opportunity.Status.LOST: "lost",
    }
    current = Opportunity.objects.values("kind", "rule", "status").annotate(n=Count("pk")).order_by()
    archived = OpportunityOutcome.objects.values("kind", "rule", "status").annotate(n=Count("pk")).order_by()
    for row in [*current, *archived]:
        targets = [kinds.setdefault(row["kind"], OutcomeRate(kind=row["kind"], rule=""))]
        if row["rule"]:
            key = (row["kind"], row["rule"])
            targets.append(rules.setdefault(key, OutcomeRate(kind=row["kind"], rule=row["rule"])))
        for t in targets:
            t.suggested += row["n"]
            name = status_field.get(row["status"])
            if name:
                setattr(t, name, getattr(t, name) + row["n"])
    for k in kinds.values():
        k.win_rate = engine.win_rate(k.won, k.decided, prior_a=a, prior_b=b)
        k.dismiss_rate = engine.shrunk_rate(k.dismissed, k.acted, prior_rate=b / (a + b), strength=a + b)
    for r in rules.values():
        base = kinds[r.kind]
        r.win_rate = engine.shrunk_rate(r.won, r.decided, prior_rate=base.win_rate, strength=m)
        r.dismiss_rate = engine.shrunk_rate(r.dismissed, r.acted, prior_rate=base.dismiss_rate, strength=m)
    return OutcomeRates(kinds=kinds, rules=rules, prior_a=a, prior_b=b, rule_strength=m)


def _apply_outcome_rates(suggestions: dict, rates: OutcomeRates) -> None:
    """Weight each suggestion's expected value and score by its rule's win rate (in place).

    The engine computes EV = min(margin, CLV) x P(alive) with a win rate of 1; this makes it
    EV x win rate(kind, rule), so EV <= CLV still holds and the score (evidence x EV) moves with it.
    """
    for key, (from_product, score, ev, text, data, rule) in suggestions.items():
        w = rates.for_suggestion(key[2], rule)
        data["win_rate"] = round(w, 4)
        suggestions[key] = (from_product, score * w, ev * w, text, data, rule)


def _suppressed_products(now) -> set[tuple[int, int]]:
    """(customer, product) pairs dismissed as "already has it" or "not relevant" within CRM_SUPPRESS_DAYS."""
    since = now - timedelta(days=settings.CRM_SUPPRESS_DAYS)
    return set(
        Opportunity.objects.filter(
            status=Opportunity.Status.DISMISSED, dismiss_reason__in=SUPPRESSING_REASONS, status_changed_at__gte=since,
        ).values_list("customer_id", "product_id")
    )


def _fmt_money(x: float) -> str:
    from crm.templatetags.crm_ui import format_money  # noqa: PLC0415

    return format_money(x)


@dataclass
class PurchaseCrossSell:
    """Cross-sell suggestions from purchase lines (united with holdings), one row per (customer, product)."""

    model: str
    level: str
    rule: str
    lookback_days: int
    group_names: list[str]  # item names at the level computed (product names at product level)
    group_of: np.ndarray  # product -> item index at that level
    customer: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    product: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    antecedent: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))  # item index
    confidence: np.ndarray = field(default_factory=lambda: np.array([]))
    lift: np.ndarray = field(default_factory=lambda: np.array([]))
    antecedent_buyers: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    co_buyers: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    relevance: np.ndarray = field(default_factory=lambda: np.array([]))
    # adoption evidence: of `at_risk` customers who had the antecedent and not the item at the start of the last
    # `window_days`, `adopters` first bought it within them (0 / 0 where the words are the association's)
    adopters: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    at_risk: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    base_rate: np.ndarray = field(default_factory=lambda: np.array([]))
    window_days: int = 0
    expected_value: np.ndarray = field(default_factory=lambda: np.array([]))
    score: np.ndarray = field(default_factory=lambda: np.array([]))
    seconds: float = 0.0


def purchase_level(products: list[tuple], level: str | None = None) -> str:
    """The level cross-sell from purchases works at: the setting, or for "auto" products while the
    catalogue is at most OPPORTUNITY_PRODUCT_LEVEL_MAX, else categories (when products have one), else families."""
    level = level or settings.OPPORTUNITY_PURCHASE_LEVEL
    if level != "auto":
        return level
    if len(products) <= settings.OPPORTUNITY_PRODUCT_LEVEL_MAX:
        return "product"
    return "category" if any(p[9] for p in products) else "family"


def product_groups(products: list[tuple], level: str) -> tuple[np.ndarray, list[str]]:
    """(group index per product, group names) for level product, family or category.

    A product with no category falls back to its family, so no product is left out.
    """
    if level == "product":
        return np.arange(len(products), dtype=np.int64), [p[2] for p in products]
    if level not in ("family", "category"):
        raise ValueError(f"unknown level {level!r}; expected product, family or category")
    names: dict[str, int] = {}
    group_of = np.empty(len(products), dtype=np.int64)
    for i, p in enumerate(products):
        name = (p[9] or p[3]) if level == "category" else p[3]
        group_of[i] = names.setdefault(name, len(names))
    return group_of, list(names)


def purchase_pairs(
    *, since: date | None, until: date, c_index: dict[int, int], p_index: dict[int, int], with_day: bool = False
) -> tuple[np.ndarray, ...]:
    """(customer, product[, day]) index arrays of purchase lines in [since, until], one set-based query.

    Without with_day the pairs are distinct; with it, the first day each pair was bought (days since 1970-01-01).
    """
    sql = (
        "SELECT customer_id, product_id, MIN(purchased_at)::date - DATE '1970-01-01' FROM crm_purchase "
        "WHERE product_id IS NOT NULL AND purchased_at < %s"
        + (" AND purchased_at >= %s" if since else "")
        + " GROUP BY customer_id, product_id"
    )
    from datetime import datetime, time  # noqa: PLC0415

    tz = timezone.get_current_timezone()
    params: list = [datetime.combine(until + timedelta(days=1), time.min, tzinfo=tz)]
    if since:
        params.append(datetime.combine(since, time.min, tzinfo=tz))
    if connection.vendor != "postgresql":
        qs = Purchase.objects.filter(product__isnull=False, purchased_at__lt=params[0])
        if since:
            qs = qs.filter(purchased_at__gte=params[1])
        firsts: dict[tuple[int, int], int] = {}
        for cid, pid, when in qs.values_list("customer_id", "product_id", "purchased_at"):
            d = timezone.localtime(when).date().toordinal() - 719163
            firsts[(cid, pid)] = min(firsts.get((cid, pid), d), d)
        rows = [(c, p, d) for (c, p), d in firsts.items()]
    else:
        # One hash aggregate over the window's lines, kept in memory (the default work_mem spills it to disk).
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("SET LOCAL work_mem = '128MB'")
            cur.execute(sql, params)
            rows = cur.fetchall()
    arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
    ci, pi = _index_of(arr[:, 0], c_index), _index_of(arr[:, 1], p_index)
    keep = (ci >= 0) & (pi >= 0)
    if with_day:
        return ci[keep], pi[keep], arr[keep, 2]
    return ci[keep], pi[keep]


def _index_of(ids: np.ndarray, index: dict[int, int]) -> np.ndarray:
    """Map database ids to their positions in `index` (-1 when absent), vectorised."""
    if not index:
        return np.full(len(ids), -1, dtype=np.int64)
    keys = np.fromiter(index.keys(), dtype=np.int64, count=len(index))
    vals = np.fromiter(index.values(), dtype=np.int64, count=len(index))
    order = np.argsort(keys)
    keys, vals = keys[order], vals[order]
    pos = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
    return np.where(keys[pos] == ids, vals[pos], -1)


def fit_purchase_model(
    owned, model: str | None = None, *, history=None, as_of: int | None = None, window: int | None = None
) -> engine.Recommender:
    """The product's recommender with the configured model and parameters.

    history, as_of (days since 1970-01-01): the dated (customer, item, first day) purchases the adoption
    model learns from; window: its days ahead (default OPPORTUNITY_ADOPTION_WINDOW_DAYS).
    """
    return engine.fit_recommender(
        owned, model or settings.OPPORTUNITY_PURCHASE_MODEL, alpha=settings.OPPORTUNITY_ITEM_ALPHA,
        shrinkage=settings.OPPORTUNITY_ITEM_SHRINKAGE, min_support=settings.OPPORTUNITY_MIN_SUPPORT,
        min_count=settings.OPPORTUNITY_MIN_COUNT, min_lift=settings.OPPORTUNITY_MIN_LIFT,
        history=history, as_of=as_of, window=window or settings.OPPORTUNITY_ADOPTION_WINDOW_DAYS,
        ease_strength=settings.OPPORTUNITY_ADOPTION_EASE_STRENGTH,
    )


def group_pick(products: list[tuple], group_of: np.ndarray, n_groups: int, bought: np.ndarray) -> np.ndarray:
    """The concrete product to suggest for each group: the most bought (customers) of the group, then the
    lowest tier, then the first created."""
    pick = np.full(n_groups, -1, dtype=np.int64)
    best: dict[int, tuple] = {}
    for i, p in enumerate(products):
        g = int(group_of[i])
        key = (-int(bought[i]), p[4], p[0])
        if g not in best or key < best[g]:
            best[g] = key
            pick[g] = i
    return pick


def _purchase_cross_sell(
    *, as_of, products, c_index, h_cust, h_prod, margin, cap, p_alive, top_k, n_c
) -> PurchaseCrossSell:
    """Cross-sell from purchase lines within OPPORTUNITY_PURCHASE_LOOKBACK_DAYS, united with holdings.

    Which items to suggest is the configured model's choice (settings.OPPORTUNITY_PURCHASE_MODEL,
    chosen by the offline evaluation); the evidence in words is the association A -> B of the owned item
    that supports the suggestion most; score = confidence(A -> B) x expected value, as for holdings.
    """
    t = time.perf_counter()
    cfg = settings
    lookback = cfg.OPPORTUNITY_PURCHASE_LOOKBACK_DAYS
    level = purchase_level(products)
    model = cfg.OPPORTUNITY_PURCHASE_MODEL
    rule = f"purchases:{model}" + ("" if level == "product" else f":{level}")
    group_of, group_names = product_groups(products, level)
    out = PurchaseCrossSell(model, level, rule, lookback, group_names, group_of)
    p_index = {int(p[0]): i for i, p in enumerate(products)}
    pc, pp, pday = purchase_pairs(
        since=as_of - timedelta(days=lookback), until=as_of, c_index=c_index, p_index=p_index, with_day=True
    )
    if pc.size == 0:
        out.seconds = time.perf_counter() - t
        return out
    n_p = len(products)
    owned_products = engine.holding_matrix(np.concatenate([pc, h_cust]), np.concatenate([pp, h_prod]), n_c, n_p)
    n_g = len(group_names)
    owned = owned_products if level == "product" else engine.group_matrix(owned_products, group_of, n_g)
    day0 = as_of.toordinal() - 719163
    rec = fit_purchase_model(owned, model, history=(pc, group_of[pp], pday), as_of=day0)
    items, rel = engine.recommend(rec, owned, k=top_k)
    r, j = np.nonzero((items >= 0) & (rel > 1e-5))
    cust, item, relevance = r, items[r, j], rel[r, j]
    ante = engine.strongest_antecedent(rec, owned, cust, item)
    keep = ante >= 0
    cust, item, relevance, ante = cust[keep], item[keep], relevance[keep], ante[keep]
    if level == "product":
        product = item
    else:
        bought = np.bincount(pp, minlength=n_p)  # customers who bought each product in the window
        product = group_pick(products, group_of, n_g, bought)[item]
    stats = [rec.evidence(int(a), int(b)) for a, b in zip(ante.tolist(), item.tolist(), strict=True)]
    conf = np.array([s[0] for s in stats])
    lift = np.array([s[1] for s in stats])
    ev = engine.capped_gain(margin[product], cap[cust]) * p_alive[cust]
    # Only where the evidence is an association worth saying aloud: as many co-buyers and as much lift as a
    # holdings rule needs (the model picks the item; the words must hold for it).
    co_buyers = np.array([s[3] for s in stats], dtype=np.int64)
    said = (conf > 0) & (lift > cfg.OPPORTUNITY_MIN_LIFT) & (co_buyers >= cfg.OPPORTUNITY_MIN_COUNT)
    # The adoption model says what it learnt where it is worth saying: at least OPPORTUNITY_MIN_COUNT customers
    # with the antecedent started buying the item within the window, at a rate above the item's usual one.
    k = m = np.zeros(len(cust), dtype=np.int64)
    base = np.zeros(len(cust))
    rate = np.zeros(len(cust))
    if rec.adoption is not None and len(cust):
        k = rec.adoption.moved[ante, item].astype(np.int64)
        m = rec.adoption.at_risk[ante, item].astype(np.int64)
        base = rec.adoption.base_rate[item]
        rate = np.where(m > 0, k / np.maximum(m, 1), 0.0)
        out.window_days = rec.adoption.window
    adopt = (k >= cfg.OPPORTUNITY_MIN_COUNT) & (rate > base * max(cfg.OPPORTUNITY_MIN_LIFT, 1.0))
    k, m, base = np.where(adopt, k, 0), np.where(adopt, m, 0), np.where(adopt, base, 0.0)
    ok = said | adopt
    out.customer, out.product, out.antecedent = cust[ok], product[ok], ante[ok]
    out.confidence, out.lift, out.relevance = conf[ok], lift[ok], relevance[ok]
    out.antecedent_buyers = np.array([s[2] for s in stats], dtype=np.int64)[ok]
    out.co_buyers = co_buyers[ok]
    out.adopters, out.at_risk, out.base_rate = k[ok], m[ok], base[ok]
    # The figure said aloud is the one the ranking uses: the adoption rate, else the association's confidence.
    out.expected_value, out.score = ev[ok], (np.where(adopt, rate, conf) * ev)[ok]
    out.seconds = time.perf_counter() - t
    return out


def opportunities_regenerate(
    *,
    as_of: date | None = None,
    min_support: float | None = None,
    top_k: int | None = None,
) -> RegenerationResult:
    """Compute suggestions for every active customer and merge them into the Opportunity table in bulk.

    New suggestions are created open; open ones are refreshed; accepted, dismissed, won and lost
    ones keep their status (and are not suggested again); open ones no longer supported become
    expired; expired ones supported again reopen.
    """
    cfg = settings
    as_of = as_of or timezone.localdate()
    min_support = cfg.OPPORTUNITY_MIN_SUPPORT if min_support is None else min_support
    top_k = cfg.OPPORTUNITY_TOP_K if top_k is None else top_k
    result = RegenerationResult()
    t0 = time.perf_counter()

    customer_ids = np.array(
        list(Customer.objects.active().order_by("pk").values_list("pk", flat=True)), dtype=np.int64
    )
    c_index = {int(c): i for i, c in enumerate(customer_ids)}
    products = list(
        Product.objects.filter(is_active=True)
        .order_by("pk")
        .values_list("pk", "sku", "name", "family", "tier", "list_price", "unit_cost", "capacity_unit", "capacity_per_unit",
                     "category")
    )
    p_ids = np.array([p[0] for p in products], dtype=np.int64)
    p_index = {int(p): i for i, p in enumerate(p_ids)}
    n_c, n_p = len(customer_ids), len(products)
    margin = np.array([max(float(p[5]) - float(p[6]), 0.0) for p in products])
    tier = np.array([p[4] for p in products], dtype=np.int64)
    fam_max: dict[str, int] = {}
    by_family_tier: dict[tuple[str, int], int] = {}
    for i, p in enumerate(products):
        fam_max[p[3]] = max(fam_max.get(p[3], 0), p[4])
        by_family_tier[(p[3], p[4])] = i
    family_max_tier = np.array([fam_max[p[3]] for p in products], dtype=np.int64)
    next_tier = np.full(n_p, -1, dtype=np.int64)
    for i, p in enumerate(products):
        higher = [t for (f, t) in by_family_tier if f == p[3] and t > p[4]]
        if higher:
            next_tier[i] = by_family_tier[(p[3], min(higher))]

    holdings = list(
        Holding.objects.filter(status=Holding.Status.ACTIVE, customer__in=Customer.objects.active(), since__lte=as_of)
        .filter(Q(until__isnull=True) | Q(until__gte=as_of))
        .values_list("pk", "customer_id", "product_id", "quantity")
    )
    holdings = [h for h in holdings if h[2] in p_index]
    h_ids = np.array([h[0] for h in holdings], dtype=np.int64)
    h_cust = np.array([c_index[h[1]] for h in holdings], dtype=np.int64)
    h_prod = np.array([p_index[h[2]] for h in holdings], dtype=np.int64)
    h_qty = np.array([float(h[3]) for h in holdings])
    result.timings["load"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    value, p_alive, ev_cap, result.value_source = _customer_values(customer_ids, c_index)
    rates = outcome_rates()
    result.timings["values"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    held = engine.holding_matrix(h_cust, h_prod, n_c, n_p)
    rules = engine.association_rules(
        held, min_support=min_support, min_count=cfg.OPPORTUNITY_MIN_COUNT, min_lift=cfg.OPPORTUNITY_MIN_LIFT
    )
    cs = engine.cross_sell(
        held, rules, margin=margin, cap=ev_cap, p_alive=p_alive, win_rate=1.0, top_k=top_k
    )

    purchase = _purchase_cross_sell(
        as_of=as_of, products=products, c_index=c_index, h_cust=h_cust, h_prod=h_prod, margin=margin,
        cap=ev_cap, p_alive=p_alive, top_k=top_k, n_c=n_c,
    )
    result.timings["purchases"] = purchase.seconds

    periods = cfg.UPSELL_PERIODS
    util = np.full((len(h_ids), max(periods, 1)), np.nan)
    cap_last = np.full(len(h_ids), np.nan)
    h_row = {int(h): i for i, h in enumerate(h_ids)}
    capacity_products = [p[0] for p in products if p[8] is not None]
    if periods and capacity_products:
        usage = (
            Usage.objects.filter(
                holding__status=Holding.Status.ACTIVE, holding__product_id__in=capacity_products, period_end__lte=as_of
            )
            .annotate(rn=Window(RowNumber(), partition_by=[F("holding_id")], order_by=F("period_start").desc()))
            .filter(rn__lte=periods)
            .values_list("holding_id", "rn", "used", "capacity", "holding__quantity", "holding__product__capacity_per_unit")
        )
        for hid, rn, used, cap, qty, per_unit in usage:
            i = h_row.get(hid)
            if i is None:
                continue
            capacity = float(cap) if cap is not None else float(qty) * float(per_unit)
            if capacity > 0:
                util[i, periods - rn] = float(used) / capacity
                if rn == 1:
                    cap_last[i] = capacity
    us = engine.up_sell(
        holding_customer=h_cust, holding_product=h_prod, holding_quantity=h_qty, utilisation=util,
        next_tier=next_tier, tier=tier, family_max_tier=family_max_tier, margin=margin,
        customer_value=value, cap=ev_cap, p_alive=p_alive, held=held, win_rate=1.0,
        threshold=cfg.UPSELL_UTILISATION_THRESHOLD, periods=periods,
        high_value_quantile=cfg.UPSELL_HIGH_VALUE_QUANTILE,
    )
    result.timings["engine"] = time.perf_counter() - t1

    # Build the suggestion rows: key (customer_id, product_id, kind) -> fields.
    t1 = time.perf_counter()
    now = timezone.now()
    suggestions: dict[tuple[int, int, str], tuple] = {}
    names = [p[2] for p in products]
    for c, b, a, conf, lift, sup, ev, score in zip(
        cs.customer.tolist(), cs.product.tolist(), cs.antecedent.tolist(), cs.confidence.tolist(),
        cs.lift.tolist(), cs.support.tolist(), cs.expected_value.tolist(), cs.score.tolist(), strict=True,
    ):
        text = (
            f"{conf:.0%} of customers who hold {names[a]} also hold {names[b]} (lift {lift:.1f}); "
            f"this customer does not."
        )
        data = {
            "rule": {"antecedent": products[a][1], "consequent": products[b][1]},
            "confidence": round(conf, 4), "lift": round(lift, 3), "support": round(sup, 5),
            "antecedent_holders": int(rules.holders[a]), "co_holders": int(rules.co[a, b]),
            "margin": round(float(margin[b]), 2), "cap": _cap(ev_cap[c]),
            "p_alive": round(float(p_alive[c]), 4), "value_source": result.value_source,
        }
        suggestions[(int(customer_ids[c]), int(p_ids[b]), Opportunity.Kind.CROSS_SELL)] = (
            None, score, ev, text, data, "holdings:association",
        )
    days = purchase.window_days
    for c, b, a, conf, lift, na, nab, ev, score, rel, k, m, base in zip(
        purchase.customer.tolist(), purchase.product.tolist(), purchase.antecedent.tolist(),
        purchase.confidence.tolist(), purchase.lift.tolist(), purchase.antecedent_buyers.tolist(),
        purchase.co_buyers.tolist(), purchase.expected_value.tolist(), purchase.score.tolist(),
        purchase.relevance.tolist(), purchase.adopters.tolist(), purchase.at_risk.tolist(),
        purchase.base_rate.tolist(), strict=True,
    ):
        key = (int(customer_ids[c]), int(p_ids[b]), Opportunity.Kind.CROSS_SELL)
        if key in suggestions and suggestions[key][1] >= score:
            continue
        ga, gb = (names[a], names[b]) if purchase.level == "product" else (
            purchase.group_names[a], purchase.group_names[purchase.group_of[b]])
        usual = f", {k / m / base:.1f}x the usual rate" if base > 0 else ""
        if k and purchase.level == "product":
            text = (
                f"Customers like this one, buying {ga} and not {gb}, started buying {gb} within {days} days: "
                f"{k} of {m}{usual}; this customer buys {ga} and not {gb}."
            )
        elif k:
            text = (
                f"Customers like this one, buying {ga} and no {gb}, started buying {gb} within {days} days: "
                f"{k} of {m}{usual}; this customer buys {ga} and no {gb} yet: start with {names[b]}."
            )
        elif purchase.level == "product":
            text = (
                f"{conf:.0%} of customers who buy {names[a]} also buy {names[b]}, {lift:.1f}x the usual rate; "
                f"this customer buys {names[a]} and not {names[b]}."
            )
        else:
            text = (
                f"{conf:.0%} of customers who buy {ga} also buy {gb}, {lift:.1f}x the usual rate; "
                f"this customer buys {ga} and no {gb} yet: start with {names[b]}."
            )
        data = {
            "rule": {"antecedent": purchase.group_names[a] if purchase.level != "product" else products[a][1],
                     "consequent": products[b][1]},
            "level": purchase.level, "model": purchase.model, "relevance": round(float(rel), 5),
            "confidence": round(conf, 4), "lift": round(lift, 3), "antecedent_buyers": int(na),
            "co_buyers": int(nab), "lookback_days": purchase.lookback_days,
            "margin": round(float(margin[b]), 2), "cap": _cap(ev_cap[c]),
            "p_alive": round(float(p_alive[c]), 4), "value_source": result.value_source,
        }
        if k:
            data["adoption"] = {"window_days": days, "adopters": int(k), "at_risk": int(m),
                                "rate": round(k / m, 4), "base_rate": round(float(base), 5)}
        suggestions[key] = (None, score, ev, text, data, purchase.rule)
    result.cross_sell = sum(1 for k in suggestions if k[2] == Opportunity.Kind.CROSS_SELL)
    result.purchase_cross_sell = sum(
        1 for k, s in suggestions.items() if k[2] == Opportunity.Kind.CROSS_SELL and s[5].startswith("purchases:")
    )
    for hi, b, reason, u, ev, score in zip(
        us.holding.tolist(), us.target.tolist(), us.reason.tolist(), us.utilisation.tolist(),
        us.expected_value.tolist(), us.score.tolist(), strict=True,
    ):
        c, a = int(h_cust[hi]), int(h_prod[hi])
        unit = products[a][7] or "units"
        if reason == "capacity":
            cap = cap_last[hi]
            text = (
                f"used {u:.0%} of {cap:,.0f} {unit} of {names[a]} for {periods} periods in a row; "
                f"next tier: {names[b]}."
            )
        else:
            text = (
                f"a top-{1 - cfg.UPSELL_HIGH_VALUE_QUANTILE:.0%} customer by value ({_fmt_money(value[c])}) "
                f"on tier {tier[a]} of {fam_max[products[a][3]]} of {products[a][3]}; next tier: {names[b]}."
            )
        data = {
            "reason": reason, "from_sku": products[a][1], "to_sku": products[b][1],
            "utilisation": None if np.isnan(u) else round(u, 4), "periods": periods,
            "capacity": None if np.isnan(cap_last[hi]) else float(cap_last[hi]),
            "customer_value": round(float(value[c]), 2), "cap": _cap(ev_cap[c]),
            "p_alive": round(float(p_alive[c]), 4), "value_source": result.value_source,
        }
        suggestions[(int(customer_ids[c]), int(p_ids[b]), Opportunity.Kind.UP_SELL)] = (
            int(p_ids[a]), score, ev, text, data, f"up_sell:{reason}",
        )
    result.up_sell = len(us.holding)
    result.timings["evidence"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    _apply_outcome_rates(suggestions, rates)
    suppressed = _suppressed_products(now)
    for key in [k for k in suggestions if (k[0], k[1]) in suppressed]:
        del suggestions[key]
    result.suppressed = len(suppressed)
    _merge(suggestions, now=now, result=result)
    _tidy_after_bulk_load(result.created)
    result.timings["write"] = time.perf_counter() - t1
    result.timings["total"] = time.perf_counter() - t0
    log.info("opportunities regenerated: %s", result)
    return result


@transaction.atomic
def _merge(suggestions: dict, *, now, result: RegenerationResult) -> None:
    """Write the suggestions: (customer, product, kind) -> (from_product, score, ev, evidence, data, rule).

    Accepted, won and lost rows keep their status. A dismissed row keeps it for CRM_SUPPRESS_DAYS;
    suggested again after that, it opens once more and its earlier outcome is archived
    (OpportunityOutcome) so the rates still count it.
    """
    from crm.models import OpportunityOutcome  # noqa: PLC0415

    returns_before = now - timedelta(days=settings.CRM_SUPPRESS_DAYS)
    to_update: list[tuple] = []
    to_expire: list[int] = []
    archive: list[OpportunityOutcome] = []
    seen: set = set()
    unchanged = 0
    for (pk, cid, pid, kind, status, rule, reason, changed_at, changed_by, from_product, score, ev, evidence, data,
         note) in _existing_rows():
        key = (cid, pid, kind)
        s = suggestions.get(key)
        if s is None:
            if status == Opportunity.Status.OPEN:
                to_expire.append(pk)
            continue
        seen.add(key)
        if status == Opportunity.Status.OPEN:
            # Confirmed as it is (what it says and its numbers as stored): not written at all.
            # The evidence numbers are parsed only when everything else is the same.
            if (from_product, score, ev, evidence, rule, reason, note) == (
                s[0], max(s[1], 0.0), _money(s[2]), s[3], s[5], "", ""
            ) and (json.loads(data) if isinstance(data, str) else data) == s[4]:
                unchanged += 1
                continue
            to_update.append((pk, Opportunity.Status.OPEN, *s))
        elif status == Opportunity.Status.EXPIRED:
            to_update.append((pk, Opportunity.Status.OPEN, *s))
            result.reopened += 1
        elif status == Opportunity.Status.DISMISSED and (changed_at is None or changed_at < returns_before):
            archive.append(OpportunityOutcome(
                opportunity_id=pk, customer_id=cid, product_id=pid, kind=kind, rule=rule, status=status,
                dismiss_reason=reason, decided_at=changed_at or now, decided_by_id=changed_by, archived_at=now,
            ))
            to_update.append((pk, Opportunity.Status.OPEN, *s))
            result.returned += 1
        else:
            result.kept += 1
    result.expired = len(to_expire)
    new = [(k, s) for k, s in suggestions.items() if k not in seen]
    result.created = len(new)

    for i in range(0, len(to_expire), BATCH):
        Opportunity.objects.filter(pk__in=to_expire[i : i + BATCH]).update(
            status=Opportunity.Status.EXPIRED, status_changed_at=now, status_changed_by=None, updated_at=now
        )
    OpportunityOutcome.objects.bulk_create(archive, batch_size=BATCH)
    written = _bulk_update(to_update, now)
    result.updated = written - result.reopened - result.returned
    result.unchanged = unchanged + len(to_update) - written
    if connection.vendor == "postgresql":
        _copy_new(new, now)
        return
    objs = (
        Opportunity(
            customer_id=k[0], product_id=k[1], kind=k[2], from_product_id=s[0], score=max(s[1], 0.0),
            expected_value=_money(s[2]), evidence=s[3], evidence_data=s[4], rule=s[5],
            status=Opportunity.Status.OPEN, generated_at=now,
        )
        for k, s in new
    )
    batch: list[Opportunity] = []
    for o in objs:
        batch.append(o)
        if len(batch) >= BATCH:
            Opportunity.objects.bulk_create(batch)
            batch = []
    if batch:
        Opportunity.objects.bulk_create(batch)


def _tidy_after_bulk_load(created: int) -> None:
    """After many new rows (PostgreSQL): VACUUM ANALYZE the table once they are committed, as
    autovacuum would later. Measured: a refresh that rewrote every row minutes after a first run
    of 318,956 inserts took 199 s, 47 s once the table had been vacuumed. Inside an outer
    transaction (VACUUM cannot run there) only ANALYZE."""
    if connection.vendor != "postgresql" or created < VACUUM_AFTER_ROWS:
        return
    with connection.cursor() as cur:
        cur.execute("ANALYZE crm_opportunity" if connection.in_atomic_block else "VACUUM (ANALYZE) crm_opportunity")


EXISTING_FIELDS = (
    "pk", "customer_id", "product_id", "kind", "status", "rule", "dismiss_reason", "status_changed_at",
    "status_changed_by_id", "from_product_id", "score", "expected_value", "evidence", "evidence_data", "dismiss_note",
)


def _existing_rows():
    """Every stored opportunity as a tuple of EXISTING_FIELDS. PostgreSQL: read with the query's own
    cursor (no per-value ORM conversion; evidence_data stays JSON text until _merge needs it)."""
    qs = Opportunity.objects.order_by().values_list(*EXISTING_FIELDS)
    if connection.vendor != "postgresql":
        yield from qs.iterator(chunk_size=20_000)
        return
    sql, params = qs.query.sql_with_params()
    with connection.chunked_cursor() as cur:  # server-side: 20,000 rows at a time in memory
        cur.execute(sql, params)
        while rows := cur.fetchmany(20_000):
            yield from rows


def _cap(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 2)


def _money(x: float) -> Decimal:
    return Decimal(str(round(max(float(x), 0.0), 2)))


# The columns a new suggestion is written with (COPY on PostgreSQL); the others keep their defaults.
NEW_COLUMNS = (
    "created_at", "updated_at", "customer_id", "product_id", "kind", "from_product_id", "score", "expected_value",
    "evidence", "evidence_data", "rule", "status", "generated_at", "dismiss_reason", "dismiss_note",
)


def _copy_new(new: list[tuple], now) -> None:
    """Insert the new suggestions with one COPY (PostgreSQL): the feed's trigger places each row and
    the history's statement trigger records each creation, as for any other insert."""
    rows = (
        (now, now, k[0], k[1], k[2], s[0], max(s[1], 0.0), _money(s[2]), s[3], json.dumps(s[4]), s[5],
         Opportunity.Status.OPEN, now, "", "")
        for k, s in new
    )
    bulk_insert(Opportunity, NEW_COLUMNS, rows)


def _bulk_update(rows: list[tuple], now) -> int:
    """Refresh (pk, status, from_product, score, ev, evidence, data, rule) rows to open; PostgreSQL gets UPDATE ... FROM VALUES.

    _merge passes only rows where something a reader sees changes (status, from-product, score,
    expected value, evidence, its numbers, rule, dismissal), and on PostgreSQL the UPDATE checks
    it again against the row as it is now: a refresh that confirms a suggestion as it was leaves
    the row, its place in the change feed and its updated_at alone, and so does not send it to
    sync clients again. generated_at is when the engine last produced or changed it. A row that
    changes status (expired or dismissed, now open) loses its dismissal reason and who changed
    it. Returns the number of rows written.
    """
    if not rows:
        return 0
    if connection.vendor == "postgresql":
        from psycopg2.extras import execute_values

        sql = (
            "UPDATE crm_opportunity o SET status = v.status, from_product_id = v.from_product_id::bigint, "
            "score = v.score, expected_value = v.ev::numeric, evidence = v.evidence, "
            "evidence_data = v.data::jsonb, rule = v.rule, generated_at = %s, updated_at = %s, "
            "status_changed_at = CASE WHEN o.status <> v.status THEN %s ELSE o.status_changed_at END, "
            "status_changed_by_id = CASE WHEN o.status <> v.status THEN NULL ELSE o.status_changed_by_id END, "
            "dismiss_reason = '', dismiss_note = '' "
            "FROM (VALUES %%s) AS v(id, status, from_product_id, score, ev, evidence, data, rule) WHERE o.id = v.id "
            "AND (o.status <> v.status OR o.from_product_id IS DISTINCT FROM v.from_product_id::bigint "
            "OR o.score <> v.score OR o.expected_value <> v.ev::numeric OR o.evidence <> v.evidence "
            "OR o.evidence_data <> v.data::jsonb OR o.rule <> v.rule OR o.dismiss_reason <> '' OR o.dismiss_note <> '')"
        )
        written = 0
        with connection.cursor() as cur:
            raw = cur.cursor if hasattr(cur, "cursor") else cur
            sql = raw.mogrify(sql, (now, now, now)).decode()
            for i in range(0, len(rows), BATCH):
                chunk = [
                    (pk, st, fp, max(sc, 0.0), str(_money(ev)), txt, json.dumps(data), rule)
                    for pk, st, fp, sc, ev, txt, data, rule in rows[i : i + BATCH]
                ]
                execute_values(raw, sql, chunk, page_size=BATCH)
                written += raw.rowcount
        return written
    objs = []
    for pk, st, fp, sc, ev, txt, data, rule in rows:
        objs.append(
            Opportunity(
                pk=pk, status=st, from_product_id=fp, score=max(sc, 0.0), expected_value=_money(ev), evidence=txt,
                evidence_data=data, rule=rule, generated_at=now, updated_at=now, status_changed_at=now,
                status_changed_by=None, dismiss_reason="", dismiss_note="",
            )
        )
    Opportunity.objects.bulk_update(
        objs,
        ["status", "from_product", "score", "expected_value", "evidence", "evidence_data", "rule", "generated_at",
         "updated_at", "status_changed_by", "dismiss_reason", "dismiss_note"],
        batch_size=1000,
    )
    return len(rows)


def opportunities_link_won_purchases(*, purchases: list[Purchase]) -> int:
    """Link won opportunities (no purchase yet, marked won before the purchase was recorded) to these purchases.

    One query finds the candidates for the whole batch; the first purchase of a customer and
    product realises the opportunity.
    """
    first: dict[tuple[int, int], Purchase] = {}
    for p in purchases:
        if p.product_id is not None:
            first.setdefault((p.customer_id, p.product_id), p)
    if not first:
        return 0
    candidates = Opportunity.objects.filter(
        among(Opportunity, "customer_id", sorted({c for c, _ in first})),
        status=Opportunity.Status.WON, won_purchase__isnull=True, product_id__in={pr for _, pr in first},
    ).only("pk", "customer_id", "product_id", "status_changed_at")
    now = timezone.now()
    linked = 0
    for opp in candidates:
        p = first.get((opp.customer_id, opp.product_id))
        if p is None or opp.status_changed_at is None or opp.status_changed_at > (p.created_at or now):
            continue
        linked += Opportunity.objects.filter(pk=opp.pk, won_purchase__isnull=True).update(won_purchase=p, updated_at=now)
    return linked


def opportunities_link_pending_wins() -> int:
    """Link every won opportunity still waiting for its purchase to the first one recorded after the win.

    Used after bulk writes (CSV import), where purchases are not handled one by one; the work is
    bounded by the number of won opportunities still unlinked, not by the number of purchases.
    """
    linked = 0
    pending = Opportunity.objects.filter(status=Opportunity.Status.WON, won_purchase__isnull=True)
    for opp in pending.only("pk", "customer_id", "product_id", "status_changed_at"):
        purchase = (
            Purchase.objects.filter(
                customer_id=opp.customer_id, product_id=opp.product_id, created_at__gte=opp.status_changed_at
            )
            .order_by("created_at", "pk")
            .first()
        )
        if purchase is not None:
            linked += Opportunity.objects.filter(pk=opp.pk).update(won_purchase=purchase, updated_at=timezone.now())
    return linked
