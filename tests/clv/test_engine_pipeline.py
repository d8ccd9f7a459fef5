"""Fit-and-score orchestration, sharded scoring, holdout checks and model selection."""

import json

import numpy as np
import pytest

from clv.engine import holdout, pipeline
from clv.engine.simulate import simulate_transactions
from clv.engine.summary import summarise_transactions

DAILY = (0.24, 4.41 * 7, 0.79, 2.43)  # CDNOW BG/NBD with alpha converted from weeks to days
SPEND = (6.25, 3.74, 15.44)


@pytest.fixture(scope="module")
def transactions():
    return simulate_transactions(
        20_000, DAILY, SPEND, start="2023-01-01", end="2024-12-31", rng=np.random.default_rng(7)
    )


@pytest.fixture(scope="module")
def summary(transactions):
    t = transactions
    return summarise_transactions(t.customer_ids, t.dates, t.amounts, "2024-12-31", costs=0.6 * t.amounts)


def test_fit_and_score_returns_json_params_and_finite_scores(summary):
    s = summary
    result = pipeline.fit_and_score(
        s.frequency, s.recency, s.T, s.monetary, total_value=s.total_value, historical_margin=s.total_margin, margin=0.4
    )
    json.dumps(result.params)
    json.dumps(result.diagnostics)
    assert result.diagnostics["purchase"]["converged"]
    assert result.diagnostics["spend"]["converged"]
    for name, values in result.scores.items():
        assert values.shape == s.frequency.shape, name
        assert np.all(np.isfinite(values)), name
    sc = result.scores
    assert np.all((sc["p_alive"] >= 0) & (sc["p_alive"] <= 1))
    assert np.all(sc["clv"] >= 0)
    # Discounting and margin: the horizon's value is below margin x value x expected purchases.
    assert np.all(sc["horizon_value"] <= 0.4 * sc["expected_value"] * sc["expected_purchases"] + 1e-9)
    # The whole remaining relationship is worth at least its first months.
    assert np.all(sc["clv"] >= sc["horizon_value"] - 1e-9)
    assert np.all(sc["expected_purchases_low"] <= sc["expected_purchases_high"])
    np.testing.assert_allclose(sc["historical_value"], s.total_margin)


def test_sharded_scoring_equals_scoring_everyone(summary):
    s = summary
    params, _ = pipeline.fit(s.frequency, s.recency, s.T, s.monetary)
    params = json.loads(json.dumps(params))  # as stored in the database
    full = pipeline.score(params, s.frequency, s.recency, s.T, s.monetary, total_value=s.total_value)
    shards = np.array_split(np.arange(len(s)), 3)
    parts = [
        pipeline.score(params, s.frequency[i], s.recency[i], s.T[i], s.monetary[i], total_value=s.total_value[i])
        for i in shards
    ]
    for key in full:
        np.testing.assert_allclose(np.concatenate([p[key] for p in parts]), full[key], rtol=1e-12)


def test_fitting_on_a_sample_is_close_to_fitting_everyone(summary):
    s = summary
    everyone, _ = pipeline.fit(s.frequency, s.recency, s.T, s.monetary)
    sample, diag = pipeline.fit(s.frequency, s.recency, s.T, s.monetary, sample_size=10_000, seed=1)
    assert diag["sampled"]
    assert diag["n_customers_fitted"] == 10_000
    # A half sample: parameters move by about sqrt(2) standard errors, well within 25%.
    for k in ("r", "alpha", "a", "b"):
        assert sample["purchase"][k] == pytest.approx(everyone["purchase"][k], rel=0.25)


def test_holdout_predictions_track_actual_purchases(transactions):
    t = transactions
    split = holdout.split_calibration_holdout(t.customer_ids, t.dates, t.amounts, "2024-06-30", "2024-12-31")
    report = holdout.holdout_check(split)
    json.dumps(report)
    assert report["holdout_duration"] == 184
    # The data come from BG/NBD, so the total must match within Poisson-ish noise (5%).
    assert report["total_predicted"] == pytest.approx(report["total_actual"], rel=0.05)
    table = report["by_calibration_frequency"]
    assert [row["frequency"] for row in table][-1] == "7+"
    assert sum(row["customers"] for row in table) == report["n_customers"]


def test_holdout_counts_distinct_days_and_ignores_new_customers():
    ids = np.array([1, 1, 1, 1, 2, 3])
    dates = np.array(
        ["2024-01-01", "2024-02-10", "2024-02-10", "2024-02-20", "2024-01-15", "2024-02-05"], dtype="datetime64[D]"
    )
    split = holdout.split_calibration_holdout(ids, dates, np.ones(6), "2024-01-31", "2024-02-29")
    assert list(split.calibration.customer_ids) == [1, 2]
    np.testing.assert_array_equal(split.holdout_frequency, [2, 0])
    assert split.duration == 29


def test_model_selection_prefers_the_true_generating_model():
    tx = simulate_transactions(
        30_000,
        (0.5, 20.0, 1.2, 1.5),
        SPEND,
        start="2023-01-01",
        end="2024-12-31",
        rng=np.random.default_rng(9),
        modified=True,
    )
    split = holdout.split_calibration_holdout(tx.customer_ids, tx.dates, tx.amounts, "2024-06-30", "2024-12-31")
    choice = holdout.select_purchase_model(split)
    assert choice["selected"] == "mbgnbd", choice["reason"]
