"""Offline evaluation of recommenders on a time split (no Django): precision@k, recall@k and coverage.

Train on what each customer owned up to the split date; the truth is what they first bought in the
next N days (items they did not own at the split). Every model is measured on the same customers:
those who owned something at the split and bought something new in the horizon.

  precision@k = mean over customers of |top-k and truth| / k
  recall@k    = mean over customers of |top-k and truth| / |truth|
  coverage    = distinct items appearing in some customer's top-k / items in the catalogue
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from crm.opportunities import engine


@dataclass
class Metrics:
    model: str
    precision_at_3: float  # precision at k (3 unless asked otherwise)
    recall_at_10: float
    coverage: float
    customers: int
    k: int = 3
    per_customer: np.ndarray | None = None  # precision@k of each customer measured (for standard errors)

    @property
    def standard_error(self) -> float:
        """Standard error of precision@k over the customers measured."""
        v = self.per_customer
        return float(v.std(ddof=1) / np.sqrt(v.size)) if v is not None and v.size > 1 else 0.0

    def as_row(self) -> dict:
        return {
            "model": self.model,
            f"precision@{self.k}": round(self.precision_at_3, 4),
            "recall@10": round(self.recall_at_10, 4),
            "coverage": round(self.coverage, 4),
            "customers": self.customers,
        }


@dataclass
class Split:
    owned: sp.csr_matrix  # customers x items at the split date (train)
    truth: sp.csr_matrix  # customers x items first bought within the horizon, not owned before
    customers: np.ndarray  # rows evaluated: owned something and bought something new
    as_of: int = 0  # the split day
    horizon: int = 0  # days measured after it


def time_split(
    customer: np.ndarray,
    item: np.ndarray,
    day: np.ndarray,
    *,
    as_of: int,
    horizon: int,
    n_customers: int,
    n_items: int,
    owned_extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> Split:
    """Split purchase lines (customer, item, day as integers) at as_of: train before, truth in [as_of, as_of + horizon).

    owned_extra: (customer, item) pairs also owned at the split (e.g. holdings active on that day).
    """
    customer, item, day = (np.asarray(x, dtype=np.int64) for x in (customer, item, day))
    before = day < as_of
    c_train, i_train = customer[before], item[before]
    if owned_extra is not None:
        c_train = np.concatenate([c_train, np.asarray(owned_extra[0], dtype=np.int64)])
        i_train = np.concatenate([i_train, np.asarray(owned_extra[1], dtype=np.int64)])
    owned = engine.holding_matrix(c_train, i_train, n_customers, n_items)
    window = (day >= as_of) & (day < as_of + horizon)
    later = engine.holding_matrix(customer[window], item[window], n_customers, n_items)
    truth = (later - later.multiply(owned)).tocsr()
    truth.eliminate_zeros()
    has_owned = np.diff(owned.indptr) > 0
    has_truth = np.diff(truth.indptr) > 0
    return Split(owned, truth, np.flatnonzero(has_owned & has_truth), as_of, horizon)


def metrics(model: str, top: np.ndarray, split: Split, *, n_items: int, k: int = 3) -> Metrics:
    """Precision@k, recall@10 and coverage (of the top k) of ranked lists (customers x >= max(k, 10) items, -1 for none)."""
    rows = split.customers
    if rows.size == 0:
        return Metrics(model, 0.0, 0.0, 0.0, 0, k)
    truth = split.truth[rows]
    picks = top[rows]
    tr, ti = truth.nonzero()
    truth_keys = np.sort(tr.astype(np.int64) * n_items + ti)
    keys = np.arange(len(rows), dtype=np.int64)[:, None] * n_items + picks
    hits = (picks >= 0) & np.isin(keys, truth_keys)
    n_truth = np.diff(truth.indptr).astype(np.float64)
    p3 = hits[:, :k].sum(axis=1) / float(k)
    r10 = hits[:, :10].sum(axis=1) / n_truth
    shown = np.unique(picks[:, :k][picks[:, :k] >= 0])
    return Metrics(model, float(p3.mean()), float(r10.mean()), shown.size / max(n_items, 1), int(rows.size), k, p3)


def evaluate(split: Split, recommenders: dict[str, engine.Recommender], *, n_items: int, k: int = 3) -> list[Metrics]:
    """Metrics for each named fitted recommender on the same split: precision@k, recall@10, coverage of the top k."""
    out = []
    for name, rec in recommenders.items():
        top, _ = engine.recommend(rec, split.owned, k=max(k, 10))
        out.append(metrics(name, top, split, n_items=n_items, k=k))
    return out
