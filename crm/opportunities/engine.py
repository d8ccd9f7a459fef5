"""Cross-sell and up-sell math on arrays and scipy.sparse matrices (no Django), so it can be tested and benchmarked alone.

Cross-sell: association rules "holds A -> holds B" from the customer x product holding matrix.
  support(A->B)    = n(A and B) / N
  confidence(A->B) = n(A and B) / n(A)
  lift(A->B)       = confidence(A->B) / (n(B) / N)
A rule counts when support >= min_support, n(A and B) >= min_count and lift > min_lift.
For a customer, the evidence for product B is the best-confidence valid rule from a product
they hold to B (B not held). Score = confidence x expected value.

Expected value (both kinds), in the same units as CLV (margin, currency) and over the same
horizon: what the suggestion is expected to add to the customer's value,

  EV = min(margin gained, cap) x probability active x win rate of the kind,

where the margin gained is the margin of one sale (cross-sell: one unit of the product; up-sell:
the margin difference between the tiers times the quantity held), cap is the customer's CLV
(np.inf for a customer the CLV run has not scored) and the win rate is how often suggestions of
that kind were won before (a Beta prior while there is no history). So EV <= win rate x CLV.

Up-sell: the next tier of the same family for a holding whose utilisation was >= threshold in
each of the last n periods ("capacity"), or whose customer is in the top value quantile
while the tier is in the lower half of its family ("value").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

FACTOR_MIN, FACTOR_MAX = 0.25, 4.0
_CONF_SCALE = 1_000_000  # confidence kept to 1e-6 in the packed (confidence, antecedent) key


@dataclass
class Rules:
    """Pairwise rule statistics, products x products (row = antecedent A, column = consequent B)."""

    n_customers: int
    holders: np.ndarray  # n(A), per product
    co: np.ndarray  # n(A and B)
    support: np.ndarray
    confidence: np.ndarray
    lift: np.ndarray
    valid: np.ndarray  # bool: the rule passes the thresholds


def holding_matrix(customer_idx: np.ndarray, product_idx: np.ndarray, n_customers: int, n_products: int) -> sp.csr_matrix:
    """A 0/1 customers x products CSR matrix from (customer, product) index pairs (duplicates collapse)."""
    data = np.ones(len(customer_idx), dtype=np.float32)
    m = sp.csr_matrix((data, (customer_idx, product_idx)), shape=(n_customers, n_products))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def association_rules(
    held: sp.csr_matrix, *, min_support: float = 0.001, min_count: int = 5, min_lift: float = 1.0
) -> Rules:
    """Support, confidence and lift of every "holds A -> holds B" pair."""
    n = held.shape[0]
    holders = np.asarray(held.sum(axis=0)).ravel().astype(np.float64)
    co = np.asarray((held.T @ held).todense(), dtype=np.float64)
    np.fill_diagonal(co, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        support = co / max(n, 1)
        confidence = np.where(holders[:, None] > 0, co / holders[:, None], 0.0)
        base = holders / max(n, 1)
        lift = np.where(base[None, :] > 0, confidence / base[None, :], 0.0)
    valid = (support >= min_support) & (co >= min_count) & (lift > min_lift)
    return Rules(n, holders, co, support, confidence, lift, valid)


def capped_gain(gain: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """The margin a suggestion adds, never more than the customer's own CLV (cap; inf when unscored)."""
    return np.minimum(np.maximum(gain, 0.0), np.asarray(cap, dtype=np.float64))


def win_rate(won: int, decided: int, *, prior_a: float = 1.0, prior_b: float = 4.0) -> float:
    """Posterior mean of the win probability: Beta(prior_a + won, prior_b + decided - won)."""
    return (prior_a + won) / (prior_a + prior_b + max(decided, won))


def shrunk_rate(successes: int, trials: int, *, prior_rate: float, strength: float) -> float:
    """Posterior mean under a Beta prior with mean prior_rate and `strength` pseudo-trials.

    With no trials it is prior_rate; with many it tends to successes / trials. Used to shrink a
    rule's rate toward its kind's, so a new rule is neither punished nor favoured.
    """
    prior_rate = min(max(prior_rate, 0.0), 1.0)
    return (strength * prior_rate + successes) / (strength + max(trials, successes))


def value_factor(values: np.ndarray) -> np.ndarray:
    """Customer value relative to the mean positive value, clipped to [0.25, 4]."""
    values = np.asarray(values, dtype=np.float64)
    positive = values[values > 0]
    mean = positive.mean() if positive.size else 1.0
    return np.clip(values / mean, FACTOR_MIN, FACTOR_MAX)


@dataclass
class CrossSell:
    """Top-k cross-sell candidates, one row per (customer, product)."""

    customer: np.ndarray
    product: np.ndarray
    antecedent: np.ndarray
    confidence: np.ndarray
    lift: np.ndarray
    support: np.ndarray
    expected_value: np.ndarray
    score: np.ndarray


def cross_sell(
    held: sp.csr_matrix,
    rules: Rules,
    *,
    margin: np.ndarray,
    cap: np.ndarray,
    p_alive: np.ndarray,
    win_rate: float = 1.0,
    top_k: int = 3,
    chunk: int = 20_000,
) -> CrossSell:
    """For each customer, the top_k not-held products by confidence x expected value.

    The best rule per (customer, B) is found without a customers x products x products
    tensor: the valid confidences are packed with their antecedent index into one int64
    key, gathered for every held product and max-reduced per customer (np.maximum.reduceat).
    """
    n_c, n_p = held.shape
    conf = np.where(rules.valid, rules.confidence, 0.0)
    key = (np.round(conf * _CONF_SCALE).astype(np.int64) * n_p) + np.arange(n_p, dtype=np.int64)[:, None]
    key[conf <= 0] = -1
    out: dict[str, list[np.ndarray]] = {f: [] for f in CrossSell.__dataclass_fields__}
    margin = np.asarray(margin, dtype=np.float64)
    for start in range(0, n_c, chunk):
        block = held[start : start + chunk]
        rows = np.diff(block.indptr)
        has = np.flatnonzero(rows > 0)
        if has.size == 0:
            continue
        gathered = key[block.indices]  # (nnz, n_p)
        best = np.maximum.reduceat(gathered, block.indptr[has], axis=0)  # (len(has), n_p)
        dense_held = block[has].toarray() > 0
        best[dense_held] = -1
        best_conf = np.where(best >= 0, (best // n_p) / _CONF_SCALE, 0.0)
        cust = has + start
        ev = capped_gain(margin[None, :], cap[cust][:, None]) * p_alive[cust][:, None] * win_rate
        score = best_conf * ev
        score[best < 0] = -1.0
        k = min(top_k, n_p)
        top = np.argpartition(-score, k - 1, axis=1)[:, :k] if k < n_p else np.tile(np.arange(n_p), (len(has), 1))
        top_scores = np.take_along_axis(score, top, axis=1)
        keep = top_scores > 0
        r = np.repeat(np.arange(len(has)), k).reshape(-1, k)[keep]
        b = top[keep]
        a = best[r, b] % n_p
        out["customer"].append(cust[r])
        out["product"].append(b)
        out["antecedent"].append(a)
        out["confidence"].append(best_conf[r, b])
        out["lift"].append(rules.lift[a, b])
        out["support"].append(rules.support[a, b])
        out["expected_value"].append(ev[r, b])
        out["score"].append(score[r, b])
    return CrossSell(**{f: (np.concatenate(v) if v else np.array([])) for f, v in out.items()})


def popularity_baseline(held: sp.csr_matrix, *, top_k: int = 3) -> np.ndarray:
    """The naive recommender to beat: each customer's top_k most-held products they do not hold (n_c x k)."""
    popularity = np.asarray(held.sum(axis=0)).ravel()
    order = np.argsort(-popularity, kind="stable")
    n_c = held.shape[0]
    result = np.full((n_c, top_k), -1, dtype=np.int64)
    dense = held.toarray() > 0
    ranked = dense[:, order]
    for i in range(n_c):
        picks = order[~ranked[i]][:top_k]
        result[i, : len(picks)] = picks
    return result


@dataclass
class UpSell:
    holding: np.ndarray  # index into the holdings arrays given
    target: np.ndarray  # product index of the next tier
    reason: np.ndarray  # "capacity" or "value"
    utilisation: np.ndarray  # mean utilisation over the periods looked at (nan for "value")
    periods: np.ndarray
    expected_value: np.ndarray
    score: np.ndarray


def up_sell(
    *,
    holding_customer: np.ndarray,
    holding_product: np.ndarray,
    holding_quantity: np.ndarray,
    utilisation: np.ndarray,
    next_tier: np.ndarray,
    tier: np.ndarray,
    family_max_tier: np.ndarray,
    margin: np.ndarray,
    customer_value: np.ndarray,
    cap: np.ndarray,
    p_alive: np.ndarray,
    held: sp.csr_matrix,
    win_rate: float = 1.0,
    threshold: float = 0.9,
    periods: int = 3,
    high_value_quantile: float = 0.8,
) -> UpSell:
    """Up-sell candidates for holdings (one per holding at most).

    `utilisation` is holdings x periods (most recent last; nan = no usage recorded). A holding
    qualifies on capacity when all of its last `periods` values are present and >= threshold.
    `next_tier`, `tier`, `family_max_tier` are per product (next_tier -1 when top of family).
    """
    hp = holding_product
    target = next_tier[hp]
    util = np.asarray(utilisation, dtype=np.float64)[:, -periods:] if periods else np.empty((len(hp), 0))
    full = util.shape[1] == periods and periods > 0
    capacity = (np.all(util >= threshold, axis=1) & ~np.any(np.isnan(util), axis=1)) if full else np.zeros(len(hp), bool)
    values = np.asarray(customer_value, dtype=np.float64)
    cut = np.quantile(values, high_value_quantile) if values.size else np.inf
    high_value = (values[holding_customer] >= cut) & (values[holding_customer] > 0)
    low_tier = tier[hp] <= np.ceil(family_max_tier[hp] / 2.0)
    value_rule = high_value & low_tier & ~capacity
    has_target = target >= 0
    # Already holding the next tier: nothing to suggest.
    already = np.zeros(len(hp), bool)
    if has_target.any():
        idx = np.flatnonzero(has_target)
        already[idx] = np.asarray(held[holding_customer[idx], target[idx]]).ravel() > 0
    ok = has_target & ~already & (capacity | value_rule)
    idx = np.flatnonzero(ok)
    tgt = target[idx]
    qty = np.maximum(np.asarray(holding_quantity, dtype=np.float64)[idx], 1.0)
    gain = (margin[tgt] - margin[hp[idx]]) * qty
    gain = np.where(gain > 0, gain, margin[tgt] * qty)
    c = holding_customer[idx]
    ev = capped_gain(gain, cap[c]) * p_alive[c] * win_rate
    present = ~np.isnan(util[idx]) if util.shape[1] else np.zeros((len(idx), 0), bool)
    counts = present.sum(axis=1)
    sums = np.where(present, util[idx], 0.0).sum(axis=1) if util.shape[1] else np.zeros(len(idx))
    mean_util = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    strength = np.where(capacity[idx], np.minimum(1.0, np.nan_to_num(mean_util, nan=0.0)), 0.5)
    reason = np.where(capacity[idx], "capacity", "value")
    # One suggestion per (customer, target): keep the strongest.
    score = strength * ev
    order = np.lexsort((-score, tgt, c))
    first = np.ones(len(order), bool)
    first[1:] = (c[order][1:] != c[order][:-1]) | (tgt[order][1:] != tgt[order][:-1])
    sel = order[first]
    return UpSell(
        holding=idx[sel],
        target=tgt[sel],
        reason=reason[sel],
        utilisation=np.where(capacity[idx][sel], mean_util[sel], np.nan),
        periods=np.full(len(sel), periods),
        expected_value=ev[sel],
        score=score[sel],
    )
