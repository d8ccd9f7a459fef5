"""Gamma-Gamma spend model: likelihood, gradient, recovery, conditional expectation."""

import numpy as np
import pytest
from scipy import integrate, stats

from clv.engine import gammagamma as gg
from clv.engine.simulate import simulate_mean_spend, simulate_summaries

CDNOW_GG = gg.GammaGammaParams(p=6.25, q=3.74, v=15.44)


def test_log_likelihood_is_a_normalised_density():
    # f(m | x) must integrate to 1 over m for each x.
    for x in (1, 3, 10):
        total, _ = integrate.quad(
            lambda m, x=x: np.exp(gg.log_likelihood(CDNOW_GG, np.array([x]), np.array([m]))[0]),
            0,
            np.inf,
        )
        assert total == pytest.approx(1.0, abs=1e-6)


def test_log_likelihood_matches_gamma_mixture_by_quadrature():
    # m | nu ~ Gamma(p x, rate nu x); nu ~ Gamma(q, rate v): integrate nu out numerically.
    x, m = 4.0, 35.0
    p, q, v = CDNOW_GG.p, CDNOW_GG.q, CDNOW_GG.v

    def integrand(nu):
        return stats.gamma.pdf(m, p * x, scale=1 / (nu * x)) * stats.gamma.pdf(nu, q, scale=1 / v)

    direct, _ = integrate.quad(integrand, 0, np.inf, limit=200)
    assert gg.log_likelihood(CDNOW_GG, np.array([x]), np.array([m]))[0] == pytest.approx(np.log(direct), rel=1e-8)


def test_analytic_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    x = rng.integers(1, 12, 300).astype(float)
    m = simulate_mean_spend(x, 6.25, 3.74, 15.44, rng=rng)
    lp = np.log([5.0, 3.0, 12.0])
    xl, xi = np.unique(x, return_inverse=True)
    xw = np.bincount(xi).astype(float)
    args = (xl, xi, xw, x, np.log(m), m)
    f, g = gg._negll_and_grad(lp, *args)
    assert f == pytest.approx(-gg.log_likelihood(gg.GammaGammaParams(*np.exp(lp)), x, m).sum(), rel=1e-12)
    h = 1e-6
    numeric = [
        (gg._negll_and_grad(lp + e, *args)[0] - gg._negll_and_grad(lp - e, *args)[0]) / (2 * h) for e in np.eye(3) * h
    ]
    np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-5)


def test_parameter_recovery_from_simulated_spend():
    rng = np.random.default_rng(20240602)
    n = 50_000
    sim = simulate_summaries(n, 0.24, 4.41, 0.79, 2.43, rng.uniform(30, 78, n), rng=rng)
    m = simulate_mean_spend(sim.frequency, 6.25, 3.74, 15.44, rng=rng)
    result = gg.fit(sim.frequency, m)
    assert result.diagnostics.converged
    assert result.diagnostics.n_customers == int((sim.frequency > 0).sum())
    est = result.params.to_dict()
    se = result.diagnostics.standard_errors
    for name, value in (("p", 6.25), ("q", 3.74), ("v", 15.44)):
        # 4 asymptotic SEs (about 2-5% of each value with ~22k repeat buyers), and 15% at most.
        assert abs(est[name] - value) < 4 * se[name], (name, est[name], se[name])
        assert abs(est[name] - value) / value < 0.15


def test_conditional_expected_value_blends_population_and_own_mean():
    x = np.array([0.0, 1.0, 10.0, 1e6])
    m = np.array([0.0, 100.0, 100.0, 100.0])
    value = gg.conditional_expected_value(CDNOW_GG, x, m)
    pop = CDNOW_GG.population_mean
    assert value[0] == pytest.approx(pop)
    # Hand computation for x=1: p (v + x m) / (p x + q - 1).
    assert value[1] == pytest.approx(6.25 * (15.44 + 100) / (6.25 + 3.74 - 1))
    assert pop < value[1] < value[2] < 100.0 + 1e-9
    assert value[3] == pytest.approx(100.0, rel=1e-5)


def test_conditional_expected_value_never_nan_for_heavy_tails():
    heavy = gg.GammaGammaParams(p=2.0, q=0.5, v=10.0)
    value = gg.conditional_expected_value(heavy, np.array([0.0, 1.0, 5.0]), np.array([0.0, 20.0, 30.0]))
    assert np.all(np.isfinite(value))
