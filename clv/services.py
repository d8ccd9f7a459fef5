"""The CLV run: read the per-customer summary, fit once, score all, switch atomically.

Phases: summary check and summary (the kept per-customer summary of clv.summary, or, when it
is out of step, one aggregate over purchase lines), fit and score (clv.engine), holdout check
(fit on the history before a calibration date, compare with what happened after), write and
aggregate (values and per-owner snapshots, in the same transaction that makes the run
current). A failure marks the run failed and leaves the previous run current. A database
lock keeps two runs from overlapping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, DecimalField, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from clv import engine
from clv.engine import holdout as engine_holdout
from clv.engine.pipeline import ScoreSettings
from clv.engine.summary import CustomerSummary
from clv.models import ClvRun, CustomerValue, PortfolioSnapshot
from clv.summary import (
    calibration_and_holdout,
    read_summary,
    summary_from_columns,
    summary_source,
)
from crm.bulk import copy_arrays, fetch_arrays, refresh_statistics

LOCK_KEY = 424242  # PostgreSQL advisory lock id for "a CLV run is in progress"
RISK_P_ALIVE = 0.5
EPOCH = date(1970, 1, 1)
Progress = Callable[[str], None]


class ClvRunAlreadyRunning(Exception):
    """Another CLV run holds the lock."""


def _day_sql() -> str:
    """SQL for the calendar day (as days since 1970-01-01) of a purchase, in the CRM's time zone."""
    if connection.vendor == "postgresql":
        return f"((p.purchased_at AT TIME ZONE '{settings.TIME_ZONE}')::date - DATE '1970-01-01')"
    return "CAST(julianday(date(p.purchased_at)) - 2440587.5 AS INTEGER)"


def summarise(*, as_of: date, default_margin: float) -> CustomerSummary:
    """One aggregate over purchase lines up to the end of `as_of`: per customer RFM and margin so far.

    The floor a run is measured against, and its fallback when the kept summary is out of step.
    """
    cutoff = (as_of - EPOCH).days
    sql = f"""
        WITH days AS (
            SELECT p.customer_id, {_day_sql()} AS day, SUM(p.amount) AS value,
                   SUM(p.amount - p.quantity * COALESCE(p.unit_cost, pr.unit_cost, p.unit_price * %s)) AS margin
            FROM crm_purchase p LEFT JOIN crm_product pr ON pr.id = p.product_id
            GROUP BY p.customer_id, {_day_sql()}
        ), firsts AS (
            SELECT customer_id, MIN(day) AS first_day FROM days WHERE day <= %s GROUP BY customer_id
        )
        SELECT d.customer_id, CAST(COUNT(*) - 1 AS double precision), CAST(f.first_day AS double precision),
               CAST(MAX(d.day) AS double precision), CAST(SUM(d.value) AS double precision),
               CAST(SUM(CASE WHEN d.day > f.first_day THEN d.value ELSE 0 END) AS double precision),
               CAST(SUM(d.margin) AS double precision)
        FROM days d JOIN firsts f ON f.customer_id = d.customer_id
        WHERE d.day <= %s
        GROUP BY d.customer_id, f.first_day
        ORDER BY d.customer_id
    """
    columns = fetch_arrays(sql, [1 - default_margin, cutoff, cutoff], ["int8"] + ["float8"] * 6)
    return summary_from_columns(*columns, cutoff=cutoff)


def holdout_counts(*, after: date, until: date) -> dict[int, int]:
    """Purchase occasions (distinct days) per customer in (after, until]."""
    sql = f"""
        SELECT customer_id, COUNT(DISTINCT day) FROM (
            SELECT p.customer_id, {_day_sql()} AS day FROM crm_purchase p
        ) t WHERE day > %s AND day <= %s GROUP BY customer_id
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [(after - EPOCH).days, (until - EPOCH).days])
        return dict(cursor.fetchall())


@contextmanager
def run_lock():
    """Hold the single CLV-run lock, or raise ClvRunAlreadyRunning."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
            if not cursor.fetchone()[0]:
                raise ClvRunAlreadyRunning("another CLV run is in progress")
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
    else:
        if not cache.add("clv-run-lock", "1", timeout=6 * 3600):
            raise ClvRunAlreadyRunning("another CLV run is in progress")
        try:
            yield
        finally:
            cache.delete("clv-run-lock")


def run_clv(
    *,
    as_of: date | None = None,
    horizon_months: int | None = None,
    discount_rate: float | None = None,
    margin: float | None = None,
    progress: Progress | None = None,
) -> ClvRun:
    """Run the CLV models over every customer and make the result current; returns the run."""
    say = progress or (lambda phase: None)
    as_of = as_of or timezone.localdate()
    run_settings = {
        "horizon_months": horizon_months or settings.CLV_HORIZON_MONTHS,
        "annual_discount_rate": settings.CLV_ANNUAL_DISCOUNT_RATE if discount_rate is None else discount_rate,
        "default_margin": settings.CLV_DEFAULT_MARGIN if margin is None else margin,
        "holdout_days": settings.CLV_HOLDOUT_DAYS,
        "model": settings.CLV_MODEL,
        "time_unit": "days",
    }
    with run_lock():
        run = ClvRun.objects.create(as_of=as_of, started_at=timezone.now(), settings=run_settings,
                                    model=run_settings["model"])
        try:
            _execute(run, run_settings, say)
        except Exception as exc:
            run_fail(run_id=run.pk, error=f"{type(exc).__name__}: {exc}")
            raise
    run.refresh_from_db()
    return run


class _Clock:
    """Seconds per phase, in the order the phases ran."""

    def __init__(self, say: Progress, timings: dict | None = None):
        self.say = say
        self.timings: dict[str, float] = dict(timings or {})
        self.last = time.perf_counter()

    def phase(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[f"{name}_seconds"] = round(now - self.last, 4)
        self.last = now
        self.say(name)


def _execute(run: ClvRun, run_settings: dict, say: Progress) -> None:
    clock = _Clock(say)
    source = summary_source(as_of=run.as_of)
    clock.phase("summary_check")
    summary = _read(source.name, run.as_of, run_settings["default_margin"])
    clock.phase("summary")
    total_value = float(summary.total_value.sum())
    margin_ratio = float(summary.total_margin.sum()) / total_value if total_value > 0 else run_settings["default_margin"]
    margin_ratio = min(max(margin_ratio, 0.0), 1.0)
    counts = {"customers": int(summary.customer_ids.size), "repeat_buyers": int((summary.frequency > 0).sum())}
    if summary.customer_ids.size == 0:
        raise ValueError("no purchases up to the as-of date: nothing to fit")
    score_settings = ScoreSettings(
        horizon_months=run_settings["horizon_months"], annual_discount_rate=run_settings["annual_discount_rate"],
        margin=margin_ratio, time_unit=run_settings["time_unit"],
    )
    fit_started = time.perf_counter()
    params, fit_diagnostics = engine.fit(
        summary.frequency, summary.recency, summary.T, summary.monetary, model=run_settings["model"],
        settings=score_settings,
    )
    detail = {"fit_seconds": round(time.perf_counter() - fit_started, 4)}
    score_started = time.perf_counter()
    scores = _score(params, summary)
    detail["score_seconds"] = round(time.perf_counter() - score_started, 4)
    clock.phase("fit_score")
    diagnostics = dict(fit_diagnostics)
    diagnostics["margin_ratio"] = margin_ratio
    diagnostics["summary_source"] = {"source": source.name, "reason": source.reason}
    diagnostics["holdout"] = _holdout(run.as_of, run_settings, source.name)
    clock.phase("holdout")
    diagnostics["phase_detail"] = detail

    with transaction.atomic():
        _write_values(run, summary, scores)
        clock.phase("write")
        _write_snapshots(run)
        clock.phase("aggregate")
        ClvRun.objects.filter(is_current=True).update(is_current=False)
        ClvRun.objects.filter(pk=run.pk).update(
            status=ClvRun.Status.SUCCEEDED, is_current=True, finished_at=timezone.now(), params=params,
            diagnostics=_jsonable(diagnostics), counts=counts, timings=clock.timings,
        )
        clock.phase("switch")
    ClvRun.objects.filter(pk=run.pk).update(timings=clock.timings)
    refresh_statistics(CustomerValue)


def _read(source: str, as_of: date, default_margin: float) -> CustomerSummary:
    if source == "lines":
        return summarise(as_of=as_of, default_margin=default_margin)
    return read_summary(source=source, as_of=as_of, default_margin=default_margin)


def _score(params: dict, summary: CustomerSummary) -> dict[str, np.ndarray]:
    return engine.score(
        params, summary.frequency, summary.recency, summary.T, summary.monetary,
        total_value=summary.total_value, historical_margin=summary.total_margin,
    )


def _holdout(as_of: date, run_settings: dict, source: str = "lines") -> dict:
    """Fit on history before as_of - holdout_days, predict the holdout period, compare with actual occasions.

    From the kept per-day rows in one pass when they are in step; else two passes over the lines.
    """
    days = run_settings["holdout_days"]
    calibration_end = as_of - timedelta(days=days)
    if source == "lines":
        cal = summarise(as_of=calibration_end, default_margin=run_settings["default_margin"])
        actual = holdout_counts(after=calibration_end, until=as_of)
        holdout = np.array([actual.get(int(c), 0) for c in cal.customer_ids], dtype=np.float64)
    else:
        cal, holdout = calibration_and_holdout(as_of=as_of, calibration_end=calibration_end)
    if int((cal.frequency > 0).sum()) < 20:
        return {"skipped": "fewer than 20 repeat buyers before the calibration date"}
    split = engine_holdout.CalibrationHoldout(calibration=cal, holdout_frequency=holdout, duration=float(days))
    report = engine_holdout.holdout_check(split, model=run_settings["model"])
    report["calibration_end"] = calibration_end.isoformat()
    return report


def _write_values(run: ClvRun, summary: CustomerSummary, scores: dict[str, np.ndarray]) -> int:
    def money(a: np.ndarray) -> np.ndarray:
        return np.round(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0), 2)

    n = summary.customer_ids.size
    return copy_arrays(CustomerValue, {
        "run_id": ("int8", np.full(n, run.pk, dtype=np.int64)),
        "customer_id": ("int8", summary.customer_ids),
        "clv": ("money", money(scores["clv"])),
        "p_alive": ("float8", np.clip(np.nan_to_num(scores["p_alive"]), 0.0, 1.0)),
        "expected_purchases": ("float8", np.nan_to_num(scores["expected_purchases"])),
        "expected_avg_value": ("money", money(scores["expected_value"])),
        "historical_value": ("money", money(scores["historical_value"])),
        "classic_value": ("money", money(scores["classic_clv"])),
        "frequency": ("int4", summary.frequency.astype(np.int32)),
        "recency": ("float8", summary.recency),
        "T": ("float8", summary.T),
    })


def run_fail(*, run_id: int, error: str) -> None:
    """Mark a running run failed and drop any values it wrote; the current run stays current."""
    with transaction.atomic():
        failed = ClvRun.objects.filter(pk=run_id, status=ClvRun.Status.RUNNING).update(
            status=ClvRun.Status.FAILED, finished_at=timezone.now(), error=error[:10_000]
        )
        if failed:
            CustomerValue.objects.filter(run_id=run_id).delete()


def _write_snapshots(run: ClvRun) -> None:
    """One row per owner: customers, total CLV and margin so far, customers at risk and the value at stake."""
    zero = Value(Decimal(0), output_field=DecimalField(max_digits=18, decimal_places=2))
    at_risk = Q(p_alive__lt=RISK_P_ALIVE)
    rows = (
        CustomerValue.objects.filter(run=run)
        .values("customer__owner")
        .annotate(
            n=Count("id"), clv_sum=Coalesce(Sum("clv"), zero), hist_sum=Coalesce(Sum("historical_value"), zero),
            risk_n=Count("id", filter=at_risk), risk_value=Coalesce(Sum("classic_value", filter=at_risk), zero),
        )
    )
    PortfolioSnapshot.objects.bulk_create(
        PortfolioSnapshot(
            run=run, owner_id=r["customer__owner"], customers=r["n"], total_clv=r["clv_sum"],
            total_historical=r["hist_sum"], at_risk_customers=r["risk_n"], value_at_risk=r["risk_value"],
        )
        for r in rows
    )


def _jsonable(value):
    """Plain JSON types (numpy scalars and arrays become floats and lists; NaN and inf become null)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


def run_summary(run: ClvRun) -> dict:
    """The run as JSON: parameters, diagnostics, timings (seconds), counts and settings."""
    return _jsonable({
        "id": run.pk, "status": run.status, "is_current": run.is_current, "as_of": run.as_of,
        "started_at": run.started_at, "finished_at": run.finished_at, "model": run.model,
        "time_unit_days": 1, "params": run.params, "diagnostics": run.diagnostics, "timings": run.timings,
        "counts": run.counts, "settings": run.settings, "error": run.error,
    })
