"""Simulated regular buyers for the engine and run tests: calibration summary, litt and holdout counts from purchase times."""

from __future__ import annotations

import numpy as np

from clv.engine.holdout import CalibrationHoldout
from clv.engine.summary import CustomerSummary


def split_simulated(customer: np.ndarray, time: np.ndarray, n: int, T: np.ndarray, duration: float):
    """(CalibrationHoldout, litt) from purchase times since each customer's first purchase (calibration ends at T)."""
    cal = time <= T[customer]
    x = np.bincount(customer[cal], minlength=n) - 1.0
    t_x = np.zeros(n)
    np.maximum.at(t_x, customer[cal], time[cal])
    same = (customer[1:] == customer[:-1]) & cal[1:]
    litt = np.bincount(customer[1:][same], weights=np.log(np.diff(time)[same]), minlength=n)
    holdout = np.bincount(customer[~cal], minlength=n).astype(np.float64)
    nan = np.full(n, np.nan)
    summary = CustomerSummary(np.arange(n), x, t_x, np.asarray(T, dtype=np.float64), nan, nan, None, nan, nan,
                              "weeks", litt)
    return CalibrationHoldout(summary, holdout, float(duration)), litt
