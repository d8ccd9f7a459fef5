"""Contractual (subscription) CLV: shifted-beta-geometric and beta-discrete-Weibull renewal models.

A contract is renewed (or not) at the end of each period. For one contract we know the
number of periods it has begun, `periods` (>= 1), and whether it was cancelled:

* cancelled after `periods` periods: it churned at renewal number `periods`, T = periods;
* still active in its period number `periods`: it has renewed periods - 1 times, T > periods - 1
  (right-censored).

Models (T is the period in which the contract ends, S(t) = P(T > t)):

* sBG, Fader & Hardie (2007) "How to project customer retention": each contract churns at
  every renewal with its own probability theta, theta ~ Beta(alpha, beta).
  S(t) = B(alpha, beta + t) / B(alpha, beta).
* BdW, Fader, Hardie, Liu, Davin & Steenburgh (2018) "'How to project customer retention'
  revisited: the role of duration dependence": discrete Weibull at the individual level,
  P(T > t | theta) = (1 - theta)^(t^c), theta ~ Beta(alpha, beta).
  S(t) = B(alpha, beta + t^c) / B(alpha, beta). c = 1 is the sBG; c < 1 lowers an
  individual's churn probability with tenure, c > 1 raises it.

Per contract: the probability of renewing at its next renewal S(n) / S(n-1); the expected
remaining periods within a horizon; the discounted expected residual lifetime (DERL, Fader &
Hardie 2010 "Customer-base valuation in a contractual setting: the perils of ignoring
heterogeneity"): DERL = sum_{j>=1} S(n-1+j) / S(n-1) / (1 + d)^(j-1), the expected number of
further payments, each paid at a renewal, discounted to the next renewal.

The model is chosen by a likelihood-ratio test of BdW against the sBG it nests (one degree of
freedom, 5% level): BdW only when duration dependence fits significantly better.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln
from scipy.stats import chi2

CONTRACT_MODELS = ("sbg", "bdw")
LR_TEST_LEVEL = 0.05
MODEL_CHOICE_RULE = (f"both sBG and BdW fitted; BdW when a likelihood-ratio test of c = 1 rejects at the "
                     f"{LR_TEST_LEVEL:.0%} level and its fit converged, else sBG")
LOG_BOUND = 12.0  # bounds on log alpha and beta: exp(+-12) spans any plausible retention process
LOG_C_BOUND = 3.0  # c from 0.05 to 20: far beyond the duration dependence reported for real retention data
DERL_TAIL = 1e-12  # discounted terms below this (relative) are dropped
MAX_SUM_PERIODS = 5000  # hard cap on the periods summed for DERL (about 416 years of months)


@dataclass(frozen=True)
class RenewalHistories:
    """Renewal histories compressed to unique (periods, cancelled) rows with a count each."""

    periods: np.ndarray  # int >= 1: periods begun
    cancelled: np.ndarray  # bool
    weight: np.ndarray  # float counts

    @property
    def n_contracts(self) -> float:
        return float(self.weight.sum())

    @property
    def n_cancelled(self) -> float:
        return float(self.weight[self.cancelled].sum())


def renewal_histories(periods, cancelled) -> RenewalHistories:
    """Compress per-contract arrays (periods begun, cancelled flag) into unique rows."""
    periods = np.asarray(periods, dtype=np.int64).ravel()
    cancelled = np.asarray(cancelled, dtype=bool).ravel()
    if periods.shape != cancelled.shape:
        raise ValueError("periods and cancelled must have the same length")
    if periods.size == 0:
        raise ValueError("no contracts to fit")
    if (periods < 1).any():
        raise ValueError("periods must be >= 1 (a contract has begun at least its first period)")
    key = periods * 2 + cancelled.astype(np.int64)
    uniq, counts = np.unique(key, return_counts=True)
    return RenewalHistories(uniq // 2, (uniq % 2).astype(bool), counts.astype(np.float64))


def histories_from_cohort(alive: list[float] | np.ndarray, size: int | None = None) -> RenewalHistories:
    """A cohort table (number or percent alive at the start of periods 1..k) as renewal histories.

    With percentages, `size` is the cohort size (alive[0] = 100 percent of it).
    Those alive at period t but not t+1 cancelled after t periods; those alive at the start of the
    last period k are still active in it (censored: survived k-1 renewals).
    """
    alive = np.asarray(alive, dtype=np.float64)
    if size is not None:
        alive = np.round(alive / alive[0] * size)
    lost = alive[:-1] - alive[1:]
    k = alive.size
    periods = np.concatenate([np.arange(1, k), [k]])
    cancelled = np.concatenate([np.ones(k - 1, dtype=bool), [False]])
    weight = np.concatenate([lost, [alive[-1]]])
    keep = weight > 0
    return RenewalHistories(periods[keep], cancelled[keep], weight[keep])


# ---------------------------------------------------------------------------------------------
# Survival


def log_survival(t, alpha: float, beta: float, c: float = 1.0) -> np.ndarray:
    """log S(t) = log B(alpha, beta + t^c) - log B(alpha, beta); S(0) = 1."""
    t = np.asarray(t, dtype=np.float64)
    return betaln(alpha, beta + np.power(t, c)) - betaln(alpha, beta)


def survival(t, alpha: float, beta: float, c: float = 1.0) -> np.ndarray:
    """S(t) = P(T > t): share of a cohort still active after t renewals."""
    return np.exp(log_survival(t, alpha, beta, c))


def retention(t, alpha: float, beta: float, c: float = 1.0) -> np.ndarray:
    """r(t) = S(t) / S(t-1): share of those active in period t who renew at its end (t >= 1)."""
    t = np.asarray(t, dtype=np.float64)
    return np.exp(log_survival(t, alpha, beta, c) - log_survival(t - 1, alpha, beta, c))


def _log_churn_at(t: np.ndarray, alpha: float, beta: float, c: float) -> np.ndarray:
    """log P(T = t) = log(S(t-1) - S(t)), computed without cancellation."""
    a = log_survival(t - 1, alpha, beta, c)
    b = log_survival(t, alpha, beta, c)
    return a + np.log(-np.expm1(np.minimum(b - a, -1e-300)))


def log_likelihood(params: dict, data: RenewalHistories) -> float:
    """Total log-likelihood of the renewal histories under sBG (no c) or BdW (c)."""
    alpha, beta, c = params["alpha"], params["beta"], params.get("c", 1.0)
    t = data.periods.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # far from the optimum: -inf / nan
        ll = np.where(
            data.cancelled,
            _log_churn_at(t, alpha, beta, c),
            log_survival(t - 1, alpha, beta, c),
        )
        return float((data.weight * ll).sum())


# ---------------------------------------------------------------------------------------------
# Fitting


@dataclass
class ContractFit:
    model: str
    params: dict
    log_likelihood: float
    n_contracts: int
    n_cancelled: int
    converged: bool
    iterations: int
    aic: float
    diagnostics: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "model": self.model, "params": self.params, "log_likelihood": self.log_likelihood,
            "aic": self.aic, "n_contracts": self.n_contracts, "n_cancelled": self.n_cancelled,
            "converged": self.converged, "iterations": self.iterations, **self.diagnostics,
        }


def fit_contracts(data: RenewalHistories, *, model: str = "sbg", start: dict | None = None) -> ContractFit:
    """Maximum-likelihood fit of sBG or BdW (L-BFGS-B on log-parameters).

    From `start` (e.g. the sBG optimum with c = 1 for BdW) or a neutral point; other starting
    points are tried only when that fit does not converge. A fit ending at the bounds of alpha and
    beta (both large: every contract churns with about the same probability) is that limit: kept,
    and flagged at_bound.
    """
    if model not in CONTRACT_MODELS:
        raise ValueError(f"unknown contract model {model!r}; choose one of {CONTRACT_MODELS}")
    n_params = 2 if model == "sbg" else 3
    bounds = [(-LOG_BOUND, LOG_BOUND)] * 2 + ([(-LOG_C_BOUND, LOG_C_BOUND)] if n_params == 3 else [])

    def unpack(z: np.ndarray) -> dict:
        p = {"alpha": float(np.exp(z[0])), "beta": float(np.exp(z[1]))}
        if n_params == 3:
            p["c"] = float(np.exp(z[2]))
        return p

    n = data.n_contracts

    def objective(z: np.ndarray) -> float:
        value = -log_likelihood(unpack(z), data) / n
        return value if np.isfinite(value) else 1e10

    first = np.zeros(n_params)
    if start is not None:
        first = np.log([start["alpha"], start["beta"], start.get("c", 1.0)][:n_params])
    others = [np.array([np.log(0.5), np.log(2.0), 0.0][:n_params]), np.array([np.log(2.0), np.log(10.0), 0.0][:n_params])]
    best = None
    for z0 in [first, *others]:
        res = minimize(objective, np.clip(z0, [b[0] for b in bounds], [b[1] for b in bounds]), method="L-BFGS-B",
                       bounds=bounds, options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-8})
        if best is None or res.fun < best.fun:
            best = res
        if best.success:
            break
    params = unpack(best.x)
    ll = log_likelihood(params, data)
    at_bound = _at_bound(best.x, bounds)
    return ContractFit(
        model=model, params=params, log_likelihood=ll, n_contracts=int(round(n)),
        n_cancelled=int(round(data.n_cancelled)), converged=bool(best.success) and not at_bound,
        iterations=int(best.nit), aic=2 * n_params - 2 * ll,
        diagnostics={"at_bound": at_bound, "message": str(best.message)},
    )


def _at_bound(z: np.ndarray, bounds: list[tuple[float, float]]) -> bool:
    return any(abs(v - lo) < 1e-6 or abs(v - hi) < 1e-6 for v, (lo, hi) in zip(z, bounds, strict=True))


def choose_model(data: RenewalHistories, *, level: float = LR_TEST_LEVEL) -> dict:
    """Fit both models; choose BdW only when a likelihood-ratio test rejects c = 1 at `level`.

    Returns {"chosen": "sbg"|"bdw", "fits": {model: fit dict}, "lr_statistic", "lr_p_value", "rule"}.
    """
    sbg = fit_contracts(data, model="sbg")
    bdw = fit_contracts(data, model="bdw", start={**sbg.params, "c": 1.0})
    if bdw.log_likelihood < sbg.log_likelihood:
        # BdW nests sBG: its maximum can never be lower; a lower value is a poor optimum.
        bdw = ContractFit("bdw", {**sbg.params, "c": 1.0}, sbg.log_likelihood, sbg.n_contracts,
                          sbg.n_cancelled, sbg.converged, 0, sbg.aic + 2, {"note": "started at the sBG optimum"})
    lr = max(0.0, 2.0 * (bdw.log_likelihood - sbg.log_likelihood))
    p_value = float(chi2.sf(lr, df=1))
    chosen = "bdw" if (p_value < level and bdw.converged) else "sbg"
    return {
        "chosen": chosen, "fits": {"sbg": sbg.as_dict(), "bdw": bdw.as_dict()},
        "lr_statistic": lr, "lr_p_value": p_value,
        "rule": MODEL_CHOICE_RULE if level == LR_TEST_LEVEL else f"BdW when the LR test rejects c = 1 at {level:.0%}",
    }


# ---------------------------------------------------------------------------------------------
# Per-contract scores


def per_period_rate(annual_discount_rate: float, period_months: int) -> float:
    """Discount rate per contract period compounding to the annual one."""
    if annual_discount_rate <= -1:
        raise ValueError("annual discount rate must be > -100%")
    return (1.0 + annual_discount_rate) ** (period_months / 12.0) - 1.0


def score_contracts(
    params: dict,
    periods,
    *,
    discount_rate: float,
    remaining_horizon: int,
) -> dict[str, np.ndarray]:
    """Scores for active contracts in their period number `periods` (renewed periods - 1 times).

    discount_rate is per period; remaining_horizon is the number of further periods counted in
    expected_remaining_periods (under sBG with alpha <= 1 the untruncated mean is infinite).
    Returns arrays: p_renew (next renewal), expected_remaining_periods (further periods paid
    within the horizon), derl (discounted expected further payments, valued at the next renewal).
    """
    alpha, beta, c = params["alpha"], params["beta"], params.get("c", 1.0)
    periods = np.asarray(periods, dtype=np.int64).ravel()
    if periods.size == 0:
        empty = np.zeros(0)
        return {"p_renew": empty, "expected_remaining_periods": empty, "derl": empty}
    if (periods < 1).any():
        raise ValueError("periods must be >= 1")
    levels, inverse = np.unique(periods, return_inverse=True)
    n_sum = _periods_to_sum(discount_rate, remaining_horizon)
    j = np.arange(1, n_sum + 1, dtype=np.float64)
    base = log_survival(levels - 1, alpha, beta, c)[:, None]
    cond = np.exp(log_survival((levels - 1)[:, None] + j[None, :], alpha, beta, c) - base)  # S(n-1+j)/S(n-1)
    p_renew = cond[:, 0]
    remaining = cond[:, : min(remaining_horizon, n_sum)].sum(axis=1)
    discount = (1.0 + discount_rate) ** -(j - 1.0)
    derl = cond @ discount
    return {
        "p_renew": p_renew[inverse], "expected_remaining_periods": remaining[inverse], "derl": derl[inverse],
    }


def _periods_to_sum(discount_rate: float, remaining_horizon: int) -> int:
    """Enough periods that the discounted tail (at most (1+d)^-j per term) is below DERL_TAIL."""
    if discount_rate <= 0:
        return max(remaining_horizon, MAX_SUM_PERIODS)
    tail = int(np.ceil(np.log(1.0 / DERL_TAIL) / np.log1p(discount_rate)))
    return int(min(max(tail, remaining_horizon), MAX_SUM_PERIODS))


def derl_sbg_closed_form(alpha: float, beta: float, renewals: int, discount_rate: float) -> float:
    """Fader & Hardie (2010) eq. for sBG: DERL(d | alpha, beta, n renewals) just before renewal n+1.

    (beta + n) / (alpha + beta + n) * 2F1(1, beta + n + 1; alpha + beta + n + 1; 1 / (1 + d)).
    Used to check the numerical sum in score_contracts.
    """
    from scipy.special import hyp2f1

    n = renewals
    return float((beta + n) / (alpha + beta + n) * hyp2f1(1.0, beta + n + 1, alpha + beta + n + 1, 1.0 / (1.0 + discount_rate)))


def simulate_contracts(
    n: int, params: dict, *, max_periods: int, rng: np.random.Generator, staggered: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Draw renewal histories from sBG/BdW: each contract observed for up to max_periods periods.

    With staggered starts each contract's observation window is uniform on 1..max_periods (a book
    that acquired contracts over time). Returns (periods begun, cancelled).
    """
    alpha, beta, c = params["alpha"], params["beta"], params.get("c", 1.0)
    theta = rng.beta(alpha, beta, size=n)
    # P(T > t | theta) = (1 - theta)^(t^c): T = smallest t with U > (1-theta)^(t^c)
    u = rng.random(n)
    with np.errstate(divide="ignore"):
        t_c = np.log(u) / np.log1p(-np.clip(theta, 1e-300, 1 - 1e-16))  # t^c at which survival reaches u
    T = np.maximum(1, np.ceil(np.power(t_c, 1.0 / c))).astype(np.float64)
    window = rng.integers(1, max_periods + 1, size=n) if staggered else np.full(n, max_periods)
    cancelled = T < window  # churned at a renewal before the period the contract is observed in
    periods = np.where(cancelled, T, window).astype(np.int64)
    return periods, cancelled
