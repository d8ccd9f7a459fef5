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
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, DecimalField, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from threadpoolctl import threadpool_limits

from clv import contracts, engine
from clv.engine import bgbb as engine_bgbb
from clv.engine import gammagamma as engine_gammagamma
from clv.engine import holdout as engine_holdout
from clv.engine.outliers import SPEND_OUTLIER_MADS, cap_spend, spend_bounds, spend_fit_monetary
from clv.engine.pipeline import MIN_SPEND_CUSTOMERS, ScoreSettings
from clv.engine.summary import CustomerSummary
from clv.models import ClvRun, CustomerValue, HoldingValue, PortfolioSnapshot
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


LOCK_POLL_SECONDS = 0.2
# How often the server checks that the client of a run's session is still there, even while
# that session waits for a lock or runs a long query: a killed worker's session then ends
# (and lets go of the run lock) within about this long, not when its query finally ends.
CLIENT_CHECK_INTERVAL = "1s"
ABANDONED = "abandoned"  # how the error of a run whose worker died begins


@contextmanager
def run_lock(wait_seconds: float | None = None):
    """Hold the single CLV-run lock, or raise ClvRunAlreadyRunning after waiting `wait_seconds`
    (default CLV_RUN_LOCK_WAIT_SECONDS) for it.

    PostgreSQL: a session advisory lock, held by the run's connection; it goes when that
    session ends, so a worker that dies cannot keep it. Elsewhere: a cache key.
    """
    wait = settings.CLV_RUN_LOCK_WAIT_SECONDS if wait_seconds is None else wait_seconds
    deadline = time.monotonic() + wait
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            if connection.pg_version >= 140000:
                cursor.execute(f"SET client_connection_check_interval = '{CLIENT_CHECK_INTERVAL}'")
            while True:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
                if cursor.fetchone()[0]:
                    break
                if time.monotonic() >= deadline:
                    raise ClvRunAlreadyRunning("another CLV run is in progress")
                time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            _unlock()
    else:
        while not cache.add("clv-run-lock", "1", timeout=6 * 3600):
            if time.monotonic() >= deadline:
                raise ClvRunAlreadyRunning("another CLV run is in progress")
            time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            cache.delete("clv-run-lock")


def _unlock() -> None:
    """Let go of the advisory lock; when the connection was lost, the lock went with its session."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
    except DatabaseError:
        if not connection.in_atomic_block:
            connection.close()


def _usable_connection() -> None:
    """Replace the connection if the server ended it (terminated, restarted, failed over), so a
    failure can still be recorded; inside a transaction there is nothing to replace."""
    if connection.in_atomic_block or connection.connection is None:
        return
    if not connection.is_usable():
        connection.close()  # the next query opens a new one


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
        "period_days": settings.CLV_PERIOD_DAYS,
        "choice_sample": settings.CLV_CHOICE_SAMPLE,
        "interval_draws": settings.CLV_INTERVAL_DRAWS,
        "blas_threads": settings.CLV_BLAS_THREADS,
        "time_unit": "days",
        "shards": max(1, settings.CLV_SHARDS if shards is None else int(shards)),
    }
    with run_lock():
        _fail_lockless_runs()
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


def runs_fail_abandoned() -> list[int]:
    """Mark failed every running run that no worker is working on any more; returns their ids.

    A run that is not scoring on shards holds the run lock for as long as it lives, so while
    the lock is free such a run is dead (its worker was killed; the server ended its session
    and the lock with it). A sharded run whose shards score on workers is abandoned after
    CLV_RUN_TIMEOUT_MINUTES. Cheap and safe at any time: the runs page, Recompute now, a
    new run and a task every few minutes call it.
    """
    failed = _fail_timed_out_shards()
    if ClvRun.objects.filter(status=ClvRun.Status.RUNNING).exists():
        try:
            with run_lock(wait_seconds=0):
                failed += _fail_lockless_runs()
        except ClvRunAlreadyRunning:
            pass  # a run holds the lock: it is alive
    return failed


def _scoring_on_shards(run_settings: dict, diagnostics: dict) -> bool:
    """Has the run handed its shards to workers (and let go of the lock)?"""
    return (run_settings or {}).get("shards", 1) > 1 and bool((diagnostics or {}).get("shards", {}).get("ranges"))


def _fail_lockless_runs() -> list[int]:
    """With the run lock held: every running run that is not scoring on shards has lost its worker."""
    running = ClvRun.objects.filter(status=ClvRun.Status.RUNNING).values_list("pk", "settings", "diagnostics")
    dead = [pk for pk, run_settings, diagnostics in running if not _scoring_on_shards(run_settings, diagnostics)]
    for pk in dead:
        run_fail(run_id=pk, error=f"{ABANDONED}: its worker stopped during the run (the run lock was no longer held)")
    return dead


def _fail_timed_out_shards() -> list[int]:
    cutoff = timezone.now() - timedelta(minutes=settings.CLV_RUN_TIMEOUT_MINUTES)
    stale = list(ClvRun.objects.filter(status=ClvRun.Status.RUNNING, settings__shards__gt=1, started_at__lt=cutoff)
                 .values_list("pk", flat=True))
    for pk in stale:
        run_fail(run_id=pk, error=f"{ABANDONED}: its shards did not finish within {settings.CLV_RUN_TIMEOUT_MINUTES} min")
    return stale


def worker_losses_in_a_row() -> int:
    """How many of the latest runs, started within CLV_RUN_TIMEOUT_MINUTES, lost their worker, in a row."""
    since = timezone.now() - timedelta(minutes=settings.CLV_RUN_TIMEOUT_MINUTES)
    losses = 0
    for status, error in ClvRun.objects.filter(started_at__gte=since).order_by("-started_at", "-pk").values_list(
        "status", "error"
    ):
        if status != ClvRun.Status.FAILED or not error.startswith(f"{ABANDONED}: its worker"):
            break
        losses += 1
    return losses


def _refuse_while_shards_score() -> None:
    """A sharded run outlives the lock (its shards run on workers): it blocks new runs until done or timed out."""
    _fail_timed_out_shards()
    if ClvRun.objects.filter(status=ClvRun.Status.RUNNING, settings__shards__gt=1).exists():
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
    bounds = spend_bounds(summary)
    summary, historical, capped = _spend_bounded(summary, bounds)
    total_value = float(summary.total_value.sum())
    margin_ratio = float(summary.total_margin.sum()) / total_value if total_value > 0 else run_settings["default_margin"]
    margin_ratio = min(max(margin_ratio, 0.0), 1.0)
    counts = {"customers": int(summary.customer_ids.size), "repeat_buyers": int((summary.frequency > 0).sum())}
    if summary.customer_ids.size == 0:
        raise ValueError("no purchases up to the as-of date: nothing to fit")
    score_settings = ScoreSettings(
        horizon_months=run_settings["horizon_months"], annual_discount_rate=run_settings["annual_discount_rate"],
        margin=margin_ratio, time_unit=run_settings["time_unit"], interval_draws=run_settings["interval_draws"],
    )
    sharded = _shards_possible(run_settings)
    with blas_threads(run_settings["blas_threads"]):
        if run_settings["model"] == "bgbb":
            params, diagnostics, scores, detail = _fit_score_bgbb(run, summary, score_settings, run_settings)
            clock.phase("fit_score")
        else:
            choice = _holdout(run.as_of, run_settings, source.name)
            clock.phase("holdout")
            params, diagnostics, scores, detail = _fit_score_chosen(
                summary, score_settings, choice, sharded, capped=capped, historical=historical,
            )
            clock.phase("fit_score")
    run.model = params["purchase_model"]
    diagnostics["margin_ratio"] = margin_ratio
    diagnostics["spend_outliers"] = {
        "rule": f"average value per purchase occasion above exp(median + {SPEND_OUTLIER_MADS:g} x spread) of "
                "log values (spread: scaled median absolute deviation); left out of the spend fit and, in the "
                "scores, given the highest value per occasion below the threshold",
        "threshold": bounds and bounds[0], "capped_to": bounds and bounds[1], "customers": int(capped.sum()),
        "customer_ids": [int(c) for c in summary.customer_ids[capped][:20]],
    }
    diagnostics["summary_source"] = {"source": source.name, "reason": source.reason}
    diagnostics["phase_detail"] = detail

    if sharded:
        ranges = shard_ranges(summary.customer_ids, run_settings["shards"])
        diagnostics["shards"] = {"ranges": ranges}
        ClvRun.objects.filter(pk=run.pk).update(
            params=params, diagnostics=_jsonable(diagnostics), counts=counts, timings=clock.timings, model=run.model
        )
        _dispatch_shards(run, ranges)
        return
    if run_settings["shards"] > 1:
        diagnostics["shards"] = {"ranges": [], "note": "no Celery result backend: scored in-process"}
    diagnostics["totals"] = value_totals(scores)
    with transaction.atomic():
        _write_values(run, summary, scores)
        clock.phase("write")
        diagnostics["contracts"] = _contract_phase(run, run_settings, counts)
        clock.phase("contracts")
        _write_snapshots(run)
        clock.phase("aggregate")
        ClvRun.objects.filter(is_current=True).update(is_current=False)
        ClvRun.objects.filter(pk=run.pk).update(
            status=ClvRun.Status.SUCCEEDED, is_current=True, finished_at=timezone.now(), params=params,
            diagnostics=_jsonable(diagnostics), counts=counts, timings=clock.timings, model=run.model,
        )
        clv_run_completed(run_id=run.pk)  # webhooks: sent once this commits
        clock.phase("switch")
    ClvRun.objects.filter(pk=run.pk).update(timings=clock.timings)
    refresh_statistics(CustomerValue)


def _read(source: str, as_of: date, default_margin: float, first_id: int = 0, end_id: int | None = None):
    if source == "lines":
        return summarise(as_of=as_of, default_margin=default_margin, first_id=first_id, end_id=end_id)
    return read_summary(source=source, as_of=as_of, default_margin=default_margin, first_id=first_id, end_id=end_id)


def _score(params: dict, summary: CustomerSummary, historical_margin: np.ndarray | None = None) -> dict[str, np.ndarray]:
    return engine.score(
        params, summary.frequency, summary.recency, summary.T, summary.monetary,
        total_value=summary.total_value,
        historical_margin=summary.total_margin if historical_margin is None else historical_margin,
    )


def _spend_bounded(
    summary: CustomerSummary, bounds: tuple[float, float] | None
) -> tuple[CustomerSummary, np.ndarray | None, np.ndarray]:
    """The summary with implausible spend capped (clv.engine.outliers) for the scores; the margin so
    far as recorded (shown as historical value); the mask of the customers capped."""
    bounded, capped = cap_spend(summary, bounds)
    return bounded, summary.total_margin, capped


def _holdout(as_of: date, run_settings: dict, source: str = "lines") -> dict:
    """Fit the candidates on history before as_of - holdout_days, score them on the holdout period, pick one.

    From the kept per-day rows in one pass when they are in step (with each customer's
    inter-purchase times, which MBG/CNBD-k needs); else two passes over the lines (and
    MBG/CNBD-k sits out). With CLV_MODEL = "auto" every candidate competes
    (engine.holdout.compare_purchase_models); with a model named, only it is checked.
    Returns the report the run stores as diagnostics["holdout"], with "model" the one to use.
    """
    days = run_settings["holdout_days"]
    calibration_end = as_of - timedelta(days=days)
    litt = None
    if source == "lines":
        cal = summarise(as_of=calibration_end, default_margin=run_settings["default_margin"])
        actual = holdout_counts(after=calibration_end, until=as_of)
        holdout = np.array([actual.get(int(c), 0) for c in cal.customer_ids], dtype=np.float64)
    else:
        cal, holdout = calibration_and_holdout(as_of=as_of, calibration_end=calibration_end)
        litt = cal.litt
    wanted = run_settings["model"]
    fallback = "bgnbd" if wanted == "auto" else wanted
    if int((cal.frequency > 0).sum()) < 20:
        return {"skipped": "fewer than 20 repeat buyers before the calibration date", "model": fallback}
    split = engine_holdout.CalibrationHoldout(calibration=cal, holdout_frequency=holdout, duration=float(days))
    candidates = engine_holdout.CHOICE_MODELS if wanted == "auto" else (wanted,)
    comparison = engine_holdout.compare_purchase_models(
        split, candidates=candidates, litt=litt, sample_size=run_settings["choice_sample"],
        interval_draws=run_settings["interval_draws"],
    )
    selected = comparison["selected"]
    chosen = comparison["candidates"][selected]
    return {
        "model": selected, "params": chosen["params"], "mae": chosen["mae"], "rmse": chosen["rmse"],
        "total_predicted": chosen["total_predicted"], "total_actual": comparison["total_actual"],
        "naive_mae": comparison["naive"]["mae"], "mae_ratio_to_naive": comparison["mae_ratio_to_naive"],
        "interval_coverage": comparison["interval_coverage"], "holdout_duration": float(days),
        "n_customers": comparison["n_customers"], "by_calibration_frequency": chosen["by_calibration_frequency"],
        "calibration_end": calibration_end.isoformat(), "comparison": comparison,
    }


# ---------------------------------------------------------------------------------------------
# Fitting and scoring the purchase models (non-contractual part of a customer's value)


@contextmanager
def blas_threads(limit: int | None):
    """Pin BLAS/OpenMP threads for the fit and scoring (None or < 1: leave the library defaults)."""
    if not limit or limit < 1:
        yield
        return
    with threadpool_limits(limits=int(limit)):
        yield


def _fit_score_chosen(
    summary: CustomerSummary, score_settings: ScoreSettings, choice: dict, sharded: bool,
    *, capped: np.ndarray | None = None, historical: np.ndarray | None = None,
):
    """Refit the model the holdout chose on everyone's full history; score everyone (unless shards will)."""
    model = choice["model"]
    k = int(choice["params"]["k"]) if model == "mbgcnbd" and "params" in choice else None
    if model == "mbgcnbd" and k is None:
        model = "mbgnbd"  # no regularity could be chosen (holdout skipped): MBG/CNBD-1 is MBG/NBD
    fit_started = time.perf_counter()
    params, fit_diagnostics = engine.fit(
        summary.frequency, summary.recency, summary.T,
        summary.monetary if capped is None else spend_fit_monetary(summary, capped), model=model,
        settings=score_settings, k=k,
    )
    detail = {"fit_seconds": round(time.perf_counter() - fit_started, 4)}
    scores = None
    if not sharded:
        score_started = time.perf_counter()
        scores = _score(params, summary, historical)
        detail["score_seconds"] = round(time.perf_counter() - score_started, 4)
    diagnostics = dict(fit_diagnostics)
    diagnostics["holdout"] = choice
    return params, diagnostics, scores, detail


def _fit_score_bgbb(run: ClvRun, summary: CustomerSummary, score_settings: ScoreSettings, run_settings: dict):
    """BG/BB on whole periods of period_days from each customer's first purchase (one opportunity per period)."""
    if run_settings["shards"] > 1:
        raise ValueError("BG/BB runs score in one process: set shards to 1")
    started = time.perf_counter()
    period = float(run_settings["period_days"])
    cutoff = (run.as_of - EPOCH).days
    cust, day = purchase_days(as_of=run.as_of)
    position = np.searchsorted(summary.customer_ids, cust)
    first = (summary.first_purchase - np.datetime64(EPOCH, "D")).astype(np.int64)
    x, t_x, n = engine_bgbb.period_summary(first, position, day, cutoff, period)
    fitted = engine_bgbb.fit(x, t_x, n)
    p = fitted.params
    alive = engine_bgbb.probability_alive(p, x, t_x, n)
    periods = max(1, int(round(score_settings.horizon_months * 30.4375 / period)))
    per_period = (1.0 + score_settings.annual_discount_rate) ** (period / 365.25) - 1.0
    cumulative = np.array([engine_bgbb.conditional_expected_purchases(p, i, x, t_x, n) for i in range(periods + 1)])
    factors = (1.0 + per_period) ** -np.arange(1, periods + 1, dtype=np.float64)
    value, spend, spend_diag = _spend(summary)
    margin = score_settings.margin
    dert = engine_bgbb.discounted_expected_residual_purchases(p, per_period, x, t_x, n)
    nan = np.full(x.size, np.nan)
    scores = {
        "p_alive": alive, "expected_purchases": cumulative[-1], "expected_value": value,
        "horizon_value": margin * value * (factors @ np.diff(cumulative, axis=0)), "dert": dert,
        "clv": margin * value * dert, "expected_purchases_low": nan, "expected_purchases_high": nan,
        "horizon_value_low": nan, "horizon_value_high": nan, "clv_low": nan, "clv_high": nan,
        "historical_value": summary.total_margin, "classic_clv": nan,
    }
    params = {"purchase_model": "bgbb", "purchase": p.to_dict(), "spend": spend, "settings": score_settings.to_dict(),
              "period_days": period, "horizon_periods": periods}
    diagnostics = {"purchase": fitted.diagnostics.to_dict(), "spend": spend_diag,
                   "n_customers_total": int(x.size), "n_customers_fitted": int(x.size), "sampled": False,
                   "holdout": {"skipped": "BG/BB runs are not compared on the holdout window", "model": "bgbb"}}
    return params, diagnostics, scores, {"fit_seconds": round(time.perf_counter() - started, 4)}


def _spend(summary: CustomerSummary):
    """Expected value per purchase: Gamma-Gamma when enough repeat buyers, else each one's own mean."""
    x, m = summary.frequency, summary.monetary
    repeat = (x > 0) & (m > 0)
    if repeat.sum() >= MIN_SPEND_CUSTOMERS:
        fitted = engine_gammagamma.fit(x, m)
        value = engine_gammagamma.conditional_expected_value(fitted.params, x, m)
        return value, {"model": "gammagamma", **fitted.params.to_dict()}, fitted.diagnostics.to_dict()
    mean = float(m[repeat].mean()) if repeat.any() else 0.0
    return np.where(x > 0, m, mean), {"model": "empirical", "mean": mean}, {"model": "empirical"}


def purchase_days(*, as_of: date) -> tuple[np.ndarray, np.ndarray]:
    """(customer id, day number since 1970-01-01) of every purchase occasion up to as_of, from the kept per-day rows."""
    if connection.vendor == "postgresql":
        sql = "SELECT customer_id, CAST(day - DATE '1970-01-01' AS bigint) FROM clv_purchaseday WHERE day <= %s"
        return fetch_arrays(sql, [as_of], ["int8", "int8"])
    with connection.cursor() as cursor:
        cursor.execute("SELECT customer_id, day FROM clv_purchaseday WHERE day <= %s", [as_of])
        rows = cursor.fetchall()
    cust = np.array([r[0] for r in rows], dtype=np.int64)
    day = np.array([(date.fromisoformat(str(r[1])) - EPOCH).days for r in rows], dtype=np.int64)
    return cust, day


def value_totals(scores: dict[str, np.ndarray]) -> dict:
    """The run's totals of the whole-relationship CLV and the horizon's value (and their intervals' ends)."""
    return {name: float(np.nansum(scores[name])) for name in
            ("clv", "horizon_value", "clv_low", "clv_high", "dert", "expected_purchases")}


def _write_values(run: ClvRun, summary: CustomerSummary, scores: dict[str, np.ndarray]) -> int:
    def money(a: np.ndarray) -> np.ndarray:
        return np.round(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0), 2)

    interval_columns = ("expected_purchases_low", "expected_purchases_high", "horizon_value_low",
                        "horizon_value_high", "clv_low", "clv_high")
    no_intervals = not np.isfinite(scores["expected_purchases_low"]).any()

    n = summary.customer_ids.size
    written = copy_arrays(CustomerValue, {
        "run_id": ("int8", np.full(n, run.pk, dtype=np.int64)),
        "customer_id": ("int8", summary.customer_ids),
        "clv": ("money", money(scores["clv"])),
        "horizon_value": ("money", money(scores["horizon_value"])),
        "dert": ("float8", np.nan_to_num(scores["dert"])),
        "expected_purchases_low": ("float8", np.nan_to_num(scores["expected_purchases_low"])),
        "expected_purchases_high": ("float8", np.nan_to_num(scores["expected_purchases_high"])),
        "horizon_value_low": ("money", money(scores["horizon_value_low"])),
        "horizon_value_high": ("money", money(scores["horizon_value_high"])),
        "clv_low": ("money", money(scores["clv_low"])),
        "clv_high": ("money", money(scores["clv_high"])),
        "p_alive": ("float8", np.clip(np.nan_to_num(scores["p_alive"]), 0.0, 1.0)),
        "expected_purchases": ("float8", np.nan_to_num(scores["expected_purchases"])),
        "expected_avg_value": ("money", money(scores["expected_value"])),
        "historical_value": ("money", money(scores["historical_value"])),
        "classic_value": ("money", money(scores["classic_clv"])),
        "frequency": ("int4", summary.frequency.astype(np.int32)),
        "recency": ("float8", summary.recency),
        "T": ("float8", summary.T),
    })
    if no_intervals:  # a model without intervals (BG/BB): NULL, not zero (the bulk COPY writes no NULLs)
        CustomerValue.objects.filter(run_id=run.pk).update(**dict.fromkeys(interval_columns))
    return written


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
    outliers = run.diagnostics.get("spend_outliers", {})
    bounds = (outliers["threshold"], outliers["capped_to"]) if outliers.get("threshold") else None
    summary, historical, _ = _spend_bounded(summary, bounds)
    read_seconds = time.perf_counter() - started
    with blas_threads(run.settings.get("blas_threads")):
        scores = _score(run.params, summary, historical)
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
        "totals": value_totals(scores),
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
        counts = dict(run.counts, customers=written)
        contract_report = _contract_phase(run, run.settings, counts)
        clock.phase("contracts")
        _write_snapshots(run)
        clock.phase("aggregate")
        diagnostics = dict(run.diagnostics, contracts=contract_report)
        diagnostics["shards"] = {"ranges": ranges, "results": sorted(done, key=lambda r: r["shard"])}
        diagnostics["totals"] = {name: sum(r.get("totals", {}).get(name, 0.0) for r in done)
                                 for name in ("clv", "horizon_value", "clv_low", "clv_high", "dert",
                                              "expected_purchases")}
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


def _contract_phase(run: ClvRun, run_settings: dict, counts: dict) -> dict:
    """Subscriptions (clv.contracts): fit renewal histories, value each active contract, add the
    contract values to the customers' CLV. Runs inside the transaction that makes the run current,
    after the customer values are written and before the snapshots sum them."""
    report = contracts.contract_phase(
        run=run, annual_discount_rate=run_settings["annual_discount_rate"],
        default_margin=run_settings["default_margin"],
    )
    counts["holdings_valued"] = report["holdings_valued"]
    counts["contract_only_customers"] = report.get("contract_only_customers", 0)
    return report


def run_fail(*, run_id: int, error: str) -> None:
    """Mark a running run failed and drop any values its shards wrote; the current run stays current.

    Works after the run lost its database connection (it opens a new one), so a run is never
    left `running` by the failure it records.
    """
    _usable_connection()
    with transaction.atomic():
        failed = ClvRun.objects.filter(pk=run_id, status=ClvRun.Status.RUNNING).update(
            status=ClvRun.Status.FAILED, finished_at=timezone.now(), error=error[:10_000]
        )
        if failed:
            CustomerValue.objects.filter(run_id=run_id).delete()
            HoldingValue.objects.filter(run_id=run_id).delete()


def _write_snapshots(run: ClvRun) -> None:
    """One row per owner: customers, total CLV and margin so far, customers at risk and their CLV (value at risk).

    Value at risk is the part of the portfolio's CLV carried by at-risk customers, so it can never
    exceed the portfolio (total_clv).
    """
    from crm.selectors.values import clv_field  # noqa: PLC0415 - the one name of the CLV field
    zero = Value(Decimal(0), output_field=DecimalField(max_digits=18, decimal_places=2))
    at_risk = Q(p_alive__lt=RISK_P_ALIVE)
    rows = (
        CustomerValue.objects.filter(run=run)
        .values("customer__owner")
        .annotate(
            n=Count("id"), clv_sum=Coalesce(Sum(clv_field()), zero), hist_sum=Coalesce(Sum("historical_value"), zero),
            risk_n=Count("id", filter=at_risk), risk_value=Coalesce(Sum(clv_field(), filter=at_risk), zero),
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
