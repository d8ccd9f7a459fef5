"""Celery tasks for CLV: the nightly run and its scoring shards (thin: each calls one clv.services function).

Delivery: acknowledged late (after the task returns) and, if the worker process running one
dies (killed, out of memory), handed back to the queue at once (reject_on_worker_lost); if
the whole worker dies, the broker hands it out again after CELERY_VISIBILITY_TIMEOUT. So a
task may run twice, which these tolerate: a run takes the run lock (a second copy gives way
to a live run, and first marks a dead one failed), writes its values and becomes current in
one transaction (a run cut off anywhere leaves nothing current of its own); a shard replaces
its range's rows; finishing a run checks, under a row lock, that it is still running.
"""

import logging
from datetime import date

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from clv.models import ClvRun
from clv.services import (
    ClvRunAlreadyRunning,
    finish_sharded_run,
    run_clv,
    run_fail,
    runs_fail_abandoned,
    score_shard,
    worker_losses_in_a_row,
)
from crm.tasks import regenerate_opportunities_task

logger = logging.getLogger(__name__)

try:  # errors of the driver itself, should one ever escape Django's wrapping
    import psycopg2

    DRIVER_TRANSIENT: tuple[type[Exception], ...] = (psycopg2.OperationalError, psycopg2.InterfaceError)
except ImportError:  # pragma: no cover - SQLite-only installs
    DRIVER_TRANSIENT = ()
TRANSIENT = (OperationalError, InterfaceError, *DRIVER_TRANSIENT)


@shared_task(
    bind=True,
    name="clv.tasks.run_clv_task",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT,
    retry_backoff=settings.CLV_RETRY_BACKOFF_SECONDS,
    retry_backoff_max=600,
    max_retries=settings.CLV_RUN_RETRIES,
)
def run_clv_task(self, as_of: str | None = None, shards: int | None = None) -> dict:
    """Recompute every customer's CLV; then regenerate opportunities. A run already in progress wins.

    A sharded run returns while its shards score; its last step regenerates opportunities.
    A transient database error (the connection lost) fails the run and the task tries again.
    """
    if (self.request.delivery_info or {}).get("redelivered"):
        runs_fail_abandoned()
        losses = worker_losses_in_a_row()
        if losses >= settings.CLV_RUN_MAX_WORKER_LOSSES:
            logger.error("CLV run not started again: the last %s runs lost their worker", losses)
            return {"skipped": f"the last {losses} runs lost their worker; not starting another"}
    try:
        run = run_clv(as_of=date.fromisoformat(as_of) if as_of else None, shards=shards)
    except ClvRunAlreadyRunning:
        return {"skipped": "another CLV run is in progress"}
    if run.status == ClvRun.Status.SUCCEEDED and not run.diagnostics.get("shards", {}).get("ranges"):
        regenerate_opportunities_task.delay(as_of=run.as_of.isoformat())  # expected values follow the new CLV
    return {"run": run.pk, "status": run.status}


@shared_task(name="clv.tasks.fail_abandoned_runs_task")
def fail_abandoned_runs_task() -> dict:
    """Mark failed the runs whose worker died (every few minutes, from beat)."""
    return {"failed": runs_fail_abandoned()}


@shared_task(
    bind=True,
    name="clv.tasks.score_shard_task",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT,
    retry_backoff=5,
    retry_backoff_max=120,
    max_retries=3,
)
def score_shard_task(self, run_id: int, shard: int, first_id: int, end_id: int | None) -> dict:
    """Score and write one customer range of a sharded run."""
    result = score_shard(run_id=run_id, shard=shard, first_id=first_id, end_id=end_id)
    result["worker"] = self.request.hostname or "in-process"
    return result


@shared_task(
    name="clv.tasks.finish_sharded_run_task",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT,
    retry_backoff=5,
    max_retries=3,
)
def finish_sharded_run_task(shard_results: list[dict], run_id: int) -> dict:
    """After every shard: snapshots and the switch in one transaction; then regenerate opportunities."""
    switched = finish_sharded_run(run_id=run_id, shard_results=shard_results)
    run = ClvRun.objects.get(pk=run_id)
    if switched:
        regenerate_opportunities_task.delay(as_of=run.as_of.isoformat())
    return {"run": run_id, "status": run.status}


@shared_task(name="clv.tasks.fail_sharded_run_task")
def fail_sharded_run_task(request, exc, traceback, run_id: int) -> None:
    """Error callback of the shard chord: the run failed, the previous run stays current."""
    run_fail(run_id=run_id, error=f"{type(exc).__name__}: {exc}")
