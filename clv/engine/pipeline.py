"""Fit once, score many: the orchestration the nightly CLV run calls (JSON-serialisable params, per-customer arrays)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from . import bgnbd, gammagamma, paretonbd
from .bgnbd import BgNbdParams
from .fitting import compress_triples
from .gammagamma import GammaGammaParams
from .paretonbd import ParetoNbdParams
from .summary import TIME_UNIT_DAYS
from .value import (
    DAYS_PER_MONTH,
    classic_clv,
    discount_cumulative_purchases,
    population_lifespan_years,
)

PURCHASE_MODELS = ("bgnbd", "mbgnbd", "paretonbd")
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
) -> tuple[dict, dict]:
    """Fit the purchase and spend models (optionally on a uniform random sample); return (params, diagnostics)."""
    settings = settings or ScoreSettings()
    if model not in PURCHASE_MODELS:
        raise ValueError(f"model must be one of {PURCHASE_MODELS}")
    x, t_x, TT, m = (np.asarray(a, dtype=np.float64) for a in (frequency, recency, T, monetary))
    n_total = x.size
    if sample_size is not None and sample_size < n_total:
        idx = np.random.default_rng(seed).choice(n_total, size=sample_size, replace=False)
        x, t_x, TT, m = x[idx], t_x[idx], TT[idx], m[idx]
    if model == "paretonbd":
        purchase = paretonbd.fit(x, t_x, TT)
        pa = paretonbd.probability_alive(purchase.params, x, t_x, TT)
    else:
        modified = model == "mbgnbd"
        purchase = bgnbd.fit(x, t_x, TT, modified=modified)
        pa = bgnbd.probability_alive(purchase.params, x, t_x, TT, modified=modified)
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
        "purchase": purchase.params.to_dict(),
        "spend": spend,
        "settings": settings.to_dict(),
        "population": {"lifespan_years": float(lifespan), "mean_p_alive": float(pa.mean())},
    }
    diagnostics = {
        "purchase": purchase.diagnostics.to_dict(),
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
) -> dict[str, np.ndarray]:
    """Score customers with already-fitted params (no refit: shards call this independently).

    Returns per-customer float arrays:
      p_alive              P(active now)
      expected_purchases   expected purchases over the horizon
      expected_value       expected value per future purchase (Gamma-Gamma conditional mean)
      clv                  discounted expected margin over the horizon
      historical_value     historical_margin if given, else total_value x margin (NaN without either)
      classic_clv          average purchase value x purchases/year x lifespan x margin (NaN without total_value)
    """
    settings = ScoreSettings(**params["settings"])
    probability_alive, conditional_expected = _purchase_functions(params["purchase_model"], params["purchase"])
    x, t_x, TT, m = (np.asarray(a, dtype=np.float64) for a in (frequency, recency, T, monetary))
    n = x.size
    if n == 0:
        empty = np.zeros(0)
        return {
            k: empty
            for k in ("p_alive", "expected_purchases", "expected_value", "clv", "historical_value", "classic_clv")
        }

    # Score each distinct (x, t_x, T) once; most customers share their triple with others.
    data = compress_triples(x, t_x, TT, return_inverse=True)
    inv = data.inverse
    p_alive_u = probability_alive(data.x, data.t_x, data.T)
    month = DAYS_PER_MONTH / settings.unit_days
    cumulative_u = np.zeros((settings.horizon_months + 1, data.n_unique))
    for k in range(1, settings.horizon_months + 1):
        cumulative_u[k] = conditional_expected(k * month, data.x, data.t_x, data.T, p_alive_u)

    spend = params["spend"]
    if spend["model"] == "gammagamma":
        value = gammagamma.conditional_expected_value(GammaGammaParams.from_dict(spend), x, m)
    else:
        value = np.where(x > 0, m, spend["mean"])

    cumulative = cumulative_u[:, inv]
    clv = discount_cumulative_purchases(
        cumulative, value, annual_discount_rate=settings.annual_discount_rate, margin=settings.margin
    )
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
        "expected_purchases": cumulative[-1],
        "expected_value": value,
        "clv": clv,
        "historical_value": historical,
        "classic_clv": classic,
    }


def _purchase_functions(model: str, purchase: dict) -> tuple[Callable, Callable]:
    """(p_alive(x, t_x, T), E[purchases in (T, T+t]](t, x, t_x, T, p_alive)) for a fitted purchase model."""
    if model == "paretonbd":
        pn = ParetoNbdParams.from_dict(purchase)
        # P(alive) is the costly part (two 2F1 per customer): reuse it for every horizon step.
        return (
            lambda x, t_x, T: paretonbd.probability_alive(pn, x, t_x, T),
            lambda t, x, t_x, T, p_alive: p_alive * paretonbd.expected_purchases_if_alive(pn, t, x, T),
        )
    if model not in PURCHASE_MODELS:
        raise ValueError(f"unknown purchase model {model!r}")
    bg = BgNbdParams.from_dict(purchase)
    modified = model == "mbgnbd"
    return (
        lambda x, t_x, T: bgnbd.probability_alive(bg, x, t_x, T, modified=modified),
        lambda t, x, t_x, T, p_alive: bgnbd.conditional_expected_purchases(bg, t, x, t_x, T, modified=modified),
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
) -> FitAndScore:
    """Fit on all customers (or a sample of sample_size) and score every customer."""
    settings = ScoreSettings(
        horizon_months=horizon_months,
        annual_discount_rate=annual_discount_rate,
        margin=margin,
        time_unit=time_unit,
    )
    params, diagnostics = fit(
        frequency, recency, T, monetary, model=model, settings=settings, sample_size=sample_size, seed=seed
    )
    scores = score(
        params, frequency, recency, T, monetary, total_value=total_value, historical_margin=historical_margin
    )
    return FitAndScore(params=params, diagnostics=diagnostics, scores=scores)
