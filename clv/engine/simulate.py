"""Vectorised simulators of BG/NBD (and MBG/NBD) purchase histories and Gamma-Gamma spend, for tests, benches and seed data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SimulatedSummaries:
    """Per-customer sufficient statistics plus the latent truth (for checks)."""

    frequency: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    lam: np.ndarray
    p: np.ndarray
    alive: np.ndarray


def _latent(n: int, r: float, alpha: float, a: float, b: float, rng: np.random.Generator):
    lam = rng.gamma(r, 1.0 / alpha, size=n)  # alpha is a rate: E[lambda] = r / alpha
    p = rng.beta(a, b, size=n)
    return lam, p


def _lifetime_purchases(p: np.ndarray, modified: bool, rng: np.random.Generator) -> np.ndarray:
    # BG/NBD: dropout is tried after each repeat purchase, so the customer makes
    # J ~ Geometric(p) >= 1 repeat purchases before dying (if time allowed).
    # MBG/NBD also tries at the first purchase: J - 1 >= 0.
    j = rng.geometric(np.clip(p, 1e-12, 1.0)).astype(np.int64)
    return j - 1 if modified else j


def simulate_summaries(
    n: int,
    r: float,
    alpha: float,
    a: float,
    b: float,
    T: np.ndarray | float,
    *,
    rng: np.random.Generator,
    modified: bool = False,
) -> SimulatedSummaries:
    """Draw (x, t_x, T) exactly, without generating individual purchase times.

    Repeat purchases while alive are a Poisson process; x = min(N(T), J). Given N(T) = N,
    event times are sorted uniforms on (0, T], so the x-th one is T * Beta(x, N - x + 1).
    """
    T = np.broadcast_to(np.asarray(T, dtype=np.float64), (n,)).copy()
    lam, p = _latent(n, r, alpha, a, b, rng)
    n_events = rng.poisson(lam * T)
    j = _lifetime_purchases(p, modified, rng)
    x = np.minimum(n_events, j)
    t_x = np.zeros(n)
    pos = x > 0
    t_x[pos] = T[pos] * rng.beta(x[pos], n_events[pos] - x[pos] + 1)
    alive = n_events < j
    return SimulatedSummaries(x.astype(np.float64), t_x, T, lam, p, alive)


@dataclass
class SimulatedPurchases:
    """Individual purchase times (first purchase at 0) in the model's time unit."""

    customer: np.ndarray  # int index 0..n-1, sorted by customer then time
    time: np.ndarray  # time since the customer's first purchase
    lam: np.ndarray
    p: np.ndarray


def simulate_purchase_times(
    n: int,
    r: float,
    alpha: float,
    a: float,
    b: float,
    T: np.ndarray | float,
    *,
    rng: np.random.Generator,
    modified: bool = False,
) -> SimulatedPurchases:
    """Every purchase of n customers observed for T units each (first purchase at time 0 included)."""
    T = np.broadcast_to(np.asarray(T, dtype=np.float64), (n,))
    lam, p = _latent(n, r, alpha, a, b, rng)
    n_events = rng.poisson(lam * T)
    j = _lifetime_purchases(p, modified, rng)
    kept = np.minimum(n_events, j)
    cust = np.repeat(np.arange(n), n_events)
    times = rng.uniform(0.0, 1.0, size=cust.size) * T[cust]
    order = np.lexsort((times, cust))
    cust, times = cust[order], times[order]
    # Rank of each event within its customer; keep the first `kept` (the rest happen after death).
    starts = np.repeat(np.cumsum(n_events) - n_events, n_events)
    rank = np.arange(cust.size) - starts
    keep = rank < kept[cust]
    cust, times = cust[keep], times[keep]
    first = np.arange(n)
    all_cust = np.concatenate([first, cust])
    all_time = np.concatenate([np.zeros(n), times])
    order = np.lexsort((all_time, all_cust))
    return SimulatedPurchases(all_cust[order], all_time[order], lam, p)


def simulate_regular_purchase_times(
    n: int,
    k: int,
    r: float,
    alpha: float,
    a: float,
    b: float,
    T: np.ndarray | float,
    *,
    rng: np.random.Generator,
    modified: bool = True,
) -> SimulatedPurchases:
    """MBG/CNBD-k histories: Erlang(k, lambda) gaps, lambda ~ Gamma(r, alpha), dropout p ~ Beta(a, b)
    tried at the first purchase (modified) and after every repeat purchase; first purchase at 0."""
    T = np.broadcast_to(np.asarray(T, dtype=np.float64), (n,))
    lam, p = _latent(n, r, alpha, a, b, rng)
    custs = [np.arange(n)]
    times = [np.zeros(n)]
    now = np.zeros(n)
    alive = rng.random(n) >= p if modified else np.ones(n, dtype=bool)
    active = np.flatnonzero(alive)
    while active.size:
        now[active] += rng.gamma(k, 1.0 / lam[active])
        active = active[now[active] <= T[active]]
        custs.append(active)
        times.append(now[active].copy())
        active = active[rng.random(active.size) >= p[active]]
    cust = np.concatenate(custs)
    time = np.concatenate(times)
    order = np.lexsort((time, cust))
    return SimulatedPurchases(cust[order], time[order], lam, p)


def simulate_mean_spend(frequency: np.ndarray, p: float, q: float, v: float, *, rng: np.random.Generator) -> np.ndarray:
    """Average value of x repeat purchases under Gamma-Gamma (0 where x = 0).

    nu ~ Gamma(q, rate v); each purchase z ~ Gamma(p, rate nu); the sum of x of them is
    Gamma(p x, rate nu), so the mean is drawn in one call.
    """
    x = np.asarray(frequency, dtype=np.float64)
    nu = rng.gamma(q, 1.0 / v, size=x.size)
    out = np.zeros(x.size)
    pos = x > 0
    out[pos] = rng.gamma(p * x[pos], 1.0 / nu[pos]) / x[pos]
    return out


def simulate_amounts(
    customer: np.ndarray, n_customers: int, p: float, q: float, v: float, *, rng: np.random.Generator
) -> np.ndarray:
    """One Gamma-Gamma amount per purchase row (customer = index per row)."""
    nu = rng.gamma(q, 1.0 / v, size=n_customers)
    return rng.gamma(p, 1.0 / nu[customer])


@dataclass
class SimulatedTransactions:
    """Transaction rows as the CRM stores them: customer id, purchase date, amount."""

    customer_ids: np.ndarray  # int64
    dates: np.ndarray  # datetime64[D]
    amounts: np.ndarray
    first_purchase: np.ndarray  # datetime64[D] per customer


def simulate_transactions(
    n: int,
    purchase_params: tuple[float, float, float, float],
    spend_params: tuple[float, float, float],
    *,
    start: str | np.datetime64,
    end: str | np.datetime64,
    rng: np.random.Generator,
    modified: bool = False,
    regularity: int = 1,
) -> SimulatedTransactions:
    """Customers acquired uniformly over [start, end], observed to end; params in days (alpha per day).

    regularity k > 1 draws Erlang-k inter-purchase times (simulate_regular_purchase_times).

    Purchase times are rounded to calendar days, so two purchases on the same day
    become one occasion in the summary (as they would in the CRM); with high purchase
    rates this thins the process slightly relative to the continuous-time model.
    """
    start_d = np.datetime64(start, "D")
    end_d = np.datetime64(end, "D")
    span = int((end_d - start_d).astype(np.int64))
    first_offset = rng.integers(0, span + 1, size=n)
    first = start_d + first_offset.astype("timedelta64[D]")
    T = (span - first_offset).astype(np.float64)  # whole days, as the summary measures T
    r, alpha, a, b = purchase_params
    if regularity > 1:  # Erlang-k gaps (MBG/CNBD-k when modified); alpha is then per phase
        sim = simulate_regular_purchase_times(n, regularity, r, alpha, a, b, T, rng=rng, modified=modified)
    else:
        sim = simulate_purchase_times(n, r, alpha, a, b, T, rng=rng, modified=modified)
    # Round (not floor) so day-level recency is unbiased for the continuous-time recency.
    day = np.rint(sim.time).astype(np.int64)
    dates = first[sim.customer] + day.astype("timedelta64[D]")
    amounts = simulate_amounts(sim.customer, n, *spend_params, rng=rng)
    return SimulatedTransactions(sim.customer.astype(np.int64), dates, amounts, first)
