"""MBG/CNBD-k (Platzer & Reutterer 2016): CDNOW as BTYDplus reports it, parameter recovery on Erlang-k data, predictions."""

import numpy as np
import pytest

from clv.engine import bgnbd, cnbd, holdout
from clv.engine.fitting import compress_triples
from clv.engine.simulate import simulate_regular_purchase_times
from tests.clv.data import CALIBRATION_END, OBSERVATION_END, cdnow_summary, cdnow_transactions
from tests.clv.regular import split_simulated


@pytest.fixture(scope="module")
def cdnow_split():
    ids, dates, amounts = cdnow_transactions()
    return holdout.split_calibration_holdout(ids, dates, amounts, CALIBRATION_END, OBSERVATION_END, time_unit="weeks")


@pytest.fixture(scope="module")
def erlang3():
    # BTYDplus's own recovery test population: k=3, r=0.85, alpha=1.45, a=0.79, b=2.42, 8000 customers.
    rng = np.random.default_rng(1)
    n = 8000
    T = np.round(rng.uniform(36, 96, n) / 12) * 12
    sim = simulate_regular_purchase_times(n, 3, 0.85, 1.45, 0.79, 2.42, T + 36, rng=rng)
    return split_simulated(sim.customer, sim.time, n, T, 36.0)


def test_k1_is_mbgnbd_exactly():
    s = cdnow_summary()
    x, t_x, T = s["x"], s["t_x"], s["T"]
    for modified in (False, True):
        bg = bgnbd.BgNbdParams(0.5, 6.0, 0.9, 1.6)
        p = cnbd.params_from_bgnbd(bg.to_dict())
        np.testing.assert_allclose(cnbd.log_likelihood(p, x, t_x, T, np.zeros_like(x), modified=modified),
                                   bgnbd.log_likelihood(bg, x, t_x, T, modified=modified), rtol=1e-12)
        np.testing.assert_allclose(cnbd.probability_alive(p, x, t_x, T, modified=modified),
                                   bgnbd.probability_alive(bg, x, t_x, T, modified=modified), rtol=1e-12)
        np.testing.assert_allclose(cnbd.conditional_expected_purchases(p, 39.0, x, t_x, T, modified=modified),
                                   bgnbd.conditional_expected_purchases(bg, 39.0, x, t_x, T, modified=modified),
                                   rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("k", [1, 3])
def test_analytic_gradient_matches_finite_differences(k):
    s = cdnow_summary()
    data = compress_triples(s["x"], s["t_x"], s["T"])
    lp = np.log([0.5, 5.0, 0.8, 2.0])
    _, grad = cnbd._negll_and_grad(lp, data, k, 1.0)
    numeric = []
    for j in range(4):
        e = np.zeros(4)
        e[j] = 1e-6
        numeric.append((cnbd._negll_and_grad(lp + e, data, k, 1.0)[0] - cnbd._negll_and_grad(lp - e, data, k, 1.0)[0])
                       / 2e-6)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5)


def test_cdnow_shows_no_regularity_and_reproduces_published_mbgnbd(cdnow_split):
    # BTYDplus's CDNOW demo: mbgcnbd.EstimateParameters picks k = 1 ("no regularity detected
    # for CDNow"), i.e. the MBG/NBD, published as r 0.525, alpha 6.183, a 0.891, b 1.614.
    cal = cdnow_split.calibration
    fitted = cnbd.fit(cal.frequency, cal.recency, cal.T, cal.litt)
    p = fitted.params
    assert p.k == 1
    np.testing.assert_allclose([p.r, p.alpha, p.a, p.b], [0.525, 6.183, 0.891, 1.614], atol=6e-4)
    lls = [row["log_likelihood"] for row in fitted.by_k]
    assert lls[0] == max(lls)
    assert len(lls) == 3  # stopped after two falls in a row


def test_recovers_erlang3_rhythm_and_parameters(erlang3):
    split, litt = erlang3
    cal = split.calibration
    fitted = cnbd.fit(cal.frequency, cal.recency, cal.T, litt)
    assert fitted.params.k == 3
    truth = {"r": 0.85, "alpha": 1.45, "a": 0.79, "b": 2.42}
    for name, value in truth.items():
        est, se = getattr(fitted.params, name), fitted.diagnostics.standard_errors[name]
        assert abs(est - value) < 4 * se, (name, est, se)
        assert abs(est - value) / value < 0.15, name


def test_predicts_the_holdout_total_and_share_alive(erlang3):
    split, _ = erlang3
    cal = split.calibration
    p = cnbd.CnbdParams(3, 0.85, 1.45, 0.79, 2.42)
    predicted = cnbd.conditional_expected_purchases(p, split.duration, cal.frequency, cal.recency, cal.T)
    assert predicted.sum() == pytest.approx(split.holdout_frequency.sum(), rel=0.05)
    assert np.all(predicted >= 0)


def test_regular_buyers_chosen_model_beats_naive_by_ten_percent(erlang3):
    split, litt = erlang3
    report = holdout.compare_purchase_models(split, litt=litt, interval_draws=1)
    assert report["selected"] == "mbgcnbd"
    assert report["candidates"]["mbgcnbd"]["params"]["k"] == 3
    assert report["mae_ratio_to_naive"] <= 0.9
    # And it is better than every memoryless candidate.
    assert all(report["candidates"]["mbgcnbd"]["mae"] < report["candidates"][m]["mae"]
               for m in ("bgnbd", "mbgnbd", "paretonbd"))
