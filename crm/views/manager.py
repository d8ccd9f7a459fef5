"""Manager pages: the dashboard (with CSV export of each table), analytics and the CLV run history."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_POST

from crm.exports import spreadsheet_safe
from crm.forms import DashboardFilterForm
from crm.models import Opportunity
from crm.selectors import dashboard as dash
from crm.selectors.values import clv_ready
from crm.views.access import manager_required

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
    export = request.GET.get("export")
    if export:
        return _export_csv(export, context)
    context["form"] = form
    context["charts"] = _chart_data(context)
    return render(request, "crm/dashboard.html", context)


def _chart_data(context) -> dict:
    """The numbers the charts draw, passed to the page with json_script (never as HTML)."""
    by_rep = context.get("by_salesperson") or []
    pipeline = context.get("pipeline") or []
    statuses = [s for s, _ in Opportunity.Status.choices if any(r["status"] == s for r in pipeline)]
    kinds = [(k, label) for k, label in Opportunity.Kind.choices if any(r["kind"] == k for r in pipeline)]
    by_key = {(r["kind"], r["status"]): float(r["expected_value"] or 0) for r in pipeline}
    return {
        "pipeline": {
            "labels": [Opportunity.Status(s).label.split(" (")[0] for s in statuses],
            "datasets": [
                {"label": label, "values": [by_key.get((k, s), 0.0) for s in statuses]} for k, label in kinds
            ],
        },
        "trend": {
            "labels": [str(p.get("as_of")) for p in context.get("trend") or []],
            "values": [float(p.get("total_clv") or 0) for p in context.get("trend") or []],
        },
        "by_salesperson": {
            "labels": [str(r.owner) for r in by_rep],
            "values": [float(r.total_clv or 0) for r in by_rep],
        },
        "histogram": {
            "labels": [b["label"] for b in context.get("histogram") or []],
            "values": [b["customers"] for b in context.get("histogram") or []],
        },
    }


EXPORTS = {
    "salespeople": ("value-by-salesperson", ["salesperson", "customers", "total_clv", "total_historical",
                                             "at_risk_customers", "value_at_risk"]),
    "at_risk": ("accounts-at-risk", ["customer", "external_id", "owner", "clv", "p_alive", "value_at_stake",
                                     "historical_value"]),
    "pipeline": ("opportunity-pipeline", ["kind", "status", "count", "expected_value"]),
    "histogram": ("clv-distribution", ["clv_from", "clv_to", "customers"]),
    "trend": ("portfolio-trend", ["as_of", "total_clv"]),
}


def _export_csv(name: str, context) -> HttpResponse:
    if name not in EXPORTS:
        raise Http404("No such table.")
    filename, header = EXPORTS[name]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}-{timezone.localdate():%Y-%m-%d}.csv"'
    writer = csv.writer(response)
    writer.writerow(header)
    if name == "salespeople":
        for r in context.get("by_salesperson") or []:
            writer.writerow([_cell(r.owner), r.customers, r.total_clv, r.total_historical, r.at_risk_customers,
                             r.value_at_risk])
    elif name == "at_risk":
        stake = dash.value_at_stake_field()
        for v in context.get("at_risk") or []:
            writer.writerow([_cell(v.customer.name), v.customer.external_id or "", _cell(v.customer.owner or ""),
                             v.clv, f"{v.p_alive:.4f}", getattr(v, stake), v.historical_value])
    elif name == "pipeline":
        for r in context.get("pipeline") or []:
            writer.writerow([r["kind"], r["status"], r["count"], r["expected_value"]])
    elif name == "histogram":
        for b in context.get("histogram") or []:
            writer.writerow([b["low"], "" if b["high"] is None else b["high"], b["customers"]])
    elif name == "trend":
        for p in context.get("trend") or []:
            writer.writerow([p.get("as_of"), p.get("total_clv")])
    return response


_cell = spreadsheet_safe  # neutralise spreadsheet formulas in text cells (CSV injection)


@manager_required
@require_GET
def analytics(request):
    from crm.views.analytics import analytics_context

    return render(request, "crm/analytics.html", analytics_context(request))


def _run_rows(runs) -> list[dict]:
    rows = []
    for run in runs:
        duration = None
        if run.started_at and run.finished_at:
            duration = (run.finished_at - run.started_at).total_seconds()
        diagnostics = run.diagnostics or {}
        rows.append({
            "run": run,
            "duration": duration,
            "timings": _phase_list(run.timings),
            "holdout": _holdout_summary(diagnostics.get("holdout") if isinstance(diagnostics, dict) else None),
            "params_json": json.dumps(run.params or {}, indent=2, sort_keys=True, default=str),
            "diagnostics_json": json.dumps(diagnostics, indent=2, sort_keys=True, default=str),
            "counts_json": json.dumps(run.counts or {}, indent=2, sort_keys=True, default=str),
            "settings_json": json.dumps(getattr(run, "settings", None) or {}, indent=2, sort_keys=True, default=str),
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
    context = {"rows": _run_rows(dash.clv_runs()), "clv_ready": clv_ready(), "running": dash.running_run()}
    return render(request, "crm/clv_runs.html", context)


@manager_required
@require_POST
def clv_recompute(request):
    """Queue a CLV run (unless one is running) and answer with a progress box that polls until done."""
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
        run_clv_task.delay()
        note = "Recompute queued."
    if not request.htmx:
        messages.info(request, note)
        return redirect("crm:clv_runs")
    return _progress(request, since, note=note)


def _recompute_unavailable(request):
    text = "The CLV task is not installed in this build, so a run cannot be queued."
    if not request.htmx:
        messages.error(request, text)
        return redirect("crm:clv_runs")
    return render(request, "crm/partials/run_progress.html", {"error": text}, status=503)


@manager_required
@require_GET
def clv_progress(request):
    since = parse_datetime(request.GET.get("since", "") or "")
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
