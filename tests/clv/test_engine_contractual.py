"""sBG and BdW renewal models against Fader & Hardie (2007) and on simulated renewal histories."""

import numpy as np
import pytest

from clv.engine import contractual as ct

# Percent of 1,000 customers still active at the start of years 1-8 (calibration) and 9-13
# (holdout), Fader & Hardie (2007) "How to project customer retention", table 1.
REGULAR = [100, 63.1, 46.8, 38.2, 32.6, 28.9, 26.2, 24.1]
REGULAR_HOLDOUT = [22.3, 20.7, 19.4, 18.3, 17.3]
HIGH_END = [100, 86.9, 74.3, 65.3, 59.3, 55.1, 51.7, 49.1]
HIGH_END_HOLDOUT = [46.8, 44.5, 42.7, 40.9, 39.4]


@pytest.mark.parametrize(
    ("alive", "alpha", "beta"), [(REGULAR, 0.704, 1.182), (HIGH_END, 0.668, 3.806)], ids=["regular", "high_end"]
)
def test_sbg_reproduces_published_parameters(alive, alpha, beta):
    fit = ct.fit_contracts(ct.histories_from_cohort(alive, size=1000), model="sbg")
    assert fit.converged
    assert fit.params["alpha"] == pytest.approx(alpha, rel=0.01)
    assert fit.params["beta"] == pytest.approx(beta, rel=0.01)


def test_sbg_high_end_log_likelihood_is_the_published_one():
    fit = ct.fit_contracts(ct.histories_from_cohort(HIGH_END, size=1000), model="sbg")
    assert fit.log_likelihood == pytest.approx(-1611.16, abs=0.01)


@pytest.mark.parametrize(("alive", "holdout"), [(REGULAR, REGULAR_HOLDOUT), (HIGH_END, HIGH_END_HOLDOUT)],
                         ids=["regular", "high_end"])
def test_sbg_projects_holdout_survival_within_two_points(alive, holdout):
    fit = ct.fit_contracts(ct.histories_from_cohort(alive, size=1000), model="sbg")
    projected = 100 * ct.survival(np.arange(8, 13), **fit.params)  # start of years 9..13 = after 8..12 renewals
    assert np.abs(projected - np.array(holdout)).max() < 2.0


def test_bdw_with_c_one_has_the_sbg_likelihood():
    data = ct.histories_from_cohort(HIGH_END, size=1000)
    params = {"alpha": 0.668, "beta": 3.806}
    assert ct.log_likelihood({**params, "c": 1.0}, data) == pytest.approx(ct.log_likelihood(params, data), abs=1e-9)


def test_bdw_fits_high_end_better_and_is_chosen_by_the_likelihood_ratio_test():
    choice = ct.choose_model(ct.histories_from_cohort(HIGH_END, size=1000))
    sbg, bdw = choice["fits"]["sbg"], choice["fits"]["bdw"]
    assert bdw["log_likelihood"] > sbg["log_likelihood"] + 3  # LR statistic ~11.7
    assert bdw["params"]["c"] > 1  # churn propensity rises with tenure, as the 2018 paper finds
    assert choice["lr_p_value"] < 0.05
    assert choice["chosen"] == "bdw"


def test_regular_keeps_sbg_when_duration_dependence_is_not_significant():
    choice = ct.choose_model(ct.histories_from_cohort(REGULAR, size=1000))
    assert choice["lr_p_value"] > 0.05
    assert choice["chosen"] == "sbg"


def test_bdw_recovers_parameters_on_simulated_histories():
    truth = {"alpha": 0.9, "beta": 2.5, "c": 0.7}
    periods, cancelled = ct.simulate_contracts(40_000, truth, max_periods=24, rng=np.random.default_rng(7))
    fit = ct.fit_contracts(ct.renewal_histories(periods, cancelled), model="bdw")
    assert fit.converged
    for name, value in truth.items():
        assert fit.params[name] == pytest.approx(value, rel=0.12), name


def test_sbg_recovers_parameters_on_simulated_histories():
    truth = {"alpha": 1.3, "beta": 4.0}
    periods, cancelled = ct.simulate_contracts(40_000, truth, max_periods=12, rng=np.random.default_rng(3))
    fit = ct.fit_contracts(ct.renewal_histories(periods, cancelled), model="sbg")
    assert fit.params["alpha"] == pytest.approx(1.3, rel=0.1)
    assert fit.params["beta"] == pytest.approx(4.0, rel=0.1)


def test_derl_matches_the_closed_form_of_fader_and_hardie_2010():
    params = {"alpha": 0.668, "beta": 3.806}
    periods = np.array([1, 2, 5, 8])
    scores = ct.score_contracts(params, periods, discount_rate=0.10, remaining_horizon=50)
    expected = [ct.derl_sbg_closed_form(0.668, 3.806, n - 1, 0.10) for n in periods]
    np.testing.assert_allclose(scores["derl"], expected, rtol=1e-8)


def test_renewal_probability_is_the_retention_rate_and_rises_with_tenure_under_sbg():
    params = {"alpha": 0.704, "beta": 1.182}
    scores = ct.score_contracts(params, [1, 2, 3], discount_rate=0.1, remaining_horizon=10)
    # r(t) = (beta + t - 1) / (alpha + beta + t - 1)
    np.testing.assert_allclose(scores["p_renew"], [(1.182 + t - 1) / (0.704 + 1.182 + t - 1) for t in (1, 2, 3)])
    assert np.all(np.diff(scores["expected_remaining_periods"]) > 0)
    assert np.all(scores["expected_remaining_periods"] <= 10)


def test_renewal_histories_reject_a_contract_with_no_period_begun():
    with pytest.raises(ValueError, match="periods must be >= 1"):
        ct.renewal_histories([0, 3], [False, True])
