"""Gamma-Gamma spend model (Fader, Hardie & Lee 2005; Fader & Hardie note on Gamma-Gamma): fit and conditional expected value.

Fitted on customers with at least one repeat purchase; monetary = mean value of the
repeat occasions. Parameters p, q, v (v is a money-scale rate, in the currency of the
amounts); p and q are unit-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import digamma, gammaln

from .fitting import FitDiagnostics, Timer, log_space_standard_errors, minimise_log_space

PARAM_NAMES = ("p", "q", "v")


@dataclass(frozen=True)
class GammaGammaParams:
    """Per-purchase spend z ~ Gamma(p, nu), customer rate nu ~ Gamma(q, v)."""

    p: float
    q: float
    v: float

    def to_dict(self) -> dict[str, float]:
        return {k: float(val) for k, val in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> GammaGammaParams:
        return cls(**{k: float(data[k]) for k in PARAM_NAMES})

    @property
    def population_mean(self) -> float:
        """E[z] = p v / (q - 1); infinite when q <= 1 (heavy tail)."""
        return self.p * self.v / (self.q - 1.0) if self.q > 1 else float("inf")


@dataclass
class GammaGammaFit:
    params: GammaGammaParams
    diagnostics: FitDiagnostics


def log_likelihood(params: GammaGammaParams, frequency: np.ndarray, monetary: np.ndarray) -> np.ndarray:
    """ln f(m | x) = lnG(px+q) - lnG(px) - lnG(q) + q ln v + (px-1) ln m + px ln x - (px+q) ln(v + m x)."""
    x = np.asarray(frequency, dtype=np.float64)
    m = np.asarray(monetary, dtype=np.float64)
    p, q, v = params.p, params.q, params.v
    return (
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(v)
        + (p * x - 1.0) * np.log(m)
        + p * x * np.log(x)
        - (p * x + q) * np.log(v + m * x)
    )


def _negll_and_grad(
    log_params: np.ndarray,
    x_levels: np.ndarray,
    x_index: np.ndarray,
    x_w: np.ndarray,
    x: np.ndarray,
    log_m: np.ndarray,
    m: np.ndarray,
) -> tuple[float, np.ndarray]:
    """Negative total log-likelihood and gradient w.r.t. (ln p, ln q, ln v).

    dl/dp = x [psi(px+q) - psi(px) + ln m + ln x - ln(v + m x)]
    dl/dq = psi(px+q) - psi(q) + ln v - ln(v + m x)
    dl/dv = q / v - (px + q) / (v + m x)
    """
    p, q, v = np.exp(log_params)
    n = float(x.size)
    px_l = p * x_levels
    ll = x_w @ (gammaln(px_l + q) - gammaln(px_l)) - n * gammaln(q) + n * q * np.log(v)
    dg = digamma(px_l + q)
    g_p = x_w @ (x_levels * (dg - digamma(px_l) + np.log(x_levels)))
    g_q = x_w @ dg - n * digamma(q) + n * np.log(v)
    log_vmx = np.log(v + m * x)
    px = p * x
    ll += (px - 1.0) @ log_m + px @ np.log(x) - (px + q) @ log_vmx
    g_p += x @ (log_m - log_vmx)
    g_q -= log_vmx.sum()
    g_v = n * q / v - ((px + q) / (v + m * x)).sum()
    grad = np.array([g_p * p, g_q * q, g_v * v])
    return -float(ll), -grad


def fit(frequency: np.ndarray, monetary: np.ndarray, *, max_iter: int = 1000) -> GammaGammaFit:
    """ML fit on customers with frequency > 0 and monetary > 0 (others carry no spend information)."""
    with Timer() as timer:
        x_all = np.asarray(frequency, dtype=np.float64)
        m_all = np.asarray(monetary, dtype=np.float64)
        keep = (x_all > 0) & (m_all > 0) & np.isfinite(m_all)
        if keep.sum() < 3:
            raise ValueError("Gamma-Gamma needs at least 3 customers with repeat purchases")
        x, m = x_all[keep], m_all[keep]
        # Rescale money so v is O(1) during optimisation; the likelihood shifts by -ln(scale)
        # per customer, so the optimum maps back by v = v' * scale.
        scale = float(np.mean(m))
        ms = m / scale
        log_m = np.log(ms)
        x_levels, x_index = np.unique(x, return_inverse=True)
        x_w = np.bincount(x_index, minlength=x_levels.size).astype(np.float64)
        n = float(x.size)

        def total(lp: np.ndarray) -> tuple[float, np.ndarray]:
            return _negll_and_grad(lp, x_levels, x_index, x_w, x, log_m, ms)

        def objective(lp: np.ndarray) -> tuple[float, np.ndarray]:
            f, g = total(lp)
            return f / n, g / n

        # Method-of-moments-ish start: p ~ 1, q ~ 2 (finite mean), v = mean * (q - 1) / p.
        start = np.log([1.0, 2.0, 1.0])
        log_params, result = minimise_log_space(objective, start, max_iter=max_iter)
        ll = -float(result.fun) * n - n * np.log(scale)
        p, q, v_s = np.exp(log_params)
        params = GammaGammaParams(float(p), float(q), float(v_s * scale))
        se = log_space_standard_errors(lambda lp: total(lp)[1], log_params)
        se[2] *= scale
    diag = FitDiagnostics(
        model="gammagamma",
        log_likelihood=float(ll),
        converged=bool(result.success),
        iterations=int(result.nit),
        function_evaluations=int(result.nfev),
        message=str(result.message),
        n_customers=int(x.size),
        n_unique=int(x.size),  # continuous spend: no compression
        seconds=timer.seconds,
        aic=float(2 * 3 - 2 * ll),
        standard_errors={k: float(s) for k, s in zip(PARAM_NAMES, se, strict=True)},
    )
    return GammaGammaFit(params, diag)


def conditional_expected_value(params: GammaGammaParams, frequency: np.ndarray, monetary: np.ndarray) -> np.ndarray:
    """E[value per purchase | x, m_x] = (q-1)/(px+q-1) * pv/(q-1) + px/(px+q-1) * m_x = p (v + x m_x) / (px + q - 1).

    A credibility-weighted blend of the population mean and the customer's own mean;
    x = 0 gives the population mean. Requires q > 1 (finite population mean); otherwise
    NaN is avoided by falling back to the customer's own mean (or 0 for x = 0).
    """
    x = np.asarray(frequency, dtype=np.float64)
    m = np.where(x > 0, np.asarray(monetary, dtype=np.float64), 0.0)
    p, q, v = params.p, params.q, params.v
    denom = p * x + q - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        value = p * (v + x * m) / denom
    bad = ~(np.isfinite(value) & (denom > 0))
    return np.where(bad, m, value)
