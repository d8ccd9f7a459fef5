"""Shared maximum-likelihood plumbing: data compression, L-BFGS-B in log space, diagnostics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import minimize

# Bounds on log-parameters: wide enough for any plausible population, narrow enough
# that exp() never overflows and gammaln/digamma stay finite.
LOG_PARAM_BOUND = 15.0


@dataclass(frozen=True)
class CompressedTriples:
    """Unique (x, t_x, T) rows with a weight each; x-only terms are evaluated per unique x."""

    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    weight: np.ndarray
    x_levels: np.ndarray  # unique values of x
    x_index: np.ndarray  # row -> position in x_levels
    x_level_weight: np.ndarray  # total weight per x level
    inverse: np.ndarray | None  # original row -> unique row (None if not requested)

    @property
    def n_customers(self) -> float:
        return float(self.weight.sum())

    @property
    def n_unique(self) -> int:
        return int(self.x.size)


def compress_triples(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, *, return_inverse: bool = False
) -> CompressedTriples:
    """Collapse identical (x, t_x, T) rows; summaries built from dates repeat a lot."""
    x = np.asarray(x, dtype=np.float64).ravel()
    t_x = np.asarray(t_x, dtype=np.float64).ravel()
    T = np.asarray(T, dtype=np.float64).ravel()
    if not (x.shape == t_x.shape == T.shape):
        raise ValueError("x, t_x and T must have the same length")
    n = x.size
    if n == 0:
        raise ValueError("no customers to compress")
    inverse = None
    if _packable(x, t_x, T):
        # Integer-valued inputs (day counts) fit in one int64 key: one sort instead of
        # a three-key lexsort, several times faster on a million rows.
        key = (x.astype(np.int64) << 42) | (t_x.astype(np.int64) << 21) | T.astype(np.int64)
        if return_inverse:
            uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        else:
            uniq, counts = np.unique(key, return_counts=True)
        ux = (uniq >> 42).astype(np.float64)
        utx = ((uniq >> 21) & ((1 << 21) - 1)).astype(np.float64)
        uT = (uniq & ((1 << 21) - 1)).astype(np.float64)
    else:
        order = np.lexsort((T, t_x, x))
        xs, txs, Ts = x[order], t_x[order], T[order]
        new = np.empty(n, dtype=bool)
        new[0] = True
        new[1:] = (xs[1:] != xs[:-1]) | (txs[1:] != txs[:-1]) | (Ts[1:] != Ts[:-1])
        starts = np.flatnonzero(new)
        counts = np.diff(np.append(starts, n))
        ux, utx, uT = xs[starts], txs[starts], Ts[starts]
        if return_inverse:
            group = np.cumsum(new) - 1
            inverse = np.empty(n, dtype=np.int64)
            inverse[order] = group
    x_levels, x_index = np.unique(ux, return_inverse=True)
    weight = counts.astype(np.float64)
    x_level_weight = np.bincount(x_index, weights=weight, minlength=x_levels.size)
    return CompressedTriples(ux, utx, uT, weight, x_levels, x_index, x_level_weight, inverse)


def _packable(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> bool:
    limit = float((1 << 21) - 1)
    for arr in (x, t_x, T):
        if arr.min() < 0 or arr.max() > limit or not np.array_equal(arr, np.floor(arr)):
            return False
    return True


@dataclass
class FitDiagnostics:
    """JSON-serialisable record of one maximum-likelihood fit."""

    model: str
    log_likelihood: float
    converged: bool
    iterations: int
    function_evaluations: int
    message: str
    n_customers: int
    n_unique: int
    seconds: float
    aic: float
    standard_errors: dict[str, float] = field(default_factory=dict)
    # Asymptotic covariance of the log-parameters (inverse Hessian of the negative
    # log-likelihood), in PARAM_NAMES order: what per-customer intervals draw parameters from.
    covariance_log: list[list[float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def minimise_log_space(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]],
    start: np.ndarray,
    *,
    max_iter: int = 1000,
) -> tuple[np.ndarray, object]:
    """L-BFGS-B on log-parameters with an analytic gradient; tolerances tight enough for 1e-4 agreement."""
    bounds = [(-LOG_PARAM_BOUND, LOG_PARAM_BOUND)] * len(start)
    result = minimize(
        objective,
        np.asarray(start, dtype=np.float64),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": max_iter, "ftol": 1e-14, "gtol": 1e-9, "maxcor": 20},
    )
    # With ftol this tight L-BFGS-B often stops with "ABNORMAL" (line search cannot
    # improve at machine precision) when it is in fact at the optimum: judge convergence
    # by the projected gradient instead of the exit status.
    _, grad = objective(result.x)
    lo, hi = bounds[0]
    free = (result.x > lo + 1e-8) & (result.x < hi - 1e-8)
    result.success = bool(result.success or np.max(np.abs(np.where(free, grad, 0.0))) < 1e-6)
    return np.asarray(result.x), result


def log_space_covariance(
    total_grad: Callable[[np.ndarray], np.ndarray], log_params: np.ndarray, step: float = 1e-4
) -> np.ndarray | None:
    """Inverse of the central-difference Hessian of the total negative log-likelihood in log-parameters.

    None where the Hessian is singular or not positive definite (no usable asymptotic normal).
    """
    k = log_params.size
    hess = np.empty((k, k))
    for j in range(k):
        e = np.zeros(k)
        e[j] = step
        hess[:, j] = (total_grad(log_params + e) - total_grad(log_params - e)) / (2 * step)
    hess = 0.5 * (hess + hess.T)
    try:
        cov_log = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(cov_log)):
        return None
    return 0.5 * (cov_log + cov_log.T)


def log_space_standard_errors(
    total_grad: Callable[[np.ndarray], np.ndarray], log_params: np.ndarray, step: float = 1e-4
) -> np.ndarray:
    """Asymptotic SEs of the natural parameters from a central-difference Hessian of the analytic gradient.

    At the optimum the gradient is ~0, so Cov(theta) = D H^-1 D with D = diag(theta)
    (delta method from log-parameters). Returns NaN where the Hessian is singular.
    """
    ses, _ = log_space_standard_errors_and_covariance(total_grad, log_params, step)
    return ses


def log_space_standard_errors_and_covariance(
    total_grad: Callable[[np.ndarray], np.ndarray], log_params: np.ndarray, step: float = 1e-4
) -> tuple[np.ndarray, list[list[float]]]:
    """(SEs of the natural parameters, covariance of the log-parameters as nested lists; [] when singular)."""
    k = log_params.size
    cov_log = log_space_covariance(total_grad, log_params, step)
    if cov_log is None:
        return np.full(k, np.nan), []
    theta = np.exp(log_params)
    var = np.diag(cov_log) * theta**2
    return np.sqrt(np.where(var > 0, var, np.nan)), cov_log.tolist()


class Timer:
    """Wall-clock seconds for diagnostics."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
