"""Opportunity engine math on synthetic arrays (no database)."""

from __future__ import annotations

import numpy as np

from crm.opportunities import engine as E


def _planted(n_c=5000, n_p=40, seed=1):
    rng = np.random.default_rng(seed)
    pop = rng.random(n_p) ** 2 * 0.25 + 0.01
    h = rng.random((n_c, n_p)) < pop
    h[:, 3] = rng.random(n_c) < 0.15
    h[:, 9] = np.where(h[:, 3], rng.random(n_c) < 0.75, rng.random(n_c) < 0.02)
    return h


def test_rule_statistics_hand_computed():
    # 4 customers: A held by 0,1,2; B held by 0,1,3.
    h = E.holding_matrix(np.array([0, 1, 2, 0, 1, 3]), np.array([0, 0, 0, 1, 1, 1]), 4, 2)
    r = E.association_rules(h, min_support=0, min_count=1, min_lift=0)
    assert r.co[0, 1] == 2
    assert r.support[0, 1] == 0.5
    assert np.isclose(r.confidence[0, 1], 2 / 3)
    assert np.isclose(r.lift[0, 1], (2 / 3) / (3 / 4))
    assert r.co[0, 0] == 0


def test_planted_association_in_top3_and_beats_popularity():
    h = _planted()
    ci, pi = np.nonzero(h)
    X = E.holding_matrix(ci, pi, *h.shape)
    rules = E.association_rules(X, min_support=0.001, min_count=5)
    n_c, n_p = h.shape
    cs = E.cross_sell(X, rules, margin=np.full(n_p, 100.0), cap=np.full(n_c, np.inf), p_alive=np.ones(n_c), top_k=3)
    target = np.flatnonzero(h[:, 3] & ~h[:, 9])
    hit = set(cs.customer[cs.product == 9].tolist())
    recall = np.mean([c in hit for c in target])
    assert recall >= 0.8, recall
    base = E.popularity_baseline(X, top_k=3)
    base_recall = np.mean([9 in base[c] for c in target])
    assert recall > base_recall
    # Evidence names the planted antecedent.
    rows = cs.product == 9
    assert np.mean(cs.antecedent[rows] == 3) > 0.9
    assert cs.lift[rows].min() > 1
    # Never suggests what the customer holds.
    assert not h[cs.customer, cs.product].any()


def test_value_factor_clipped():
    f = E.value_factor(np.array([0.0] + [100.0] * 20 + [100_000.0]))
    assert f[0] == E.FACTOR_MIN
    assert f[-1] == E.FACTOR_MAX


def test_up_sell_capacity_and_value_rules():
    # products: 0 = family F tier1, 1 = F tier2, 2 = F tier3 ; holdings: customer 0..3 on tier 1.
    next_tier = np.array([1, 2, -1])
    tier = np.array([1, 2, 3])
    fam_max = np.array([3, 3, 3])
    margin = np.array([10.0, 30.0, 60.0])
    util = np.array(
        [
            [0.95, 0.92, 0.99],  # near capacity 3 periods -> capacity up-sell
            [0.95, 0.50, 0.99],  # one period under -> no
            [0.95, 0.95, np.nan],  # missing period -> no
            [0.10, 0.10, 0.10],  # low use but top-value customer -> value up-sell
        ]
    )
    hc = np.array([0, 1, 2, 3])
    hp = np.array([0, 0, 0, 0])
    held = E.holding_matrix(hc, hp, 5, 3)
    value = np.array([10.0, 20.0, 30.0, 1000.0, 5.0])
    r = E.up_sell(
        holding_customer=hc, holding_product=hp, holding_quantity=np.ones(4), utilisation=util,
        next_tier=next_tier, tier=tier, family_max_tier=fam_max, margin=margin, customer_value=value,
        cap=np.full(5, np.inf), p_alive=np.ones(5), held=held, threshold=0.9, periods=3, high_value_quantile=0.8,
    )
    got = dict(zip(r.holding.tolist(), r.reason.tolist(), strict=True))
    assert got == {0: "capacity", 3: "value"}
    assert set(r.target.tolist()) == {1}
    assert np.allclose(r.expected_value, 20.0)  # margin gained: 30 - 10


def test_expected_value_is_capped_by_clv_and_weighted_by_p_alive_and_win_rate():
    h = _planted()
    ci, pi = np.nonzero(h)
    X = E.holding_matrix(ci, pi, *h.shape)
    rules = E.association_rules(X, min_support=0.001, min_count=5)
    n_c, n_p = h.shape
    cap = np.linspace(1.0, 500.0, n_c)
    p_alive = np.linspace(0.05, 1.0, n_c)
    cs = E.cross_sell(X, rules, margin=np.full(n_p, 100.0), cap=cap, p_alive=p_alive, win_rate=0.2, top_k=3)
    assert cs.expected_value.size
    expected = np.minimum(100.0, cap[cs.customer]) * p_alive[cs.customer] * 0.2
    assert np.allclose(cs.expected_value, expected)
    assert (cs.expected_value <= 0.2 * cap[cs.customer] + 1e-9).all()


def test_win_rate_starts_at_the_prior_and_learns():
    assert E.win_rate(0, 0, prior_a=1, prior_b=4) == 0.2
    assert E.win_rate(30, 40, prior_a=1, prior_b=4) == 31 / 45
    assert E.win_rate(0, 40, prior_a=1, prior_b=4) < 0.05


def test_cross_sell_blocks_bounded_by_gathered_cells_give_the_same_answer(monkeypatch):
    h = _planted(n_c=600, n_p=40)
    ci, pi = np.nonzero(h)
    X = E.holding_matrix(ci, pi, *h.shape)
    rules = E.association_rules(X, min_support=0.001, min_count=5)
    kw = {"margin": np.full(40, 100.0), "cap": np.full(600, np.inf), "p_alive": np.ones(600), "top_k": 3}
    whole = E.cross_sell(X, rules, **kw)
    monkeypatch.setattr(E, "_GATHER_CELLS", 40 * 7)  # about one customer per block
    small = E.cross_sell(X, rules, **kw)
    assert sorted(zip(whole.customer.tolist(), whole.product.tolist(), strict=True)) == sorted(
        zip(small.customer.tolist(), small.product.tolist(), strict=True)
    )
    assert len(whole.customer) > 0


def test_cross_sell_with_customers_holding_nothing_at_the_end():
    h = _planted(n_c=300, n_p=40)
    h[-20:] = False
    ci, pi = np.nonzero(h)
    X = E.holding_matrix(ci, pi, *h.shape)
    rules = E.association_rules(X, min_support=0.001, min_count=5)
    cs = E.cross_sell(X, rules, margin=np.full(40, 100.0), cap=np.full(300, np.inf), p_alive=np.ones(300), top_k=3)
    assert len(cs.customer) > 0
    assert cs.customer.max() < 280
