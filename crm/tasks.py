"""Celery tasks of the crm app: thin wrappers around one service each."""

from __future__ import annotations

from dataclasses import asdict

from celery import shared_task


@shared_task(name="crm.tasks.regenerate_opportunities_task")
def regenerate_opportunities_task(*_args, as_of: str | None = None) -> dict:
    """Regenerate opportunities (chained after each CLV run; extra positional args from the chain are ignored)."""
    from datetime import date

    from crm.opportunities.services import opportunities_regenerate

    result = opportunities_regenerate(as_of=date.fromisoformat(as_of) if as_of else None)
    return asdict(result)


@shared_task(name="crm.tasks.prune_sync_log_task")
def prune_sync_log_task() -> dict:
    """Drop tombstones past SYNC_TOMBSTONE_RETENTION_DAYS and day-old idempotency records (nightly)."""
    from django.conf import settings

    from crm.sync import sync_log_prune

    return sync_log_prune(tombstone_days=settings.SYNC_TOMBSTONE_RETENTION_DAYS)


@shared_task(name="crm.tasks.import_job_run_task", acks_late=True, reject_on_worker_lost=True)
def import_job_run_task(job_id: int) -> dict:
    """Run one queued import from the import page, all or nothing (a second copy finds it no longer queued)."""
    from crm.import_jobs import import_job_run

    job = import_job_run(job_id=job_id)
    return {"job": job_id, "status": job.status if job else None}


@shared_task(name="crm.tasks.import_job_check_task", acks_late=True)
def import_job_check_task(job_id: int) -> dict:
    """Check an uploaded file as its import would, writing nothing (the import page's preview)."""
    from crm.import_jobs import import_job_check

    job = import_job_check(job_id=job_id)
    return {"job": job_id, "status": job.status if job else None}


@shared_task(name="crm.tasks.prune_import_files_task")
def prune_import_files_task() -> dict:
    """Delete uploaded files that were never imported, after IMPORT_FILE_RETENTION_DAYS (nightly)."""
    from django.conf import settings

    from crm.import_jobs import import_files_prune

    return {"jobs": import_files_prune(days=settings.IMPORT_FILE_RETENTION_DAYS)}


@shared_task(name="crm.tasks.record_next_actions_task")
def record_next_actions_task() -> dict:
    """Record what is on each salesperson's next-best-action list today (nightly, after the CLV run)."""
    from crm.next_action_records import next_actions_record_all

    return {"recorded": next_actions_record_all()}

from crm.webhooks.tasks import webhook_deliver_task, webhooks_dispatch_task  # noqa: E402, F401  (registered here)
