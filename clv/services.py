"""The CLV run: read the per-customer summary, fit once, score all, switch atomically.

Phases: summary check and summary (the kept per-customer summary of clv.summary, or, when it
is out of step, one aggregate over purchase lines), fit and score (clv.engine), holdout check
(fit on the history before a calibration date, compare with what happened after), write and
aggregate (values and per-owner snapshots, in the same transaction that makes the run
current). A failure marks the run failed and leaves the previous run current. A database
lock keeps two runs from overlapping.

With CLV_SHARDS > 1 scoring and writing are split into customer shards run by Celery
workers (score_shard); the model is fitted once, and the last step (finish_sharded_run)
writes the snapshots and switches the run current in one transaction. A failed shard fails
the run and the previous run stays current.
"""

from __future__ import annotations

import time
import warnings
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
    customer_range,
    read_summary,
    summary_from_columns,
    summary_source,
)
from crm.bulk import copy_arrays, fetch_arrays, refresh_statistics
from crm.webhooks.outbox import clv_run_completed

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


def summarise(*, as_of: date, default_margin: float, first_id: int = 0, end_id: int | None = None) -> CustomerSummary:
    """One aggregate over purchase lines up to the end of `as_of`: per customer RFM and margin so far.

    The floor a run is measured against, and its fallback when the kept summary is out of step.
    first_id / end_id restrict it to customers with first_id <= id < end_id (a scoring shard).
    """
    cutoff = (as_of - EPOCH).days
    ids_filter, ids_params = customer_range("p.customer_id", first_id, end_id)
    sql = f"""
        WITH days AS (
            SELECT p.customer_id, {_day_sql()} AS day, SUM(p.amount) AS value,
                   SUM(p.amount - p.quantity * COALESCE(p.unit_cost, pr.unit_cost, p.unit_price * %s)) AS margin
            FROM crm_purchase p LEFT JOIN crm_product pr ON pr.id = p.product_id
            WHERE {ids_filter}
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
    columns = fetch_arrays(sql, [1 - default_margin, *ids_params, cutoff, cutoff], ["int8"] + ["float8"] * 6)
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
    shards: int | None = None,
    progress: Progress | None = None,
) -> ClvRun:
    """Run the CLV models over every customer and make the result current; returns the run.

    With shards > 1 (default CLV_SHARDS) scoring and writing go to Celery workers: the run is
    returned still running unless tasks run in-process (no broker), where it has finished.
    """
    say = progress or (lambda phase: None)
    as_of = as_of or timezone.localdate()
    run_settings = {
        "horizon_months": horizon_months or settings.CLV_HORIZON_MONTHS,
        "annual_discount_rate": settings.CLV_ANNUAL_DISCOUNT_RATE if discount_rate is None else discount_rate,
        "default_margin": settings.CLV_DEFAULT_MARGIN if margin is None else margin,
        "holdout_days": settings.CLV_HOLDOUT_DAYS,
        "model": settings.CLV_MODEL,
        "time_unit": "days",
        "shards": max(1, settings.CLV_SHARDS if shards is None else int(shards)),
    }
    with run_lock():
        _refuse_while_shards_score()
        run = ClvRun.objects.create(as_of=as_of, started_at=timezone.now(), settings=run_settings,
                                    model=run_settings["model"])
        try:
            _execute(run, run_settings, say)
        except Exception as exc:
            run_fail(run_id=run.pk, error=f"{type(exc).__name__}: {exc}")
            raise
    run.refresh_from_db()
    return run


def _refuse_while_shards_score() -> None:
    """A sharded run outlives the lock (its shards run on workers): it blocks new runs until done or timed out."""
    now = timezone.now()
    running = ClvRun.objects.filter(status=ClvRun.Status.RUNNING, settings__shards__gt=1)
    cutoff = now - timedelta(minutes=settings.CLV_RUN_TIMEOUT_MINUTES)
    for stale in running.filter(started_at__lt=cutoff).values_list("pk", flat=True):
        run_fail(run_id=stale, error=f"abandoned: its shards did not finish within {settings.CLV_RUN_TIMEOUT_MINUTES} min")
    if running.filter(started_at__gte=cutoff).exists():
        raise ClvRunAlreadyRunning("another CLV run is in progress (its shards are still scoring)")


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
    sharded = _shards_possible(run_settings)
    scores = None
    if not sharded:
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

    if sharded:
        ranges = shard_ranges(summary.customer_ids, run_settings["shards"])
        diagnostics["shards"] = {"ranges": ranges}
        ClvRun.objects.filter(pk=run.pk).update(
            params=params, diagnostics=_jsonable(diagnostics), counts=counts, timings=clock.timings
        )
        _dispatch_shards(run, ranges)
        return
    if run_settings["shards"] > 1:
        diagnostics["shards"] = {"ranges": [], "note": "no Celery result backend: scored in-process"}
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
        clv_run_completed(run_id=run.pk)  # webhooks: sent once this commits
        clock.phase("switch")
    ClvRun.objects.filter(pk=run.pk).update(timings=clock.timings)
    refresh_statistics(CustomerValue)


def _read(source: str, as_of: date, default_margin: float, first_id: int = 0, end_id: int | None = None):
    if source == "lines":
        return summarise(as_of=as_of, default_margin=default_margin, first_id=first_id, end_id=end_id)
    return read_summary(source=source, as_of=as_of, default_margin=default_margin, first_id=first_id, end_id=end_id)


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


# ---------------------------------------------------------------------------------------------
# Sharded scoring: the run above fits once and hands customer id ranges to Celery workers.


def shard_ranges(customer_ids: np.ndarray, shards: int) -> list[list[int | None]]:
    """Split customers into `shards` id ranges [first_id, end_id) of about equal size.

    The first range starts at 0 and the last has no end, so a customer who appears while the
    shards run is scored too.
    """
    n = int(customer_ids.size)
    cuts = sorted({int(customer_ids[(i * n) // shards]) for i in range(1, shards) if 0 < (i * n) // shards < n})
    bounds = [0, *[c for c in cuts if c > 0]]
    return [[lo, bounds[i + 1] if i + 1 < len(bounds) else None] for i, lo in enumerate(bounds)]


def _shards_possible(run_settings: dict) -> bool:
    """Sharding needs a result backend (the chord counts finished shards) unless tasks run in-process."""
    if run_settings["shards"] <= 1:
        return False
    from config.celery import app

    return bool(app.conf.task_always_eager or app.conf.result_backend)


def _dispatch_shards(run: ClvRun, ranges: list[list[int | None]]) -> None:
    """One score_shard task per range, then finish_sharded_run; any failure calls fail_sharded_run."""
    from celery import chord
    from celery.exceptions import CPendingDeprecationWarning

    from clv import tasks

    header = [tasks.score_shard_task.si(run_id=run.pk, shard=i, first_id=lo, end_id=hi)
              for i, (lo, hi) in enumerate(ranges)]
    body = tasks.finish_sharded_run_task.s(run_id=run.pk)
    work = chord(header, body)
    with warnings.catch_warnings():
        # The error callback on the chord's body hears of any failed shard, which is what we need;
        # Celery's planned change (linking it to every shard as well) is announced with this warning.
        warnings.simplefilter("ignore", CPendingDeprecationWarning)
        work.on_error(tasks.fail_sharded_run_task.s(run_id=run.pk))
    work.apply_async()


def score_shard(*, run_id: int, shard: int, first_id: int, end_id: int | None) -> dict:
    """Score one customer range of a running run with its fitted parameters and write its values.

    Safe to run twice (a redelivered task): the range's rows of this run are replaced.
    """
    started = time.perf_counter()
    run = ClvRun.objects.get(pk=run_id)
    if run.status != ClvRun.Status.RUNNING:
        return {"shard": shard, "skipped": f"run {run_id} is {run.status}"}
    source = run.diagnostics["summary_source"]["source"]
    summary = _read(source, run.as_of, run.settings["default_margin"], first_id=first_id, end_id=end_id)
    read_seconds = time.perf_counter() - started
    scores = _score(run.params, summary)
    score_seconds = time.perf_counter() - started - read_seconds
    with transaction.atomic():
        if not _still_running(run_id):  # failed meanwhile (another shard): write nothing
            return {"shard": shard, "skipped": f"run {run_id} stopped while this shard scored"}
        mine = CustomerValue.objects.filter(run_id=run_id, customer_id__gte=first_id)
        if end_id is not None:
            mine = mine.filter(customer_id__lt=end_id)
        mine.delete()
        written = _write_values(run, summary, scores)
    return {
        "shard": shard, "first_id": first_id, "end_id": end_id, "customers": written,
        "read_seconds": round(read_seconds, 4), "score_seconds": round(score_seconds, 4),
        "write_seconds": round(time.perf_counter() - started - read_seconds - score_seconds, 4),
    }


def _still_running(run_id: int) -> bool:
    """Is the run still running? Holds a share lock on it until commit, so run_fail (which deletes the
    values of a failed run) waits for this shard's write and then deletes it too."""
    if connection.vendor != "postgresql":
        return ClvRun.objects.filter(pk=run_id, status=ClvRun.Status.RUNNING).exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT status FROM clv_clvrun WHERE id = %s FOR SHARE", [run_id])
        row = cursor.fetchone()
    return row is not None and row[0] == ClvRun.Status.RUNNING


def finish_sharded_run(*, run_id: int, shard_results: list[dict]) -> bool:
    """Every shard has written: write the snapshots and make the run current, in one transaction.

    Returns True when this call switched the run current (False: it was no longer running).
    """
    with transaction.atomic():
        run = ClvRun.objects.select_for_update().get(pk=run_id)
        if run.status != ClvRun.Status.RUNNING:
            return False
        clock = _Clock(lambda phase: None, run.timings)
        ranges = run.diagnostics.get("shards", {}).get("ranges", [])
        done = [r for r in shard_results if "customers" in r]
        written = CustomerValue.objects.filter(run_id=run_id).count()
        if len(done) != len(ranges) or written != sum(r["customers"] for r in done):
            raise RuntimeError(f"{len(done)} of {len(ranges)} shards wrote {written:,} values: not switching")
        clock.timings["shards_seconds"] = round((timezone.now() - run.started_at).total_seconds()
                                                - sum(clock.timings.values()), 4)
        clock.last = time.perf_counter()
        _write_snapshots(run)
        clock.phase("aggregate")
        diagnostics = dict(run.diagnostics)
        diagnostics["shards"] = {"ranges": ranges, "results": sorted(done, key=lambda r: r["shard"])}
        counts = dict(run.counts, customers=written)
        ClvRun.objects.filter(is_current=True).update(is_current=False)
        ClvRun.objects.filter(pk=run_id).update(
            status=ClvRun.Status.SUCCEEDED, is_current=True, finished_at=timezone.now(),
            diagnostics=_jsonable(diagnostics), counts=counts, timings=clock.timings,
        )
        clv_run_completed(run_id=run_id)  # webhooks: sent once this commits
        clock.phase("switch")
    ClvRun.objects.filter(pk=run_id).update(timings=clock.timings)
    refresh_statistics(CustomerValue)
    return True


def run_fail(*, run_id: int, error: str) -> None:
    """Mark a running run failed and drop any values its shards wrote; the current run stays current."""
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
