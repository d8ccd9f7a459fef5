"""Fit once, score many: the orchestration the nightly CLV run calls (JSON-serialisable params, per-customer arrays)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from . import gammagamma, purchase
from .fitting import compress_triples
from .gammagamma import GammaGammaParams
from .summary import TIME_UNIT_DAYS
from .value import (
    DAYS_PER_MONTH,
    DAYS_PER_YEAR,
    classic_clv,
    discount_cumulative_purchases,
    population_lifespan_years,
)

PURCHASE_MODELS = purchase.CONTINUOUS_MODELS  # bgnbd, mbgnbd, paretonbd, mbgcnbd
# Below this many repeat buyers Gamma-Gamma is not identifiable; spend falls back to
# each customer's own mean (population mean of repeat buyers for x = 0).
MIN_SPEND_CUSTOMERS = 20


@dataclass(frozen=True)
class ScoreSettings:
    """How values are computed. horizon in months, rates as fractions (0.10 = 10%), margin as a fraction of revenue."""

    horizon_months: int = 12
    annual_discount_rate: float = 0.10
    margin: float = 1.0
    time_unit: str = "days"
    max_lifespan_years: float = 10.0
    interval_draws: int = purchase.DEFAULT_DRAWS

    @property
    def delta(self) -> float:
        """Continuous discount rate per time unit equal to the annual rate: ln(1 + annual) per year."""
        return float(np.log1p(self.annual_discount_rate)) * self.unit_days / DAYS_PER_YEAR

    @property
    def unit_days(self) -> float:
        return TIME_UNIT_DAYS[self.time_unit]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitAndScore:
    params: dict  # JSON-serialisable; feed to score() on any shard
    diagnostics: dict  # JSON-serialisable
    scores: dict[str, np.ndarray] = field(default_factory=dict)


def fit(
    frequency: np.ndarray,
    recency: np.ndarray,
    T: np.ndarray,
    monetary: np.ndarray,
    *,
    model: str = "bgnbd",
    settings: ScoreSettings | None = None,
    sample_size: int | None = None,
    seed: int = 0,
    litt: np.ndarray | None = None,
    k: int | None = None,
) -> tuple[dict, dict]:
    """Fit the purchase and spend models (optionally on a uniform random sample); return (params, diagnostics).

    MBG/CNBD-k needs its regularity k (chosen on the calibration window) or litt to choose it.
    """
    settings = settings or ScoreSettings()
    if model not in PURCHASE_MODELS:
        raise ValueError(f"model must be one of {PURCHASE_MODELS}")
    x, t_x, TT, m = (np.asarray(a, dtype=np.float64) for a in (frequency, recency, T, monetary))
    n_total = x.size
    lt = None if litt is None else np.asarray(litt, dtype=np.float64)
    if sample_size is not None and sample_size < n_total:
        idx = np.random.default_rng(seed).choice(n_total, size=sample_size, replace=False)
        x, t_x, TT, m = x[idx], t_x[idx], TT[idx], m[idx]
        lt = None if lt is None else lt[idx]
    purchase_params, purchase_diag = purchase.fit(model, x, t_x, TT, litt=lt, k=k)
    pa = purchase.p_alive(model, purchase_params, x, t_x, TT)
    lifespan = population_lifespan_years(pa, TT, unit_days=settings.unit_days, max_years=settings.max_lifespan_years)
    repeat = (x > 0) & (m > 0)
    if repeat.sum() >= MIN_SPEND_CUSTOMERS:
        spend_fit = gammagamma.fit(x, m)
        spend = {"model": "gammagamma", **spend_fit.params.to_dict()}
        spend_diag = spend_fit.diagnostics.to_dict()
    else:
        mean = float(m[repeat].mean()) if repeat.any() else 0.0
        spend = {"model": "empirical", "mean": mean}
        spend_diag = {"model": "empirical", "n_customers": int(repeat.sum())}
    params = {
        "purchase_model": model,
        "purchase": purchase_params,
        "purchase_covariance_log": purchase_diag.get("covariance_log", []),
        "spend": spend,
        "settings": settings.to_dict(),
        "population": {"lifespan_years": float(lifespan), "mean_p_alive": float(pa.mean())},
    }
    diagnostics = {
        "purchase": purchase_diag,
        "spend": spend_diag,
        "n_customers_total": int(n_total),
        "n_customers_fitted": int(x.size),
        "sampled": bool(x.size < n_total),
    }
    return params, diagnostics


def score(
    params: dict,
    frequency: np.ndarray,
    recency: np.ndarray,
    T: np.ndarray,
    monetary: np.ndarray,
    *,
    total_value: np.ndarray | None = None,
    historical_margin: np.ndarray | None = None,
    intervals: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Score customers with already-fitted params (no refit: shards call this independently).

    Returns per-customer float arrays:
      p_alive              P(active now)
      expected_purchases   expected purchases over the horizon (12 months by default)
      expected_value       expected value per future purchase (Gamma-Gamma conditional mean)
      horizon_value        discounted expected margin over the horizon
      dert                 discounted expected residual purchases over the whole remaining relationship
      clv                  DERT x expected value x margin: the whole remaining relationship, discounted
      expected_purchases_low / _high   80% interval of the purchases over the horizon
      horizon_value_low / _high, clv_low / _high   the same interval carried to the values
      historical_value     historical_margin if given, else total_value x margin (NaN without either)
      classic_clv          average purchase value x purchases/year x lifespan x margin (NaN without total_value)
    """
    settings = ScoreSettings(**params["settings"])
    model, pparams = params["purchase_model"], params["purchase"]
    x, t_x, TT, m = (np.asarray(a, dtype=np.float64) for a in (frequency, recency, T, monetary))
    n = x.size
    if n == 0:
        empty = np.zeros(0)
        return {k: empty for k in SCORE_KEYS}

    # Score each distinct (x, t_x, T) once; most customers share their triple with others.
    data = compress_triples(x, t_x, TT, return_inverse=True)
    inv = data.inverse
    p_alive_u = purchase.p_alive(model, pparams, data.x, data.t_x, data.T)
    month = DAYS_PER_MONTH / settings.unit_days
    cumulative_u = np.zeros((settings.horizon_months + 1, data.n_unique))
    for k in range(1, settings.horizon_months + 1):
        cumulative_u[k] = purchase.expected_purchases(model, pparams, k * month, data.x, data.t_x, data.T,
                                                      alive=p_alive_u)
    dert_u = purchase.dert(model, pparams, settings.delta, data.x, data.t_x, data.T)

    spend = params["spend"]
    if spend["model"] == "gammagamma":
        value = gammagamma.conditional_expected_value(GammaGammaParams.from_dict(spend), x, m)
    else:
        value = np.where(x > 0, m, spend["mean"])

    cumulative = cumulative_u[:, inv]
    horizon_value = discount_cumulative_purchases(
        cumulative, value, annual_discount_rate=settings.annual_discount_rate, margin=settings.margin
    )
    dert = dert_u[inv]
    clv = dert * value * settings.margin
    expected = cumulative[-1]
    if intervals:
        sets = purchase.parameter_draws(model, pparams, {"covariance_log": params.get("purchase_covariance_log")},
                                        draws=settings.interval_draws, rng=np.random.default_rng(seed))
        lo_u, hi_u = purchase.count_interval(model, sets, settings.horizon_months * month, data.x, data.t_x, data.T)
        low, high = lo_u[inv], hi_u[inv]
    else:
        low = high = np.full(n, np.nan)
    # The values' intervals scale the point values by the purchase interval's ends over its mean,
    # widened to hold the point value itself (a mean can lie outside a count interval when one
    # count, zero for a lapsed customer, carries most of the mass).
    with np.errstate(divide="ignore", invalid="ignore"):
        low_ratio = np.minimum(np.where(expected > 0, low / expected, 0.0), 1.0)
        high_ratio = np.maximum(np.where(expected > 0, high / expected, 1.0), 1.0)
    if historical_margin is not None:
        historical = np.asarray(historical_margin, dtype=np.float64)
    elif total_value is not None:
        historical = np.asarray(total_value, dtype=np.float64) * settings.margin
    else:
        historical = np.full(n, np.nan)
    if total_value is not None:
        classic = classic_clv(
            total_value,
            x,
            TT,
            lifespan_years=params["population"]["lifespan_years"],
            unit_days=settings.unit_days,
            margin=settings.margin,
        )
    else:
        classic = np.full(n, np.nan)
    return {
        "p_alive": p_alive_u[inv],
        "expected_purchases": expected,
        "expected_value": value,
        "horizon_value": horizon_value,
        "dert": dert,
        "clv": clv,
        "expected_purchases_low": low,
        "expected_purchases_high": high,
        "horizon_value_low": horizon_value * low_ratio,
        "horizon_value_high": horizon_value * high_ratio,
        "clv_low": clv * low_ratio,
        "clv_high": clv * high_ratio,
        "historical_value": historical,
        "classic_clv": classic,
    }


SCORE_KEYS = (
    "p_alive", "expected_purchases", "expected_value", "horizon_value", "dert", "clv", "expected_purchases_low",
    "expected_purchases_high", "horizon_value_low", "horizon_value_high", "clv_low", "clv_high",
    "historical_value", "classic_clv",
)


def fit_and_score(
    frequency: np.ndarray,
    recency: np.ndarray,
    T: np.ndarray,
    monetary: np.ndarray,
    *,
    total_value: np.ndarray | None = None,
    historical_margin: np.ndarray | None = None,
    horizon_months: int = 12,
    annual_discount_rate: float = 0.10,
    margin: float = 1.0,
    time_unit: str = "days",
    model: str = "bgnbd",
    sample_size: int | None = None,
    seed: int = 0,
    litt: np.ndarray | None = None,
    k: int | None = None,
) -> FitAndScore:
    """Fit on all customers (or a sample of sample_size) and score every customer."""
    settings = ScoreSettings(
        horizon_months=horizon_months,
        annual_discount_rate=annual_discount_rate,
        margin=margin,
        time_unit=time_unit,
    )
    params, diagnostics = fit(
        frequency, recency, T, monetary, model=model, settings=settings, sample_size=sample_size, seed=seed,
        litt=litt, k=k,
    )
    scores = score(
        params, frequency, recency, T, monetary, total_value=total_value, historical_margin=historical_margin
    )
    return FitAndScore(params=params, diagnostics=diagnostics, scores=scores)
