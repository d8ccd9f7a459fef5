"""Manager pages: the dashboard (with CSV export of each table), analytics and the CLV run history."""

from __future__ import annotations

import csv
import logging
import threading
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib import messages
from django.db import connection
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.views.decorators.http import require_GET, require_POST

from clv import renewals
from crm.exports import spreadsheet_safe
from crm.forms import DashboardFilterForm
from crm.models import Opportunity
from crm.selectors import dashboard as dash
from crm.selectors.values import clv_ready
from crm.templatetags.crm_ui import day, format_number, format_percent, signed_percent
from crm.views.access import manager_required

log = logging.getLogger(__name__)

# How long a run counts as "still running" before a new recompute may be queued anyway.
STALE_RUN_AFTER = timedelta(hours=3)
PROGRESS_POLL = "every 2s"


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@manager_required
@require_GET
def dashboard(request):
    scope = dash.dashboard_scope(
        request.user, team_id=_int(request.GET.get("team")), salesperson_id=_int(request.GET.get("salesperson"))
    )
    form = DashboardFilterForm(request.GET or None, teams=scope.teams, people=scope.people)
    context = dash.dashboard(request.user, scope)
    context.update(renewals.renewals_card(request.user, owner_ids=scope.owner_ids))
    export = request.GET.get("export")
    if export == "movers" and context.get("run") is not None:
        context["movers"] = dash.biggest_movers(request.user, context["run"], scope.owner_ids)
    if export:
        return _export_csv(export, context)
    context["form"] = form
    context["charts"] = _chart_data(context)
    from crm.selectors.workspace import team_overdue

    context["team_overdue"] = team_overdue(request.user)
    return render(request, "crm/dashboard.html", context)


@manager_required
@require_GET
def dashboard_movers(request):
    """The biggest movers of the dashboard's scope, loaded by the page after it is shown (one heavier join)."""
    scope = dash.dashboard_scope(
        request.user, team_id=_int(request.GET.get("team")), salesperson_id=_int(request.GET.get("salesperson"))
    )
    run = dash.current_run()
    movers = dash.biggest_movers(request.user, run, scope.owner_ids) if run is not None else []
    return render(request, "crm/partials/movers.html", {"movers": movers, "run": run})


def _chart_data(context) -> dict:
    """The numbers the charts draw, passed to the page with json_script (never as HTML)."""
    by_rep = context.get("by_salesperson") or []
    pipeline = context.get("pipeline") or []
    statuses = [s for s, _ in Opportunity.Status.choices if any(r["status"] == s for r in pipeline)]
    kinds = [(k, label) for k, label in Opportunity.Kind.choices if any(r["kind"] == k for r in pipeline)]
    by_key = {(r["kind"], r["status"]): round(float(r["expected_value"] or 0), 2) for r in pipeline}
    trend = context.get("trend") or []
    return {
        "currency": settings.CRM_CURRENCY,
        "pipeline": {
            "labels": [Opportunity.Status(s).label.split(" (")[0] for s in statuses],
            "datasets": [
                {"label": label, "values": [by_key.get((k, s), 0.0) for s in statuses]} for k, label in kinds
            ],
        },
        "trend": {
            "labels": [trend_label(p) for p in trend],
            "values": [round(float(p.get("total_clv") or 0), 2) for p in trend],
        },
        "by_salesperson": {
            "labels": [str(r.owner) for r in by_rep],
            "values": [round(float(r.total_clv or 0), 2) for r in by_rep],
        },
        "histogram": {
            "labels": [b["label"] for b in context.get("histogram") or []],
            "values": [b["customers"] for b in context.get("histogram") or []],
        },
    }


def trend_label(point: dict) -> str:
    """A trend point named by its run and date ("run 12 · 1 Dec 2026"), so same-day runs stay apart."""
    when = day(point.get("as_of")) if point.get("as_of") else ""
    run_id = point.get("run_id") or point.get("run")
    return f"run {run_id} · {when}" if run_id else when


def _money_header(name: str) -> str:
    return f"{name} ({settings.CRM_CURRENCY})"


def _m(value) -> str:
    """Money in a CSV cell: a plain number rounded to cents (spreadsheets do the formatting)."""
    return "" if value is None else f"{Decimal(str(value)):.2f}"


def _p(value) -> str:
    """A share in a CSV cell as a percentage with one decimal."""
    return "" if value is None else f"{float(value) * 100:.1f}"


def exports() -> dict[str, tuple[str, list[str]]]:
    return {
        "salespeople": ("value-by-salesperson", ["Salesperson", "Customers", _money_header("CLV"),
                                                 _money_header("Historical margin"), "Customers at risk",
                                                 _money_header("Value at risk")]),
        "at_risk": ("accounts-at-risk", ["Customer", "External id", "Owner", _money_header("CLV"),
                                         "Probability active (%)", _money_header("Historical margin")]),
        "pipeline": ("opportunity-pipeline", ["Kind", "Status", "Opportunities", _money_header("Expected value")]),
        "histogram": ("clv-distribution", [_money_header("CLV from"), _money_header("CLV to"), "Customers"]),
        "trend": ("portfolio-trend", ["Run", "As of", _money_header("Portfolio CLV")]),
        "movers": ("biggest-movers", ["Salesperson", "Customer", _money_header("Previous CLV"),
                                      _money_header("CLV"), _money_header("Change")]),
    }




def _export_csv(name: str, context) -> HttpResponse:
    table = exports()
    if name not in table:
        raise Http404("No such table.")
    filename, header = table[name]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}-{timezone.localdate():%Y-%m-%d}.csv"'
    writer = csv.writer(response)
    writer.writerow(header)
    if name == "salespeople":
        for r in context.get("by_salesperson") or []:
            writer.writerow([_cell(r.owner), r.customers, _m(r.total_clv), _m(r.total_historical), r.at_risk_customers,
                             _m(r.value_at_risk)])
    elif name == "at_risk":
        stake = dash.value_at_stake_field()
        for v in context.get("at_risk") or []:
            writer.writerow([_cell(v.customer.name), v.customer.external_id or "", _cell(v.customer.owner or ""),
                             _m(getattr(v, stake)), _p(v.p_alive), _m(v.historical_value)])
    elif name == "pipeline":
        for r in context.get("pipeline") or []:
            writer.writerow([r["kind_label"], r["status_label"], r["count"], _m(r["expected_value"])])
    elif name == "histogram":
        for b in context.get("histogram") or []:
            writer.writerow([b["low"], "" if b["high"] is None else b["high"], b["customers"]])
    elif name == "trend":
        for p in context.get("trend") or []:
            writer.writerow([p.get("run_id") or "", p.get("as_of"), _m(p.get("total_clv"))])
    elif name == "movers":
        for entry in context.get("movers") or []:
            for item in [*entry["up"], *entry["down"]]:
                writer.writerow([_cell(entry["owner"] or ""), _cell(item["name"]), _m(item["prev_clv"]),
                                 _m(item["clv"]), _m(item["delta"])])
    return response


_cell = spreadsheet_safe  # neutralise spreadsheet formulas in text cells (CSV injection)


@manager_required
@require_GET
def analytics(request):
    from crm.views.analytics import analytics_context

    context = analytics_context(request)
    if isinstance(context, HttpResponse):  # a CSV download of one answer's table
        return context
    return render(request, "crm/analytics.html", context)


def _run_rows(runs) -> list[dict]:
    rows = []
    for run in runs:
        duration = None
        if run.started_at and run.finished_at:
            duration = (run.finished_at - run.started_at).total_seconds()
        diagnostics = run.diagnostics if isinstance(run.diagnostics, dict) else {}
        holdout = diagnostics.get("holdout") if isinstance(diagnostics.get("holdout"), dict) else None
        rows.append({
            "run": run,
            "duration": duration,
            "timings": _phase_list(run.timings),
            "holdout": _holdout_summary(holdout),
            "holdout_words": holdout_words(holdout),
            "params_list": readable(run.params or {}),
            "diagnostics_list": readable(diagnostics),
            "counts_list": readable(run.counts or {}),
            "settings_list": readable(getattr(run, "settings", None) or {}),
        })
    return rows


HOLDOUT_FIGURES = ("holdout_duration", "total_predicted", "total_actual", "mae", "rmse")


def _holdout_summary(holdout) -> dict | None:
    """The few numbers of the holdout check a person reads at a glance (the full report is in diagnostics)."""
    if not isinstance(holdout, dict):
        return None
    figures = {k: holdout[k] for k in HOLDOUT_FIGURES if isinstance(holdout.get(k), int | float)}
    if not figures:  # another shape of report: keep its plain numbers
        figures = {k: v for k, v in holdout.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return figures or None


def holdout_words(holdout) -> str:
    """The holdout check in one sentence: "the model predicted 1,808 purchases over the last 180 days; 1,609 happened (+12%)"."""
    if not isinstance(holdout, dict):
        return ""
    predicted, actual = holdout.get("total_predicted"), holdout.get("total_actual")
    if not isinstance(predicted, int | float) or not isinstance(actual, int | float):
        return ""
    days = holdout.get("holdout_duration")
    over = f" over the last {format_number(days)} days" if isinstance(days, int | float) else ""
    fitted = f", fitted on the history up to {day(parse_date(holdout['calibration_end']))}," \
        if isinstance(holdout.get("calibration_end"), str) and parse_date(holdout["calibration_end"]) else ""
    text = f"The model{fitted} predicted {format_number(predicted)} purchases{over}; {format_number(actual)} happened"
    if actual:
        gap = (predicted - actual) / actual
        text += f" ({signed_percent(gap)}: it {'over' if gap > 0 else 'under'}-predicted by {format_percent(abs(gap))})"
    return text + "."


def calibration_rows(holdout) -> list[dict]:
    """Actual against predicted purchases per customer in the holdout, by calibration-period frequency."""
    if not isinstance(holdout, dict) or not isinstance(holdout.get("by_calibration_frequency"), list):
        return []
    rows = []
    for r in holdout["by_calibration_frequency"]:
        if isinstance(r, dict) and {"frequency", "actual_mean", "predicted_mean"} <= r.keys():
            rows.append({"frequency": str(r["frequency"]), "customers": r.get("customers"),
                         "actual": float(r["actual_mean"]), "predicted": float(r["predicted_mean"])})
    return rows


def readable_number(value) -> str:
    """A fitted parameter or diagnostic for people: thousands separators, at most three decimals."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return format_number(value)
    size = abs(value)
    if size >= 100:
        return format_number(value, 0)
    if size >= 1:
        return format_number(value, 2)
    return format_number(value, 3)


def readable(data, prefix: str = "") -> list[tuple[str, str]]:
    """A nested dict of run details as (name, formatted value) pairs, for the details under a run."""
    out: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            name = f"{prefix}{key}".replace("_", " ")
            if isinstance(value, dict):
                out += readable(value, f"{prefix}{key} · ")
            elif isinstance(value, list):
                if all(isinstance(v, int | float | str) for v in value):
                    out.append((name, ", ".join(readable_number(v) if isinstance(v, int | float) else str(v)
                                                for v in value)))
                else:
                    out.append((name, f"{format_number(len(value))} rows (see the table above)"))
            elif isinstance(value, int | float):
                out.append((name, readable_number(value)))
            else:
                out.append((name, "–" if value is None else str(value)))
    return out


def _phase_list(timings) -> list[tuple[str, float]]:
    if not isinstance(timings, dict):
        return []
    out = []
    for key, value in timings.items():
        if isinstance(value, int | float):
            out.append((key.removesuffix("_seconds").replace("_", " "), float(value)))
    return out


@manager_required
@require_GET
def clv_runs(request):
    _fail_abandoned_runs()  # a run whose worker died is shown as failed, not as running
    rows = _run_rows(dash.clv_runs())
    current = next((r for r in rows if r["run"].is_current), None)
    context = {"rows": rows, "clv_ready": clv_ready(), "running": dash.running_run(), "current": current}
    if current is not None:
        diagnostics = current["run"].diagnostics if isinstance(current["run"].diagnostics, dict) else {}
        calibration = calibration_rows(diagnostics.get("holdout"))
        context["calibration"] = calibration
        context["calibration_chart"] = {
            "labels": [r["frequency"] for r in calibration],
            "actual": [round(r["actual"], 3) for r in calibration],
            "predicted": [round(r["predicted"], 3) for r in calibration],
        }
        context["current_words"] = run_words(current)
    return render(request, "crm/clv_runs.html", context)


def run_words(row: dict) -> str:
    """The current run in one sentence: when, which model, how many customers, how long."""
    run = row["run"]
    customers = (run.counts or {}).get("customers") if isinstance(run.counts, dict) else None
    text = f"Run {run.pk} of {day(run.as_of)}"
    if run.model:
        text += f" ({run.model})"
    if isinstance(customers, int):
        text += f" scored {format_number(customers)} customers"
    if row["duration"] is not None:
        text += f" in {format_number(row['duration'], 1)} s"
    return text + "; its values are the ones every page shows."


@manager_required
@require_POST
def clv_recompute(request):
    """Queue a CLV run (unless one is running) and answer with a progress box that polls until done."""
    _fail_abandoned_runs()  # a dead run does not block a new one
    running = dash.running_run()
    since = timezone.now() - timedelta(seconds=1)
    if running is not None and running.started_at and timezone.now() - running.started_at < STALE_RUN_AFTER:
        since = running.started_at
        note = "A run is already in progress; showing its progress."
    else:
        try:
            from clv.tasks import run_clv_task
        except ImportError:
            return _recompute_unavailable(request)
        if settings.CLV_RECOMPUTE_IN_BACKGROUND:
            recompute_in_background(run_clv_task)
            note = "Recompute started."
        else:
            run_clv_task.delay()
            note = "Recompute queued."
    if not request.htmx:
        messages.info(request, note)
        return redirect("crm:clv_runs")
    return _progress(request, since, note=note)


def _fail_abandoned_runs() -> None:
    try:
        from clv.services import runs_fail_abandoned
    except ImportError:
        return
    runs_fail_abandoned()


# Background runs started by this process (kept so tests and shutdown can wait for them).
BACKGROUND_RUNS: list[threading.Thread] = []


def recompute_in_background(task) -> threading.Thread:
    """Run the CLV task in a thread of this process, so the request answers at once and the page polls progress.

    For the embedded default (tasks in-process, no worker): there a queued task would run inside
    the request and block it for the whole run.
    """

    def work():
        try:
            task.apply()
        except Exception:  # noqa: BLE001 - the run records its own failure; a thread must not die loudly
            log.exception("background CLV run failed")
        finally:
            connection.close()

    thread = threading.Thread(target=work, name="clv-recompute", daemon=True)
    BACKGROUND_RUNS[:] = [t for t in BACKGROUND_RUNS if t.is_alive()]
    BACKGROUND_RUNS.append(thread)
    thread.start()
    return thread


def _recompute_unavailable(request):
    text = "The CLV task is not installed in this build, so a run cannot be queued."
    if not request.htmx:
        messages.error(request, text)
        return redirect("crm:clv_runs")
    return render(request, "crm/partials/run_progress.html", {"error": text}, status=503)


@manager_required
@require_GET
def clv_progress(request):
    raw = request.GET.get("since", "") or ""
    try:
        since = parse_datetime(raw)
    except ValueError:  # well formed but not a real date, e.g. 2026-02-30
        since = None
    if raw and since is None:
        return HttpResponseBadRequest("since must be an ISO 8601 date-time, e.g. 2026-11-01T02:30:00Z.")
    return _progress(request, since)


def _progress(request, since: datetime | None, note: str = ""):
    run = dash.latest_run_since(since)
    done = run is not None and run.status in ("succeeded", "failed")
    context = {
        "run": run,
        "done": done,
        "note": note,
        "since": since.isoformat() if since else "",
        "poll": PROGRESS_POLL,
        "elapsed": (timezone.now() - run.started_at).total_seconds() if run and run.started_at and not done else None,
        "phases": _phase_list(run.timings) if run else [],
    }
    if done:
        context["rows"] = _run_rows(dash.clv_runs())
    return render(request, "crm/partials/run_progress.html", context)
