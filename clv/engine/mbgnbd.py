"""MBG/NBD purchase model (Batislam, Denizel & Filiztekin 2007): BG/NBD with dropout possible right after the first purchase.

Same parameters and units as BG/NBD (r, alpha, a, b; alpha in the time unit of the
inputs). It differs where BG/NBD is weakest: a customer with no repeat purchase in a
long time gets P(alive) < 1 instead of exactly 1. The implementation shares
clv.engine.bgnbd with modified=True.
"""

from __future__ import annotations

import numpy as np

from . import bgnbd
from .bgnbd import BgNbdFit, BgNbdParams


def log_likelihood(params: BgNbdParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    return bgnbd.log_likelihood(params, x, t_x, T, modified=True)


def fit(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, **kwargs) -> BgNbdFit:
    return bgnbd.fit(x, t_x, T, modified=True, **kwargs)


def probability_alive(params: BgNbdParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    return bgnbd.probability_alive(params, x, t_x, T, modified=True)


def conditional_expected_purchases(
    params: BgNbdParams, t: np.ndarray | float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    return bgnbd.conditional_expected_purchases(params, t, x, t_x, T, modified=True)


def expected_purchases(params: BgNbdParams, t: np.ndarray | float) -> np.ndarray:
    return bgnbd.expected_purchases(params, t, modified=True)
