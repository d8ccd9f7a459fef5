"""One interface over every continuous-time purchase model: fit, P(alive), expected purchases, DERT and 80% count intervals.

Models: "bgnbd", "mbgnbd", "paretonbd", "mbgcnbd" (MBG/CNBD-k, regular buyers). Parameters
travel as JSON-serialisable dicts (what a run stores); fitted covariances of the
log-parameters (from the Hessian at the MLE) feed the intervals' parameter draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import betainc, hyperu

from . import bgnbd, cnbd, paretonbd
from .bgnbd import BgNbdParams
from .paretonbd import ParetoNbdParams

CONTINUOUS_MODELS = ("bgnbd", "mbgnbd", "paretonbd", "mbgcnbd")
MODEL_LABELS = {"bgnbd": "BG/NBD", "mbgnbd": "MBG/NBD", "paretonbd": "Pareto/NBD", "mbgcnbd": "MBG/CNBD-k",
                "bgbb": "BG/BB"}
INTERVAL_LEVEL = 0.80
DEFAULT_DRAWS = 10
# With every relative standard error below this, parameter draws cannot move an 80% count
# interval (the process noise is orders of magnitude larger): the MLE alone is used.
DRAWS_NEEDED_ABOVE_RELATIVE_SE = 0.02
# Gauss-Legendre nodes for Pareto/NBD's integral over the remaining lifetime.
_GL_X, _GL_W = np.polynomial.legendre.leggauss(32)


def fit(model: str, x, t_x, T, *, litt=None, k: int | None = None, with_standard_errors: bool = True) -> tuple[dict, dict]:
    """Fit one model; returns (params dict, diagnostics dict). MBG/CNBD-k chooses k from litt unless k is given."""
    if model == "paretonbd":
        f = paretonbd.fit(x, t_x, T, with_standard_errors=with_standard_errors)
        return f.params.to_dict(), f.diagnostics.to_dict()
    if model in ("bgnbd", "mbgnbd"):
        f = bgnbd.fit(x, t_x, T, modified=model == "mbgnbd", with_standard_errors=with_standard_errors)
        return f.params.to_dict(), f.diagnostics.to_dict()
    if model == "mbgcnbd":
        f = cnbd.fit(x, t_x, T, litt, k=k, with_standard_errors=with_standard_errors)
        diag = f.diagnostics.to_dict()
        diag["by_k"] = f.by_k
        return f.params.to_dict(), diag
    raise ValueError(f"unknown purchase model {model!r}; one of {CONTINUOUS_MODELS}")


def _bg_family(model: str, params: dict) -> tuple[cnbd.CnbdParams, bool]:
    if model not in ("bgnbd", "mbgnbd", "mbgcnbd"):
        raise ValueError(f"unknown purchase model {model!r}; one of {CONTINUOUS_MODELS}")
    if model == "mbgcnbd":
        return cnbd.CnbdParams.from_dict(params), True
    return cnbd.params_from_bgnbd(params), model == "mbgnbd"


def p_alive(model: str, params: dict, x, t_x, T) -> np.ndarray:
    if model == "paretonbd":
        return paretonbd.probability_alive(ParetoNbdParams.from_dict(params), x, t_x, T)
    if model in ("bgnbd", "mbgnbd"):
        return bgnbd.probability_alive(BgNbdParams.from_dict(params), x, t_x, T, modified=model == "mbgnbd")
    p, modified = _bg_family(model, params)
    return cnbd.probability_alive(p, x, t_x, T, modified=modified)


def expected_purchases(model: str, params: dict, t: float, x, t_x, T, *, alive: np.ndarray | None = None):
    """E[purchases in (T, T+t] | x, t_x, T]; alive (P(alive), if already computed) saves work for Pareto/NBD."""
    if model == "paretonbd":
        pn = ParetoNbdParams.from_dict(params)
        alive = paretonbd.probability_alive(pn, x, t_x, T) if alive is None else alive
        return alive * paretonbd.expected_purchases_if_alive(pn, t, x, T)
    if model in ("bgnbd", "mbgnbd") or (model == "mbgcnbd" and int(params["k"]) == 1):
        # k = 1 is MBG/NBD exactly: use its closed form.
        modified = model != "bgnbd"
        return bgnbd.conditional_expected_purchases(BgNbdParams.from_dict(params), t, x, t_x, T, modified=modified)
    p, modified = _bg_family(model, params)
    return cnbd.conditional_expected_purchases(p, t, x, t_x, T, modified=modified)


def dert(model: str, params: dict, delta: float, x, t_x, T) -> np.ndarray:
    """Discounted expected residual purchases (continuous discounting at delta per time unit), whole remaining lifetime."""
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    if model == "paretonbd":
        return paretonbd_dert(ParetoNbdParams.from_dict(params), delta, x, t_x, T)
    p, modified = _bg_family(model, params)
    post = cnbd.posterior(p, x, t_x, T, modified=modified)
    return cnbd.discounted_expected_residual_purchases(post, delta, x=x, T=T)


def paretonbd_dert(params: ParetoNbdParams, delta: float, x, t_x, T) -> np.ndarray:
    """Fader, Hardie & Lee (2005, "RFM and CLV", eq. 2): P(alive) (r+x)/(alpha+T) (beta+T)^s delta^(s-1) U(s, s; delta (beta+T)).

    (E[lambda] while alive times E[1/(delta+mu)] for mu ~ Gamma(s, beta+T); U is Tricomi's
    confluent hypergeometric function, the paper's Psi.) U depends on T only: once per T.
    """
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    alive = paretonbd.probability_alive(params, x, t_x, T)
    levels, inv = np.unique(T, return_inverse=True)
    c = params.beta + levels
    s = params.s
    life = np.exp(s * np.log(c) + (s - 1.0) * np.log(delta)) * hyperu(s, s, delta * c)
    return alive * (params.r + x) / (params.alpha + T) * life[inv.ravel()]


# ---------------------------------------------------------------------------------------------
# 80% intervals for the number of purchases in the next t


def parameter_draws(model: str, params: dict, diagnostics: dict, *, draws: int, rng: np.random.Generator) -> list[dict]:
    """The MLE plus draws-1 parameter sets from the asymptotic normal of the log-parameters.

    Only the MLE when there is no usable covariance or when every relative standard error is
    below DRAWS_NEEDED_ABOVE_RELATIVE_SE (then the draws cannot move an interval).
    """
    names = ("r", "alpha", "s", "beta") if model == "paretonbd" else ("r", "alpha", "a", "b")
    cov = diagnostics.get("covariance_log") or []
    if draws <= 1 or not cov:
        return [params]
    cov = np.asarray(cov, dtype=np.float64)
    if not np.all(np.isfinite(cov)) or np.sqrt(np.max(np.diag(cov))) < DRAWS_NEEDED_ABOVE_RELATIVE_SE:
        return [params]
    mean = np.log([params[n] for n in names])
    try:
        sample = rng.multivariate_normal(mean, cov, size=draws - 1, method="cholesky")
    except np.linalg.LinAlgError:
        return [params]
    out = [params]
    for row in sample:
        d = dict(params)
        d.update({n: float(v) for n, v in zip(names, np.exp(row), strict=True)})
        out.append(d)
    return out


def count_interval(
    model: str, param_sets: list[dict], t: float, x, t_x, T, *, level: float = INTERVAL_LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """Central interval [lo, hi] of the purchases in (T, T+t] from the predictive distribution of the count.

    The distribution is the customer's, given their history, mixed over the parameter sets
    (the MLE and draws from its asymptotic normal of the fit). A count interval cannot hold
    exactly 80%: lo and hi are mid-distribution quantiles (F_mid(m) = P(N < m) + P(N = m)/2;
    lo the smallest m with F_mid >= 0.1, hi the largest with F_mid <= 0.9, never below lo),
    which hold 80% on average instead of at least 80%. Where one count carries most of the
    mass (zero, for a lapsed customer) the interval is that count and holds more.
    """
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    probs = ((1.0 - level) / 2.0, (1.0 + level) / 2.0)
    if model == "paretonbd":
        posts = [_ParetoPosterior.build(ParetoNbdParams.from_dict(p), x, t_x, T) for p in param_sets]
    else:
        posts = []
        for p in param_sets:
            cp, modified = _bg_family(model, p)
            posts.append(cnbd.posterior(cp, x, t_x, T, modified=modified))
    lo, hi = _mid_quantiles(posts, t, probs)
    return lo.astype(np.float64), hi.astype(np.float64)


@dataclass
class _ParetoPosterior:
    """Pareto/NBD given the history: P(alive), lambda | alive ~ Gamma(r+x, alpha+T), mu | alive ~ Gamma(s, beta+T)."""

    p_alive: np.ndarray
    shape: np.ndarray
    rate: np.ndarray
    s: float
    beta_T: np.ndarray

    @classmethod
    def build(cls, params: ParetoNbdParams, x, t_x, T) -> _ParetoPosterior:
        return cls(paretonbd.probability_alive(params, x, t_x, T), params.r + x, params.alpha + T, params.s,
                   params.beta + T)

    def subset(self, rows: np.ndarray) -> _ParetoPosterior:
        return _ParetoPosterior(self.p_alive[rows], self.shape[rows], self.rate[rows], self.s, self.beta_T[rows])

    def tail(self, t: float, m: int) -> np.ndarray:
        """P(N(t) >= m): the remaining lifetime tau is Lomax(s, beta+T); purchases Poisson(lambda min(tau, t))."""
        def nb_tail(u):
            return betainc(m, self.shape[:, None], u / (self.rate[:, None] + u))

        survive = (self.beta_T / (self.beta_T + t)) ** self.s
        u = 0.5 * t * (_GL_X + 1.0)  # nodes on (0, t)
        density = self.s / self.beta_T[:, None] * (self.beta_T[:, None] / (self.beta_T[:, None] + u)) ** (self.s + 1)
        died = (density * nb_tail(u[None, :])) @ (0.5 * t * _GL_W)
        full = betainc(m, self.shape, t / (self.rate + t))
        return self.p_alive * (survive * full + died)


def _mid_quantiles(posts: list, t: float, probabilities: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Mid-distribution quantiles of the equal-weight mixture of the posteriors' count distributions.

    Walks m = 0, 1, 2, ... with P(N <= m) from the posteriors' tails, dropping each customer
    once F_mid has passed the upper probability.
    """
    low_q, high_q = probabilities
    n = posts[0].p_alive.size
    lo = np.zeros(n, dtype=np.int64)
    hi = np.zeros(n, dtype=np.int64)
    lo_found = np.zeros(n, dtype=bool)
    active = np.arange(n)
    prev = np.zeros(n)  # P(N <= m - 1) of the active customers
    subs = posts
    m = 0
    while active.size:
        cdf = 1.0 - np.mean([p.tail(t, m + 1) for p in subs], axis=0)  # P(N <= m)
        mid = 0.5 * (prev + cdf)
        newly = (~lo_found[active]) & (mid >= low_q - 1e-12)
        lo[active[newly]] = m
        lo_found[active[newly]] = True
        above = mid > high_q + 1e-12
        done = active[above]
        hi[done] = np.maximum(m - 1, lo[done])
        lo[done[~lo_found[done]]] = m  # passed both in one step
        lo_found[done] = True
        hi[done] = np.maximum(hi[done], lo[done])
        keep = ~above
        active, prev = active[keep], cdf[keep]
        subs = [p.subset(keep) for p in subs]
        m += 1
    return lo, hi


def naive_prediction(x, T, t: float) -> np.ndarray:
    """The baseline every model must beat: each customer keeps their calibration-period repeat rate x / T."""
    x, T = (np.asarray(v, dtype=np.float64) for v in (x, T))
    return np.divide(x, T, out=np.zeros_like(x), where=T > 0) * t
