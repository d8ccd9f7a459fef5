"""Money over time: discounted CLV over monthly steps, historical value, and the classic CLV formula."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DAYS_PER_YEAR = 365.25
DAYS_PER_MONTH = DAYS_PER_YEAR / 12.0


def monthly_rate(annual_discount_rate: float) -> float:
    """Monthly rate compounding to the annual one: (1 + annual)^(1/12) - 1 (10%/yr -> 0.797%/month)."""
    if annual_discount_rate <= -1:
        raise ValueError("annual discount rate must be > -100%")
    return (1.0 + annual_discount_rate) ** (1.0 / 12.0) - 1.0


def discount_cumulative_purchases(
    cumulative: np.ndarray,
    value_per_purchase: np.ndarray,
    *,
    annual_discount_rate: float = 0.10,
    margin: float = 1.0,
) -> np.ndarray:
    """CLV from cumulative expected purchases at the end of months 0..H (shape (H+1, n), row 0 = 0).

    CLV = sum_k (E[N(k)] - E[N(k-1)]) * value * margin / (1 + monthly_rate)^k, k = 1..H:
    the scheme of lifetimes' customer_lifetime_value (each month's purchases discounted
    at the end of that month), with an annual rate converted to a monthly one.
    """
    cumulative = np.asarray(cumulative, dtype=np.float64)
    increments = np.diff(cumulative, axis=0)
    k = np.arange(1, increments.shape[0] + 1)
    factors = (1.0 + monthly_rate(annual_discount_rate)) ** (-k.astype(np.float64))
    return margin * np.asarray(value_per_purchase, dtype=np.float64) * (factors @ increments)


def discounted_clv(
    expected_cumulative: Callable[[float], np.ndarray],
    value_per_purchase: np.ndarray,
    *,
    horizon_months: int = 12,
    annual_discount_rate: float = 0.10,
    margin: float = 1.0,
    unit_days: float = 1.0,
) -> np.ndarray:
    """Discounted CLV for a purchase model given as t -> E[purchases in (T, T+t]] (t in model units of unit_days days)."""
    if horizon_months < 0:
        raise ValueError("horizon must be >= 0 months")
    value_per_purchase = np.asarray(value_per_purchase, dtype=np.float64)
    month = DAYS_PER_MONTH / unit_days
    cumulative = np.zeros((horizon_months + 1, value_per_purchase.size))
    for k in range(1, horizon_months + 1):
        cumulative[k] = expected_cumulative(k * month)
    return discount_cumulative_purchases(
        cumulative, value_per_purchase, annual_discount_rate=annual_discount_rate, margin=margin
    )


def population_lifespan_years(
    p_alive: np.ndarray, T: np.ndarray, *, unit_days: float = 1.0, max_years: float = 10.0
) -> float:
    """Expected customer lifespan for the classic formula: 1 / annual churn, from the population's P(alive).

    Rule: treat survival as geometric in years with one annual retention rate rho for
    everyone, so the average P(alive) at the average customer age A (years) is rho^A;
    rho = mean(P(alive))^(1/A), churn = 1 - rho, lifespan = 1/churn, capped at max_years
    (also returned when churn cannot be estimated: no ageing or nobody lost).
    """
    p = np.asarray(p_alive, dtype=np.float64)
    age_years = float(np.mean(np.asarray(T, dtype=np.float64))) * unit_days / DAYS_PER_YEAR
    mean_alive = float(np.mean(p)) if p.size else 1.0
    if age_years <= 1e-9 or mean_alive >= 1.0 or mean_alive <= 0.0:
        return max_years
    churn = 1.0 - mean_alive ** (1.0 / age_years)
    if churn <= 1.0 / max_years:
        return max_years
    return 1.0 / churn


def classic_clv(
    total_value: np.ndarray,
    frequency: np.ndarray,
    T: np.ndarray,
    *,
    lifespan_years: float,
    unit_days: float = 1.0,
    margin: float = 1.0,
) -> np.ndarray:
    """Average purchase value x purchases per year x expected lifespan (years) x margin.

    average purchase value = total value / occasions (x + 1); purchases per year =
    occasions / max(age in years, 1) - customers younger than a year are rated on what
    they bought so far, not extrapolated from a few days.
    """
    total_value = np.asarray(total_value, dtype=np.float64)
    occasions = np.asarray(frequency, dtype=np.float64) + 1.0
    age_years = np.asarray(T, dtype=np.float64) * unit_days / DAYS_PER_YEAR
    avg_value = total_value / occasions
    per_year = occasions / np.maximum(age_years, 1.0)
    return avg_value * per_year * lifespan_years * margin
