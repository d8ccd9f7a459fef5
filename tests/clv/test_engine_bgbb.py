"""BG/BB (Fader, Hardie & Berger 2010) on the published 1995 donations cohort."""

import numpy as np
import pytest

from clv.engine import bgbb
from tests.clv.data import DATA_DIR


@pytest.fixture(scope="module")
def donations():
    table = np.genfromtxt(DATA_DIR / "donations.csv", delimiter=",", names=True)
    return table["frequency"], table["recency"], table["periods"], table["weights"]


def test_reproduces_published_donations_estimates(donations):
    x, t_x, n, w = donations
    assert w.sum() == 11104
    fitted = bgbb.fit(x, t_x, n, weights=w)
    p = fitted.params
    # Published: alpha 1.204, beta 0.750, gamma 0.657, delta 2.783 (3 decimals), LL -33,225.6.
    np.testing.assert_allclose([p.alpha, p.beta, p.gamma, p.delta], [1.204, 0.750, 0.657, 2.783], atol=6e-4)
    assert fitted.diagnostics.log_likelihood == pytest.approx(-33225.6, abs=0.06)


def test_unconditional_expectation_matches_the_cohort(donations):
    x, t_x, n, w = donations
    p = bgbb.BgBbParams(1.204, 0.750, 0.657, 2.783)
    # Mean repeat donations over the six years: 2.217 observed; the model's E[X(6)] must be close.
    assert bgbb.expected_purchases(p, 6) == pytest.approx(float(w @ x) / w.sum(), rel=0.01)


def test_dert_closed_form_equals_discounted_sum_of_expected_purchases(donations):
    x, t_x, n, _ = donations
    p = bgbb.BgBbParams(1.204, 0.750, 0.657, 2.783)
    closed = bgbb.discounted_expected_residual_purchases(p, 0.10, x, t_x, n)
    horizon = 600
    cumulative = np.array([bgbb.conditional_expected_purchases(p, h, x, t_x, n) for h in range(horizon + 1)])
    brute = (np.diff(cumulative, axis=0) * (1.10 ** -np.arange(1, horizon + 1))[:, None]).sum(axis=0)
    np.testing.assert_allclose(closed, brute, rtol=1e-9)
    alive = bgbb.probability_alive(p, x, t_x, n)
    assert np.all((alive > 0) & (alive < 1))
    assert alive[-1] > alive[0]  # six donations in six years: more likely still a donor than none


def test_period_summary_counts_whole_periods():
    # Customer 0: first day 0, buys on days 400 and 800 -> periods 1 and 2; as of day 1100 three whole
    # periods have passed (n = 2 after the first). Customer 1 (first day 10) has two whole periods: n = 1.
    x, t_x, n = bgbb.period_summary(np.array([0, 10]), np.array([0, 0, 0, 1]), np.array([0, 400, 800, 10]), 1100, 365)
    assert list(x) == [2.0, 0.0]
    assert list(t_x) == [2.0, 0.0]
    assert list(n) == [2.0, 1.0]
