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
_GATHER_CELLS = 16_000_000  # cells per block: dense scores, or 4 x cross-sell candidate pairs


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

    Works on the valid rules only (usually few): every held product A of a customer brings the
    consequents B of its valid rules; the best-confidence rule per (customer, B) is kept (ties: the
    higher antecedent index), held B are dropped, and the top_k by score are kept per customer.
    Customers are processed in blocks bounded in candidate pairs, so memory stays flat.
    """
    n_c, n_p = held.shape
    valid = sp.csr_matrix(np.where(rules.valid & (rules.confidence > 0), rules.confidence, 0.0))
    valid.eliminate_zeros()
    margin = np.asarray(margin, dtype=np.float64)
    cap = np.asarray(cap, dtype=np.float64)
    p_alive = np.asarray(p_alive, dtype=np.float64)
    out: dict[str, list[np.ndarray]] = {f: [] for f in CrossSell.__dataclass_fields__}
    fanout = np.diff(valid.indptr)  # consequents per antecedent
    row_of = np.repeat(np.arange(n_c), np.diff(held.indptr))
    per_row = np.bincount(row_of, weights=fanout[held.indices], minlength=n_c).astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(per_row)])
    budget = max(_GATHER_CELLS // 4, 1)
    start = 0
    while start < n_c:
        end = int(np.searchsorted(bounds, bounds[start] + budget, side="right")) - 1
        end = min(max(end, start + 1), start + chunk, n_c)
        block = held[start:end]
        first_row = start
        start = end
        if block.nnz == 0:
            continue
        rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
        a = block.indices.astype(np.int64)
        n_out = fanout[a]
        if n_out.sum() == 0:
            continue
        ca = np.repeat(rows, n_out)
        aa = np.repeat(a, n_out)
        offsets = np.arange(ca.size) - np.repeat(np.cumsum(n_out) - n_out, n_out)
        pos = valid.indptr[aa] + offsets
        bb = valid.indices[pos].astype(np.int64)
        conf = valid.data[pos]
        # Drop consequents the customer holds.
        held_keys = np.sort(rows.astype(np.int64) * n_p + a)
        keys = ca.astype(np.int64) * n_p + bb
        keep = ~np.isin(keys, held_keys)
        ca, aa, bb, conf, keys = ca[keep], aa[keep], bb[keep], conf[keep], keys[keep]
        if ca.size == 0:
            continue
        # Best rule per (customer, B): highest confidence, then highest antecedent.
        order = np.lexsort((-aa, -conf, keys))
        first = np.ones(order.size, bool)
        first[1:] = keys[order][1:] != keys[order][:-1]
        sel = order[first]
        ca, aa, bb, conf = ca[sel], aa[sel], bb[sel], conf[sel]
        cust = ca + first_row
        ev = capped_gain(margin[bb], cap[cust]) * p_alive[cust] * win_rate
        score = conf * ev
        ok = score > 0
        cust, aa, bb, conf, ev, score = cust[ok], aa[ok], bb[ok], conf[ok], ev[ok], score[ok]
        # Top k per customer by score.
        order = np.lexsort((bb, -score, cust))
        cust_sorted = cust[order]
        starts = np.searchsorted(cust_sorted, cust_sorted, side="left")
        rank = np.arange(order.size) - starts
        top = order[rank < top_k]
        out["customer"].append(cust[top])
        out["product"].append(bb[top])
        out["antecedent"].append(aa[top])
        out["confidence"].append(conf[top])
        out["lift"].append(rules.lift[aa[top], bb[top]])
        out["support"].append(rules.support[aa[top], bb[top]])
        out["expected_value"].append(ev[top])
        out["score"].append(score[top])
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


# ---------------------------------------------------------------------------------------------
# Recommenders on a customer x item "owns" matrix (items = products, families or categories).
#
# Every model scores, for each customer, the items they do not own; the offline evaluation
# (crm.opportunities.evaluation) compares them on a time split and the product uses the one
# that measures best (settings.OPPORTUNITY_PURCHASE_MODEL).
#
#   popularity    n(B): the most owned items first (the baseline to beat).
#   cooccurrence  sum over owned A of n(A and B): plain co-occurrence counts.
#   lift          max over owned A of lift(A -> B) among valid rules (rare items win: kept to show why
#                 it is never used alone).
#   association   max over owned A of confidence(A -> B) among valid rules.
#   item_item     mean over owned A of sim(A, B) = n(A and B) / (n(A)^alpha n(B)^(1-alpha) + shrinkage):
#                 alpha = 0.5 is the cosine; alpha -> 1 turns it into the mean confidence, which blends in
#                 popularity (n(B) no longer divides); the shrinkage damps pairs seen a few times only.
#   ease          a linear item-item model fitted in closed form (Steck 2019): B = I - P diag(1/diag(P)),
#                 P = (X'X + shrinkage I)^-1, zero diagonal; score = sum over owned A of B[A, B].
#   adoption      learnt on the history itself to rank what a customer will first buy next: at pseudo-split
#                 dates before the date (date - h, date - 2h; h = the window), a logistic regression fitted on
#                 (customer, item not owned) pairs, label "first bought within the next h days", on three
#                 features: log popularity, the EASE score and the item's recent adoption rate among customers
#                 who did not have it (first buyers in the h days before / non-owners). The fitted weights are
#                 applied at the date; relevance is the predicted probability. Needs purchase days; falls back
#                 to item_item when the history is too short or has no adoptions to learn from.
# ---------------------------------------------------------------------------------------------

MODELS = ("popularity", "cooccurrence", "lift", "association", "item_item", "ease", "adoption")
_BLOCK_CELLS = 4_000_000  # dense scores per chunk: rows x items


@dataclass
class Recommender:
    """A fitted model: items x items weights (None for popularity) and per-item popularity."""

    model: str
    popularity: np.ndarray  # n(B) / N
    weights: np.ndarray | None  # (n_items, n_items), row = owned item A, column = candidate B
    mean: bool  # score = mean of the owned rows (item_item) instead of the sum / max
    use_max: bool
    co: np.ndarray
    holders: np.ndarray
    n_customers: int
    bias: np.ndarray | None = None  # per-item term added to every customer's score (adoption)
    logistic: bool = False  # scores are log-odds: relevance = the predicted probability
    adoption: Adoption | None = None  # what the adoption model learnt, for its evidence

    def evidence(self, a: int, b: int) -> tuple[float, float, int, int]:
        """(confidence, lift, n(A), n(A and B)) of the rule A -> B, for the plain-words reason."""
        na = self.holders[a]
        conf = self.co[a, b] / na if na else 0.0
        base = self.holders[b] / max(self.n_customers, 1)
        return float(conf), float(conf / base) if base else 0.0, int(na), int(self.co[a, b])


def group_matrix(owned: sp.csr_matrix, group_of: np.ndarray, n_groups: int) -> sp.csr_matrix:
    """Customers x groups (family or category) 0/1: a customer owns a group when they own any item of it."""
    rows, cols = owned.nonzero()
    g = np.asarray(group_of, dtype=np.int64)[cols]
    keep = g >= 0
    return holding_matrix(rows[keep], g[keep], owned.shape[0], n_groups)


def fit_recommender(
    owned: sp.csr_matrix,
    model: str = "item_item",
    *,
    alpha: float = 0.5,
    shrinkage: float = 10.0,
    min_support: float = 0.0,
    min_count: int = 2,
    min_lift: float = 1.0,
    history: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    as_of: int | None = None,
    window: int = 30,
    ease_strength: float = 1.5,
) -> Recommender:
    """Fit one of MODELS on a 0/1 customers x items matrix.

    "adoption" also needs `history`, the (customer, item, first day) purchase arrays behind `owned`
    (days as integers, e.g. days since 1970-01-01), `as_of` (the day the suggestions are for) and
    `window` (days ahead); see fit_adoption.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    n = owned.shape[0]
    holders = np.asarray(owned.sum(axis=0)).ravel().astype(np.float64)
    co = np.asarray((owned.T @ owned).todense(), dtype=np.float64)
    np.fill_diagonal(co, 0.0)
    popularity = holders / max(n, 1)
    weights, mean, use_max = None, False, False
    if model == "cooccurrence":
        weights = co.astype(np.float32)
    elif model in ("lift", "association"):
        rules = association_rules(owned, min_support=min_support, min_count=min_count, min_lift=min_lift)
        w = rules.lift if model == "lift" else rules.confidence
        weights = np.where(rules.valid, w, 0.0).astype(np.float32)
        use_max = True
    elif model == "item_item":
        with np.errstate(divide="ignore", invalid="ignore"):
            denom = np.power(holders, alpha)[:, None] * np.power(holders, 1.0 - alpha)[None, :] + shrinkage
            sim = np.where(denom > 0, co / denom, 0.0)
        weights = sim.astype(np.float32)
        mean = True
    elif model == "ease":
        gram = co + np.diag(holders) + shrinkage * np.eye(len(holders))
        inv = np.linalg.inv(gram)
        weights = (-inv / np.diag(inv)[None, :]).astype(np.float32)
        np.fill_diagonal(weights, 0.0)
    elif model == "adoption":
        gram = co + np.diag(holders)
        fitted = fit_adoption(owned, history, as_of=as_of, window=window, ease_strength=ease_strength, gram=gram) if (
            history is not None and as_of is not None) else None
        if fitted is not None:
            return fitted
        # Not enough dated history to learn adoption from: the item-item model, under the adoption name.
        rec = fit_recommender(owned, "item_item", alpha=alpha, shrinkage=shrinkage)
        rec.model = "adoption"
        return rec
    return Recommender(model, popularity, weights, mean, use_max, co, holders, n)


ADOPTION_MIN_WINDOW = 7  # days: a shorter learning window has too few first purchases to learn from
ADOPTION_MIN_LABELS = 20  # first purchases in the pseudo-splits, at least
ADOPTION_FEATURES = ("log popularity", "EASE score", "recent adoption rate")
_ADOPTION_PAIRS = 1_000_000  # (customer, item) training pairs per pseudo-split, at most (customers sampled)


@dataclass
class Adoption:
    """What the adoption model learnt and the counts behind its evidence (the window just before the date)."""

    window: int  # days
    splits: int  # pseudo-splits learnt on
    coef: np.ndarray  # logistic weights on the standardised features, then the intercept
    labels: int  # first purchases learnt from
    moved: np.ndarray  # items x items: owned A and not B at the window's start, first bought B within it
    at_risk: np.ndarray  # items x items: owned A and not B at the window's start
    base_rate: np.ndarray  # per item: first bought within the window / customers without it at its start

    def evidence(self, a: int, b: int) -> tuple[int, int, float]:
        """(k, m, base rate): k of the m customers who had A and not B started buying B within the window."""
        return int(self.moved[a, b]), int(self.at_risk[a, b]), float(self.base_rate[b])


def _gram(owned: sp.csr_matrix) -> np.ndarray:
    """X'X of a 0/1 matrix, dense (its diagonal: customers per item)."""
    return np.asarray((owned.T @ owned).todense(), dtype=np.float64)


def _ease_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    inv = np.linalg.inv((gram + lam * np.eye(len(gram))).astype(np.float32))  # float32: twice as fast, enough
    w = -inv / np.diag(inv)[None, :]
    np.fill_diagonal(w, 0.0)
    return w.astype(np.float32)


def _adoption_items(owned: sp.csr_matrix, gram: np.ndarray, prev: sp.csr_matrix, ease_strength: float):
    """Per-item features at a date: (log popularity, recent adoption rate (log), EASE weights).

    EASE's regularisation is ease_strength x the mean number of customers per item, so one default
    fits a book of 300 customers and one of 100,000.

    The adoption rate: first buyers since `prev` among the customers who did not have the item then,
    shrunk toward the rate over all items with 10 pseudo-customers.
    """
    active = max(int((np.diff(owned.indptr) > 0).sum()), 1)
    holders = np.diag(gram).copy()
    was = np.asarray(prev.sum(axis=0)).ravel().astype(np.float64)
    adopters = np.maximum(holders - was, 0.0)
    lacking = np.maximum(active - was, 0.0)
    overall = (adopters.sum() + 1.0) / (lacking.sum() + 10.0)
    rate = (adopters + 10.0 * overall) / (lacking + 10.0)
    lam = ease_strength * max(float(holders.mean()), 1.0)
    return np.log((holders + 1.0) / (active + 1.0)), np.log(rate), _ease_weights(gram, lam)


def fit_adoption(
    owned: sp.csr_matrix,
    history: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    as_of: int,
    window: int = 30,
    ease_strength: float = 1.5,
    splits: int = 2,
    l2: float = 1.0,
    seed: int = 0,
    gram: np.ndarray | None = None,
) -> Recommender | None:
    """The adoption model (see MODELS), or None when the history cannot teach it.

    history: (customer, item, day) of purchases (the first day per pair is enough), all before as_of;
    `owned` is what customers own at as_of (those purchases and anything else, such as holdings).
    The learning window is `window` days, shortened to a third of the history when that is shorter
    (at least ADOPTION_MIN_WINDOW); pseudo-splits as_of - h, as_of - 2h, ... while the window before
    each (for its adoption rate) is inside the history. gram: owned'owned when the caller has it.
    """
    customer, item, day = (np.asarray(x, dtype=np.int64) for x in history)
    n_c, n_i = owned.shape
    if day.size == 0 or n_i < 2:
        return None
    keep = day < as_of
    customer, item, day = customer[keep], item[keep], day[keep]
    if day.size == 0:
        return None
    h = min(int(window), (as_of - int(day.min())) // (splits + 1))
    if h < ADOPTION_MIN_WINDOW:
        return None

    at: dict[int, sp.csr_matrix] = {}
    grams: dict[int, np.ndarray] = {}

    def owned_at(t: int) -> sp.csr_matrix:
        if t not in at:
            m = day < t
            at[t] = holding_matrix(customer[m], item[m], n_c, n_i)
        return at[t]

    def gram_at(t: int) -> np.ndarray:
        if t not in grams:
            grams[t] = _gram(owned_at(t))
        return grams[t]

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for j in range(1, splits + 1):
        t = as_of - j * h
        prev, now, after = owned_at(t - h), owned_at(t), owned_at(t + h)
        logpop, lograte, w = _adoption_items(now, gram_at(t), prev, ease_strength)
        rows = np.flatnonzero(np.diff(now.indptr) > 0)
        cap = max(_ADOPTION_PAIRS // n_i, 1)
        if rows.size > cap:
            rows = np.sort(rng.choice(rows, cap, replace=False))
        if rows.size == 0:
            continue
        x_now = now[rows]
        held = x_now.toarray() > 0
        new = (after[rows].toarray() > 0) & ~held
        ease = np.asarray(x_now @ w)
        f = np.stack([np.broadcast_to(logpop, held.shape)[~held], ease[~held],
                      np.broadcast_to(lograte, held.shape)[~held]], axis=1)
        xs.append(f)
        ys.append(new[~held].astype(np.float64))
    if not xs:
        return None
    x, y = np.vstack(xs), np.concatenate(ys)
    labels = int(y.sum())
    if labels < ADOPTION_MIN_LABELS or labels == y.size:
        return None
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    coef = _logistic((x - mu) / sd, y, l2=l2)
    if not np.all(np.isfinite(coef)):
        return None
    # Apply at as_of: score = c_pop z(logpop) + c_ease z(ease) + c_rate z(lograte) + intercept.
    gram = _gram(owned) if gram is None else gram
    logpop, lograte, w = _adoption_items(owned, gram, owned_at(as_of - h), ease_strength)
    c = coef[:3] / sd
    bias = (c[0] * logpop + c[2] * lograte + coef[3] - float(c @ mu)).astype(np.float32)
    n = owned.shape[0]
    holders = np.diag(gram).copy()
    co = gram.copy()
    np.fill_diagonal(co, 0.0)
    before, bought = owned_at(as_of - h), owned_at(as_of)
    adopted = (bought - bought.multiply(before)).tocsr()
    adopted.eliminate_zeros()
    moved, at_risk, base = adoption_counts(before, adopted, gram=gram_at(as_of - h))
    rec = Recommender("adoption", holders / max(n, 1), (w * np.float32(c[1])).astype(np.float32), False, False,
                      co, holders, n, bias=bias, logistic=True)
    rec.adoption = Adoption(h, len(xs), coef, labels, moved, at_risk, base)
    return rec


def _logistic(z: np.ndarray, y: np.ndarray, *, l2: float = 1.0, iters: int = 50) -> np.ndarray:
    """L2-penalised logistic regression by Newton's method with step halving (the penalised loss never
    rises, so rare labels or outlying features cannot make it diverge): weights, then the intercept."""
    a = np.hstack([z, np.ones((len(z), 1))])
    w = np.zeros(a.shape[1])
    r = min(max(y.mean(), 1e-6), 1 - 1e-6)
    w[-1] = np.log(r / (1 - r))
    pen = np.full(a.shape[1], l2)
    pen[-1] = 0.0

    def loss(v: np.ndarray) -> float:
        s = a @ v
        return float(np.sum(np.logaddexp(0.0, s) - y * s) + 0.5 * np.sum(pen * v * v))

    current = loss(w)
    for _ in range(iters):
        p = 0.5 * (1.0 + np.tanh(0.5 * (a @ w)))
        g = a.T @ (p - y) + pen * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(pen) + 1e-9 * np.eye(a.shape[1])
        step = np.linalg.solve(hess, g)
        t = 1.0
        while t > 1e-6:
            trial = w - t * step
            value = loss(trial)
            if value <= current:
                break
            t *= 0.5
        else:
            break
        done = current - value < 1e-9 * max(abs(current), 1.0)
        w, current = trial, value
        if done:
            break
    return w


def adoption_counts(
    before: sp.csr_matrix, adopted: sp.csr_matrix, *, gram: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(moved, at_risk, base rate) of a window: items x items counts of customers who owned A and not B at its
    start and first bought B within it (moved), of customers who owned A and not B at its start (at_risk),
    and per item the share of customers without it at the start who first bought it within the window.

    Customers who owned nothing at the start of the window are left out. gram: before'before, if known.
    """
    active = np.diff(before.indptr) > 0
    b = before[active]
    a = adopted[active]
    n = b.shape[0]
    owners = np.asarray(b.sum(axis=0)).ravel().astype(np.float64)
    adopters = np.asarray(a.sum(axis=0)).ravel().astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        base = np.where(n - owners > 0, adopters / (n - owners), 0.0)
    co = _gram(b) if gram is None else gram  # customers who own nothing add nothing to it
    at_risk = np.maximum(owners[:, None] - co, 0.0)
    moved = np.asarray((b.T @ a).todense(), dtype=np.float64)
    np.fill_diagonal(moved, 0.0)
    np.fill_diagonal(at_risk, 0.0)
    return moved.astype(np.int32), at_risk.astype(np.int32), base


def score_block(rec: Recommender, block: sp.csr_matrix) -> np.ndarray:
    """Dense relevance (rows x items) for a block of customers; owned items are not masked here."""
    n_rows, n_items = block.shape
    if rec.weights is None:
        return np.tile(rec.popularity.astype(np.float32), (n_rows, 1))
    if rec.use_max:
        out = np.zeros((n_rows, n_items), dtype=np.float32)
        rows = np.diff(block.indptr)
        has = np.flatnonzero(rows > 0)
        if has.size:
            out[has] = np.maximum.reduceat(rec.weights[block.indices], block.indptr[has], axis=0)
        return out
    scores = np.asarray(block @ rec.weights, dtype=np.float32)
    if rec.bias is not None:
        scores += rec.bias[None, :]
    if rec.mean:
        size = np.maximum(np.diff(block.indptr), 1).astype(np.float32)
        scores /= size[:, None]
    return scores


def recommend(rec: Recommender, owned: sp.csr_matrix, *, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items per customer that they do not own: (items, relevance), both customers x k, item -1 when none.

    Ties (and the zero scores of customers the model knows nothing about) break by popularity,
    then by item index, so every model fills its k slots the same way popularity would.
    """
    n_c, n_items = owned.shape
    k = max(min(k, n_items), 0)
    items = np.full((n_c, k), -1, dtype=np.int64)
    rel = np.zeros((n_c, k), dtype=np.float64)
    if k == 0 or n_c == 0:
        return items, rel
    # A tie-breaker far below any real score difference: popularity rank in [0, 1e-6).
    rank = np.empty(n_items)
    rank[np.argsort(-rec.popularity, kind="stable")] = np.arange(n_items)
    tie = ((n_items - rank) / (n_items + 1) * 1e-6).astype(np.float32)
    chunk = max(1, _BLOCK_CELLS // max(n_items, 1))
    for start in range(0, n_c, chunk):
        block = owned[start : start + chunk]
        s = score_block(rec, block)
        s = s.astype(np.float32) + tie[None, :]
        s[block.toarray() > 0] = -np.inf
        top = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < n_items else np.tile(np.arange(n_items), (len(s), 1))
        top_s = np.take_along_axis(s, top, axis=1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        top_s = np.take_along_axis(top_s, order, axis=1)
        valid = np.isfinite(top_s)
        items[start : start + len(s)] = np.where(valid, top, -1)
        if rec.logistic:
            with np.errstate(over="ignore"):
                prob = 1.0 / (1.0 + np.exp(-np.where(valid, top_s, 0.0).astype(np.float64)))
            rel[start : start + len(s)] = np.where(valid, prob, 0.0)
        else:
            rel[start : start + len(s)] = np.where(valid, np.maximum(top_s, 0.0), 0.0)
    return items, rel


def strongest_antecedent(rec: Recommender, owned: sp.csr_matrix, customer: np.ndarray, item: np.ndarray) -> np.ndarray:
    """For each (customer, item) pair, the owned item that supports it most (-1 when the customer owns nothing).

    "Most" is the model's own weight (similarity, confidence, co-count); for popularity, lift and adoption
    (whose weights are a fitted blend), the owned item with the best confidence towards it, so every
    suggestion can say "customers who buy A ...".
    """
    w = rec.weights
    if w is None or rec.model in ("lift", "adoption"):
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(rec.holders[:, None] > 0, rec.co / rec.holders[:, None], 0.0)
    customer = np.asarray(customer, dtype=np.int64)
    item = np.asarray(item, dtype=np.int64)
    starts, ends = owned.indptr[customer], owned.indptr[customer + 1]
    sizes = ends - starts
    out = np.full(len(customer), -1, dtype=np.int64)
    has = np.flatnonzero(sizes > 0)
    if has.size == 0:
        return out
    rep = np.repeat(has, sizes[has])
    offsets = np.arange(rep.size) - np.repeat(np.cumsum(sizes[has]) - sizes[has], sizes[has])
    cand = owned.indices[starts[rep] + offsets]
    vals = np.asarray(w[cand, item[rep]], dtype=np.float64)
    bounds = np.concatenate([[0], np.cumsum(sizes[has])[:-1]])
    best = np.maximum.reduceat(vals, bounds)
    # first position reaching the max within each segment
    is_best = vals >= np.repeat(best, sizes[has])
    pos = np.flatnonzero(is_best)
    seg = np.searchsorted(bounds, pos, side="right") - 1
    first = np.ones(pos.size, bool)
    first[1:] = seg[1:] != seg[:-1]
    out[has[seg[first]]] = cand[pos[first]]
    return out
