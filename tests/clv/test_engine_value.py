"""Discounted CLV, historical and classic value."""

import numpy as np
import pytest

from clv.engine import bgnbd
from clv.engine.value import (
    DAYS_PER_MONTH,
    classic_clv,
    discount_cumulative_purchases,
    discounted_clv,
    monthly_rate,
    population_lifespan_years,
)

CDNOW = bgnbd.BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)


def test_monthly_rate_compounds_to_the_annual_rate():
    assert (1 + monthly_rate(0.10)) ** 12 == pytest.approx(1.10)
    assert monthly_rate(0.0) == 0.0


def test_hand_computation():
    # Two customers, three months. Increments: c1 = 1, 0.5, 0.25; c2 = 0, 2, 0.
    cumulative = np.array([[0.0, 0.0], [1.0, 0.0], [1.5, 2.0], [1.75, 2.0]])
    value = np.array([10.0, 20.0])
    m = monthly_rate(0.12)
    expected_1 = 0.3 * 10 * (1 / (1 + m) + 0.5 / (1 + m) ** 2 + 0.25 / (1 + m) ** 3)
    expected_2 = 0.3 * 20 * (2 / (1 + m) ** 2)
    got = discount_cumulative_purchases(cumulative, value, annual_discount_rate=0.12, margin=0.3)
    np.testing.assert_allclose(got, [expected_1, expected_2], rtol=1e-12)


def _cumulative_fn(x, t_x, T):
    return lambda t: bgnbd.conditional_expected_purchases(CDNOW, t, x, t_x, T)


def test_zero_discount_equals_undiscounted_expected_purchases_times_value():
    x, t_x, T = np.array([0.0, 2.0, 7.0]), np.array([0.0, 30.43, 20.0]), np.array([10.0, 38.86, 39.0])
    value = np.array([25.0, 40.0, 10.0])
    unit_days = 7.0  # CDNOW params are weekly
    clv = discounted_clv(
        _cumulative_fn(x, t_x, T), value, horizon_months=12, annual_discount_rate=0.0, unit_days=unit_days
    )
    total = bgnbd.conditional_expected_purchases(CDNOW, 12 * DAYS_PER_MONTH / unit_days, x, t_x, T)
    np.testing.assert_allclose(clv, total * value, rtol=1e-12)


def test_clv_grows_with_horizon_and_shrinks_with_discount():
    x, t_x, T = np.array([0.0, 2.0, 7.0]), np.array([0.0, 30.43, 20.0]), np.array([10.0, 38.86, 39.0])
    value = np.array([25.0, 40.0, 10.0])
    fn = _cumulative_fn(x, t_x, T)
    by_horizon = [discounted_clv(fn, value, horizon_months=h, unit_days=7.0) for h in (0, 1, 6, 12, 24, 60)]
    assert np.all(by_horizon[0] == 0)
    assert np.all(np.diff(np.array(by_horizon), axis=0) > 0)
    low = discounted_clv(fn, value, annual_discount_rate=0.05, unit_days=7.0)
    high = discounted_clv(fn, value, annual_discount_rate=0.30, unit_days=7.0)
    assert np.all(high < low)


def test_population_lifespan_rule():
    # Half the population alive at an average age of 2 years -> retention sqrt(0.5)/yr.
    p_alive = np.array([0.25, 0.75])
    T = np.array([730.5, 730.5])
    expected = 1 / (1 - 0.5**0.5)
    assert population_lifespan_years(p_alive, T) == pytest.approx(expected)
    assert population_lifespan_years(np.ones(3), T[:1].repeat(3)) == 10.0
    assert population_lifespan_years(np.array([0.99]), np.array([3652.5]), max_years=5.0) == 5.0


def test_classic_formula_by_hand():
    # 3 occasions worth 300 over 2 years: 100 per purchase x 1.5/yr x 4 yr x 0.5 margin = 300.
    got = classic_clv(
        np.array([300.0, 50.0]), np.array([2.0, 0.0]), np.array([730.5, 30.0]), lifespan_years=4.0, margin=0.5
    )
    # Second: 1 occasion worth 50, age < 1 year so rate = 1/yr: 50 x 1 x 4 x 0.5 = 100.
    np.testing.assert_allclose(got, [300.0, 100.0])
