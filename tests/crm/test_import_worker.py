"""An import from the page runs on a real Celery worker over Redis, reading the stored file as a stream."""

from __future__ import annotations

import time

import pytest

from crm import import_jobs
from crm.import_models import ImportFileChunk, ImportJob
from crm.models import Customer
from tests.clv.test_tasks import start_worker, stop_workers
from tests.conftest import set_celery_eager

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def test_an_import_runs_on_a_real_worker(sales_org):
    manager = sales_org["north_manager"]
    text = "Number,Company\n" + "".join(f"W-{i},Worker customer {i}\n" for i in range(2500))
    job = import_jobs.import_job_create(user=manager, kind="customers", name="w.csv", chunks=[text.encode()])
    assert import_jobs.import_job_set_mapping(job=job, mapping={"Number": "external_id", "Company": "name"}) == []
    worker = start_worker("imports")
    set_celery_eager(False)
    try:
        import_jobs.import_job_start(job=job)
        deadline = time.monotonic() + 120
        job.refresh_from_db()
        while job.status in (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING) and time.monotonic() < deadline:
            time.sleep(0.2)
            job.refresh_from_db()
    finally:
        set_celery_eager(True)
        stop_workers(worker)
    assert job.status == ImportJob.Status.SUCCEEDED, job.errors
    assert job.created == 2500
    assert Customer.objects.filter(owner=manager, external_id__startswith="W-").count() == 2500
    assert ImportFileChunk.objects.filter(job=job).count() == 0
