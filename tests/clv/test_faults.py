"""A CLV run under faults: its worker killed, its database connection terminated, its worker gone.

After each, the run is marked failed within a bounded time, the previous run stays current,
and the run is tried again and completes. The real-worker tests line the run up with table
locks held by the test (no sleeps to hope for the right moment): the run's value write waits
on a lock of clv_customervalue while the test strikes, and the retried run waits on a lock of
clv_portfoliosnapshot (after its values, before its switch) while the test checks that the
previous run is still current.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import psycopg2
import pytest
from django.conf import settings
from django.db import connection, connections

from clv import services
from clv.models import ClvRun, CustomerValue
from clv.selectors import current_run
from clv.tasks import run_clv_task
from config.celery import app as celery_app
from crm.demo.seed import seed_demo
from tests.conftest import set_celery_eager

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 6, 30)
BOUND_SECONDS = 30  # a dead run is marked failed within this long (it takes about a second or two)
pytestmark = pytest.mark.django_db(transaction=True)


def _db_params() -> dict:
    db = settings.DATABASES["default"]
    return {"dbname": db["NAME"], "user": db["USER"], "host": db["HOST"] or "127.0.0.1",
            "port": db["PORT"] or 5432, "password": db["PASSWORD"] or None}


def start_worker(name: str, pool: str = "prefork") -> subprocess.Popen:
    """A worker on the test database and the real broker, one process at a time, retrying after ~1 s."""
    p = _db_params()
    env = dict(os.environ, DATABASE_URL=f"postgres://{p['user']}@{p['host']}:{p['port']}/{p['dbname']}",
               REDIS_URL=settings.REDIS_URL, CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
               CLV_RETRY_BACKOFF_SECONDS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-P", pool, "-c", "1", "--loglevel=warning",
         "--without-mingle", "--without-gossip", "-n", f"{name}@%h"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def stop_worker(worker: subprocess.Popen) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


class TableLock:
    """ACCESS EXCLUSIVE on a table, from a connection of the test's own: writers to it wait."""

    def __init__(self, table: str):
        self.table = table
        self.conn = psycopg2.connect(**_db_params())
        self.conn.cursor().execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")

    def waiter(self, timeout: float = 90) -> int:
        """The backend pid of a session waiting for this lock (once one does)."""
        deadline = time.monotonic() + timeout
        cursor = psycopg2.connect(**_db_params())
        try:
            with cursor.cursor() as cur:
                while time.monotonic() < deadline:
                    cur.execute("SELECT l.pid FROM pg_locks l WHERE NOT l.granted AND l.relation = %s::regclass",
                                [self.table])
                    row = cur.fetchone()
                    if row:
                        return row[0]
                    time.sleep(0.05)
        finally:
            cursor.close()
        raise AssertionError(f"nothing waited for {self.table} within {timeout} s")

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def running_run() -> ClvRun | None:
    return ClvRun.objects.filter(status=ClvRun.Status.RUNNING).order_by("-pk").first()


def worker_child(worker: subprocess.Popen) -> int:
    """The pool process executing tasks for a prefork worker of one process."""
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def _strike_during_the_write_then_check_recovery(strike) -> None:
    """Run the task on a real worker; while its value write waits, strike(worker, backend pid)."""
    seed_demo(customers=300, seed=31, as_of=AS_OF)
    previous = services.run_clv(as_of=AS_OF)
    assert current_run() == previous
    values_lock, snapshot_lock = TableLock("clv_customervalue"), TableLock("clv_portfoliosnapshot")
    celery_app.control.purge()  # nothing left on the queue by an earlier test runs in this one
    worker = start_worker("faults")
    set_celery_eager(False)
    try:
        run_clv_task.apply_async(kwargs={"as_of": AS_OF.isoformat()})
        backend = values_lock.waiter()
        struck = running_run()
        assert struck is not None
        assert struck.pk != previous.pk
        strike(worker, backend)
        struck_at = time.monotonic()
        values_lock.release()

        failed = wait_for(lambda: ClvRun.objects.filter(pk=struck.pk).exclude(status=ClvRun.Status.RUNNING).first(),
                          BOUND_SECONDS, "the struck run is marked failed")
        assert failed.status == ClvRun.Status.FAILED
        assert failed.finished_at is not None
        assert time.monotonic() - struck_at < BOUND_SECONDS
        assert current_run() == previous

        snapshot_lock.waiter()  # the run tried again has written its values and waits to switch
        retried = running_run()
        assert retried is not None
        assert retried.pk not in (previous.pk, struck.pk)
        assert current_run() == previous  # still, until the retried run switches
        snapshot_lock.release()
        done = wait_for(lambda: ClvRun.objects.filter(pk=retried.pk).exclude(status=ClvRun.Status.RUNNING).first(),
                        60, "the retried run finishes")
        assert done.status == ClvRun.Status.SUCCEEDED, done.error
        assert current_run() == done
        assert CustomerValue.objects.filter(run=done).count() == done.counts["customers"]
        assert not CustomerValue.objects.filter(run=failed).exists()
        return failed
    finally:
        values_lock.release()
        snapshot_lock.release()
        set_celery_eager(True)
        stop_worker(worker)
        celery_app.control.purge()


@pytest.mark.postgres
@pytest.mark.redis
def test_killing_the_workers_child_during_the_write_fails_the_run_and_runs_it_again():
    def kill_child(worker, backend):
        os.kill(worker_child(worker), signal.SIGKILL)

    failed = _strike_during_the_write_then_check_recovery(kill_child)
    assert failed.error.startswith(services.ABANDONED)


@pytest.mark.postgres
@pytest.mark.redis
def test_terminating_the_runs_database_connection_during_the_write_fails_it_and_retries():
    def terminate(worker, backend):
        with psycopg2.connect(**_db_params()) as other, other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
            assert cursor.fetchone()[0]

    failed = _strike_during_the_write_then_check_recovery(terminate)
    assert "OperationalError" in failed.error


# --- without a worker ------------------------------------------------------------------------


@pytest.mark.postgres
def test_run_fail_records_the_failure_after_the_connection_was_terminated():
    run = ClvRun.objects.create(as_of=AS_OF, started_at=services.timezone.now())
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()
    services.run_fail(run_id=run.pk, error="OperationalError: terminating connection")
    run.refresh_from_db()
    assert run.status == ClvRun.Status.FAILED
    assert run.finished_at is not None


@pytest.mark.postgres
def test_a_run_left_running_by_a_dead_worker_is_failed_by_the_next_run():
    seed_demo(customers=120, seed=32, as_of=AS_OF)
    dead = ClvRun.objects.create(as_of=AS_OF, started_at=services.timezone.now())  # nobody holds the lock
    run = services.run_clv(as_of=AS_OF)
    assert run.status == ClvRun.Status.SUCCEEDED
    dead.refresh_from_db()
    assert dead.status == ClvRun.Status.FAILED
    assert dead.error.startswith(f"{services.ABANDONED}: its worker stopped")


@pytest.mark.postgres
def test_a_live_run_is_not_failed_while_it_holds_the_lock():
    live = ClvRun.objects.create(as_of=AS_OF, started_at=services.timezone.now())
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [services.LOCK_KEY])
        assert services.runs_fail_abandoned() == []
        live.refresh_from_db()
        assert live.status == ClvRun.Status.RUNNING
    finally:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [services.LOCK_KEY])
        other.close()
    assert services.runs_fail_abandoned() == [live.pk]


def test_recompute_now_is_not_blocked_by_a_dead_run_and_the_runs_page_tells_the_truth(client, sales_org):
    seed_demo(customers=120, seed=33, as_of=AS_OF)
    dead = ClvRun.objects.create(as_of=AS_OF, started_at=services.timezone.now())
    client.force_login(sales_org["north_manager"])
    page = client.get("/clv/runs/")
    assert page.status_code == 200
    dead.refresh_from_db()
    assert dead.status == ClvRun.Status.FAILED  # the page does not show it running
    ClvRun.objects.filter(pk=dead.pk).update(status=ClvRun.Status.RUNNING, finished_at=None, error="")
    response = client.post("/clv/runs/recompute/")
    assert response.status_code == 302
    dead.refresh_from_db()
    assert dead.status == ClvRun.Status.FAILED
    assert ClvRun.objects.filter(status=ClvRun.Status.SUCCEEDED).exists()  # a run was queued (in-process here)
