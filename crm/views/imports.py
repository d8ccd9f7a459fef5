"""The import page (managers and admins): upload a CSV file, map its columns, preview, import with progress."""

from __future__ import annotations

from types import SimpleNamespace

from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from crm import import_jobs as jobs
from crm.import_models import ImportJob
from crm.importing import KINDS, MAX_ERRORS_KEPT, mapping_problems
from crm.views.access import manager_required

RECENT_JOBS = 10


def _job(request, pk: int) -> ImportJob:
    return get_object_or_404(ImportJob, pk=pk, user=request.user)  # someone else's job is not there for you


@manager_required
@require_http_methods(["GET", "POST"])
def import_start(request):
    kinds = jobs.kinds_for(request.user)
    error = ""
    chosen = request.POST.get("kind", "") if request.method == "POST" else request.GET.get("kind", "")
    if request.method == "POST":
        upload = request.FILES.get("file")
        if chosen not in dict(kinds):
            error = "Choose what the file holds."
        elif upload is None:
            error = "Choose a CSV file to upload."
        else:
            try:
                job = jobs.import_job_create(user=request.user, kind=chosen, name=upload.name, chunks=upload.chunks())
            except jobs.UploadRefused as exc:
                error = str(exc)
            else:
                return redirect("crm:import_detail", job.pk)
    recent = list(ImportJob.objects.filter(user=request.user)[:RECENT_JOBS])
    labels = _labels()
    for job in recent:
        job.kind_label = labels.get(job.kind, job.kind)
    context = {"kinds": kinds, "chosen": chosen, "error": error, "recent": recent}
    return render(request, "crm/import_start.html", context, status=422 if error else 200)


def _labels() -> dict[str, str]:
    return {k.key: k.label for k in KINDS.values()}


def _detail(request, job: ImportJob, *, mapping=None, problems=(), upload_error="", status=200):
    kind = KINDS[job.kind]
    mapping = mapping if mapping is not None else jobs.default_mapping_for(job)
    columns = [{"index": i, "name": name, "field": mapping.get(name, "")} for i, name in enumerate(job.header)]
    preview = SimpleNamespace(**job.preview) if job.preview and not problems else None
    shown = preview.fields if preview else []
    rows = preview.rows_shown if preview else []
    context = {
        "job": job,
        "kind": kind,
        "columns": columns,
        "problems": problems,
        "preview": preview,
        "preview_fields": shown,
        "preview_rows": rows,
        "fields": [{"name": c.name, "required": c.required, "help": c.help} for c in kind.columns],
        "upload_error": upload_error,
        "max_errors": MAX_ERRORS_KEPT,
        "rows_done": jobs.rows_done(job), "running": jobs.is_running(job),
    }
    return render(request, "crm/import_detail.html", context, status=status)


@manager_required
@require_GET
def import_detail(request, pk: int):
    return _detail(request, _job(request, pk))


def _posted_mapping(request, job: ImportJob) -> dict[str, str]:
    return {name: request.POST.get(f"map-{i}", "").strip() for i, name in enumerate(job.header)}


@manager_required
@require_POST
def import_preview(request, pk: int):
    """Save the mapping (remembered for the next file of this kind) and queue the check of the whole
    file, which writes nothing; the page shows its progress, then the preview."""
    job = _job(request, pk)
    if job.status != ImportJob.Status.UPLOADED:
        return redirect("crm:import_detail", job.pk)
    mapping = _posted_mapping(request, job)
    problems = jobs.import_job_set_mapping(job=job, mapping=mapping)
    if problems:
        return _detail(request, job, mapping=mapping, problems=problems, status=422)
    jobs.import_job_check_start(job=job)
    return redirect(reverse("crm:import_detail", args=[job.pk]) + "#preview")


@manager_required
@require_POST
def import_replace_file(request, pk: int):
    """A corrected file for the same import: the mapping is kept for the columns it still has."""
    job = _job(request, pk)
    if job.status != ImportJob.Status.UPLOADED:
        return redirect("crm:import_detail", job.pk)
    upload = request.FILES.get("file")
    if upload is None:
        return _detail(request, job, upload_error="Choose the corrected CSV file.", status=422)
    try:
        jobs.import_job_replace_file(job=job, name=upload.name, chunks=upload.chunks())
    except jobs.UploadRefused as exc:
        job.refresh_from_db()
        return _detail(request, job, upload_error=str(exc), status=422)
    return redirect("crm:import_detail", job.pk)


@manager_required
@require_POST
def import_run(request, pk: int):
    """Queue the all-or-nothing import; the page then polls its progress."""
    job = _job(request, pk)
    problems = mapping_problems(KINDS[job.kind], job.header, job.mapping or {})
    if job.status == ImportJob.Status.UPLOADED and (problems or not job.mapping):
        return _detail(request, job, problems=problems or ["Map the columns and preview first."], status=422)
    job = jobs.import_job_start(job=job)
    if request.htmx:
        return _progress(request, job)
    return redirect("crm:import_detail", job.pk)


def _progress(request, job: ImportJob) -> HttpResponse:
    context = {"job": job, "rows_done": jobs.rows_done(job), "running": jobs.is_running(job)}
    return render(request, "crm/partials/import_progress.html", context)


@manager_required
@require_GET
def import_progress(request, pk: int):
    job = _job(request, pk)
    if request.GET.get("step") == "check":
        if job.status == ImportJob.Status.CHECKING:
            return render(request, "crm/partials/import_check.html", {"job": job, "rows_done": jobs.rows_done(job)})
        response = HttpResponse(status=204)
        response["HX-Refresh"] = "true"  # checked: the page shows the preview
        return response
    return _progress(request, job)
