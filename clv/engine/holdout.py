"""Calibration/holdout validation of purchase models and the rule that picks BG/NBD, MBG/NBD (or Pareto/NBD when asked)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import bgnbd, paretonbd, purchase
from .summary import TIME_UNIT_DAYS, CustomerSummary, summarise_transactions, to_days

# Models whose holdout MAE differs by less than this (relative) are considered tied.
TIE_TOLERANCE = 0.01
HOLDOUT_MODELS = ("bgnbd", "mbgnbd", "paretonbd")


@dataclass
class CalibrationHoldout:
    calibration: CustomerSummary  # summary as of calibration_end
    holdout_frequency: np.ndarray  # occasions (distinct days) in (calibration_end, observation_end]
    duration: float  # holdout length in the summary's time unit


def split_calibration_holdout(
    customer_ids: np.ndarray,
    timestamps: np.ndarray,
    amounts: np.ndarray,
    calibration_end: object,
    observation_end: object,
    *,
    time_unit: str = "days",
) -> CalibrationHoldout:
    """Calibration summary plus each calibration customer's holdout purchase occasions."""
    cal_end = np.datetime64(calibration_end, "D")
    obs_end = np.datetime64(observation_end, "D")
    if obs_end <= cal_end:
        raise ValueError("observation_end must be after calibration_end")
    ids = np.asarray(customer_ids)
    days = to_days(timestamps)
    calibration = summarise_transactions(ids, days, amounts, cal_end, time_unit=time_unit)
    in_holdout = (days > cal_end) & (days <= obs_end)
    h_ids, h_days = ids[in_holdout], days[in_holdout]
    # Distinct (customer, day) pairs = occasions, as in calibration. Customers whose first
    # purchase falls in the holdout are not part of the calibration cohort and are ignored.
    cal_ids = calibration.customer_ids
    if cal_ids.size and h_ids.size:
        pos = np.minimum(np.searchsorted(cal_ids, h_ids), cal_ids.size - 1)
        known = cal_ids[pos] == h_ids
    else:
        pos = np.zeros(h_ids.size, dtype=np.int64)
        known = np.zeros(h_ids.size, dtype=bool)
    pairs = np.unique(np.stack([pos[known], h_days[known].astype(np.int64)]), axis=1)
    holdout = np.bincount(pairs[0], minlength=cal_ids.size).astype(np.float64)
    duration = float((obs_end - cal_end).astype(np.int64)) / TIME_UNIT_DAYS[time_unit]
    return CalibrationHoldout(calibration, holdout, duration)


def holdout_report(
    predicted: np.ndarray, actual: np.ndarray, calibration_frequency: np.ndarray, *, max_bucket: int = 7
) -> dict:
    """MAE, RMSE, totals, and mean actual vs predicted by calibration frequency (0..max_bucket-1, max_bucket+), as in the BG/NBD paper's Figure 4."""
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    freq = np.asarray(calibration_frequency, dtype=np.float64)
    err = predicted - actual
    bucket = np.minimum(freq, max_bucket).astype(int)
    table = []
    for k in range(max_bucket + 1):
        rows = bucket == k
        if not rows.any():
            continue
        table.append(
            {
                "frequency": f"{k}+" if k == max_bucket else str(k),
                "customers": int(rows.sum()),
                "actual_mean": float(actual[rows].mean()),
                "predicted_mean": float(predicted[rows].mean()),
            }
        )
    return {
        "n_customers": int(actual.size),
        "mae": float(np.abs(err).mean()) if err.size else 0.0,
        "rmse": float(np.sqrt((err**2).mean())) if err.size else 0.0,
        "total_predicted": float(predicted.sum()),
        "total_actual": float(actual.sum()),
        "by_calibration_frequency": table,
    }


def holdout_check(split: CalibrationHoldout, *, model: str = "bgnbd") -> dict:
    """Fit on the calibration period, predict the holdout period per customer, compare with what happened."""
    if model not in HOLDOUT_MODELS:
        raise ValueError(f"model must be one of {HOLDOUT_MODELS}")
    cal = split.calibration
    if model == "paretonbd":
        fitted = paretonbd.fit(cal.frequency, cal.recency, cal.T, with_standard_errors=False)
        predicted = paretonbd.conditional_expected_purchases(
            fitted.params, split.duration, cal.frequency, cal.recency, cal.T
        )
    else:
        modified = model == "mbgnbd"
        fitted = bgnbd.fit(cal.frequency, cal.recency, cal.T, modified=modified, with_standard_errors=False)
        predicted = bgnbd.conditional_expected_purchases(
            fitted.params, split.duration, cal.frequency, cal.recency, cal.T, modified=modified
        )
    return {
        "model": model,
        "params": fitted.params.to_dict(),
        "fit": fitted.diagnostics.to_dict(),
        "holdout_duration": split.duration,
        **holdout_report(predicted, split.holdout_frequency, cal.frequency),
    }


def select_purchase_model(split: CalibrationHoldout, *, candidates: tuple[str, ...] = ("bgnbd", "mbgnbd")) -> dict:
    """Pick BG/NBD or MBG/NBD (pass candidates=HOLDOUT_MODELS to let Pareto/NBD compete too).

    Rule: the lower holdout MAE wins; if the two MAEs are within TIE_TOLERANCE (1%) of
    each other, the higher calibration log-likelihood wins (both have 4 parameters, so
    this is the AIC choice); a remaining tie goes to BG/NBD, the better-known model.
    With more candidates: every model within TIE_TOLERANCE of the best MAE is tied, and
    among those the highest log-likelihood wins (all have 4 parameters), earlier
    candidates winning exact ties.
    """
    if len(candidates) < 2 or len(set(candidates)) != len(candidates):
        raise ValueError("select_purchase_model needs at least two distinct candidates")
    reports = {name: holdout_check(split, model=name) for name in candidates}
    best_mae = min(rep["mae"] for rep in reports.values())
    tied = [
        name
        for name in candidates
        if (reports[name]["mae"] - best_mae) / max(reports[name]["mae"], best_mae, 1e-12) <= TIE_TOLERANCE
    ]
    if len(tied) == 1:
        selected, reason = tied[0], "lower holdout MAE"
    else:
        # max() keeps the first of equal values, so exact ties go to the earlier candidate.
        selected = max(tied, key=lambda name: reports[name]["fit"]["log_likelihood"])
        if selected == tied[0]:
            reason = "MAE tie; higher or equal log-likelihood"
        else:
            reason = "MAE tie; higher log-likelihood (same parameter count, so lower AIC)"
    return {"selected": selected, "reason": reason, "candidates": reports}


# ---------------------------------------------------------------------------------------------
# Model choice over every candidate, against the naive baseline

CHOICE_MODELS = ("bgnbd", "mbgnbd", "paretonbd", "mbgcnbd")


def compare_purchase_models(
    split: CalibrationHoldout,
    *,
    candidates: tuple[str, ...] = CHOICE_MODELS,
    litt: np.ndarray | None = None,
    sample_size: int | None = None,
    seed: int = 0,
    interval_draws: int = purchase.DEFAULT_DRAWS,
    interval_sample: int = 20_000,
) -> dict:
    """Fit every candidate on the calibration window, score it on the holdout window, pick one.

    Rule: the lowest holdout MAE wins; candidates within TIE_TOLERANCE (1%) of the best MAE
    are tied, and among them the lowest calibration AIC wins (MBG/CNBD-k counts its chosen k
    as a fifth parameter); a remaining exact tie goes to the earlier candidate in CHOICE_MODELS
    order. Recorded per candidate: parameters, calibration log-likelihood and AIC, holdout
    MAE, RMSE and total; beside them the naive baseline (each customer keeps their
    calibration-period rate x / T); for the chosen model, the coverage of its 80% purchase
    intervals over the holdout (on at most interval_sample of the customers).
    sample_size fits and scores a uniform random sample of the calibration customers (the
    choice needs a large sample, not everyone).
    """
    cal = split.calibration
    x, t_x, T, actual = cal.frequency, cal.recency, cal.T, split.holdout_frequency
    lt = litt if litt is None else np.asarray(litt, dtype=np.float64)
    n_total = x.size
    if sample_size is not None and sample_size < n_total:
        idx = np.sort(np.random.default_rng(seed).choice(n_total, size=sample_size, replace=False))
        x, t_x, T, actual = x[idx], t_x[idx], T[idx], actual[idx]
        lt = None if lt is None else lt[idx]
    duration = split.duration
    rng = np.random.default_rng(seed + 1)
    cover_rows = (np.random.default_rng(seed + 2).choice(x.size, size=interval_sample, replace=False)
                  if x.size > interval_sample else slice(None))
    rows: dict[str, dict] = {}
    for name in candidates:
        if name == "mbgcnbd" and lt is None:
            rows[name] = {"label": purchase.MODEL_LABELS[name], "skipped": "no inter-purchase times for this source"}
            continue
        params, diag = purchase.fit(name, x, t_x, T, litt=lt)
        predicted = purchase.expected_purchases(name, params, duration, x, t_x, T)
        report = holdout_report(predicted, actual, x)
        n_params = 5 if name == "mbgcnbd" else 4
        rows[name] = {
            "label": purchase.MODEL_LABELS[name], "params": params,
            "log_likelihood": diag["log_likelihood"], "n_params": n_params,
            "aic": float(2 * n_params - 2 * diag["log_likelihood"]), "converged": diag["converged"],
            "mae": report["mae"], "rmse": report["rmse"], "total_predicted": report["total_predicted"],
            "fit_seconds": diag["seconds"], "_diagnostics": diag,
            "by_calibration_frequency": report["by_calibration_frequency"],
        }
        if name == "mbgcnbd":
            rows[name]["by_k"] = diag.get("by_k", [])
    naive = holdout_report(purchase.naive_prediction(x, T, duration), actual, x)
    fitted = [name for name in candidates if "mae" in rows.get(name, {})]
    if not fitted:
        raise ValueError("no candidate model could be fitted")
    best = min(rows[name]["mae"] for name in fitted)
    tied = [name for name in fitted
            if (rows[name]["mae"] - best) / max(rows[name]["mae"], best, 1e-12) <= TIE_TOLERANCE]
    if len(tied) == 1:
        selected, reason = tied[0], "lowest holdout MAE"
    else:
        selected = min(tied, key=lambda name: rows[name]["aic"])  # min() keeps the first of equals
        reason = f"holdout MAE within {TIE_TOLERANCE:.0%} of the best for {', '.join(tied)}; lowest AIC"
    mae = rows[selected]["mae"]
    coverage = interval_coverage(selected, rows[selected]["params"], rows[selected].pop("_diagnostics"), duration,
                                 x[cover_rows], t_x[cover_rows], T[cover_rows], actual[cover_rows],
                                 draws=interval_draws, rng=rng)
    for row in rows.values():
        row.pop("_diagnostics", None)
    return {
        "interval_coverage": coverage,
        "selected": selected, "reason": reason, "candidates": rows,
        "naive": {"label": "naive (calibration rate)", "mae": naive["mae"], "rmse": naive["rmse"],
                  "total_predicted": naive["total_predicted"]},
        "mae_ratio_to_naive": float(mae / naive["mae"]) if naive["mae"] > 0 else None,
        "n_customers": int(x.size), "n_customers_calibration": int(n_total), "sampled": bool(x.size < n_total),
        "holdout_duration": duration, "total_actual": float(actual.sum()),
        "rule": "lowest holdout MAE; within 1% of the best, lowest calibration AIC; then candidate order",
    }


def interval_coverage(
    model: str, params: dict, diagnostics: dict, duration: float, x, t_x, T, actual, *, draws: int,
    rng: np.random.Generator,
) -> dict:
    """Share of customers whose actual holdout purchases fall inside their 80% interval."""
    sets = purchase.parameter_draws(model, params, diagnostics, draws=draws, rng=rng)
    lo, hi = purchase.count_interval(model, sets, duration, x, t_x, T)
    inside = (actual >= lo) & (actual <= hi)
    return {"level": purchase.INTERVAL_LEVEL, "coverage": float(inside.mean()) if inside.size else None,
            "n_customers": int(inside.size), "parameter_draws": len(sets),
            "below": float((actual < lo).mean()) if inside.size else None,
            "above": float((actual > hi).mean()) if inside.size else None}
