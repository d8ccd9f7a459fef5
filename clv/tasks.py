"""Celery tasks for CLV: the nightly run (thin: it calls clv.services.run_clv)."""

from datetime import date

from celery import shared_task
from django.db import InterfaceError, OperationalError

from clv.services import ClvRunAlreadyRunning, run_clv
from crm.tasks import regenerate_opportunities_task


@shared_task(
    name="clv.tasks.run_clv_task",
    acks_late=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=30,
    retry_backoff_max=600,
    max_retries=3,
)
def run_clv_task(as_of: str | None = None) -> dict:
    """Recompute every customer's CLV; then regenerate opportunities. A run already in progress wins."""
    try:
        run = run_clv(as_of=date.fromisoformat(as_of) if as_of else None)
    except ClvRunAlreadyRunning:
        return {"skipped": "another CLV run is in progress"}
    regenerate_opportunities_task.delay(as_of=run.as_of.isoformat())  # expected values follow the new CLV
    return {"run": run.pk, "status": run.status}
