"""values/?run=<id> reads only a run that succeeded: never the partial values of a running or failed run."""

from __future__ import annotations

from datetime import date

import pytest
from django.utils import timezone

from clv.models import ClvRun, CustomerValue

pytestmark = pytest.mark.django_db


def _value(run, customer, clv):
    return CustomerValue.objects.create(run=run, customer=customer, clv=clv, p_alive=0.8, expected_purchases=2,
                                        expected_avg_value=50, historical_value=10, classic_value=20, frequency=2,
                                        recency=30, T=60)


@pytest.mark.parametrize("status", [ClvRun.Status.RUNNING, ClvRun.Status.FAILED])
def test_values_of_a_run_that_has_not_succeeded_are_not_served(api, book, sales_org, status):
    now = timezone.now()
    done = ClvRun.objects.create(status=ClvRun.Status.SUCCEEDED, is_current=True, as_of=date(2026, 10, 1),
                                 started_at=now, finished_at=now, model="bgnbd")
    partial = ClvRun.objects.create(status=status, as_of=date(2026, 11, 1), started_at=now, model="bgnbd",
                                    settings={"shards": 4})
    customer = book["a1"]["customer"]
    _value(done, customer, "100.00")
    _value(partial, customer, "999.00")  # a shard of a sharded run has written this one
    client = api(sales_org["north_rep1"])

    listed = client.get("/api/v1/values/", {"run": partial.pk})
    assert listed.status_code == 400
    assert listed["Content-Type"] == "application/problem+json"
    assert listed.json()["errors"][0]["field"] == "run"
    assert status in listed.json()["errors"][0]["message"]
    one = client.get(f"/api/v1/values/{customer.pk}/", {"run": partial.pk})
    assert one.status_code == 400
    assert "999.00" not in one.content.decode()
    assert [v["clv"] for v in client.get("/api/v1/values/", {"run": done.pk}).json()["results"]] == ["100.00"]
    assert [v["clv"] for v in client.get("/api/v1/values/").json()["results"]] == ["100.00"]
