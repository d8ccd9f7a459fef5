"""The CLV run: values match the engine, the switch is atomic, a failure keeps yesterday, runs never overlap."""

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from clv import engine, services, tasks
from clv.models import ClvRun, CustomerValue, PortfolioSnapshot, PurchaseSummary
from clv.selectors import current_run, current_values, customer_value_history
from crm import services as crm
from crm.demo.seed import seed_demo
from crm.models import Customer, Purchase
from tests.crm import factories as f

pytestmark = pytest.mark.django_db(transaction=True)
AS_OF = date(2026, 6, 30)


def buy(customer, day: date, amount: str, cost: str = "0"):
    return f.purchase(customer=customer, purchased_at=datetime(day.year, day.month, day.day, 12, tzinfo=UTC),
                      amount=Decimal(amount), unit_price=Decimal(amount), unit_cost=Decimal(cost))


@pytest.fixture
def small_book(sales_org):
    """Three hand-made customers plus a seeded population so the models have something to fit."""
    seed_demo(customers=300, seed=11, as_of=AS_OF)
    a = f.customer(name="Two days, three lines", owner=sales_org["north_rep1"])
    buy(a, date(2026, 1, 10), "100", "60")
    buy(a, date(2026, 1, 10), "50", "20")  # same day: one occasion
    buy(a, date(2026, 3, 1), "80", "30")
    b = f.customer(name="Once", owner=sales_org["north_rep1"])
    buy(b, date(2026, 6, 30), "40")
    late = f.customer(name="After as-of")
    buy(late, date(2026, 7, 2), "999")
    return {"a": a, "b": b, "late": late}


def test_summary_counts_occasions_per_day_and_ignores_later_purchases(small_book):
    summary = services.summarise(as_of=AS_OF, default_margin=0.3)
    index = {int(c): i for i, c in enumerate(summary.customer_ids)}
    i = index[small_book["a"].pk]
    assert summary.frequency[i] == 1
    assert summary.recency[i] == (date(2026, 3, 1) - date(2026, 1, 10)).days
    assert summary.T[i] == (AS_OF - date(2026, 1, 10)).days
    assert summary.monetary[i] == pytest.approx(80)
    assert summary.total_value[i] == pytest.approx(230)
    assert summary.total_margin[i] == pytest.approx(230 - 110)
    j = index[small_book["b"].pk]
    assert (summary.frequency[j], summary.T[j]) == (0, 0)
    assert small_book["late"].pk not in index


def test_stored_values_equal_the_engine_on_the_same_summary(small_book, settings):
    settings.CLV_MODEL = "bgnbd"  # a named model: no choice, the run fits exactly this one
    run = services.run_clv(as_of=AS_OF)
    summary = services.summarise(as_of=AS_OF, default_margin=0.3)
    expected = engine.fit_and_score(
        summary.frequency, summary.recency, summary.T, summary.monetary, total_value=summary.total_value,
        historical_margin=summary.total_margin, margin=run.diagnostics["margin_ratio"],
    )
    # The transactional part: clv also carries the value of the demo's subscriptions (contract_value).
    stored = {cid: clv - contract for cid, clv, contract in
              CustomerValue.objects.filter(run=run).values_list("customer_id", "clv", "contract_value")}
    p_alive = dict(CustomerValue.objects.filter(run=run).values_list("customer_id", "p_alive"))
    for i in range(0, summary.customer_ids.size, 17):
        cid = int(summary.customer_ids[i])
        assert float(stored[cid]) == pytest.approx(expected.scores["clv"][i], abs=0.01)
        assert p_alive[cid] == pytest.approx(expected.scores["p_alive"][i])
    once = CustomerValue.objects.get(run=run, customer=small_book["b"])
    assert once.p_alive == 1.0  # BG/NBD: no repeat purchase yet means still alive
    assert run.counts["customers"] == len(stored)


def test_run_is_current_with_snapshots_history_and_diagnostics(small_book, sales_org, settings):
    settings.CLV_MODEL = "bgnbd"
    first = services.run_clv(as_of=AS_OF - timedelta(days=30))
    second = services.run_clv(as_of=AS_OF)
    assert current_run() == second
    assert not ClvRun.objects.get(pk=first.pk).is_current
    assert set(current_values().values_list("run_id", flat=True)) == {second.pk}
    assert [v.run_id for v in customer_value_history(small_book["a"])] == [first.pk, second.pk]
    total = sum(s.total_clv for s in PortfolioSnapshot.objects.filter(run=second))
    assert total == sum(v.clv for v in CustomerValue.objects.filter(run=second))
    assert second.diagnostics["holdout"]["model"] == "bgnbd"
    assert {"summary_seconds", "fit_score_seconds", "write_seconds", "switch_seconds"} <= set(second.timings)
    assert second.diagnostics["purchase"]["converged"] is True


def test_failure_while_writing_keeps_the_previous_run_current(small_book, monkeypatch):
    good = services.run_clv(as_of=AS_OF)
    real_write = services._write_values

    def write_then_fail(run, summary, scores):
        real_write(run, summary, scores)  # every value row is written ...
        raise RuntimeError("disk full")  # ... then the run dies before the switch

    monkeypatch.setattr(services, "_write_values", write_then_fail)
    with pytest.raises(RuntimeError):
        services.run_clv(as_of=AS_OF)
    failed = ClvRun.objects.exclude(pk=good.pk).get()
    assert failed.status == ClvRun.Status.FAILED
    assert "disk full" in failed.error
    assert current_run() == good
    assert not CustomerValue.objects.filter(run=failed).exists()


@pytest.mark.postgres
def test_a_reader_never_sees_a_half_written_run(small_book, monkeypatch):
    """While a run's values are written (uncommitted), another connection still reads the previous run."""
    from django.db import connections

    good = services.run_clv(as_of=AS_OF)
    real_write = services._write_values
    seen = {}

    def write_and_look(run, summary, scores):
        written = real_write(run, summary, scores)
        reader = connections.create_connection("default")
        try:
            with reader.cursor() as cursor:
                cursor.execute("SELECT id FROM clv_clvrun WHERE is_current")
                seen["current"] = [row[0] for row in cursor.fetchall()]
                cursor.execute("SELECT COUNT(*) FROM clv_customervalue WHERE run_id = %s", [run.pk])
                seen["new_values"] = cursor.fetchone()[0]
                cursor.execute("SELECT COUNT(*) FROM clv_customervalue WHERE run_id = %s", [good.pk])
                seen["old_values"] = cursor.fetchone()[0]
        finally:
            reader.close()
        seen["written"] = written
        return written

    monkeypatch.setattr(services, "_write_values", write_and_look)
    new = services.run_clv(as_of=AS_OF)
    assert seen["written"] > 0
    assert seen == {"current": [good.pk], "new_values": 0, "old_values": seen["written"], "written": seen["written"]}
    assert current_run() == new


def test_no_purchases_is_a_failed_run_with_a_clear_error():
    with pytest.raises(ValueError, match="no purchases"):
        services.run_clv(as_of=AS_OF)
    assert ClvRun.objects.get().status == ClvRun.Status.FAILED
    assert current_run() is None


@pytest.mark.postgres
def test_two_runs_cannot_overlap(small_book, settings):
    from django.db import connections

    settings.CLV_RUN_LOCK_WAIT_SECONDS = 0.5  # the second run waits this long for the lock, then gives way

    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [services.LOCK_KEY])
        with pytest.raises(services.ClvRunAlreadyRunning):
            services.run_clv(as_of=AS_OF)
        assert not ClvRun.objects.exists()
    finally:
        with other.cursor() as cursor:  # closing alone frees the lock only once the server notices
            cursor.execute("SELECT pg_advisory_unlock(%s)", [services.LOCK_KEY])
        other.close()
    assert services.run_clv(as_of=AS_OF).status == ClvRun.Status.SUCCEEDED


def test_recompute_clv_json_output(small_book):
    out = StringIO()
    call_command("recompute_clv", as_of=AS_OF, json=True, stdout=out, verbosity=0)
    payload = json.loads(out.getvalue())
    assert payload["status"] == "succeeded"
    assert payload["time_unit_days"] == 1
    assert set(payload["params"]["purchase"]) == {"r", "alpha", "a", "b"}
    assert all(k.endswith("_seconds") for k in payload["timings"])
    assert payload["counts"]["customers"] > 300
    assert np.isfinite(payload["diagnostics"]["purchase"]["log_likelihood"])


def test_recompute_clv_without_data_is_a_command_error():
    with pytest.raises(CommandError, match="no purchases"):
        call_command("recompute_clv", as_of=AS_OF, verbosity=0)


def test_connection_is_usable_after_run(small_book):
    services.run_clv(as_of=AS_OF)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def test_a_run_falls_back_to_the_aggregate_when_the_summary_is_out_of_step():
    seed_demo(customers=150, seed=6, as_of=AS_OF)
    Purchase.objects.filter(pk=Purchase.objects.order_by("pk").values("pk")[:1]).delete()  # bypasses the services
    run = services.run_clv(as_of=AS_OF)
    source = run.diagnostics["summary_source"]
    assert source["source"] == "lines"
    assert "rebuild_clv_summary" in source["reason"]
    out = StringIO()
    call_command("rebuild_clv_summary", stdout=out)
    assert "customers" in out.getvalue()
    assert services.run_clv(as_of=AS_OF).diagnostics["summary_source"]["source"] == "kept"


VALUE_FIELDS = ("customer_id", "clv", "p_alive", "expected_purchases", "expected_avg_value", "historical_value",
                "classic_value", "frequency", "recency", "T")


def stored_values(run: ClvRun) -> list[tuple]:
    return list(CustomerValue.objects.filter(run=run).order_by("customer_id").values_list(*VALUE_FIELDS))


@pytest.mark.postgres
def test_runs_from_the_kept_summary_per_day_rows_and_lines_store_identical_values(settings):
    # A named model: with "auto", MBG/CNBD-k competes only where the source has inter-purchase times.
    settings.CLV_MODEL = "bgnbd"
    seed_demo(customers=400, seed=7, as_of=AS_OF)
    kept = services.run_clv(as_of=AS_OF)
    customer = Customer.objects.filter(external_id__startswith="DEMO-").first()
    crm.purchase_record(customer=customer, purchased_at=datetime(2026, 7, 3, 12, tzinfo=UTC), amount=Decimal("70"))
    days = services.run_clv(as_of=AS_OF)
    PurchaseSummary.objects.all().delete()  # out of step: the run must aggregate the lines
    lines = services.run_clv(as_of=AS_OF)

    assert [r.diagnostics["summary_source"]["source"] for r in (kept, days, lines)] == ["kept", "days", "lines"]
    assert stored_values(kept) == stored_values(days) == stored_values(lines)
    assert len(stored_values(kept)) == kept.counts["customers"] == 400
    assert kept.params == days.params == lines.params
    holdouts = [dict(r.diagnostics["holdout"]) for r in (kept, days, lines)]
    for report in holdouts:  # wall times differ
        report["comparison"] = dict(report["comparison"], candidates={
            name: {k: v for k, v in row.items() if k != "fit_seconds"}
            for name, row in report["comparison"]["candidates"].items()})
    assert holdouts[0] == holdouts[1] == holdouts[2]
    assert kept.diagnostics["holdout"]["n_customers"] > 100
    assert kept.timings["summary_seconds"] < lines.timings["summary_seconds"]


def test_a_sharded_run_stores_the_same_values_as_one_process(small_book):
    whole = services.run_clv(as_of=AS_OF)
    sharded = services.run_clv(as_of=AS_OF, shards=3)  # tasks run in-process in tests: the same chord, eagerly
    assert sharded.status == ClvRun.Status.SUCCEEDED
    assert current_run() == sharded
    assert stored_values(sharded) == stored_values(whole)
    assert sharded.params == whole.params
    results = sharded.diagnostics["shards"]["results"]
    assert [r["shard"] for r in results] == [0, 1, 2]
    assert sum(r["customers"] for r in results) == sharded.counts["customers"] == whole.counts["customers"]
    assert min(r["customers"] for r in results) > 0
    totals = [sum(s.total_clv for s in PortfolioSnapshot.objects.filter(run=r)) for r in (whole, sharded)]
    assert totals[0] == totals[1]
    assert {"summary_seconds", "fit_score_seconds", "shards_seconds", "switch_seconds"} <= set(sharded.timings)


def test_a_failed_shard_fails_the_run_and_keeps_the_previous_one(small_book, monkeypatch):
    good = services.run_clv(as_of=AS_OF)
    real_score_shard = tasks.score_shard

    def second_shard_dies(**kwargs):
        if kwargs["shard"] == 1:
            raise RuntimeError("worker lost its disk")
        return real_score_shard(**kwargs)

    monkeypatch.setattr(tasks, "score_shard", second_shard_dies)
    with pytest.raises(RuntimeError, match="lost its disk"):
        services.run_clv(as_of=AS_OF, shards=3)
    failed = ClvRun.objects.exclude(pk=good.pk).get()
    assert failed.status == ClvRun.Status.FAILED
    assert "lost its disk" in failed.error
    assert current_run() == good
    assert not CustomerValue.objects.filter(run=failed).exists()  # shard 0 had written: dropped


def test_a_sharded_run_still_scoring_blocks_new_runs_until_it_times_out(small_book, settings):
    scoring = ClvRun.objects.create(as_of=AS_OF, started_at=timezone.now(), settings={"shards": 2},
                                    diagnostics={"shards": {"ranges": [[0, 10], [10, None]]}})  # handed to workers
    with pytest.raises(services.ClvRunAlreadyRunning, match="shards"):
        services.run_clv(as_of=AS_OF)
    ClvRun.objects.filter(pk=scoring.pk).update(
        started_at=timezone.now() - timedelta(minutes=settings.CLV_RUN_TIMEOUT_MINUTES + 1)
    )
    assert services.run_clv(as_of=AS_OF).status == ClvRun.Status.SUCCEEDED
    scoring.refresh_from_db()
    assert scoring.status == ClvRun.Status.FAILED
    assert "abandoned" in scoring.error


def test_shard_ranges_cover_every_customer_once():
    ids = np.array([3, 4, 9, 10, 11, 40, 41, 90])
    ranges = services.shard_ranges(ids, 3)
    assert ranges[0][0] == 0
    assert ranges[-1][1] is None
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert [int(((ids >= lo) & ((ids < hi) if hi is not None else True)).sum()) for lo, hi in ranges] == [2, 3, 3]
    assert services.shard_ranges(np.array([5]), 4) == [[0, None]]


def test_recompute_clv_with_shards(small_book):
    out = StringIO()
    call_command("recompute_clv", as_of=AS_OF, json=True, shards=2, stdout=out, verbosity=0)
    payload = json.loads(out.getvalue())
    assert payload["status"] == "succeeded"
    assert payload["settings"]["shards"] == 2
    assert [r["shard"] for r in payload["diagnostics"]["shards"]["results"]] == [0, 1]
