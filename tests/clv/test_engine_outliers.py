"""Implausible spend is capped, on public data: CDNOW as published is untouched; one mistyped line is caught."""

import numpy as np

from clv.engine import gammagamma
from clv.engine.outliers import cap_spend, spend_bounds, spend_fit_monetary
from clv.engine.summary import summarise_transactions
from tests.clv.data import CALIBRATION_END, cdnow_transactions


def _summary(extra_amount: float | None = None):
    ids, dates, amounts = cdnow_transactions()
    if extra_amount is not None:  # customer 1's second purchase mistyped
        i = int(np.flatnonzero(ids == ids[np.argmax(np.bincount(ids))])[1])
        amounts = amounts.copy()
        amounts[i] = extra_amount
    return summarise_transactions(ids, dates, amounts, CALIBRATION_END, time_unit="weeks")


def test_cdnow_as_published_has_no_implausible_spend():
    summary = _summary()
    threshold, capped_to = spend_bounds(summary)
    bounded, capped = cap_spend(summary, (threshold, capped_to))
    assert not capped.any()
    per_occasion = summary.total_value / (summary.frequency + 1)
    assert threshold > 10 * per_occasion.max()  # the largest real buyer is far inside the bound
    assert capped_to == per_occasion.max()
    assert bounded is summary


def test_one_mistyped_line_is_capped_and_the_spend_model_keeps_its_shape():
    clean = _summary()
    dirty = _summary(extra_amount=9_999_999_999.99)
    threshold, cap = spend_bounds(dirty)
    assert abs(np.log(threshold / spend_bounds(clean)[0])) < 0.05  # the bound does not move with the outlier
    bounded, capped = cap_spend(dirty, (threshold, cap))
    assert int(capped.sum()) == 1
    assert cap <= (clean.total_value / (clean.frequency + 1)).max()  # valued like the largest real buyer
    assert bounded.total_value[capped][0] <= cap * (bounded.frequency[capped][0] + 1)
    assert bounded.monetary.max() <= max(cap, clean.monetary.max())
    assert bounded.total_margin is None or np.isfinite(bounded.total_margin).all()

    def fitted(summary, monetary=None):
        params = gammagamma.fit(summary.frequency, summary.monetary if monetary is None else monetary).params
        return params, np.array([params.p, params.q, params.v])

    _, ref = fitted(clean)
    params, ours = fitted(bounded, spend_fit_monetary(bounded, capped))  # the outlier is left out of the fit
    _, unbounded = fitted(dirty)
    assert np.abs(ours / ref - 1).max() < 0.02  # the spend model of everyone keeps its shape ...
    assert np.abs(unbounded / ref - 1).max() > 0.2  # ... which one mistyped line shifted before the bound
    expected = gammagamma.conditional_expected_value(params, bounded.frequency, bounded.monetary)
    assert expected[capped][0] <= cap
