"""Loaders for the vendored CDNOW files (see README.md in this folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent
CALIBRATION_END = "1997-09-30"  # end of week 39
OBSERVATION_END = "1998-06-30"  # end of week 78


def cdnow_summary() -> dict[str, np.ndarray]:
    """Published calibration summary: id, x, t_x, T (weeks), zbar (US$)."""
    table = np.genfromtxt(DATA_DIR / "cdnow_customers_summary_with_transactions.csv", delimiter=",", names=True)
    return {name: np.asarray(table[name], dtype=np.float64) for name in ("ID", "x", "t_x", "T", "zbar")}


def cdnow_transactions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample customer id, date as datetime64[D], dollar value) per transaction row."""
    raw = np.loadtxt(DATA_DIR / "CDNOW_sample.txt", dtype=str)
    ids = raw[:, 1].astype(np.int64)
    dates = np.array([f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in raw[:, 2]], dtype="datetime64[D]")
    return ids, dates, raw[:, 4].astype(np.float64)
