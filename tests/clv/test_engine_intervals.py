"""Per-customer 80% purchase intervals: coverage on data simulated from a fitted model, and their shape."""

import numpy as np

from clv.engine import purchase
from clv.engine.simulate import simulate_purchase_times
from tests.clv.regular import split_simulated


def _population(params, n, seed):
    rng = np.random.default_rng(seed)
    T = rng.uniform(26, 78, n)
    sim = simulate_purchase_times(n, *params, T + 26, rng=rng, modified=True)
    return split_simulated(sim.customer, sim.time, n, T, 26.0)[0]


def test_coverage_near_eighty_percent_on_data_simulated_from_the_fitted_model():
    first = _population((4.0, 8.0, 1.0, 200.0), 3000, seed=7)
    cal = first.calibration
    params, diag = purchase.fit("mbgnbd", cal.frequency, cal.recency, cal.T)
    # A second population drawn from the fitted model, scored with the fitted parameters and their draws.
    fitted = (params["r"], params["alpha"], params["a"], params["b"])
    split = _population(fitted, 3000, seed=8)
    c = split.calibration
    sets = purchase.parameter_draws("mbgnbd", params, diag, draws=10, rng=np.random.default_rng(0))
    assert len(sets) == 10  # 3,000 customers: standard errors large enough to draw
    lo, hi = purchase.count_interval("mbgnbd", sets, split.duration, c.frequency, c.recency, c.T)
    inside = (split.holdout_frequency >= lo) & (split.holdout_frequency <= hi)
    assert 0.75 <= inside.mean() <= 0.85
    assert np.all(lo <= hi)


def test_pareto_intervals_bracket_the_expectation():
    params = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
    x, t_x, T = np.array([0.0, 2.0, 10.0]), np.array([0.0, 30.0, 38.0]), np.array([39.0, 39.0, 39.0])
    lo, hi = purchase.count_interval("paretonbd", [params], 39.0, x, t_x, T)
    mean = purchase.expected_purchases("paretonbd", params, 39.0, x, t_x, T)
    assert np.all(lo <= mean)
    assert np.all(mean <= hi + 1)
    assert hi[2] > hi[0]
