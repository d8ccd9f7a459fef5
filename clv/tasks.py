"""Celery tasks for CLV: the nightly run and its scoring shards (thin: each calls one clv.services function)."""

from datetime import date

from celery import shared_task
from django.db import InterfaceError, OperationalError

from clv.models import ClvRun
from clv.services import ClvRunAlreadyRunning, finish_sharded_run, run_clv, run_fail, score_shard
from crm.tasks import regenerate_opportunities_task

TRANSIENT = (OperationalError, InterfaceError)


@shared_task(
    name="clv.tasks.run_clv_task",
    acks_late=True,
    autoretry_for=TRANSIENT,
    retry_backoff=30,
    retry_backoff_max=600,
    max_retries=3,
)
def run_clv_task(as_of: str | None = None, shards: int | None = None) -> dict:
    """Recompute every customer's CLV; then regenerate opportunities. A run already in progress wins.

    A sharded run returns while its shards score; its last step regenerates opportunities.
    """
    try:
        run = run_clv(as_of=date.fromisoformat(as_of) if as_of else None, shards=shards)
    except ClvRunAlreadyRunning:
        return {"skipped": "another CLV run is in progress"}
    if run.status == ClvRun.Status.SUCCEEDED and not run.diagnostics.get("shards", {}).get("ranges"):
        regenerate_opportunities_task.delay(as_of=run.as_of.isoformat())  # expected values follow the new CLV
    return {"run": run.pk, "status": run.status}


@shared_task(
    bind=True,
    name="clv.tasks.score_shard_task",
    acks_late=True,
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
