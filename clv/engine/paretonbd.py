"""Pareto/NBD purchase model (Schmittlein, Morrison & Colombo 1987): log-space likelihood via 2F1, ML fit, P(alive), expectations.

While alive a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha) and
stays alive for an exponential lifetime with rate mu ~ Gamma(s, beta); both rates are per
time unit of the inputs (weeks for the CDNOW literature, days from summary.py), so alpha and
beta carry that unit and r, s are unit-free. Unlike BG/NBD, a customer can drop out at any
moment, including before a first repeat purchase.

Likelihood (Fader & Hardie 2005, "A Note on Deriving the Pareto/NBD Model and Related
Expressions", eq. for L(r, alpha, s, beta | x, t_x, T)), written as

    L = G(r+x) alpha^r beta^s / G(r) * [ (alpha+T)^-(r+x) (beta+T)^-s + s * I ],
    I = int_{t_x}^{T} (alpha+tau)^-(r+x) (beta+tau)^-(s+1) dtau,

where I is the 'died at tau' term (the note's s/(r+s+x) * A0). I = J(t_x) - J(T) with
the tail J(t) = int_t^inf, which has the closed form (c = r+s+x, z in [0, 1)):

    alpha >= beta:  J(t) = (alpha+t)^-c / c * 2F1(c, s+1; c+1; (alpha-beta)/(alpha+t))
    alpha <  beta:  J(t) = (beta+t)^-c  / c * 2F1(c, r+x; c+1; (beta-alpha)/(beta+t))

The second 2F1 grows like ((beta+t)/(alpha+t))^(r+x) and overflows for large x (the
failure lifetimes works around); Euler's transformation rewrites it as
(1-z)^(1-r-x) 2F1(1, s+1; c+1; z), whose series terms are bounded by those of (1-z)^-(s+1).
Everything is kept in logs, so x in the thousands or T in the tens of thousands stay finite;
a 2F1 value outside its provable bounds [1, (1-z)^-(s+1)] is recomputed by quadrature.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.special import expit, gammaln, hyp2f1

from .fitting import (
    CompressedTriples,
    FitDiagnostics,
    Timer,
    compress_triples,
    log_space_standard_errors_and_covariance,
    minimise_log_space,
)

PARAM_NAMES = ("r", "alpha", "s", "beta")
# Central-difference step on log-parameters for the numerical gradient: the objective is a
# per-customer mean of O(1) terms accurate to ~1e-14, so truncation (~h^2) and rounding
# (~1e-14/h) errors balance near 1e-5 and the gradient is good to ~1e-9.
_GRAD_STEP = 1e-5


@dataclass(frozen=True)
class ParetoNbdParams:
    """Population parameters: purchase rate lambda ~ Gamma(r, alpha), dropout rate mu ~ Gamma(s, beta)."""

    r: float
    alpha: float
    s: float
    beta: float

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> ParetoNbdParams:
        return cls(**{k: float(data[k]) for k in PARAM_NAMES})


@dataclass
class ParetoNbdFit:
    params: ParetoNbdParams
    diagnostics: FitDiagnostics


def _as_float(*arrays: np.ndarray | float) -> list[np.ndarray]:
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def _log_tail(rx: np.ndarray, s: float, alpha: float, beta: float, t: np.ndarray) -> np.ndarray:
    """ln J(t) = ln int_t^inf (alpha+tau)^-rx (beta+tau)^-(s+1) dtau, elementwise (rx = r + x)."""
    rx, t = np.broadcast_arrays(np.asarray(rx, dtype=np.float64), np.asarray(t, dtype=np.float64))
    c = rx + s
    big, small = max(alpha, beta), min(alpha, beta)
    log_big = np.log(big + t)
    log_small = np.log(small + t)
    z = (big - small) / (big + t)
    with np.errstate(all="ignore"):
        if alpha >= beta:
            f = hyp2f1(c, s + 1.0, c + 1.0, z)
            prefix = -c * log_big
        else:
            f = hyp2f1(1.0, s + 1.0, c + 1.0, z)
            # (beta+t)^-c (1-z)^(1-rx) with 1-z = (alpha+t)/(beta+t)
            prefix = -c * log_big + (1.0 - rx) * (log_small - log_big)
        # Both series have terms between 0 and those of (1-z)^-(s+1) = ((big+t)/(small+t))^(s+1).
        log_f = np.log(f)
        ok = np.isfinite(log_f) & (log_f >= -1e-12) & (log_f <= (s + 1.0) * (log_big - log_small) + 1e-9)
    out = prefix - np.log(c) + np.where(ok, log_f, 0.0)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        out[bad] = [_log_tail_quadrature(float(rx[i]), s, alpha, beta, float(t[i])) for i in bad]
    return out


def _log_tail_quadrature(rx: float, s: float, alpha: float, beta: float, t: float) -> float:
    """ln J(t) by adaptive quadrature (slow; fallback only).

    Substituting tau = e^u - m (m = min(alpha, beta)) turns the integrand into exp(g(u)) with
    g(u) = u - (r+x) ln(alpha - m + e^u) - (s+1) ln(beta - m + e^u), which is concave
    (g' = 1 - (r+x) e^u/(alpha-m+e^u) - (s+1) e^u/(beta-m+e^u) decreases from at most 1 to
    -(r+s+x)). So the integrand is unimodal with an exponential right tail whatever the mix
    of fast and power-law decay; integrate around the mode, scaled by its value.
    """
    a_exp, b_exp = rx, s + 1.0
    m = min(alpha, beta)
    log_ka = np.log(alpha - m) if alpha > m else -np.inf
    log_kb = np.log(beta - m) if beta > m else -np.inf

    def g(u: float) -> float:
        return float(u - a_exp * np.logaddexp(log_ka, u) - b_exp * np.logaddexp(log_kb, u))

    def g_prime(u: float) -> float:
        return float(1.0 - a_exp * expit(u - log_ka) - b_exp * expit(u - log_kb))

    u0 = float(np.log(m + t))
    mode = u0
    if g_prime(u0) > 0:
        hi = u0 + 1.0
        while g_prime(hi) > 0:
            hi = u0 + 2.0 * (hi - u0)
        mode = brentq(g_prime, u0, hi, xtol=1e-12)
    g_mode = g(mode)

    def scaled(u: float) -> float:
        return float(np.exp(g(u) - g_mode))

    # Local width from the curvature at the mode (or the slope when the mode is at u0).
    eps = 1e-4
    curvature = -(g_prime(mode + eps) - g_prime(mode - eps)) / (2 * eps)
    slope = -g_prime(mode)
    width = 1.0 / max(np.sqrt(max(curvature, 0.0)), slope, 1e-300)
    width = min(width, 1e6)
    total = 0.0
    if mode > u0:
        total += quad(scaled, u0, mode, limit=200, epsabs=0.0, epsrel=1e-12)[0]
    cut = mode + 40.0 * width
    total += quad(scaled, mode, cut, limit=200, epsabs=0.0, epsrel=1e-12)[0]
    # Beyond the cut g is below g(cut) + g'(cut)(u - cut) (concavity): a fast-decaying remainder.
    total += quad(scaled, cut, np.inf, limit=200, epsabs=0.0, epsrel=1e-10)[0]
    return float(g_mode + np.log(total))


def _log_died_term(params: ParetoNbdParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """ln(s * I); -inf where t_x = T (no time to die unobserved)."""
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    log_j_tx = _log_tail(r + x, s, alpha, beta, t_x)
    log_j_T = _log_tail(r + x, s, alpha, beta, T)
    return _combine_tails(s, log_j_tx, log_j_T, T > t_x)


def _combine_tails(s: float, log_j_tx: np.ndarray, log_j_T: np.ndarray, open_interval: np.ndarray) -> np.ndarray:
    diff = np.minimum(log_j_T - log_j_tx, 0.0)
    with np.errstate(divide="ignore"):
        # ln(J(t_x) - J(T)) = ln J(t_x) + ln(1 - J(T)/J(t_x)), -inf when equal
        log_i = log_j_tx + np.log(-np.expm1(diff))
    return np.log(s) + np.where(open_interval, log_i, -np.inf)


def _log_alive_term(params: ParetoNbdParams, x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """ln[(alpha+T)^-(r+x) (beta+T)^-s]: still alive at T."""
    return -(params.r + x) * np.log(params.alpha + T) - params.s * np.log(params.beta + T)


def log_likelihood(params: ParetoNbdParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Per-customer log-likelihood ln L(r, alpha, s, beta | x, t_x, T)."""
    x, t_x, T = _as_float(x, t_x, T)
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    front = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    return front + np.logaddexp(_log_alive_term(params, x, T), _log_died_term(params, x, t_x, T))


@dataclass(frozen=True)
class _TailPairs:
    """Distinct (x, t_x) and (x, T) pairs: the 2F1 tails depend on one time each, and
    day-count summaries have ~20x fewer distinct pairs than distinct triples."""

    x_a: np.ndarray
    t_a: np.ndarray
    inv_a: np.ndarray  # unique triple -> (x, t_x) pair
    x_b: np.ndarray
    t_b: np.ndarray
    inv_b: np.ndarray  # unique triple -> (x, T) pair
    open_interval: np.ndarray  # T > t_x per unique triple

    @classmethod
    def build(cls, data: CompressedTriples) -> _TailPairs:
        a, inv_a = np.unique(np.stack([data.x, data.t_x]), axis=1, return_inverse=True)
        b, inv_b = np.unique(np.stack([data.x, data.T]), axis=1, return_inverse=True)
        return cls(a[0], a[1], inv_a.ravel(), b[0], b[1], inv_b.ravel(), data.T > data.t_x)


def _negll(log_params: np.ndarray, data: CompressedTriples, pairs: _TailPairs) -> float:
    """Weighted total negative log-likelihood; x-only terms once per distinct x, tails once per distinct pair."""
    r, alpha, s, beta = np.exp(log_params)
    params = ParetoNbdParams(r, alpha, s, beta)
    xl, xw = data.x_levels, data.x_level_weight
    n = data.n_customers
    ll = xw @ gammaln(r + xl) + n * (-gammaln(r) + r * np.log(alpha) + s * np.log(beta))
    log_j_tx = _log_tail(r + pairs.x_a, s, alpha, beta, pairs.t_a)[pairs.inv_a]
    log_j_T = _log_tail(r + pairs.x_b, s, alpha, beta, pairs.t_b)[pairs.inv_b]
    died = _combine_tails(s, log_j_tx, log_j_T, pairs.open_interval)
    terms = np.logaddexp(_log_alive_term(params, data.x, data.T), died)
    return -float(ll + data.weight @ terms)


def _negll_and_numerical_grad(
    log_params: np.ndarray, data: CompressedTriples, pairs: _TailPairs
) -> tuple[float, np.ndarray]:
    f0 = _negll(log_params, data, pairs)
    grad = np.empty(log_params.size)
    for j in range(log_params.size):
        e = np.zeros(log_params.size)
        e[j] = _GRAD_STEP
        grad[j] = (_negll(log_params + e, data, pairs) - _negll(log_params - e, data, pairs)) / (2 * _GRAD_STEP)
    return f0, grad


def fit(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, *, max_iter: int = 1000, with_standard_errors: bool = True
) -> ParetoNbdFit:
    """Maximum-likelihood fit (identical triples compressed, time rescaled internally, numerical gradient)."""
    with Timer() as timer:
        x, t_x, T = _as_float(x, t_x, T)
        _validate(x, t_x, T)
        # Rescale time so alpha, beta are O(1) while optimising; the likelihood shifts by
        # -x ln(scale) per customer, so the optimum maps back by alpha, beta *= scale.
        scale = float(np.max(T)) if np.max(T) > 0 else 1.0
        data = compress_triples(x, t_x / scale, T / scale)
        pairs = _TailPairs.build(data)
        n = data.n_customers

        def objective(lp: np.ndarray) -> tuple[float, np.ndarray]:
            f, g = _negll_and_numerical_grad(lp, data, pairs)
            return f / n, g / n

        mean_T = float(data.weight @ data.T) / n
        mean_x = float(data.weight @ data.x) / n
        start = np.log([1.0, max(mean_T / (mean_x + 1.0), 1e-3), 1.0, max(mean_T, 1e-3)])
        log_params, result = minimise_log_space(objective, start, max_iter=max_iter)
        ll = -float(result.fun) * n - np.log(scale) * float(data.weight @ data.x)
        r, alpha_s, s, beta_s = np.exp(log_params)
        params = ParetoNbdParams(float(r), float(alpha_s * scale), float(s), float(beta_s * scale))
        ses = {}
        cov_log: list[list[float]] = []
        if with_standard_errors:
            se, cov_log = log_space_standard_errors_and_covariance(
                lambda lp: _negll_and_numerical_grad(lp, data, pairs)[1], log_params, step=1e-3
            )
            se[1] *= scale
            se[3] *= scale
            ses = {k: float(v) for k, v in zip(PARAM_NAMES, se, strict=True)}
    diag = FitDiagnostics(
        model="paretonbd",
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
    return ParetoNbdFit(params, diag)


def _validate(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> None:
    if x.size == 0:
        raise ValueError("no customers")
    if not np.all(np.isfinite(x) & np.isfinite(t_x) & np.isfinite(T)):
        raise ValueError("non-finite input")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(T < 0):
        raise ValueError("frequency, recency and T must be non-negative")
    if np.any(t_x > T * (1 + 1e-12)):
        raise ValueError("recency larger than T")


def probability_alive(params: ParetoNbdParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """P(still alive at T | x, t_x, T) = alive term / (alive term + s I) (the note's eq. for P(alive))."""
    x, t_x, T = _as_float(x, t_x, T)
    t_x = np.minimum(t_x, T)
    return expit(_log_alive_term(params, x, T) - _log_died_term(params, x, t_x, T))


def _expected_while_alive(s: np.ndarray | float, rate: np.ndarray, beta_T: np.ndarray, t: np.ndarray) -> np.ndarray:
    """E[purchases in (T, T+t]] for lambda with mean `rate`, mu ~ Gamma(s, beta_T): rate * beta_T/(s-1) * [1 - (beta_T/(beta_T+t))^(s-1)]."""
    log_ratio = np.log1p(t / beta_T)  # ln((beta_T + t)/beta_T)
    sm1 = np.asarray(s, dtype=np.float64) - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        # (1 - e^{-(s-1) L}) / (s-1) -> L as s -> 1; expm1 keeps it exact near there.
        factor = np.where(np.abs(sm1) > 1e-10, -np.expm1(-sm1 * log_ratio) / sm1, log_ratio)
    return rate * beta_T * factor


def conditional_expected_purchases(
    params: ParetoNbdParams, t: np.ndarray | float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """E[purchases in (T, T+t] | x, t_x, T] = P(alive) (r+x)/(alpha+T) (beta+T)/(s-1) [1 - ((beta+T)/(beta+T+t))^(s-1)]."""
    x, t_x, T = _as_float(x, t_x, T)
    return probability_alive(params, x, t_x, T) * expected_purchases_if_alive(params, t, x, T)


def expected_purchases_if_alive(
    params: ParetoNbdParams, t: np.ndarray | float, x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """E[purchases in (T, T+t] | alive at T, x, T]: posterior lambda ~ Gamma(r+x, alpha+T), mu ~ Gamma(s, beta+T)."""
    x, T = _as_float(x, T)
    t = np.asarray(t, dtype=np.float64)
    rate = (params.r + x) / (params.alpha + T)
    return _expected_while_alive(params.s, rate, params.beta + T, t)


def expected_purchases(params: ParetoNbdParams, t: np.ndarray | float) -> np.ndarray:
    """Unconditional E[X(t)] for a customer just acquired: r beta / (alpha (s-1)) [1 - (beta/(beta+t))^(s-1)]."""
    t = np.asarray(t, dtype=np.float64)
    return _expected_while_alive(params.s, params.r / params.alpha, np.full_like(t, params.beta), t)


def simulate_summaries(
    n: int, params: ParetoNbdParams, T: np.ndarray | float, *, horizon: float = 0.0, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Draw (x, t_x, T) from the Pareto/NBD process, plus the latent truth and purchases in (T, T+horizon].

    Given N purchases in the observed active span L = min(lifetime, T), their times are
    uniform on (0, L], so t_x = L * max of N uniforms = L * Beta(N, 1).
    """
    T = np.broadcast_to(np.asarray(T, dtype=np.float64), (n,)).copy()
    lam = rng.gamma(params.r, 1.0 / params.alpha, size=n)  # alpha is a rate
    mu = rng.gamma(params.s, 1.0 / params.beta, size=n)
    lifetime = rng.exponential(1.0 / np.maximum(mu, 1e-300))
    span = np.minimum(lifetime, T)
    x = rng.poisson(lam * span)
    t_x = np.zeros(n)
    pos = x > 0
    t_x[pos] = span[pos] * rng.beta(x[pos], 1.0)
    alive = lifetime > T
    future_span = np.clip(lifetime - T, 0.0, horizon)
    future = rng.poisson(lam * future_span) if horizon > 0 else np.zeros(n, dtype=np.int64)
    return {
        "frequency": x.astype(np.float64),
        "recency": t_x,
        "T": T,
        "alive": alive,
        "future": future.astype(np.float64),
        "lam": lam,
        "mu": mu,
    }
