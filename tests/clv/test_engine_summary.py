"""Transaction-array summary: the twin of the SQL aggregate (occasions are distinct days)."""

import datetime as dt

import numpy as np
import pytest

from clv.engine.summary import summarise_transactions


def _example():
    ids = np.array(["b", "a", "a", "a", "a", "b", "c", "a"])
    ts = np.array(
        [
            "2024-01-01T10:00",
            "2024-01-01T09:00",
            "2024-01-01T18:30",
            "2024-01-05T12:00",
            "2024-01-10T08:00",
            "2024-01-11T23:59",
            "2024-02-01T00:00",
            "2024-01-20T00:00",
        ],
        dtype="datetime64[m]",
    )
    amounts = np.array([5.0, 10.0, 20.0, 7.0, 3.0, 4.0, 100.0, 0.0])
    costs = amounts * 0.25
    return ids, ts, amounts, costs


def test_summary_counts_days_as_occasions_and_excludes_first_from_monetary():
    ids, ts, amounts, costs = _example()
    s = summarise_transactions(ids, ts, amounts, dt.date(2024, 1, 31), costs=costs)
    # "c" only bought after as_of: not a customer yet.
    assert list(s.customer_ids) == ["a", "b"]
    # a: occasions Jan 1 (10+20), Jan 5 (7), Jan 10 (3), Jan 20 (0) -> x=3, t_x=19, T=30.
    # b: Jan 1 (5), Jan 11 (4) -> x=1, t_x=10, T=30.
    np.testing.assert_array_equal(s.frequency, [3, 1])
    np.testing.assert_array_equal(s.recency, [19, 10])
    np.testing.assert_array_equal(s.T, [30, 30])
    np.testing.assert_allclose(s.monetary, [(7 + 3 + 0) / 3, 4.0])
    np.testing.assert_allclose(s.total_value, [40.0, 9.0])
    np.testing.assert_allclose(s.total_margin, [30.0, 6.75])
    assert s.first_purchase[0] == np.datetime64("2024-01-01")
    assert s.last_purchase[0] == np.datetime64("2024-01-20")


def test_single_purchase_today_gives_zero_everything():
    s = summarise_transactions(np.array([7]), np.array(["2024-03-03"]), np.array([12.0]), "2024-03-03")
    assert (s.frequency[0], s.recency[0], s.T[0], s.monetary[0], s.total_value[0]) == (0, 0, 0, 0, 12.0)


def test_weeks_divide_day_counts_by_seven():
    ids, ts, amounts, _ = _example()
    days = summarise_transactions(ids, ts, amounts, "2024-01-31")
    weeks = summarise_transactions(ids, ts, amounts, "2024-01-31", time_unit="weeks")
    np.testing.assert_allclose(weeks.recency, days.recency / 7)
    np.testing.assert_allclose(weeks.T, days.T / 7)
    np.testing.assert_array_equal(weeks.frequency, days.frequency)


def test_rejects_unknown_unit_and_mismatched_lengths():
    with pytest.raises(ValueError):
        summarise_transactions(
            np.array([1]), np.array(["2024-01-01"]), np.array([1.0]), "2024-01-02", time_unit="months"
        )
    with pytest.raises(ValueError):
        summarise_transactions(np.array([1, 2]), np.array(["2024-01-01"]), np.array([1.0]), "2024-01-02")
