"""DERT: the whole remaining relationship, against brute-force discounted sums of each model's expected-purchases curve."""

import numpy as np
import pytest

from clv.engine import bgnbd, paretonbd, purchase
from tests.clv.data import cdnow_summary

DELTA = np.log(1.15) / 52  # 15% a year, compounded continuously, per week (CDNOW's unit)


def _brute_force(expected, horizon_weeks=10_000.0):
    grid = np.concatenate([np.arange(0.0, 300.0, 0.25), np.arange(300.0, horizon_weeks, 2.0)])
    cumulative = np.array([expected(t) for t in grid])
    mid = 0.5 * (grid[1:] + grid[:-1])
    return (np.diff(cumulative, axis=0) * np.exp(-DELTA * mid)[:, None]).sum(axis=0)


@pytest.fixture(scope="module")
def cdnow_rows():
    s = cdnow_summary()
    order = np.argsort(-s["x"], kind="stable")
    rows = order[[0, 1, 2, 50, 300, 1000, 2356]]
    return s["x"][rows], s["t_x"][rows], s["T"][rows]


@pytest.mark.parametrize("model", ["bgnbd", "mbgnbd"])
def test_bg_family_dert_equals_discounted_sum(model, cdnow_rows):
    x, t_x, T = cdnow_rows
    params = {"bgnbd": {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
              "mbgnbd": {"r": 0.525, "alpha": 6.183, "a": 0.891, "b": 1.614}}[model]
    bg = bgnbd.BgNbdParams.from_dict(params)
    brute = _brute_force(lambda t: bgnbd.conditional_expected_purchases(bg, t, x, t_x, T, modified=model == "mbgnbd"))
    np.testing.assert_allclose(purchase.dert(model, params, DELTA, x, t_x, T), brute, rtol=1e-5)


def test_paretonbd_closed_form_equals_discounted_sum(cdnow_rows):
    # Fader, Hardie & Lee (2005, JMR) eq. 2, at their CDNOW estimates and 15% a year.
    x, t_x, T = cdnow_rows
    pn = paretonbd.ParetoNbdParams(0.553, 10.578, 0.606, 11.669)
    brute = _brute_force(lambda t: paretonbd.conditional_expected_purchases(pn, t, x, t_x, T), 40_000.0)
    closed = purchase.dert("paretonbd", pn.to_dict(), DELTA, x, t_x, T)
    np.testing.assert_allclose(closed, brute, rtol=2e-4)


def test_mbgcnbd_dert_equals_discounted_sum():
    from clv.engine import cnbd

    p = cnbd.CnbdParams(3, 2.0, 6.0, 1.2, 6.0)
    x, t_x, T = np.array([0.0, 3.0, 12.0]), np.array([0.0, 10.0, 30.0]), np.array([20.0, 30.0, 32.0])
    grid = np.arange(0.0, 500.0, 0.5)
    post = cnbd.posterior(p, x, t_x, T)
    delta = 0.05  # per week: e^(-25) by week 500, so the m-sums of k = 3 stay short
    cumulative = np.array([cnbd.conditional_expected_purchases(p, t, x, t_x, T, post=post) for t in grid])
    mid = 0.5 * (grid[1:] + grid[:-1])
    brute = (np.diff(cumulative, axis=0) * np.exp(-delta * mid)[:, None]).sum(axis=0)
    # The midpoint rule on a half-week grid is itself good to ~1e-4 at this rate.
    np.testing.assert_allclose(cnbd.discounted_expected_residual_purchases(post, delta, x=x, T=T), brute, rtol=5e-4)
