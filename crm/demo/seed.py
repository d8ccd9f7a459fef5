"""Deterministic demo data whose four facets carry known ground truth.

Purchases follow a BG/NBD process (Fader, Hardie & Lee 2005) and spend a Gamma-Gamma
process with the parameters below (time in days); co-holding associations, near-capacity
usage, events before losses and before purchases, and contact rhythms per salesperson are
planted on purpose, and the returned ground truth says exactly what was planted so tests
and benchmarks can check the CRM's answers against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import numpy as np
from django.db import transaction
from django.utils import timezone

from accounts.models import Team, User
from clv.engine.simulate import simulate_transactions
from clv.models import PurchaseDay, PurchaseSummary
from crm.bulk import bulk_insert, refresh_statistics
from crm.history import history_context
from crm.models import Contact, Customer, Event, Holding, Person, Product, Purchase, Task, Usage

DEMO_PASSWORD = "demo-pass-2026"
HISTORY_DAYS = 3 * 365

# BG/NBD in days: transaction rate lambda ~ Gamma(r, alpha) (mean r/alpha = 0.0125 a day, about
# 4.6 occasions a year), dropout after each repeat occasion with p ~ Beta(a, b) (mean 0.17).
BGNBD = {"r": 0.5, "alpha": 40.0, "a": 0.8, "b": 4.0}
# Gamma-Gamma spend per occasion: mean p*v/(q-1), about 352 currency units.
GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "v": 154.4}
LINES_PER_OCCASION = (1, 5)  # uniform in [1, 5): 1 to 4 lines, mean 2.5

ASSOCIATIONS = [("ANA-PRO", "DATA-CONN", 0.80), ("STO-1TB", "BACKUP", 0.80), ("SUP-PREM", "TRAINING", 0.75)]
BASE_HOLD_RATE = 0.08
# Customers who send purchase lines and keep no holdings (a shop, a wholesaler): their lines are drawn from
# a basket of products at a base rate, and buyers of the antecedent go on to buy the consequent on a later
# occasion with the given probability. Their own random stream: the other planted facts stay as they were.
PURCHASE_ONLY_SHARE = 0.25
PURCHASE_ONLY_BASE_RATE = 0.12
PURCHASE_ANTECEDENT_RATE = 0.4
PURCHASE_ASSOCIATIONS = [("MIGRATION", "SEC-AUDIT", 0.70), ("CONSULT", "STO-10TB", 0.70)]
PURCHASE_ONLY_SEED_OFFSET = 2_000_003
# Categories group families the way a salesperson talks about them.
CATEGORIES = {
    "Analytics": "Data", "Data Connector": "Data", "Reporting": "Data", "Storage": "Infrastructure",
    "Backup": "Infrastructure", "Migration": "Infrastructure", "Support": "Services", "Training": "Services",
    "Consulting": "Services", "API Access": "Platform", "Mobile": "Platform", "SSO": "Platform",
    "Security Audit": "Security", "Compliance": "Security",
}
NEAR_CAPACITY_SHARE = 0.10
USAGE_MONTHS = 6
LOST_SHARE = 0.10
LOSS_SIGNALS = {"complaint": 0.70, "competitor_change": 0.55}  # probability within the window before loss
LOSS_WINDOW_DAYS = 90
BASE_SIGNAL_RATE = 0.04  # the same kinds, at random times, for everybody
PURCHASE_SIGNALS = ("new_opportunity", "funding")
PURCHASE_SIGNAL_SHARE = 0.30  # of repeat occasions that get a signal 7-30 days before
PURCHASE_LEAD_DAYS = (7, 30)
CONTACT_DAYS = 180
FOLLOW_UP_SHARE = 0.05  # of contacts that promise a follow-up
FOLLOW_UP_DAYS = 14  # a follow-up is due this many days after its contact
FOLLOW_UP_KEPT_DAYS = 7  # follow-ups due longer ago than this were done on their day (only recent ones stay open)
# Subscriptions: sku -> (renewal period, planted sBG churn process). The products are outside the
# planted associations and up-sell paths. A holding's renewals follow the process from its since
# date: churn probability theta ~ Beta(alpha, beta) per contract, the same at every renewal.
SUBSCRIPTIONS = {
    "API-ACCESS": ("month", {"alpha": 0.9, "beta": 7.0}),
    "MOBILE": ("month", {"alpha": 1.2, "beta": 9.0}),
    "REPORTS": ("quarter", {"alpha": 0.8, "beta": 4.0}),
    "SSO": ("year", {"alpha": 0.7, "beta": 3.8}),
    "COMPLIANCE": ("year", {"alpha": 1.0, "beta": 2.5}),
}
SUBSCRIPTION_SEED_OFFSET = 1_000_003  # its own random stream: the other planted facts stay as they were

TEAMS = {"North": ("manager_north", ["rep_north_1", "rep_north_2", "rep_north_3"]),
         "South": ("manager_south", ["rep_south_1", "rep_south_2", "rep_south_3"])}
CONTACT_GAP_DAYS = {"rep_north_1": 10, "rep_north_2": 21, "rep_north_3": 45,
                    "rep_south_1": 14, "rep_south_2": 30, "rep_south_3": 60}

# sku, name, family, tier, list price, unit cost, capacity unit, capacity per unit
CATALOGUE = [
    ("ANA-BASIC", "Analytics Basic", "Analytics", 1, 500, 150, "seats", 10),
    ("ANA-PRO", "Analytics Pro", "Analytics", 2, 1500, 400, "seats", 50),
    ("ANA-ENT", "Analytics Enterprise", "Analytics", 3, 5000, 1200, "seats", 200),
    ("STO-100GB", "Storage 100 GB", "Storage", 1, 100, 30, "GB", 100),
    ("STO-1TB", "Storage 1 TB", "Storage", 2, 600, 180, "GB", 1000),
    ("STO-10TB", "Storage 10 TB", "Storage", 3, 4000, 1100, "GB", 10000),
    ("SUP-STD", "Support Standard", "Support", 1, 300, 120, "", None),
    ("SUP-PREM", "Support Premium", "Support", 2, 900, 300, "", None),
    ("SUP-ELITE", "Support Elite", "Support", 3, 2500, 900, "", None),
    ("DATA-CONN", "Data Connector", "Data Connector", 1, 700, 150, "", None),
    ("BACKUP", "Backup Service", "Backup", 1, 250, 60, "", None),
    ("TRAINING", "Training Package", "Training", 1, 1200, 600, "", None),
    ("API-ACCESS", "API Access", "API Access", 1, 400, 50, "", None),
    ("MOBILE", "Mobile Pack", "Mobile", 1, 350, 70, "", None),
    ("SEC-AUDIT", "Security Audit", "Security Audit", 1, 3000, 1800, "", None),
    ("REPORTS", "Reporting Pack", "Reporting", 1, 450, 90, "", None),
    ("CONSULT", "Consulting Day", "Consulting", 1, 1400, 900, "", None),
    ("SSO", "Single Sign-On", "SSO", 1, 300, 40, "", None),
    ("MIGRATION", "Data Migration", "Migration", 1, 2000, 1100, "", None),
    ("COMPLIANCE", "Compliance Pack", "Compliance", 1, 800, 200, "", None),
]

NAME_A = ["Blue", "North", "Bright", "Silver", "Green", "Rapid", "Prime", "Urban", "Cedar", "Atlas", "Nova", "Summit"]
NAME_B = ["River", "Harbor", "Forge", "Field", "Peak", "Bridge", "Stone", "Grove", "Works", "Labs", "Point", "Gate"]
NAME_C = ["Ltd", "GmbH", "Inc", "& Co", "Group", "Partners", "BV", "SA"]
FIRST = ["Anna", "Ben", "Chloe", "David", "Eva", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Liam"]
LAST = ["Meyer", "Novak", "Okafor", "Petit", "Quinn", "Rossi", "Svensson", "Tanaka", "Urban", "Vidal", "Weber", "Young"]
OTHER_EVENTS = ["leadership_change", "relocation", "merger", "referral", "expansion", "budget_cut"]
INDUSTRIES = ["Retail", "Manufacturing", "Finance", "Healthcare", "Logistics", "Software", "Education", "Energy"]

Progress = Callable[[str, int], None]


@dataclass
class _Rows:
    """Column names and row tuples for one table."""

    columns: list[str]
    rows: list[tuple]


def seed_demo(
    *,
    customers: int = 2000,
    seed: int = 42,
    products: int = 20,
    as_of: date | None = None,
    progress: Progress | None = None,
    subscriptions: bool = True,
) -> dict:
    """Fill users, the catalogue and `customers` demo customers; returns the planted ground truth.

    Histories end on `as_of` (default today), so a new user sees recent purchases and events,
    and follow-ups due this week. The same seed and as_of give the same data. With
    subscriptions, a few products renew monthly, quarterly or yearly and their holdings carry
    renewal histories drawn from SUBSCRIPTIONS (see _subscriptions).
    """
    as_of = as_of or timezone.localdate()
    step = progress or (lambda label, n: None)
    rng = np.random.default_rng(seed)
    # The history records the demo as made by seed_demo. Without a context, each history trigger's
    # lookup of it fails and rolls back a subtransaction, which costs as much as every row the
    # transaction has written so far (PostgreSQL revisits its queued constraint checks).
    with transaction.atomic(), history_context(via="seed_demo"):
        reps = _users()
        step("users", 9)
        catalogue = _catalogue(products)
        step("products", len(catalogue))
        truth = _customers_and_facets(
            customers, rng, reps, catalogue, as_of, step, np.random.default_rng(seed + PURCHASE_ONLY_SEED_OFFSET)
        )
        if subscriptions:
            truth["subscriptions"] = _subscriptions(np.random.default_rng(seed + SUBSCRIPTION_SEED_OFFSET), as_of)
    refresh_statistics(Customer, Person, Holding, Usage, Purchase, Event, Contact, Task, PurchaseDay, PurchaseSummary)
    truth.update(
        seed=seed, customers=customers, as_of=as_of.isoformat(), time_unit="days", bgnbd=dict(BGNBD),
        gamma_gamma=dict(GAMMA_GAMMA), products=len(catalogue),
        associations=[{"antecedent": a, "consequent": c, "confidence": conf} for a, c, conf in ASSOCIATIONS],
        purchase_associations=[
            {"antecedent": a, "consequent": c, "confidence": conf} for a, c, conf in PURCHASE_ASSOCIATIONS
        ],
        events_before_loss={"kinds": list(LOSS_SIGNALS), "window_days": LOSS_WINDOW_DAYS},
        events_before_purchase={"kinds": list(PURCHASE_SIGNALS), "lead_days": list(PURCHASE_LEAD_DAYS)},
        contact_gap_days_by_owner=dict(CONTACT_GAP_DAYS), password=DEMO_PASSWORD,
    )
    return truth


def _users() -> list[User]:
    admin, created = User.objects.get_or_create(
        username="admin", defaults={"role": User.Role.ADMIN, "is_staff": True, "is_superuser": True}
    )
    if created:
        admin.set_password(DEMO_PASSWORD)
        admin.save()
    reps = []
    for team_name, (manager_name, rep_names) in TEAMS.items():
        manager = _user(manager_name, User.Role.MANAGER)
        team, _ = Team.objects.get_or_create(name=team_name, defaults={"manager": manager})
        if manager.team_id != team.pk:
            manager.team = team
            manager.save(update_fields=["team"])
        reps += [_user(name, User.Role.SALESPERSON, team) for name in rep_names]
    return reps


def _user(username: str, role: str, team: Team | None = None) -> User:
    first, _, last = username.partition("_")
    user, created = User.objects.get_or_create(
        username=username,
        defaults={"role": role, "team": team, "first_name": first.title(), "last_name": last.replace("_", " ").title()},
    )
    if created:
        user.set_password(DEMO_PASSWORD)
        user.save()
    return user


def _catalogue(count: int) -> list[Product]:
    specs = list(CATALOGUE[:count])
    for i in range(len(specs), count):
        specs.append((f"ADDON-{i:03d}", f"Add-on {i:03d}", f"Add-on {i:03d}", 1, 100 + 7 * i, 30 + 2 * i, "", None))
    existing = {p.sku: p for p in Product.objects.filter(sku__in=[s[0] for s in specs])}
    new = [
        Product(sku=sku, name=name, family=family, category=CATEGORIES.get(family, ""), tier=tier,
                list_price=Decimal(price), unit_cost=Decimal(cost),
                capacity_unit=unit, capacity_per_unit=None if cap is None else Decimal(cap), external_id=f"DEMO-{sku}")
        for sku, name, family, tier, price, cost, unit, cap in specs
        if sku not in existing
    ]
    Product.objects.bulk_create(new)
    by_sku = {p.sku: p for p in Product.objects.filter(sku__in=[s[0] for s in specs])}
    return [by_sku[s[0]] for s in specs]


def _customers_and_facets(n, rng, reps, catalogue, as_of, step, po_rng) -> dict:
    now = timezone.now()
    end = np.datetime64(as_of, "D")
    start = end - np.timedelta64(HISTORY_DAYS, "D")
    tx = simulate_transactions(
        n, (BGNBD["r"], BGNBD["alpha"], BGNBD["a"], BGNBD["b"]),
        (GAMMA_GAMMA["p"], GAMMA_GAMMA["q"], GAMMA_GAMMA["v"]), start=start, end=end, rng=rng,
    )
    first = tx.first_purchase
    last_days = np.full(n, -(2**62), dtype=np.int64)
    np.maximum.at(last_days, tx.customer_ids, tx.dates.astype("int64"))
    occasions = np.bincount(tx.customer_ids, minlength=n)

    owner_idx = rng.integers(0, len(reps), size=n)
    lost = rng.random(n) < LOST_SHARE
    # A lost customer is lost some time after their last purchase, and before as_of.
    lost_day = np.minimum(last_days + rng.integers(30, 200, size=n), end.astype("int64"))
    lost_day = np.maximum(lost_day, first.astype("int64"))
    stage = np.where(occasions <= 1, "acquired", np.where(occasions <= 4, "developing", "retained"))
    stage = np.where(rng.random(n) < 0.05, "advocate", stage)
    stage = np.where(lost, "lost", stage)
    relationship = rng.choice(["transactional", "repeat", "partner", "strategic"], size=n, p=[0.4, 0.35, 0.1, 0.15])
    kind = np.where(rng.random(n) < 0.85, "company", "individual")
    names = rng.integers(0, [len(NAME_A), len(NAME_B), len(NAME_C)], size=(n, 3))
    industry = rng.integers(0, len(INDUSTRIES), size=n)

    ext = [f"DEMO-{i + 1:06d}" for i in range(n)]
    to_date = lambda d: date.fromordinal(int(d) + 719163)  # noqa: E731  days since 1970-01-01 -> date
    customer_cols = ["external_id", "name", "kind", "owner_id", "relationship_type", "lifecycle_stage", "acquired_on",
                     "lost_on", "industry", "city", "country", "email", "phone", "website", "notes", "created_at",
                     "updated_at"]

    def customer_rows():
        for i in range(n):
            a, b, c = names[i]
            name = (f"{NAME_A[a]} {NAME_B[b]} {NAME_C[c]}" if kind[i] == "company"
                    else f"{FIRST[a]} {LAST[b]}") + f" #{i + 1}"
            yield (ext[i], name, kind[i], reps[owner_idx[i]].pk, relationship[i], stage[i],
                   to_date(first[i].astype("int64")), to_date(lost_day[i]) if lost[i] else None,
                   INDUSTRIES[industry[i]] if kind[i] == "company" else "", "", "", "", "", "", "", now, now)

    bulk_insert(Customer, customer_cols, customer_rows())
    step("customers", n)
    ids = dict(Customer.objects.filter(external_id__in=ext).values_list("external_id", "pk"))
    cust_pk = np.array([ids[e] for e in ext], dtype=np.int64)

    # People of the decision-making unit: 1 to 3 each.
    n_people = rng.integers(1, 4, size=n)
    roles = ["decision_maker", "buyer", "influencer", "user", "gatekeeper"]
    person_cust = np.repeat(np.arange(n), n_people)
    rank = np.arange(person_cust.size) - np.repeat(np.cumsum(n_people) - n_people, n_people)
    first_names = rng.integers(0, len(FIRST), size=person_cust.size)
    last_names = rng.integers(0, len(LAST), size=person_cust.size)
    bulk_insert(Person, ["customer_id", "first_name", "last_name", "job_title", "dmu_role", "email", "phone",
                         "is_active", "created_at", "updated_at"],
                ((int(cust_pk[c]), FIRST[first_names[j]], LAST[last_names[j]], "", roles[min(rank[j], 4)], "", "",
                  True, now, now) for j, c in enumerate(person_cust)))
    step("people", int(person_cust.size))

    # Holdings: every product at a base rate (one tier per family), then the planted associations.
    skus = [p.sku for p in catalogue]
    col = {s: j for j, s in enumerate(skus)}
    holds = rng.random((n, len(catalogue))) < BASE_HOLD_RATE
    families: dict[str, list[int]] = {}
    for j, p in enumerate(catalogue):
        families.setdefault(p.family, []).append(j)
    for members in families.values():
        if len(members) > 1:  # keep at most one tier, drawn at random
            chosen = rng.integers(0, len(members), size=n)
            any_held = holds[:, members].any(axis=1)
            holds[:, members] = False
            holds[np.arange(n)[any_held], np.array(members)[chosen[any_held]]] = True
    # Everybody holds something; filled before the associations so they stay exact.
    empty = ~holds.any(axis=1)
    holds[np.arange(n)[empty], rng.integers(0, len(catalogue), size=int(empty.sum()))] = True
    for antecedent, consequent, confidence in ASSOCIATIONS:
        if antecedent in col and consequent in col:
            a, c = col[antecedent], col[consequent]
            holds[:, c] = np.where(holds[:, a], rng.random(n) < confidence, holds[:, c])
    # Purchase-only customers (never lost, so they stay in the book) hold nothing; their basket plants
    # PURCHASE_ASSOCIATIONS, bought in that order (see the purchase lines below).
    purchase_only = (po_rng.random(n) < PURCHASE_ONLY_SHARE) & ~lost
    holds[purchase_only] = False
    basket = (po_rng.random((n, len(catalogue))) < PURCHASE_ONLY_BASE_RATE) & purchase_only[:, None]
    planted_pairs = [(col[a], col[c], conf) for a, c, conf in PURCHASE_ASSOCIATIONS if a in col and c in col]
    for a, c, conf in planted_pairs:
        basket[:, a] = purchase_only & (po_rng.random(n) < PURCHASE_ANTECEDENT_RATE)
        basket[:, c] = np.where(basket[:, a], po_rng.random(n) < conf, basket[:, c])
    lonely = purchase_only & ~basket.any(axis=1)
    basket[np.arange(n)[lonely], po_rng.integers(0, len(catalogue), size=int(lonely.sum()))] = True
    h_cust, h_prod = np.nonzero(holds)
    h_qty = rng.integers(1, 4, size=h_cust.size)
    h_since = first[h_cust].astype("int64")
    h_status = np.where(lost[h_cust], "cancelled", "active")
    h_ext = [f"DEMO-H-{k + 1:07d}" for k in range(h_cust.size)]
    bulk_insert(Holding, ["external_id", "customer_id", "product_id", "quantity", "since", "until", "status",
                          "created_at", "updated_at"],
                ((h_ext[k], int(cust_pk[h_cust[k]]), catalogue[h_prod[k]].pk, int(h_qty[k]), to_date(h_since[k]),
                  to_date(lost_day[h_cust[k]]) if lost[h_cust[k]] else None, h_status[k], now, now)
                 for k in range(h_cust.size)))
    step("holdings", int(h_cust.size))
    holding_pk = dict(Holding.objects.filter(external_id__in=h_ext).values_list("external_id", "pk"))

    # Usage of capacity products, monthly; a planted share of lower-tier holdings runs near capacity.
    capacity = np.array([float(p.capacity_per_unit or 0) for p in catalogue])
    top_tier = {p.family: p.tier for p in catalogue}
    upgradable = np.array([p.tier < top_tier[p.family] for p in catalogue])
    cap_rows = np.nonzero((capacity[h_prod] > 0) & ~lost[h_cust])[0]
    near = np.zeros(h_cust.size, dtype=bool)
    near[cap_rows] = (rng.random(cap_rows.size) < NEAR_CAPACITY_SHARE) & upgradable[h_prod[cap_rows]]
    month_starts = [_month_start(as_of, k) for k in range(USAGE_MONTHS, 0, -1)]
    usage_rows = []
    for k in cap_rows:
        cap = capacity[h_prod[k]] * h_qty[k]
        for m, period_start in enumerate(month_starts):
            recent = m >= USAGE_MONTHS - 3
            share = rng.uniform(0.9, 1.05) if (near[k] and recent) else rng.uniform(0.3, 0.7)
            usage_rows.append((holding_pk[h_ext[k]], period_start, _month_end(period_start), round(cap * share, 3),
                               cap, int(rng.integers(2, 6)), int(rng.integers(4, 11)), "", now, now))
    bulk_insert(Usage, ["holding_id", "period_start", "period_end", "used", "capacity", "satisfaction", "nps",
                        "note", "created_at", "updated_at"], usage_rows)
    step("usage", len(usage_rows))
    near_capacity = [{"customer": ext[h_cust[k]], "sku": skus[h_prod[k]], "utilisation": 0.9}
                     for k in np.nonzero(near)[0]]

    # Purchases: each occasion split into 1-3 lines over products the customer holds.
    # Purchase-only customers buy from their basket instead.
    b_cust, b_prod = np.nonzero(basket)
    o_cust, o_prod = np.concatenate([h_cust, b_cust]), np.concatenate([h_prod, b_prod])
    o_order = np.lexsort((o_prod, o_cust))
    o_cust, o_prod = o_cust[o_order], o_prod[o_order]
    held_start = np.searchsorted(o_cust, np.arange(n))
    held_count = np.bincount(o_cust, minlength=n)
    n_lines = rng.integers(*LINES_PER_OCCASION, size=tx.customer_ids.size)
    line_occ = np.repeat(np.arange(tx.customer_ids.size), n_lines)
    line_cust = tx.customer_ids[line_occ]
    weights = rng.random(line_occ.size) + 0.2
    weights /= np.bincount(line_occ, weights=weights)[line_occ]
    line_amount = np.round(tx.amounts[line_occ] * weights, 2).clip(0.01)
    pick = held_start[line_cust] + (rng.random(line_occ.size) * held_count[line_cust]).astype(np.int64)
    line_prod = o_prod[pick]
    line_day = tx.dates[line_occ].astype("int64")
    _plant_purchase_order(line_cust, line_day, line_prod, basket, planted_pairs)
    cost_ratio = np.array([float(p.unit_cost / p.list_price) if p.list_price else 0.5 for p in catalogue])
    line_qty = rng.integers(1, 4, size=line_occ.size)
    line_hour = rng.integers(8, 18, size=line_occ.size)
    pk_of_product = [p.pk for p in catalogue]

    def purchase_rows():
        for k in range(line_occ.size):
            amount = line_amount[k]
            unit_price = round(amount / line_qty[k], 2)
            when = datetime.combine(to_date(line_day[k]), time(int(line_hour[k])), tzinfo=UTC)
            yield (int(cust_pk[line_cust[k]]), pk_of_product[line_prod[k]], int(line_qty[k]), f"{unit_price:.2f}",
                   f"{amount:.2f}", f"{unit_price * cost_ratio[line_prod[k]]:.2f}", when,
                   f"DEMO-O-{line_occ[k] + 1:08d}", None, now, now)

    from crm.services import purchases_bulk_insert

    lines = purchases_bulk_insert(
        columns=["customer_id", "product_id", "quantity", "unit_price", "amount", "unit_cost", "purchased_at",
                 "order_ref", "external_id", "created_at", "updated_at"],
        rows=purchase_rows(),
    )
    step("purchases", lines)

    # Events: loss signals before planted losses, purchase signals before repeat occasions, noise.
    ev = []
    lost_idx = np.nonzero(lost)[0]
    for kind_name, rate in LOSS_SIGNALS.items():
        hit = lost_idx[rng.random(lost_idx.size) < rate]
        days = lost_day[hit] - rng.integers(1, LOSS_WINDOW_DAYS, size=hit.size)
        ev += [(c, kind_name, d, "negative") for c, d in zip(hit, days, strict=True)]
        noise = np.nonzero(rng.random(n) < BASE_SIGNAL_RATE)[0]
        ev += [(c, kind_name, d, "negative") for c, d in
               zip(noise, start.astype("int64") + rng.integers(0, HISTORY_DAYS, size=noise.size), strict=True)]
    repeat_occ = np.nonzero(tx.dates.astype("int64") > first[tx.customer_ids].astype("int64"))[0]
    signal_occ = repeat_occ[rng.random(repeat_occ.size) < PURCHASE_SIGNAL_SHARE]
    leads = rng.integers(PURCHASE_LEAD_DAYS[0], PURCHASE_LEAD_DAYS[1] + 1, size=signal_occ.size)
    kinds = rng.choice(list(PURCHASE_SIGNALS), size=signal_occ.size)
    ev += [(tx.customer_ids[o], k, tx.dates[o].astype("int64") - lead, "positive")
           for o, k, lead in zip(signal_occ, kinds, leads, strict=True)]
    noise = np.nonzero(rng.random(n) < 0.3)[0]
    ev += [(c, OTHER_EVENTS[j], d, "neutral") for c, j, d in
           zip(noise, rng.integers(0, len(OTHER_EVENTS), size=noise.size),
               start.astype("int64") + rng.integers(0, HISTORY_DAYS, size=noise.size), strict=True)]
    bulk_insert(Event, ["customer_id", "kind", "occurred_at", "impact", "description", "created_at", "updated_at"],
                ((int(cust_pk[c]), k, datetime.combine(to_date(d), time(10), tzinfo=UTC), impact,
                  f"{k.replace('_', ' ').capitalize()} (demo)", now, now) for c, k, d, impact in ev))
    step("events", len(ev))

    # Contacts: each salesperson keeps their own rhythm over the last CONTACT_DAYS days.
    gaps = np.array([CONTACT_GAP_DAYS.get(r.username, 30) for r in reps], dtype=float)
    active_idx = np.nonzero(~lost)[0]
    n_contacts = rng.poisson(CONTACT_DAYS / gaps[owner_idx[active_idx]])
    c_cust = np.repeat(active_idx, n_contacts)
    c_day = end.astype("int64") - rng.integers(0, CONTACT_DAYS, size=c_cust.size)
    channels = rng.choice(["call", "email", "meeting", "visit", "chat"], size=c_cust.size, p=[.35, .3, .15, .1, .1])
    inbound = rng.random(c_cust.size) < 0.2
    follow = rng.random(c_cust.size) < FOLLOW_UP_SHARE
    today = end.astype("int64")

    def follow_up(k):
        """(follow_up_on, follow_up_done_at): old follow-ups were done on their day, recent ones are still open."""
        if not follow[k]:
            return None, None
        due = int(c_day[k]) + FOLLOW_UP_DAYS
        done = datetime.combine(to_date(due), time(16), tzinfo=UTC) if due < today - FOLLOW_UP_KEPT_DAYS else None
        return to_date(due), done
    bulk_insert(Contact, ["customer_id", "channel", "direction", "salesperson_id", "occurred_at", "subject", "notes",
                          "outcome", "follow_up_on", "follow_up_done_at", "created_at", "updated_at"],
                ((int(cust_pk[c]), channels[k], "inbound" if inbound[k] else "outbound", reps[owner_idx[c]].pk,
                  datetime.combine(to_date(c_day[k]), time(9 + k % 8), tzinfo=UTC),
                  "Check-in" if not inbound[k] else "Customer request", "", "", *follow_up(k), now, now)
                 for k, c in enumerate(c_cust)))
    step("contacts", int(c_cust.size))
    from crm.services import follow_up_tasks_backfill

    step("follow-up tasks", follow_up_tasks_backfill())

    open_follow_ups = sum(1 for k in np.nonzero(follow)[0] if int(c_day[k]) + FOLLOW_UP_DAYS >= today - FOLLOW_UP_KEPT_DAYS)
    return {"near_capacity": near_capacity, "lost_customers": int(lost.sum()), "purchase_lines": int(lines),
            "purchase_only_customers": [ext[i] for i in np.flatnonzero(purchase_only)],
            "occasions": int(tx.customer_ids.size), "open_follow_ups": open_follow_ups}


def _plant_purchase_order(line_cust, line_day, line_prod, basket, pairs) -> None:
    """Make basket holders of antecedent A and consequent B buy A first and B on a later occasion (in place).

    A is bought on the customer's first occasion; B first on the next one (on the first one too when the
    customer has one occasion only); B is never bought before A.
    """
    order = np.argsort(line_cust, kind="stable")
    starts = np.searchsorted(line_cust[order], np.arange(basket.shape[0]))
    ends = np.searchsorted(line_cust[order], np.arange(basket.shape[0]), side="right")
    for a, b, _ in pairs:
        for c in np.flatnonzero(basket[:, a] & basket[:, b]):
            idx = order[starts[c] : ends[c]]
            if idx.size == 0:
                continue
            days = line_day[idx]
            first = idx[days == days.min()]
            later = idx[days > days.min()]
            line_prod[first[line_prod[first] == b]] = a
            line_prod[first[0]] = a
            if later.size:
                line_prod[later[line_day[later] == line_day[later].min()][0]] = b
            elif first.size > 1:
                line_prod[first[1]] = b


def _subscriptions(rng: np.random.Generator, as_of: date) -> dict:
    """Make the SUBSCRIPTIONS products subscriptions (period price = list price) and give their
    holdings renewal histories: a contract still running when its planted churn falls after the as-of
    date stays active, else it is cancelled on the renewal date it missed. Holdings of lost customers
    stay cancelled on the day the customer was lost. Returns the planted truth per sku."""
    from clv.contracts import add_months

    months = {"month": 1, "quarter": 3, "year": 12}
    truth = {}
    for sku, (period, params) in SUBSCRIPTIONS.items():
        product = Product.objects.filter(sku=sku).first()
        if product is None:
            continue
        Product.objects.filter(pk=product.pk).update(renewal_period=period, period_price=product.list_price)
        holdings = list(Holding.objects.filter(product=product, status=Holding.Status.ACTIVE).order_by("pk"))
        theta = rng.beta(params["alpha"], params["beta"], size=len(holdings))
        lasted = np.minimum(rng.geometric(np.clip(theta, 1e-9, 1.0)), 10_000)  # periods until the missed renewal
        since = np.array([h.since for h in holdings], dtype="datetime64[D]")
        ends = add_months(since, lasted * months[period]) if holdings else since
        cancelled = []
        for holding, end in zip(holdings, ends, strict=True):
            if end <= np.datetime64(as_of, "D"):
                holding.status, holding.until = Holding.Status.CANCELLED, end.item()
                cancelled.append(holding)
        Holding.objects.bulk_update(cancelled, ["status", "until"], batch_size=1000)
        truth[sku] = {"renewal_period": period, **params, "contracts": len(holdings), "cancelled": len(cancelled)}
    return truth


def _month_start(as_of: date, months_back: int) -> date:
    index = as_of.year * 12 + as_of.month - 1 - months_back
    return date(index // 12, index % 12 + 1, 1)


def _month_end(start: date) -> date:
    index = start.year * 12 + start.month
    return date(index // 12, index % 12 + 1, 1) - timedelta(days=1)
