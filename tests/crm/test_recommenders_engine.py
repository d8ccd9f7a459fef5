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


def _saturated_and_spreading(n_c=3000, seed=5):
    """Items 0-9 are bought early by the 60% who ever buy them, and by nobody later (saturated); items 10-19 are
    owned by fewer but still spreading: customers start buying them all year round."""
    rng = np.random.default_rng(seed)
    c, i, d = [], [], []
    for item in range(20):
        if item < 10:
            who = np.flatnonzero(rng.random(n_c) < 0.6)
            day = rng.integers(0, 60, size=who.size)
        else:
            who = np.arange(n_c)
            day = rng.integers(0, 1000, size=n_c)  # about 3% of non-owners start in any 30 days
            who, day = who[day < 400], day[day < 400]
        c.append(who)
        i.append(np.full(who.size, item))
        d.append(day)
    return np.concatenate(c), np.concatenate(i), np.concatenate(d), n_c, 20


def test_adoption_learns_what_non_owners_start_buying_and_beats_popularity():
    c, i, d, n_c, n_i = _saturated_and_spreading()
    split = V.time_split(c, i, d, as_of=300, horizon=30, n_customers=n_c, n_items=n_i)
    before = d < 300
    adoption = E.fit_recommender(split.owned, "adoption", history=(c[before], i[before], d[before]), as_of=300,
                                 window=30)
    assert adoption.adoption is not None
    assert adoption.adoption.window == 30
    assert adoption.adoption.splits == 2
    # It learnt that the recent adoption rate matters, more than popularity.
    assert adoption.adoption.coef[2] > 0
    assert adoption.adoption.coef[2] > adoption.adoption.coef[0]
    recs = {"popularity": E.fit_recommender(split.owned, "popularity"), "adoption": adoption}
    rows = {m.model: m for m in V.evaluate(split, recs, n_items=n_i)}
    # Popularity offers the saturated items nobody starts buying any more; adoption the spreading ones.
    assert rows["adoption"].precision_at_3 > 2 * rows["popularity"].precision_at_3
    items, rel = E.recommend(adoption, split.owned, k=3)
    assert (items[split.customers] >= 10).mean() > 0.95
    # Relevance is a probability.
    assert ((rel >= 0) & (rel <= 1)).all()
    assert rel[split.customers, 0].mean() > 0


def test_adoption_without_enough_dated_history_falls_back_to_item_item():
    c, i, d, n_c, n_i = _planted()
    split = V.time_split(c, i, d, as_of=250, horizon=150, n_customers=n_c, n_items=n_i)
    item_item, _ = E.recommend(E.fit_recommender(split.owned, "item_item"), split.owned, k=3)
    for history in (None, (c[:0], i[:0], d[:0]), (c[d < 15], i[d < 15], d[d < 15])):  # none, empty, 15 days
        rec = E.fit_recommender(split.owned, "adoption", history=history, as_of=250 if history else None)
        assert rec.model == "adoption"
        assert rec.adoption is None
        assert (E.recommend(rec, split.owned, k=3)[0] == item_item).all()


def test_adoption_counts_hand_computed():
    # At the window's start: customers 0, 1, 2 own item 0; customer 1 also owns item 1; customer 3 owns item 2.
    before = _owned([(0, 0), (1, 0), (1, 1), (2, 0), (3, 2)], 5, 3)
    # Within it: customer 0 and customer 3 first buy item 1; customer 4 (owned nothing) buys item 1 too.
    adopted = _owned([(0, 1), (3, 1), (4, 1)], 5, 3)
    moved, at_risk, base = E.adoption_counts(before, adopted)
    assert (moved[0, 1], at_risk[0, 1]) == (1, 2)  # of customers 0 and 2 (item 0, not item 1), customer 0 moved
    assert (moved[2, 1], at_risk[2, 1]) == (1, 1)
    assert base[1] == pytest.approx(2 / 3)  # customers 0, 2, 3 lacked item 1; 0 and 3 bought it (4 is left out)
    assert moved[1, 1] == 0


def test_adoption_logistic_fit_stays_finite_on_rare_labels_and_outliers():
    # 1M pairs, 800 positives, all of them at outlying feature values: plain Newton steps overshoot here.
    rng = np.random.default_rng(1)
    z = rng.standard_normal((1_000_000, 3))
    y = np.zeros(len(z))
    y[:800] = 1.0
    z[:800, 1] += 40.0
    w = E._logistic(z, y)
    assert np.all(np.isfinite(w))
    assert w[1] > 0  # the feature the positives stand out on
    assert abs(w[0]) < 0.5 * w[1]
    p = 1 / (1 + np.exp(-(np.hstack([z, np.ones((len(z), 1))]) @ w)))
    assert p[:800].mean() > 0.5 > p[800:].mean()
