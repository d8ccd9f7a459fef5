"""The nightly task: in-process without a broker, and through real Celery workers on the real Redis broker."""

import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from clv.models import ClvRun, CustomerValue
from clv.selectors import current_run
from clv.services import run_clv
from clv.tasks import run_clv_task
from config.celery import app as celery_app
from crm.demo.seed import seed_demo
from crm.models import Opportunity
from tests.conftest import set_celery_eager

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 6, 30)
pytestmark = pytest.mark.django_db(transaction=True)


def test_task_runs_in_process_and_regenerates_opportunities():
    seed_demo(customers=300, seed=21, as_of=AS_OF)
    result = run_clv_task.delay(as_of=AS_OF.isoformat())
    assert result.get(timeout=60)["status"] == "succeeded"
    assert ClvRun.objects.get(is_current=True).as_of == AS_OF
    assert Opportunity.objects.exists()  # chained after the run


def test_nightly_schedule_points_at_the_task():
    entry = settings.CELERY_BEAT_SCHEDULE["clv-nightly-run"]
    assert entry["task"] == run_clv_task.name
    assert celery_app.tasks[run_clv_task.name].acks_late is True


def start_worker(name: str = "celery") -> subprocess.Popen:
    """A Celery worker process on the test database and the real broker (solo pool: one task at a time)."""
    db = settings.DATABASES["default"]
    database_url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=settings.REDIS_URL,
               CELERY_BROKER_URL=settings.CELERY_BROKER_URL)
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-P", "solo", "--loglevel=warning",
         "--without-mingle", "--without-gossip", "-n", f"{name}@%h"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def stop_workers(*workers: subprocess.Popen) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


def wait_until_finished(run_id: int, timeout: float = 120) -> ClvRun:
    deadline = time.monotonic() + timeout
    run = ClvRun.objects.get(pk=run_id)
    while run.status == ClvRun.Status.RUNNING and time.monotonic() < deadline:
        time.sleep(0.2)
        run.refresh_from_db()
    return run


@pytest.mark.postgres
@pytest.mark.redis
def test_task_runs_on_a_real_worker_over_redis():
    seed_demo(customers=300, seed=22, as_of=AS_OF)
    worker = start_worker()
    set_celery_eager(False)
    try:
        result = run_clv_task.apply_async(kwargs={"as_of": AS_OF.isoformat()})
        outcome = result.get(timeout=120)
        assert outcome["status"] == "succeeded"
        deadline = time.monotonic() + 10
        while not ClvRun.objects.filter(is_current=True).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        run = ClvRun.objects.get(is_current=True)
        assert run.pk == outcome["run"]
        assert run.values.count() == run.counts["customers"]
    finally:
        set_celery_eager(True)
        stop_workers(worker)


VALUE_FIELDS = ("customer_id", "clv", "p_alive", "expected_purchases", "expected_avg_value", "historical_value",
                "classic_value", "frequency", "recency", "T")


def stored_values(run: ClvRun) -> list[tuple]:
    return list(CustomerValue.objects.filter(run=run).order_by("customer_id").values_list(*VALUE_FIELDS))


@pytest.mark.postgres
@pytest.mark.redis
def test_sharded_run_on_two_real_workers_over_redis_and_a_failing_shard():
    seed_demo(customers=600, seed=23, as_of=AS_OF)
    in_process = run_clv(as_of=AS_OF)  # the reference: one process, no shards
    workers = [start_worker("shard-a"), start_worker("shard-b")]
    set_celery_eager(False)
    try:
        outcome = run_clv_task.apply_async(kwargs={"as_of": AS_OF.isoformat(), "shards": 4}).get(timeout=120)
        assert outcome["status"] == "running"  # fitted; the shards are on the queue
        run = wait_until_finished(outcome["run"])
        assert run.status == ClvRun.Status.SUCCEEDED, run.error
        assert current_run() == run
        assert stored_values(run) == stored_values(in_process)
        results = run.diagnostics["shards"]["results"]
        assert [r["shard"] for r in results] == [0, 1, 2, 3]
        assert {r["worker"].split("@")[0] for r in results} <= {"shard-a", "shard-b"}

        # A real failure in one shard: the database refuses one customer's value.
        refused = int(CustomerValue.objects.filter(run=run).order_by("-customer_id").values_list(
            "customer_id", flat=True)[0])
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE clv_customervalue ADD CONSTRAINT test_refuse_one "
                           "CHECK (customer_id <> %s) NOT VALID", [refused])
        try:
            outcome = run_clv_task.apply_async(kwargs={"as_of": AS_OF.isoformat(), "shards": 4}).get(timeout=120)
            failed = wait_until_finished(outcome["run"])
        finally:
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE clv_customervalue DROP CONSTRAINT test_refuse_one")
        assert failed.status == ClvRun.Status.FAILED
        assert "test_refuse_one" in failed.error
        assert current_run() == run  # the previous run stays current ...
        assert not CustomerValue.objects.filter(run=failed).exists()  # ... and the failed run's shards left nothing
    finally:
        set_celery_eager(True)
        stop_workers(*workers)
