"""BG/BB purchase model (Fader, Hardie & Berger 2010) for discrete purchase opportunities: one chance to buy per period.

For settings where a customer can buy at most once per period (annual events, yearly
donations, a season's subscription box): while alive a customer buys in each period with
probability p ~ Beta(alpha, beta); at the start of every period after the first they drop
out for good with probability theta ~ Beta(gamma, delta). A customer is summarised by x
(periods with a purchase after the first), t_x (the last such period, 0 when x = 0) and n
(periods observed after the first). Parameters are unit-free.

Likelihood (the paper's eq. 5):
    L = B(alpha+x, beta+n-x)/B(alpha, beta) * B(gamma, delta+n)/B(gamma, delta)
        + sum_{i=0}^{n-t_x-1} B(alpha+x, beta+t_x-x+i)/B(alpha, beta) * B(gamma+1, delta+t_x+i)/B(gamma, delta)
P(alive in period n+1), E[purchases in the next n* periods] and DERT (discounted expected
residual transactions at a per-period rate d, closed form with a Gaussian hypergeometric)
are the paper's eqs. 11, 13 and 14.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import betaln, gammaln, hyp2f1, logsumexp

from .fitting import FitDiagnostics, Timer, log_space_standard_errors_and_covariance, minimise_log_space

PARAM_NAMES = ("alpha", "beta", "gamma", "delta")
_GRAD_STEP = 1e-6


@dataclass(frozen=True)
class BgBbParams:
    alpha: float
    beta: float
    gamma: float
    delta: float

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> BgBbParams:
        return cls(**{k: float(data[k]) for k in PARAM_NAMES})


@dataclass
class BgBbFit:
    params: BgBbParams
    diagnostics: FitDiagnostics


def _validate(x: np.ndarray, t_x: np.ndarray, n: np.ndarray) -> None:
    if x.size == 0:
        raise ValueError("no customers")
    if not np.all(np.isfinite(x) & np.isfinite(t_x) & np.isfinite(n)):
        raise ValueError("non-finite input")
    if np.any(x < 0) or np.any(t_x < x) or np.any(t_x > n):
        raise ValueError("BG/BB needs 0 <= x <= t_x <= n (whole periods)")
    if np.any((x > 0) & (t_x < 1)) or np.any((x == 0) & (t_x != 0)):
        raise ValueError("t_x must be 0 exactly when x is 0")
    if not (np.array_equal(x, np.floor(x)) and np.array_equal(t_x, np.floor(t_x)) and np.array_equal(n, np.floor(n))):
        raise ValueError("BG/BB needs whole numbers of periods")


def log_likelihood(params: BgBbParams, x: np.ndarray, t_x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Per-customer log-likelihood (eq. 5), the sum over the possible dropout periods done in log space."""
    x, t_x, n = (np.asarray(v, dtype=np.float64) for v in (x, t_x, n))
    al, be, ga, de = params.alpha, params.beta, params.gamma, params.delta
    base_ab = betaln(al, be)
    base_gd = betaln(ga, de)
    alive = betaln(al + x, be + n - x) - base_ab + betaln(ga, de + n) - base_gd
    span = int(np.max(n - t_x)) if x.size else 0
    if span <= 0:
        return alive
    i = np.arange(span, dtype=np.float64)[:, None]
    terms = betaln(al + x, be + t_x - x + i) - base_ab + betaln(ga + 1.0, de + t_x + i) - base_gd
    terms = np.where(i < (n - t_x), terms, -np.inf)
    return logsumexp(np.vstack([alive[None, :], terms]), axis=0)


def _negll(log_params: np.ndarray, x, t_x, n, w) -> float:
    al, be, ga, de = np.exp(log_params)
    return -float(w @ log_likelihood(BgBbParams(al, be, ga, de), x, t_x, n))


def fit(
    x: np.ndarray, t_x: np.ndarray, n: np.ndarray, *, weights: np.ndarray | None = None,
    with_standard_errors: bool = True,
) -> BgBbFit:
    """Maximum-likelihood fit on (x, t_x, n) rows (identical rows compressed; optional counts per row)."""
    x, t_x, n = (np.asarray(v, dtype=np.float64).ravel() for v in (x, t_x, n))
    _validate(x, t_x, n)
    w_in = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    with Timer() as timer:
        rows, inv = np.unique(np.stack([x, t_x, n]), axis=1, return_inverse=True)
        w = np.bincount(inv.ravel(), weights=w_in, minlength=rows.shape[1])
        ux, utx, un = rows
        total = float(w.sum())

        def grad(lp: np.ndarray) -> np.ndarray:
            g = np.empty(4)
            for j in range(4):
                e = np.zeros(4)
                e[j] = _GRAD_STEP
                g[j] = (_negll(lp + e, ux, utx, un, w) - _negll(lp - e, ux, utx, un, w)) / (2 * _GRAD_STEP)
            return g

        def objective(lp: np.ndarray) -> tuple[float, np.ndarray]:
            return _negll(lp, ux, utx, un, w) / total, grad(lp) / total

        log_params, result = minimise_log_space(objective, np.zeros(4))
        ll = -_negll(log_params, ux, utx, un, w)
        params = BgBbParams(*(float(v) for v in np.exp(log_params)))
        ses: dict[str, float] = {}
        cov_log: list[list[float]] = []
        if with_standard_errors:
            se, cov_log = log_space_standard_errors_and_covariance(grad, log_params, step=1e-3)
            ses = {k: float(v) for k, v in zip(PARAM_NAMES, se, strict=True)}
    diag = FitDiagnostics(
        model="bgbb", log_likelihood=float(ll), converged=bool(result.success), iterations=int(result.nit),
        function_evaluations=int(result.nfev), message=str(result.message), n_customers=int(round(total)),
        n_unique=int(ux.size), seconds=timer.seconds, aic=float(8 - 2 * ll), standard_errors=ses,
        covariance_log=cov_log,
    )
    return BgBbFit(params, diag)


def probability_alive(params: BgBbParams, x: np.ndarray, t_x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """P(alive in period n+1 | x, t_x, n) (eq. 11)."""
    x, t_x, n = (np.asarray(v, dtype=np.float64) for v in (x, t_x, n))
    al, be, ga, de = params.alpha, params.beta, params.gamma, params.delta
    log_num = betaln(al + x, be + n - x) - betaln(al, be) + betaln(ga, de + n + 1.0) - betaln(ga, de)
    return np.exp(log_num - log_likelihood(params, x, t_x, n))


def conditional_expected_purchases(
    params: BgBbParams, n_star: float, x: np.ndarray, t_x: np.ndarray, n: np.ndarray
) -> np.ndarray:
    """E[purchases in periods n+1 .. n+n_star | x, t_x, n] (eq. 13)."""
    x, t_x, n = (np.asarray(v, dtype=np.float64) for v in (x, t_x, n))
    al, be, ga, de = params.alpha, params.beta, params.gamma, params.delta
    if n_star <= 0:
        return np.zeros_like(x)
    log_front = (betaln(al + x + 1.0, be + n - x) - betaln(al, be) - log_likelihood(params, x, t_x, n)
                 + gammaln(ga + de) - gammaln(1.0 + de))
    # delta/(gamma-1) [G(1+delta+n)/G(gamma+delta+n) - G(1+delta+n+n*)/G(gamma+delta+n+n*)], written so gamma -> 1 stays finite.
    first = gammaln(1.0 + de + n) - gammaln(ga + de + n)
    second = gammaln(1.0 + de + n + n_star) - gammaln(ga + de + n + n_star)
    diff = -np.expm1(second - first)  # 1 - ratio
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(abs(ga - 1.0) > 1e-8, de / (ga - 1.0) * np.exp(first) * diff, np.nan)
    return np.exp(log_front) * factor


def expected_purchases(params: BgBbParams, n_star: float) -> float:
    """Unconditional E[X(n)] for a just-acquired customer (eq. 7)."""
    zero = np.zeros(1)
    return float(conditional_expected_purchases(params, n_star, zero, zero, zero)[0])


def discounted_expected_residual_purchases(
    params: BgBbParams, d: float, x: np.ndarray, t_x: np.ndarray, n: np.ndarray
) -> np.ndarray:
    """DERT at per-period discount rate d (eq. 14): purchases from period n+1 on, each discounted by (1+d)^-(period - n)."""
    x, t_x, n = (np.asarray(v, dtype=np.float64) for v in (x, t_x, n))
    al, be, ga, de = params.alpha, params.beta, params.gamma, params.delta
    log_front = (betaln(al + x + 1.0, be + n - x) - betaln(al, be) + betaln(ga, de + n + 1.0) - betaln(ga, de)
                 - np.log1p(d) - log_likelihood(params, x, t_x, n))
    return np.exp(log_front) * hyp2f1(1.0, de + n + 1.0, ga + de + n + 1.0, 1.0 / (1.0 + d))


def period_summary(
    first_day: np.ndarray, purchase_customer: np.ndarray, purchase_day: np.ndarray, as_of_day: int, period_days: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, n) per customer from purchase days: periods counted from each customer's first purchase day.

    first_day is per customer (index = customer position); purchase_customer indexes it per purchase.
    Period i covers days [first + i*period, first + (i+1)*period); only whole periods up to as_of count.
    """
    first_day = np.asarray(first_day, dtype=np.int64)
    n = np.floor((as_of_day - first_day + 1) / period_days).astype(np.int64) - 1
    n = np.maximum(n, 0)
    period = np.floor((np.asarray(purchase_day) - first_day[purchase_customer]) / period_days).astype(np.int64)
    ok = (period >= 1) & (period <= n[purchase_customer])
    pairs = np.unique(np.stack([purchase_customer[ok], period[ok]]), axis=1)
    x = np.bincount(pairs[0], minlength=first_day.size).astype(np.float64)
    t_x = np.zeros(first_day.size)
    np.maximum.at(t_x, pairs[0], pairs[1].astype(np.float64))
    return x, t_x, n.astype(np.float64)

