"""Implausible spend: customers whose value per purchase occasion lies absurdly far above everyone's.

One mistyped purchase (9,999,999,999.99 for 99.99) would otherwise dominate the Gamma-Gamma
fit, and with it every customer's expected spend, and make its customer's CLV (and its
owner's portfolio) absurd. The rule is robust (it does not move with the outlier itself):
on the log of each buying customer's average value per occasion, a customer is an outlier
when it lies more than SPEND_OUTLIER_MADS scaled median absolute deviations above the median
(a modified z-score; Iglewicz & Hoaglin flag 3.5 as suspect, we keep the bound far higher so
that real large customers are never touched: on CDNOW no customer comes near it). Outliers
are kept out of the Gamma-Gamma fit (`spend_fit_monetary`) and winsorised for scoring: their
value per occasion is replaced by the highest one among the other customers (`cap_spend`),
so such a customer is valued like the largest plausible buyer. The run records how many
there were, the threshold and the value they were capped to.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .summary import CustomerSummary

SPEND_OUTLIER_MADS = 8.0
MIN_LOG_SPREAD = 0.5  # a floor on the spread (log units), so a book of near-equal spends keeps a wide bound
MIN_CUSTOMERS = 20  # below this there is no population to judge from
MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution times this is its standard deviation


def spend_bounds(summary: CustomerSummary, *, mads: float = SPEND_OUTLIER_MADS) -> tuple[float, float] | None:
    """(threshold, capped_to): above `threshold` a customer's average value per purchase occasion is
    implausible; such a customer's is replaced by `capped_to`, the highest one at or below it.
    None when there are too few buyers to judge from."""
    per_occasion = _per_occasion(summary)
    buying = per_occasion[per_occasion > 0]
    if buying.size < MIN_CUSTOMERS:
        return None
    logs = np.log(buying)
    median = float(np.median(logs))
    spread = max(MAD_TO_SIGMA * float(np.median(np.abs(logs - median))), MIN_LOG_SPREAD)
    threshold = float(np.exp(median + mads * spread))
    return threshold, float(buying[buying <= threshold].max())


def cap_spend(summary: CustomerSummary, bounds: tuple[float, float] | None) -> tuple[CustomerSummary, np.ndarray]:
    """The summary with every customer above the threshold brought down to `capped_to` per occasion (mean
    repeat spend, total value and margin scaled alike); and the mask of the customers capped."""
    n = summary.customer_ids.size
    capped = np.zeros(n, dtype=bool) if bounds is None else _per_occasion(summary) > bounds[0]
    if not capped.any():
        return summary, capped
    cap = bounds[1]
    occasions = summary.frequency + 1.0
    total_value = np.where(capped, np.minimum(summary.total_value, cap * occasions), summary.total_value)
    scale = np.divide(total_value, summary.total_value, out=np.ones_like(total_value), where=summary.total_value > 0)
    monetary = np.where(capped, np.minimum(summary.monetary, cap), summary.monetary)
    margin = None if summary.total_margin is None else summary.total_margin * scale
    return replace(summary, monetary=monetary, total_value=total_value, total_margin=margin), capped


def spend_fit_monetary(summary: CustomerSummary, capped: np.ndarray) -> np.ndarray:
    """Mean repeat spend for the spend model's fit: 0 (no spend information, left out) for outliers."""
    return np.where(capped, 0.0, summary.monetary)


def _per_occasion(summary: CustomerSummary) -> np.ndarray:
    return np.asarray(summary.total_value, dtype=np.float64) / (np.asarray(summary.frequency, dtype=np.float64) + 1.0)
