"""BG/NBD purchase model (Fader, Hardie & Lee 2005): log-space likelihood, analytic gradient, fit and predictions.

Time is in whatever unit x/t_x/T were given in (days by default from summary.py);
alpha carries that unit (a rate scale), r, a, b are unit-free.
The MBG/NBD variant (Batislam et al. 2007) shares this code through ``modified=True``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import digamma, expit, gammaln

from .expectation import expected_purchases_while_alive
from .fitting import (
    CompressedTriples,
    FitDiagnostics,
    Timer,
    compress_triples,
    log_space_standard_errors_and_covariance,
    minimise_log_space,
)

PARAM_NAMES = ("r", "alpha", "a", "b")


@dataclass(frozen=True)
class BgNbdParams:
    """Population parameters: purchase rate lambda ~ Gamma(r, alpha), dropout p ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> BgNbdParams:
        return cls(**{k: float(data[k]) for k in PARAM_NAMES})


@dataclass
class BgNbdFit:
    params: BgNbdParams
    diagnostics: FitDiagnostics


def _as_float(*arrays: np.ndarray | float) -> list[np.ndarray]:
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def log_likelihood(
    params: BgNbdParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, *, modified: bool = False
) -> np.ndarray:
    """Per-customer log-likelihood, evaluated entirely in log space (finite for x=0, x=1e5, T=0, t_x=T).

    BG/NBD: ln L = ln G(r+x) - ln G(r) + r ln alpha + ln B(a, b+x) - ln B(a, b)
                   + logaddexp(-(r+x) ln(alpha+T), [x>0] (ln a - ln(b+x-1) - (r+x) ln(alpha+t_x))).
    MBG/NBD shifts b+x -> b+x+1 and the second branch applies for every x (dropout
    is possible right after the first purchase).
    """
    x, t_x, T = _as_float(x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    s = 1.0 if modified else 0.0
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x + s) - gammaln(b) - gammaln(a + b + x + s)
    a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):  # masked branch: log(b - 1) for x = 0
        a4 = np.log(a) - np.log(b + x + s - 1.0) - (r + x) * np.log(alpha + t_x)
    branch = np.ones_like(x, dtype=bool) if modified else x > 0
    return a1 + a2 + np.where(branch, np.logaddexp(a3, np.where(branch, a4, a3)), a3)


def _negll_and_grad(log_params: np.ndarray, data: CompressedTriples, modified: bool) -> tuple[float, np.ndarray]:
    """Weighted total negative log-likelihood and its gradient w.r.t. log-parameters.

    Derivatives (w = sigmoid(A4 - A3) is the posterior weight of the 'dropped out after
    last purchase' branch, 0 where that branch does not exist):
      dl/dr     = psi(r+x) - psi(r) + ln alpha - (1-w) ln(alpha+T) - w ln(alpha+t_x)
      dl/dalpha = r/alpha - (r+x) [(1-w)/(alpha+T) + w/(alpha+t_x)]
      dl/da     = psi(a+b) - psi(a+b+x+s) + w/a
      dl/db     = psi(a+b) + psi(b+x+s) - psi(b) - psi(a+b+x+s) - w/(b+x+s-1)
    and d/d(ln theta) = theta * d/d(theta).
    """
    r, alpha, a, b = np.exp(log_params)
    s = 1.0 if modified else 0.0
    xl, xw = data.x_levels, data.x_level_weight
    n = data.n_customers
    # Terms that depend on x only: evaluated once per distinct x, weighted by its count.
    ll_x = xw @ (gammaln(r + xl) + gammaln(b + xl + s) - gammaln(a + b + xl + s)) + n * (
        -gammaln(r) + r * np.log(alpha) + gammaln(a + b) - gammaln(b)
    )
    g_r = xw @ digamma(r + xl) + n * (np.log(alpha) - digamma(r))
    g_a = n * digamma(a + b) - xw @ digamma(a + b + xl + s)
    g_b = n * (digamma(a + b) - digamma(b)) + xw @ (digamma(b + xl + s) - digamma(a + b + xl + s))
    g_alpha = n * r / alpha

    x, wgt = data.x, data.weight
    rx = r + x
    log_aT = np.log(alpha + data.T)
    log_atx = np.log(alpha + data.t_x)
    a3 = -rx * log_aT
    branch = np.ones_like(x, dtype=bool) if modified else x > 0
    with np.errstate(divide="ignore", invalid="ignore"):  # masked branch: log(b - 1) for x = 0
        log_bx = np.log(np.where(branch, b + x + s - 1.0, 1.0))
    d = np.where(branch, np.log(a) - log_bx - rx * log_atx - a3, -np.inf)
    # logaddexp(a3, a4) = a3 + softplus(d); softplus and sigmoid written to stay finite.
    softplus = np.where(d > 0, d + np.log1p(np.exp(-np.abs(d))), np.log1p(np.exp(-np.abs(d))))
    w = expit(d)
    ll = ll_x + wgt @ (a3 + softplus)
    ww = wgt * w
    wc = wgt - ww
    g_r += -(wc @ log_aT) - (ww @ log_atx)
    g_alpha += -(wc @ (rx / (alpha + data.T))) - (ww @ (rx / (alpha + data.t_x)))
    g_a += ww.sum() / a
    g_b -= ww @ np.where(branch, 1.0 / np.exp(log_bx), 0.0)
    grad = np.array([g_r * r, g_alpha * alpha, g_a * a, g_b * b])
    return -ll, -grad


def negative_log_likelihood_and_gradient(
    params: BgNbdParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, *, modified: bool = False
) -> tuple[float, np.ndarray]:
    """Total negative log-likelihood and its gradient w.r.t. (ln r, ln alpha, ln a, ln b); for tests and tools."""
    data = compress_triples(x, t_x, T)
    log_params = np.log([params.r, params.alpha, params.a, params.b])
    return _negll_and_grad(log_params, data, modified)


def fit(
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    *,
    modified: bool = False,
    max_iter: int = 1000,
    with_standard_errors: bool = True,
) -> BgNbdFit:
    """Maximum-likelihood fit over all customers (identical triples compressed, times rescaled internally)."""
    with Timer() as timer:
        x, t_x, T = _as_float(x, t_x, T)
        _validate(x, t_x, T)
        # Rescale time so alpha is O(1) during optimisation; the likelihood only shifts by
        # -x ln(scale) per customer, so the optimum is the same (alpha rescaled back below).
        scale = float(np.max(T)) if np.max(T) > 0 else 1.0
        data = compress_triples(x, t_x / scale, T / scale)
        n = data.n_customers

        def objective(lp: np.ndarray) -> tuple[float, np.ndarray]:
            f, g = _negll_and_grad(lp, data, modified)
            return f / n, g / n  # per-customer scale keeps tolerances size-independent

        mean_T = float(data.weight @ data.T) / n
        mean_x = float(data.weight @ data.x) / n
        start = np.log([1.0, max(mean_T / (mean_x + 1.0), 1e-3), 1.0, 1.0])
        log_params, result = minimise_log_space(objective, start, max_iter=max_iter)
        total_negll = float(result.fun) * n
        ll = -total_negll - np.log(scale) * float(data.weight @ data.x)
        r, alpha_s, a, b = np.exp(log_params)
        params = BgNbdParams(float(r), float(alpha_s * scale), float(a), float(b))
        ses = {}
        cov_log: list[list[float]] = []
        if with_standard_errors:
            se, cov_log = log_space_standard_errors_and_covariance(lambda lp: _negll_and_grad(lp, data, modified)[1], log_params)
            se[1] *= scale
            ses = {k: float(v) for k, v in zip(PARAM_NAMES, se, strict=True)}
    diag = FitDiagnostics(
        model="mbgnbd" if modified else "bgnbd",
        log_likelihood=float(ll),
        converged=bool(result.success),
        iterations=int(result.nit),
        function_evaluations=int(result.nfev),
        message=str(result.message),
        n_customers=int(x.size),
        n_unique=data.n_unique,
        seconds=timer.seconds,
        aic=float(2 * 4 - 2 * ll),
        standard_errors=ses,
        covariance_log=cov_log,
    )
    return BgNbdFit(params, diag)


def _validate(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> None:
    if x.size == 0:
        raise ValueError("no customers")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(T < 0):
        raise ValueError("frequency, recency and T must be non-negative")
    if np.any(t_x > T * (1 + 1e-12)):
        raise ValueError("recency larger than T")
    if not np.all(np.isfinite(x) & np.isfinite(t_x) & np.isfinite(T)):
        raise ValueError("non-finite input")


def probability_alive(
    params: BgNbdParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, *, modified: bool = False
) -> np.ndarray:
    """P(still active at T | x, t_x, T); exactly 1 for x = 0 under BG/NBD (dropout only follows a repeat purchase)."""
    x, t_x, T = _as_float(x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    s = 1.0 if modified else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):  # masked branch: log(b - 1) for x = 0
        log_odds_dead = np.log(a) - np.log(b + x + s - 1.0) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    p = expit(-log_odds_dead)
    if not modified:
        p = np.where(x > 0, p, 1.0)
    return p


def conditional_expected_purchases(
    params: BgNbdParams,
    t: np.ndarray | float,
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    *,
    modified: bool = False,
) -> np.ndarray:
    """E[purchases in (T, T+t] | x, t_x, T] (BG/NBD paper eq. 10) = P(alive) x E[purchases | alive]."""
    x, t_x, T = _as_float(x, t_x, T)
    s = 1.0 if modified else 0.0
    alive = probability_alive(params, x, t_x, T, modified=modified)
    # Posterior given alive: lambda ~ Gamma(r+x, alpha+T), p ~ Beta(a, b+x+s).
    e_alive = expected_purchases_while_alive(params.r + x, params.alpha + T, params.a, params.b + x + s, t)
    return alive * e_alive


def expected_purchases(params: BgNbdParams, t: np.ndarray | float, *, modified: bool = False) -> np.ndarray:
    """Unconditional E[X(t)] for a customer just acquired (paper eq. 9)."""
    t = np.asarray(t, dtype=np.float64)
    if not modified:
        return expected_purchases_while_alive(params.r, params.alpha, params.a, params.b, t)
    # MBG/NBD: the customer may drop out right after the first purchase (prob p), so
    # E[X(t)] = E[(1-p) g(p)] = b/(a+b) * E_{Beta(a, b+1)}[g(p)].
    return (
        params.b
        / (params.a + params.b)
        * expected_purchases_while_alive(params.r, params.alpha, params.a, params.b + 1.0, t)
    )
