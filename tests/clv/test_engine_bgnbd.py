"""BG/NBD engine: published values, log-space stability, analytic gradient, parameter recovery."""

import numpy as np
import pytest
from scipy.special import beta as beta_fn
from scipy.special import gamma as gamma_fn

from clv.engine import bgnbd
from clv.engine.expectation import _quadrature, expected_purchases_while_alive
from clv.engine.simulate import simulate_purchase_times, simulate_summaries

# CDNOW estimates (Fader, Hardie & Lee 2005, time in weeks), as printed in the paper.
CDNOW = bgnbd.BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)


def test_conditional_expectation_matches_hardie_spreadsheet():
    # lifetimes' test suite checks 1.226 against Hardie's BG/NBD Excel sheet for
    # x=2, t_x=30.43, T=38.86, t=39 weeks (tests/test_estimation.py,
    # test_conditional_expectation_returns_same_value_as_Hardie_excel_sheet).
    value = bgnbd.conditional_expected_purchases(CDNOW, 39.0, 2.0, 30.43, 38.86)
    assert value == pytest.approx(1.226, abs=2e-3)


def test_unconditional_expectation_matches_hardie_spreadsheet():
    # Same source (test_expectation_returns_same_value_Hardie_excel_sheet). The sheet uses
    # unrounded estimates; rounding them to 3 decimals moves E[X(78)] by ~3e-3, hence the tolerance.
    times = np.array([0.1429, 1.0, 3.00, 31.8571, 32.00, 78.00])
    expected = np.array([0.0078, 0.0532, 0.1506, 1.0405, 1.0437, 1.8576])
    np.testing.assert_allclose(bgnbd.expected_purchases(CDNOW, times), expected, atol=4e-3, rtol=2e-3)


def test_probability_alive_is_one_without_repeat_purchases():
    x = np.zeros(4)
    t_x = np.zeros(4)
    T = np.array([0.0, 1.0, 50.0, 1e6])
    np.testing.assert_array_equal(bgnbd.probability_alive(CDNOW, x, t_x, T), 1.0)


def test_probability_alive_within_unit_interval_and_decreasing_in_T():
    p1 = bgnbd.probability_alive(CDNOW, 3, 10, np.array([10.0, 20.0, 40.0, 80.0]))
    assert np.all((p1 > 0) & (p1 <= 1))
    assert np.all(np.diff(p1) < 0)


def _direct_likelihood(params, x, t_x, T):
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    common = gamma_fn(r + x) * alpha**r / gamma_fn(r)
    first = beta_fn(a, b + x) / beta_fn(a, b) * common / (alpha + T) ** (r + x)
    second = np.where(
        x > 0,
        beta_fn(a + 1, b + x - 1) / beta_fn(a, b) * common / (alpha + t_x) ** (r + x),
        0.0,
    )
    return first + second


def test_log_likelihood_matches_direct_evaluation():
    x = np.array([0, 1, 2, 5, 10, 3])
    t_x = np.array([0, 5.0, 30.43, 20.0, 35.0, 1.0])
    T = np.array([10, 20.0, 38.86, 38.0, 39.0, 39.0])
    direct = np.log(_direct_likelihood(CDNOW, x, t_x, T))
    np.testing.assert_allclose(bgnbd.log_likelihood(CDNOW, x, t_x, T), direct, rtol=1e-10)


EXTREME_X = np.array([0, 0, 1e5, 1e5, 1, 3, 0, 2, 50])
EXTREME_TX = np.array([0, 0, 30, 1e6, 5, 10, 0, 1e-9, 1e6])
EXTREME_T = np.array([0, 1e6, 30, 1e6, 5, 10, 1e-12, 1e6, 1e6])


@pytest.mark.parametrize("modified", [False, True])
def test_extreme_inputs_give_finite_likelihood_gradient_and_predictions(modified):
    ll = bgnbd.log_likelihood(CDNOW, EXTREME_X, EXTREME_TX, EXTREME_T, modified=modified)
    f, g = bgnbd.negative_log_likelihood_and_gradient(CDNOW, EXTREME_X, EXTREME_TX, EXTREME_T, modified=modified)
    pa = bgnbd.probability_alive(CDNOW, EXTREME_X, EXTREME_TX, EXTREME_T, modified=modified)
    for t in (0.0, 1.0, 52.0, 1e4):
        ce = bgnbd.conditional_expected_purchases(CDNOW, t, EXTREME_X, EXTREME_TX, EXTREME_T, modified=modified)
        assert np.all(np.isfinite(ce))
        assert np.all(ce >= 0)
    assert np.all(np.isfinite(ll))
    assert np.isfinite(f)
    assert np.all(np.isfinite(g))
    assert np.all((pa >= 0) & (pa <= 1))


@pytest.mark.parametrize("modified", [False, True])
def test_analytic_gradient_matches_finite_differences(modified):
    rng = np.random.default_rng(3)
    sim = simulate_summaries(400, 0.5, 6.0, 1.3, 3.0, rng.uniform(5, 60, 400), rng=rng, modified=modified)
    params = bgnbd.BgNbdParams(0.4, 5.0, 1.1, 2.5)
    _, grad = bgnbd.negative_log_likelihood_and_gradient(params, sim.frequency, sim.recency, sim.T, modified=modified)
    log_p = np.log([params.r, params.alpha, params.a, params.b])
    h = 1e-6
    numeric = []
    for j in range(4):
        step = np.zeros(4)
        step[j] = h
        up = bgnbd.BgNbdParams(*np.exp(log_p + step))
        down = bgnbd.BgNbdParams(*np.exp(log_p - step))
        f_up = -bgnbd.log_likelihood(up, sim.frequency, sim.recency, sim.T, modified=modified).sum()
        f_down = -bgnbd.log_likelihood(down, sim.frequency, sim.recency, sim.T, modified=modified).sum()
        numeric.append((f_up - f_down) / (2 * h))
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-4)


def test_closed_form_and_quadrature_agree():
    rng = np.random.default_rng(0)
    shape = rng.uniform(0.1, 30, 200)
    rate = rng.uniform(1, 100, 200)
    bb = rng.uniform(0.5, 40, 200)
    t = rng.uniform(0.5, 200, 200)
    for a in (0.3, 0.79, 1.7, 4.0, 10.0):
        closed = expected_purchases_while_alive(shape, rate, a, bb, t)
        quad = _quadrature(shape, rate, a, bb, t)
        np.testing.assert_allclose(closed, quad, rtol=1e-7)


def test_expectation_is_continuous_through_a_equal_one():
    # The closed form is 0/0 at a = 1; the guarded evaluation must stay smooth there.
    vals = [
        float(expected_purchases_while_alive(2.2, 40.0, a, 4.4, 39.0))
        for a in (1 - 1e-2, 1 - 1e-6, 1.0, 1 + 1e-6, 1 + 1e-2)
    ]
    assert np.all(np.isfinite(vals))
    assert abs(vals[1] - vals[3]) < 1e-6
    assert vals[0] < vals[2] < vals[4] or vals[0] > vals[2] > vals[4]


def test_conditional_expectation_agrees_with_monte_carlo():
    # Simulate many customers, keep those whose observed history is exactly
    # (x=2, t_x in a narrow band, T=39), and count their purchases in the next 39 weeks.
    rng = np.random.default_rng(11)
    n = 400_000
    T_cal, horizon = 39.0, 39.0
    sim = simulate_purchase_times(n, CDNOW.r, CDNOW.alpha, CDNOW.a, CDNOW.b, T_cal + horizon, rng=rng)
    cust, time = sim.customer, sim.time
    cal = time <= T_cal
    x_cal = np.bincount(cust[cal], minlength=n) - 1
    last_cal = np.zeros(n)
    np.maximum.at(last_cal, cust[cal], time[cal])
    holdout = np.bincount(cust[~cal], minlength=n)
    for x_target, lo, hi in ((0, 0.0, 0.0), (2, 25.0, 35.0), (1, 2.0, 8.0)):
        mask = (x_cal == x_target) & (last_cal >= lo) & (last_cal <= hi)
        predicted = bgnbd.conditional_expected_purchases(
            CDNOW, horizon, np.full(mask.sum(), x_target), last_cal[mask], np.full(mask.sum(), T_cal)
        ).mean()
        observed = holdout[mask].mean()
        se = holdout[mask].std() / np.sqrt(mask.sum())
        # 4 standard errors of the Monte Carlo mean: fails by chance with prob < 1e-4.
        assert abs(predicted - observed) < 4 * se + 1e-3, (x_target, predicted, observed, se)


@pytest.mark.parametrize("modified", [False, True])
def test_expected_purchases_agrees_with_simulation(modified):
    rng = np.random.default_rng(5)
    sim = simulate_summaries(300_000, CDNOW.r, CDNOW.alpha, CDNOW.a, CDNOW.b, 52.0, rng=rng, modified=modified)
    observed = sim.frequency.mean()
    se = sim.frequency.std() / np.sqrt(sim.frequency.size)
    assert abs(bgnbd.expected_purchases(CDNOW, 52.0, modified=modified) - observed) < 4 * se


@pytest.mark.parametrize("modified", [False, True])
def test_parameter_recovery_from_simulated_customers(modified):
    rng = np.random.default_rng(20240601)
    n = 50_000
    true = (0.24, 4.41, 0.79, 2.43)
    sim = simulate_summaries(n, *true, rng.uniform(30, 78, n), rng=rng, modified=modified)
    result = bgnbd.fit(sim.frequency, sim.recency, sim.T, modified=modified)
    assert result.diagnostics.converged
    est = result.params.to_dict()
    se = result.diagnostics.standard_errors
    for name, value in zip(bgnbd.PARAM_NAMES, true, strict=True):
        # Within 4 asymptotic standard errors (Hessian of the log-likelihood) and, as an
        # absolute sanity bound, within 15% - with 50k customers the SEs are 1-9% of the values.
        assert abs(est[name] - value) < 4 * se[name], (name, est[name], se[name])
        assert abs(est[name] - value) / value < 0.15, (name, est[name])


def test_fit_on_duplicated_rows_equals_weighted_fit():
    rng = np.random.default_rng(8)
    sim = simulate_summaries(2000, 0.3, 5.0, 0.9, 2.5, rng.integers(10, 60, 2000).astype(float), rng=rng)
    x, tx, T = np.round(sim.frequency), np.round(sim.recency), sim.T
    single = bgnbd.fit(x, tx, T, with_standard_errors=False)
    double = bgnbd.fit(np.tile(x, 2), np.tile(tx, 2), np.tile(T, 2), with_standard_errors=False)
    np.testing.assert_allclose(
        list(single.params.to_dict().values()), list(double.params.to_dict().values()), rtol=1e-4
    )
    assert double.diagnostics.log_likelihood == pytest.approx(2 * single.diagnostics.log_likelihood)
    assert double.diagnostics.n_unique == single.diagnostics.n_unique


def test_fit_handles_everyone_bought_today():
    result = bgnbd.fit(np.array([0.0, 0.0, 1.0, 3.0]), np.array([0.0, 0.0, 4.0, 9.0]), np.array([0.0, 0.0, 10.0, 10.0]))
    assert np.isfinite(result.diagnostics.log_likelihood)
    assert all(np.isfinite(v) and v > 0 for v in result.params.to_dict().values())
