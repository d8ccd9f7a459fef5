"""The nightly task: in-process without a broker, and through a real Celery worker on the real Redis broker."""

import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from django.conf import settings

from clv.models import ClvRun
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


@pytest.mark.postgres
@pytest.mark.redis
def test_task_runs_on_a_real_worker_over_redis():
    seed_demo(customers=300, seed=22, as_of=AS_OF)
    db = settings.DATABASES["default"]
    database_url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=settings.REDIS_URL,
               CELERY_BROKER_URL=settings.CELERY_BROKER_URL)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-P", "solo", "--loglevel=warning",
         "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
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
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
