"""Imports from the web page: store an upload, preview it, and run it all or nothing in a task.

The uploaded file is kept in the database in chunks (ImportFileChunk), so the worker that runs
the import, wherever it is, reads it as a stream with bounded memory; the chunks are deleted once
the import has run. While it runs, the rows done are kept in the cache (the import's own
transaction is not visible until it commits) for the page to poll.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterable

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import User
from crm.history import history_context
from crm.import_models import ImportFileChunk, ImportJob, ImportMapping
from crm.importing import (
    KINDS,
    MAX_ERRORS_KEPT,
    PREVIEW_ROWS,
    ImportFailed,
    ImportResult,
    import_csv,
    mapping_problems,
    purchase_preview_errors,
    read_header,
)

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
PROGRESS_TIMEOUT = 24 * 3600
NOT_UTF8 = "The file is not UTF-8 text: save it as “CSV UTF-8” and upload it again."


class UploadRefused(Exception):
    """An upload that cannot become an import (wrong kind for the user, empty, too large, not text)."""


def kinds_for(user: User) -> list[tuple[str, str]]:
    """The kinds of record `user` may import: (key, label)."""
    return [(k.key, k.label) for k in KINDS.values() if user.sees_everything or not k.admin_only]


def import_job_create(*, user: User, kind: str, name: str, chunks: Iterable[bytes]) -> ImportJob:
    """Store an uploaded file as a new job; reads its header. Raises UploadRefused."""
    if kind not in dict(kinds_for(user)):
        raise UploadRefused("Choose a kind of record you may import.")
    with transaction.atomic():
        job = ImportJob.objects.create(user=user, kind=kind, file_name=name[:255])
        _store(job, chunks)
        return job


def import_job_replace_file(*, job: ImportJob, name: str, chunks: Iterable[bytes]) -> ImportJob:
    """A corrected file for the same job (its mapping is kept where the columns still exist)."""
    with transaction.atomic():
        job.chunks.all().delete()
        job.file_name = name[:255]
        job.errors, job.error_count, job.preview = [], 0, None
        _store(job, chunks)
        return job


def _store(job: ImportJob, chunks: Iterable[bytes]) -> None:
    size = lines = 0
    last = b""
    for seq, data in enumerate(_rechunk(chunks)):
        size += len(data)
        if size > settings.IMPORT_MAX_BYTES:
            raise UploadRefused(f"The file is larger than {settings.IMPORT_MAX_BYTES // (1024 * 1024)} MB.")
        lines += data.count(b"\n")
        last = data[-1:]
        ImportFileChunk.objects.create(job=job, seq=seq, data=data)
    if size == 0:
        raise UploadRefused("The file is empty.")
    if last != b"\n":
        lines += 1
    try:
        header = read_header(open_text(job))
    except UnicodeDecodeError:
        raise UploadRefused(NOT_UTF8) from None
    if not any(header):
        raise UploadRefused("The file has no header line naming its columns.")
    job.file_size = size
    job.rows_estimate = max(lines - 1, 0)
    job.header = header
    job.mapping = {c: t for c, t in (job.mapping or {}).items() if c in header}
    job.save(update_fields=["file_name", "file_size", "rows_estimate", "header", "mapping", "errors", "error_count",
                            "preview"])


def _rechunk(chunks: Iterable[bytes]) -> Iterable[bytes]:
    buffer = b""
    for data in chunks:
        buffer += data
        while len(buffer) >= CHUNK_BYTES:
            yield buffer[:CHUNK_BYTES]
            buffer = buffer[CHUNK_BYTES:]
    if buffer:
        yield buffer


class _ChunkReader(io.RawIOBase):
    """The stored file as a byte stream, one chunk read from the database at a time."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.seq = 0
        self.pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.pending:
            data = (
                ImportFileChunk.objects.filter(job_id=self.job_id, seq=self.seq).values_list("data", flat=True).first()
            )
            if data is None:
                return 0
            self.seq += 1
            self.pending = memoryview(bytes(data))
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def open_text(job: ImportJob) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BufferedReader(_ChunkReader(job.pk)), encoding="utf-8-sig", newline="")


def default_mapping_for(job: ImportJob) -> dict[str, str]:
    """The job's mapping if it has one, else the user's last mapping for the kind, else by column names."""
    from crm.importing import default_mapping

    if job.mapping:
        return dict(job.mapping)
    remembered = ImportMapping.objects.filter(user=job.user, kind=job.kind).values_list("mapping", flat=True).first()
    return default_mapping(KINDS[job.kind], job.header, remembered)


def import_job_set_mapping(*, job: ImportJob, mapping: dict[str, str]) -> list[str]:
    """Keep the mapping on the job and as the user's last one for the kind; returns its problems."""
    mapping = {c: t for c, t in mapping.items() if t}
    problems = mapping_problems(KINDS[job.kind], job.header, mapping)
    if mapping != job.mapping:
        job.preview = None  # a check of another mapping says nothing of this one
    job.mapping = mapping
    job.save(update_fields=["mapping", "preview"])
    if not problems:
        ImportMapping.objects.update_or_create(user=job.user, kind=job.kind, defaults={"mapping": mapping})
    return problems


def import_job_preview(*, job: ImportJob, progress=None) -> ImportResult:
    """Check the whole file with the job's mapping and write nothing: the first rows with their
    errors, and every error counted."""
    try:
        result = import_csv(
            job.kind, open_text(job), user=job.user, mapping=job.mapping, dry_run=True, preview_rows=PREVIEW_ROWS,
            progress=progress,
        )
    except ImportFailed as exc:
        result = exc.result
    except UnicodeDecodeError:
        result = ImportResult(kind=job.kind, dry_run=True)
        result.add_error(0, "", NOT_UTF8)
    if job.kind == "purchases":
        purchase_preview_errors(result.preview, user=job.user)
    return result


def preview_data(result: ImportResult, fields: list[str]) -> dict:
    """A check's outcome as kept on the job (JSON)."""
    return {
        "ok": result.ok, "rows": result.rows, "created": result.created, "updated": result.updated,
        "unchanged": result.unchanged, "error_count": result.error_count,
        "errors": [str(e) for e in result.errors[:MAX_ERRORS_KEPT]], "fields": fields,
        "rows_shown": [{"line": r.line, "cells": [[name, r.values.get(name, "")] for name in fields],
                        "errors": r.errors} for r in result.preview],
    }


def import_job_check_start(*, job: ImportJob) -> ImportJob:
    """Queue the check of the whole file (the preview); the task runs after this transaction commits."""
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job.pk)
        if job.status != ImportJob.Status.UPLOADED:
            return job
        job.status = ImportJob.Status.CHECKING
        job.preview = None
        job.save(update_fields=["status", "preview"])
        transaction.on_commit(lambda: _enqueue("check", job.pk))
    return job


def import_job_check(*, job_id: int) -> ImportJob | None:
    """Check a file as its import would and write nothing; keeps the outcome on the job. Only a job
    being checked is checked (safe to run twice)."""
    job = ImportJob.objects.select_related("user").filter(pk=job_id).first()
    if job is None or job.status != ImportJob.Status.CHECKING:
        return job
    cache.set(progress_key(job.pk), 0, PROGRESS_TIMEOUT)
    try:
        result = import_job_preview(job=job, progress=lambda rows: cache.set(progress_key(job.pk), rows,
                                                                             PROGRESS_TIMEOUT))
    except Exception as exc:
        result = ImportResult(kind=job.kind, dry_run=True)
        result.add_error(0, "", f"The check stopped ({type(exc).__name__}). Try again.")
        _checked(job, result)
        raise
    _checked(job, result)
    return job


def _checked(job: ImportJob, result: ImportResult) -> None:
    fields = [job.mapping[c] for c in job.header if job.mapping.get(c)]
    with transaction.atomic():
        locked = ImportJob.objects.select_for_update().get(pk=job.pk)
        if locked.status == ImportJob.Status.CHECKING:
            locked.preview = preview_data(result, fields)
            locked.status = ImportJob.Status.UPLOADED
            locked.save(update_fields=["preview", "status"])
    cache.delete(progress_key(job.pk))


def import_job_start(*, job: ImportJob) -> ImportJob:
    """Queue the import (once); the task runs after this transaction commits."""
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job.pk)
        if job.status != ImportJob.Status.UPLOADED:
            return job
        job.status = ImportJob.Status.QUEUED
        job.save(update_fields=["status"])
        transaction.on_commit(lambda: _enqueue("run", job.pk))
    return job


def _enqueue(step: str, job_id: int) -> None:
    from crm.tasks import import_job_check_task, import_job_run_task

    task = import_job_check_task if step == "check" else import_job_run_task
    if settings.IMPORT_IN_BACKGROUND:
        run_in_background(task, job_id)
    else:
        task.delay(job_id)


BACKGROUND_IMPORTS: list[threading.Thread] = []


def run_in_background(task, job_id: int) -> threading.Thread:
    """Run the import in a thread of this process (the embedded default: no worker, tasks in-process),
    so the page answers at once and polls the progress."""

    def work():
        try:
            task.apply(args=[job_id])
        except Exception:  # noqa: BLE001 - the job records its own failure
            log.exception("background import failed")
        finally:
            connection.close()

    thread = threading.Thread(target=work, name=f"import-{job_id}", daemon=True)
    BACKGROUND_IMPORTS[:] = [t for t in BACKGROUND_IMPORTS if t.is_alive()]
    BACKGROUND_IMPORTS.append(thread)
    thread.start()
    return thread


def progress_key(job_id: int) -> str:
    return f"crm:import-job:{job_id}:rows"


def rows_done(job: ImportJob) -> int:
    if job.status in (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING, ImportJob.Status.CHECKING):
        return int(cache.get(progress_key(job.pk)) or 0)
    return job.rows_done


def is_running(job: ImportJob) -> bool:
    """A queued import a worker has started (its row stays queued until the import commits)."""
    return job.status == ImportJob.Status.QUEUED and cache.get(progress_key(job.pk)) is not None


def import_job_run(*, job_id: int) -> ImportJob | None:
    """Run a queued import all or nothing; records the outcome on the job and deletes its file.

    The job's row stays locked, and its outcome is written in the import's own transaction: a
    second copy of the task waits for the first and then finds the job done, and a worker lost
    midway leaves the job queued with nothing written, for the task's redelivery to run again.
    While it runs, the page learns the rows done from the cache.
    """
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().select_related("user").filter(pk=job_id).first()
        if job is None or job.status != ImportJob.Status.QUEUED:
            return job
        job.started_at = timezone.now()
        cache.set(progress_key(job.pk), 0, PROGRESS_TIMEOUT)

        def progress(rows: int) -> None:
            cache.set(progress_key(job.pk), rows, PROGRESS_TIMEOUT)

        result: ImportResult
        stopped: Exception | None = None
        try:
            with history_context(user=job.user_id, via="import_page", file=job.file_name):
                result = import_csv(job.kind, open_text(job), user=job.user, mapping=job.mapping, progress=progress)
        except ImportFailed as exc:
            result = exc.result
        except UnicodeDecodeError:
            result = ImportResult(kind=job.kind)
            result.add_error(0, "", NOT_UTF8)
        except Exception as exc:
            stopped = exc
        if stopped is None:
            _finish(job, result)
            return job
    # Something else went wrong (the import's transaction is rolled back): say so on the job.
    result = ImportResult(kind=job.kind)
    result.add_error(0, "", f"The import stopped ({type(stopped).__name__}); nothing was written. Try again.")
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job_id)
        if job.status == ImportJob.Status.QUEUED:
            _finish(job, result)
    raise stopped


def _finish(job: ImportJob, result: ImportResult) -> None:
    job.status = ImportJob.Status.SUCCEEDED if result.ok else ImportJob.Status.FAILED
    job.rows_done = result.rows if result.ok else 0
    job.created, job.updated, job.unchanged = (
        (result.created, result.updated, result.unchanged) if result.ok else (0, 0, 0)
    )
    job.error_count = result.error_count
    job.errors = [str(e) for e in result.errors[:MAX_ERRORS_KEPT]]
    job.finished_at = timezone.now()
    with transaction.atomic():
        job.save(
            update_fields=[
                "started_at",
                "status",
                "rows_done",
                "created",
                "updated",
                "unchanged",
                "error_count",
                "errors",
                "finished_at",
            ]
        )
        job.chunks.all().delete()
    cache.delete(progress_key(job.pk))


def import_files_prune(*, days: int) -> int:
    """Uploads older than `days` that were never imported: their files are deleted and the jobs
    marked failed (upload again to import). Returns how many jobs."""
    from datetime import timedelta

    cutoff = timezone.now() - timedelta(days=days)
    stale = ImportJob.objects.filter(status=ImportJob.Status.UPLOADED, created_at__lt=cutoff)
    ids = list(stale.values_list("pk", flat=True))
    if not ids:
        return 0
    with transaction.atomic():
        ImportFileChunk.objects.filter(job_id__in=ids).delete()
        ImportJob.objects.filter(pk__in=ids).update(
            status=ImportJob.Status.FAILED, finished_at=timezone.now(), error_count=0,
            errors=[f"The uploaded file was deleted after {days} days without an import; upload it again."],
        )
    return len(ids)
