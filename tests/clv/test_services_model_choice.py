"""The run picks its purchase model on the holdout window, stores the whole-relationship CLV with intervals, and BG/BB on request."""

import json
from datetime import UTC, date, datetime, time, timedelta
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command

from clv import services
from clv.engine.simulate import simulate_transactions
from clv.models import ClvRun, CustomerValue
from crm.models import Customer
from crm.services import purchases_bulk_insert
from tests.crm import factories as f

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]
AS_OF = date(2026, 6, 30)


def _load(sim, start_index=0):
    """Customers through the factory, their purchase lines through the bulk purchase service."""
    n = int(sim.first_purchase.size)
    customers = [f.customer(name=f"Regular {start_index + i}") for i in range(n)]
    ids = np.array([c.pk for c in customers])
    now = datetime.now(UTC)

    def rows():
        for c, d, amount in zip(sim.customer_ids, sim.dates.astype(date), sim.amounts, strict=True):
            when = datetime.combine(d, time(12), tzinfo=UTC)
            yield (int(ids[c]), None, 1, f"{amount:.2f}", f"{amount:.2f}", None, when, "", None, now, now)

    purchases_bulk_insert(columns=["customer_id", "product_id", "quantity", "unit_price", "amount", "unit_cost",
                                   "purchased_at", "order_ref", "external_id", "created_at", "updated_at"],
                          rows=rows())
    return ids


@pytest.fixture
def regular_buyers():
    # Erlang-3 gaps averaging 4 weeks (alpha per phase in days), little dropout: a customer base that buys on a rhythm.
    sim = simulate_transactions(600, (4.0, 36.0, 1.0, 20.0), (6.0, 4.0, 150.0), start="2024-07-01",
                                end=str(AS_OF), rng=np.random.default_rng(3), modified=True, regularity=3)
    return _load(sim)


def test_regular_buyers_run_chooses_mbgcnbd_and_beats_naive_in_recompute_json(regular_buyers, settings):
    settings.CLV_HOLDOUT_DAYS = 120
    out = StringIO()
    call_command("recompute_clv", "--as-of", AS_OF.isoformat(), "--json", stdout=out, verbosity=0)
    summary = json.loads(out.getvalue())
    holdout = summary["diagnostics"]["holdout"]
    comparison = holdout["comparison"]
    assert summary["model"] == "mbgcnbd"
    assert holdout["model"] == "mbgcnbd"
    assert summary["params"]["purchase"]["k"] >= 2
    assert holdout["mae_ratio_to_naive"] <= 0.9
    assert set(comparison["candidates"]) == {"bgnbd", "mbgnbd", "paretonbd", "mbgcnbd"}
    for row in comparison["candidates"].values():
        assert row["mae"] > 0
        assert row["log_likelihood"] < 0
    assert comparison["naive"]["mae"] > holdout["mae"]
    assert 0.5 < holdout["interval_coverage"]["coverage"] <= 1.0
    assert summary["diagnostics"]["totals"]["clv"] > summary["diagnostics"]["totals"]["horizon_value"] > 0


def test_values_carry_lifetime_clv_horizon_value_and_intervals(regular_buyers):
    run = services.run_clv(as_of=AS_OF)
    values = list(CustomerValue.objects.filter(run=run))
    assert len(values) == len(regular_buyers)
    for v in values[::37]:
        assert v.expected_purchases_low <= v.expected_purchases <= v.expected_purchases_high + 1
        assert v.clv_low <= v.clv <= v.clv_high + 1
        assert v.clv >= v.horizon_value  # the whole relationship is worth at least its next year
        assert v.dert >= 0
    total = sum(float(v.clv) for v in values)
    assert total == pytest.approx(run.diagnostics["totals"]["clv"], rel=1e-3)


def test_bgbb_is_selectable_per_run(settings):
    # Yearly donors: at most one gift a year, simulated on whole years.
    rng = np.random.default_rng(4)
    n = 300
    customers = [f.customer(name=f"Donor {i}") for i in range(n)]
    now = datetime.now(UTC)
    p = rng.beta(1.2, 0.75, n)
    theta = rng.beta(0.66, 2.8, n)
    rows = []
    for i, c in enumerate(customers):
        first = date(2020, 3, 1) + timedelta(days=int(rng.integers(0, 30)))
        rows.append((c.pk, None, 1, "50.00", "50.00", None, datetime.combine(first, time(12), tzinfo=UTC), "", None,
                     now, now))
        for year in range(1, 6):
            if rng.random() < theta[i]:
                break
            if rng.random() < p[i]:
                day = first + timedelta(days=365 * year + int(rng.integers(0, 300)))
                rows.append((c.pk, None, 1, f"{40 + 20 * rng.random():.2f}", "50.00", None,
                             datetime.combine(day, time(12), tzinfo=UTC), "", None, now, now))
    rows = [(*r[:4], r[3], *r[5:]) for r in rows]
    purchases_bulk_insert(columns=["customer_id", "product_id", "quantity", "unit_price", "amount", "unit_cost",
                                   "purchased_at", "order_ref", "external_id", "created_at", "updated_at"], rows=rows)
    settings.CLV_MODEL = "bgbb"
    run = services.run_clv(as_of=AS_OF)
    assert run.status == ClvRun.Status.SUCCEEDED
    assert run.model == "bgbb"
    assert set(run.params["purchase"]) == {"alpha", "beta", "gamma", "delta"}
    value = CustomerValue.objects.filter(run=run).first()
    assert value.clv_low is None  # no interval from BG/BB
    assert 0 <= value.p_alive <= 1
    assert Customer.objects.count() == n
