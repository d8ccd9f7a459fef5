"""Recommenders and the offline evaluation on synthetic arrays (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from crm.opportunities import engine as E
from crm.opportunities import evaluation as V


def _owned(pairs, n_c, n_i):
    c, i = zip(*pairs, strict=True)
    return E.holding_matrix(np.array(c), np.array(i), n_c, n_i)


def test_item_item_cosine_with_shrinkage_hand_computed():
    # item 0 owned by 0,1,2; item 1 by 0,1; item 2 by 3.
    X = _owned([(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (3, 2)], 4, 3)
    rec = E.fit_recommender(X, "item_item", alpha=0.5, shrinkage=1.0)
    assert rec.weights[0, 1] == pytest.approx(2 / (np.sqrt(3 * 2) + 1))
    assert rec.weights[0, 2] == 0
    assert rec.weights[1, 1] == 0
    conf, lift, na, nab = rec.evidence(1, 0)
    assert (conf, na, nab) == (1.0, 2, 2)
    assert lift == pytest.approx(1.0 / (3 / 4))


def test_recommend_skips_owned_and_fills_by_popularity():
    X = _owned([(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (3, 2)], 4, 3)
    items, _ = E.recommend(E.fit_recommender(X, "popularity"), X, k=2)
    assert items[2].tolist() == [1, 2]  # owns item 0; item 1 is the more popular of the rest
    assert items[0].tolist() == [2, -1]  # owns 0 and 1: only item 2 is left
    items, _ = E.recommend(E.fit_recommender(X, "item_item"), X, k=1)
    assert items[2].tolist() == [1]  # bought item 0, whose buyers also buy item 1


def _planted(n_c=3000, n_i=30, seed=3):
    """Items with skewed popularity; buyers of item 4 buy item 11 later (item 11 is otherwise rare)."""
    rng = np.random.default_rng(seed)
    pop = rng.random(n_i) ** 2 * 0.3 + 0.02
    own = rng.random((n_c, n_i)) < pop
    day = rng.integers(0, 280, size=(n_c, n_i))
    own[:, 4] = rng.random(n_c) < 0.3
    own[:, 11] = np.where(own[:, 4], rng.random(n_c) < 0.7, rng.random(n_c) < 0.02)
    day[:, 11] = np.where(own[:, 4], np.minimum(day[:, 4] + rng.integers(10, 120, size=n_c), 399), day[:, 11])
    c, i = np.nonzero(own)
    return c, i, day[c, i], n_c, n_i


def test_planted_association_beats_popularity_and_lift_ranks_rare_items():
    c, i, d, n_c, n_i = _planted()
    split = V.time_split(c, i, d, as_of=250, horizon=150, n_customers=n_c, n_items=n_i)
    recs = {m: E.fit_recommender(split.owned, m, min_count=5) for m in ("popularity", "item_item", "lift")}
    rows = {m.model: m for m in V.evaluate(split, recs, n_items=n_i)}
    assert rows["item_item"].precision_at_3 > 1.2 * rows["popularity"].precision_at_3
    assert rows["lift"].precision_at_3 < rows["item_item"].precision_at_3
    assert rows["item_item"].customers == rows["popularity"].customers > 0


def test_metrics_hand_computed():
    # 2 customers, 5 items; customer 0 owns item 0 and later buys 1 and 2; customer 1 owns 3 and buys 4.
    split = V.time_split(
        np.array([0, 0, 0, 1, 1]), np.array([0, 1, 2, 3, 4]), np.array([0, 10, 10, 0, 10]),
        as_of=5, horizon=10, n_customers=2, n_items=5,
    )
    top = np.array([[1, 3, 4] + [-1] * 7, [0, 1, 2] + [-1] * 7])
    m = V.metrics("x", top, split, n_items=5)
    assert m.precision_at_3 == pytest.approx((1 / 3 + 0) / 2)
    assert m.recall_at_10 == pytest.approx((1 / 2 + 0) / 2)
    assert m.coverage == pytest.approx(5 / 5)


def test_truth_leaves_out_what_was_owned_before():
    split = V.time_split(np.array([0, 0]), np.array([0, 0]), np.array([0, 10]), as_of=5, horizon=10,
                         n_customers=1, n_items=2)
    assert split.truth.nnz == 0
    assert split.customers.size == 0


def test_group_matrix_and_strongest_antecedent():
    X = _owned([(0, 0), (0, 3), (1, 1)], 2, 4)
    G = E.group_matrix(X, np.array([0, 0, 1, 1]), 2)
    assert G.toarray().tolist() == [[1, 1], [1, 0]]
    rec = E.fit_recommender(_owned([(0, 0), (0, 2), (1, 0), (1, 2), (2, 1)], 3, 3), "item_item")
    owned = _owned([(0, 0), (0, 1)], 1, 3)
    assert E.strongest_antecedent(rec, owned, np.array([0]), np.array([2])).tolist() == [0]


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model"):
        E.fit_recommender(_owned([(0, 0)], 1, 1), "magic")
