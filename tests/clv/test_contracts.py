"""Subscriptions through the product: products and holdings from the API, one CLV run, values out.

The renewal histories are drawn from a known sBG, written through the API (a product resource
and the bulk holdings path), valued by one run and read back from the run summary
(recompute_clv --json), the HoldingValue rows and the API.
"""

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.tokens import token_issue
from clv import contracts, renewals, services
from clv.engine import contractual as engine
from clv.models import ClvRun, CustomerValue, HoldingValue
from crm.demo.seed import seed_demo
from crm.models import Holding, Product
from tests.crm import factories as f

AS_OF = date.today()  # renewals at risk are counted from today
TRUTH = {"alpha": 1.2, "beta": 3.0}


@pytest.fixture
def api():
    """api(user) -> an APIClient sending that user's freshly issued token."""

    def client_for(user) -> APIClient:
        _, key = token_issue(user=user, name="tests")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client

    return client_for


def _dates(*values: str) -> np.ndarray:
    return np.array(values, dtype="datetime64[D]")


def test_add_months_clips_to_the_end_of_the_month():
    got = contracts.add_months(_dates("2026-01-31", "2025-11-15", "2024-02-29"), np.array([1, 3, 12]))
    assert list(got.astype(str)) == ["2026-02-28", "2026-02-15", "2025-02-28"]


def _contracts(since, end, ended, months):
    n = len(since)
    return contracts.Contracts(
        holding_id=np.arange(n), customer_id=np.arange(n), family=np.array(["F"] * n, dtype=object),
        period=np.array(["month"] * n, dtype=object), period_months=np.array(months), since=_dates(*since),
        end=_dates(*end), ended=np.array(ended), period_margin=np.ones(n),
    )


def test_periods_begun_counts_the_current_period_of_an_active_contract_and_stops_at_a_missed_renewal():
    c = _contracts(
        since=["2026-01-15", "2026-01-15", "2026-01-15", "2026-01-15", "2025-07-01", "2026-06-30"],
        end=["2026-06-30", "2026-06-14", "2026-06-15", "2026-06-16", "2026-06-30", "2026-06-30"],
        ended=[False, True, True, True, False, True],
        months=[1, 1, 1, 1, 12, 1],
    )
    # active since 15 Jan: in its 6th monthly period on 30 Jun; cancelled 14 Jun: in the 5th; ending on
    # the 15 Jun renewal date: 5 periods (that renewal not made); 16 Jun: it had begun its 6th.
    # A yearly one since 1 Jul 2025 is still in its first year; one ended on its first day held 1.
    assert list(contracts.periods_begun(c)) == [6, 5, 5, 6, 1, 1]


def _histories(n: int, rng) -> list[tuple[date, date | None, str]]:
    """n yearly contracts started over the last 8 years, renewals drawn from the known sBG."""
    rows = []
    for _ in range(n):
        start_year = int(rng.integers(AS_OF.year - 8, AS_OF.year))
        since = date(start_year, int(rng.integers(1, 13)), int(rng.integers(1, 29)))
        theta = rng.beta(TRUTH["alpha"], TRUTH["beta"])
        lasted = min(int(rng.geometric(theta)), 50)  # periods until the first missed renewal
        until = date(since.year + lasted, since.month, since.day)
        rows.append((since, until, "cancelled") if until <= AS_OF else (since, None, "active"))
    return rows


@pytest.fixture
def subscription_book(sales_org, api):
    """A seeded purchase history, plus a yearly support subscription and 300 contracts made by the API."""
    seed_demo(customers=150, seed=5, as_of=AS_OF)
    admin = api(sales_org["admin"])
    product = admin.post("/api/v1/products/", {
        "external_id": "SUP-Y", "sku": "SUP-Y", "name": "Support, yearly", "family": "Support plans", "list_price": "1200.00",
        "unit_cost": "200.00", "renewal_period": "year", "period_price": "1200.00",
    }, format="json")
    assert product.status_code == 201, product.content
    owners = [sales_org["north_rep1"], sales_org["south_rep1"]]
    rng = np.random.default_rng(21)
    customers = [f.customer(name=f"Subscriber {i}", owner=owners[i % 2], external_id=f"SUB-{i}") for i in range(300)]
    records = [
        {"external_id": f"H-SUB-{i}", "customer": f"SUB-{i}", "product": "SUP-Y", "since": since.isoformat(),
         "until": until.isoformat() if until else None, "status": status}
        for i, (since, until, status) in enumerate(_histories(300, rng))
    ]
    bulk = admin.post("/api/v1/holdings/bulk/", {"records": records}, format="json")
    assert bulk.status_code == 200, bulk.content
    for day, amount in ((date(2026, 1, 15), "500"), (date(2026, 4, 2), "300")):  # the first also buys ad hoc
        f.purchase(customer=customers[0], amount=Decimal(amount), unit_price=Decimal(amount),
                   purchased_at=datetime(day.year, day.month, day.day, 12, tzinfo=UTC))
    return {"product": Product.objects.get(sku="SUP-Y"), "customers": customers, "api": api}


@pytest.mark.django_db
def test_subscription_product_needs_a_period_price(sales_org, api):
    response = api(sales_org["admin"]).post("/api/v1/products/", {
        "sku": "SUB-NOPRICE", "name": "x", "family": "x", "list_price": "10.00", "renewal_period": "month",
    }, format="json")
    assert response.status_code == 400
    assert "period_price" in json.dumps(response.json())
    assert not Product.objects.filter(sku="SUB-NOPRICE").exists()


@pytest.mark.django_db(transaction=True)
def test_one_run_fits_the_contracts_and_values_every_active_holding(subscription_book):
    out = StringIO()
    call_command("recompute_clv", "--as-of", AS_OF.isoformat(), "--json", "--shards", "1", stdout=out,
                 verbosity=0)
    summary = json.loads(out.getvalue())
    report = summary["diagnostics"]["contracts"]
    segment = next(s for s in report["segments"] if s["family"] == "Support plans")
    assert segment["fitted_on"] == "own"
    assert set(segment["fits"]) == {"sbg", "bdw"}  # both recorded
    assert segment["chosen"] in ("sbg", "bdw")
    sbg = segment["fits"]["sbg"]["params"]
    assert sbg["alpha"] == pytest.approx(TRUTH["alpha"], rel=0.5)
    assert sbg["beta"] == pytest.approx(TRUTH["beta"], rel=0.5)

    active = Holding.objects.filter(product=subscription_book["product"], status="active")
    values = HoldingValue.objects.filter(run_id=summary["id"], holding__product=subscription_book["product"])
    assert values.count() == active.count() > 0
    params = segment["fits"][segment["chosen"]]["params"]
    for hv in values[:20]:
        assert hv.p_renew == pytest.approx(float(engine.retention(hv.periods, **params)), rel=1e-9)
        assert hv.next_renewal > AS_OF
        assert hv.next_renewal <= AS_OF + timedelta(days=366)
        assert hv.period_value == Decimal("1000.00")  # 1,200 a year less 200 cost
        assert 0 < hv.residual_value
        assert float(hv.value_at_stake) == pytest.approx((1 - hv.p_renew) * float(hv.residual_value), abs=0.02)


@pytest.mark.django_db(transaction=True)
def test_a_customer_who_subscribes_and_buys_ad_hoc_gets_both_parts(subscription_book):
    run = services.run_clv(as_of=AS_OF, shards=1)
    values = CustomerValue.objects.filter(run=run)
    both = values.filter(contract_value__gt=0, expected_purchases__gt=0).first()
    assert both is not None, "the subscriber with purchases has a transactional and a contractual part"
    holdings = HoldingValue.objects.filter(run=run, customer_id=both.customer_id)
    assert both.contract_value == sum(h.residual_value for h in holdings)
    transactional = both.clv - both.contract_value
    assert transactional > 0
    assert both.transactional_value == transactional
    only = values.filter(contract_value__gt=0, expected_purchases=0, frequency=0, historical_value=0).first()
    assert only is not None
    assert only.clv == only.contract_value  # contract only: CLV is the contract value


@pytest.mark.django_db
def test_renewals_at_risk_in_the_api_are_visible_ranked_by_value_at_stake_and_explained(subscription_book, sales_org):
    run = services.run_clv(as_of=AS_OF, shards=1)
    rep = subscription_book["api"](sales_org["north_rep1"])
    response = rep.get("/api/v1/renewals-at-risk/", {"page_size": 500})
    assert response.status_code == 200
    rows = response.json()["results"]
    expected = HoldingValue.objects.filter(
        run=run, customer__owner=sales_org["north_rep1"], next_renewal__lte=AS_OF + timedelta(days=90),
        holding__status="active", value_at_stake__gt=0,
    )
    assert len(rows) == expected.count() > 0
    assert {r["owner"] for r in rows} == {sales_org["north_rep1"].pk}
    stakes = [Decimal(r["value_at_stake"]) for r in rows]
    assert stakes == sorted(stakes, reverse=True)
    first = rows[0]
    assert first["reason"].startswith("Renews in ")
    assert "do not renew" in first["reason"]
    assert 0 < first["p_renew"] < 1
    assert AS_OF <= date.fromisoformat(first["next_renewal"]) <= AS_OF + timedelta(days=90)

    page = rep.get("/api/v1/renewals-at-risk/", {"page_size": 2}).json()
    following = rep.get(page["next"]).json()
    assert [r["id"] for r in page["results"] + following["results"]] == [r["id"] for r in rows[:4]]

    south = subscription_book["api"](sales_org["south_rep1"]).get("/api/v1/renewals-at-risk/").json()["results"]
    assert south
    assert not {r["id"] for r in south} & {r["id"] for r in rows}
    assert rep.get("/api/v1/renewals-at-risk/", {"days": "0"}).status_code == 400


@pytest.mark.django_db
def test_holding_values_and_contract_value_in_the_api(subscription_book, sales_org):
    services.run_clv(as_of=AS_OF, shards=1)
    holding = Holding.objects.filter(product=subscription_book["product"], status="active",
                                     customer__owner=sales_org["north_rep1"]).first()
    rep = subscription_book["api"](sales_org["north_rep1"])
    rows = rep.get("/api/v1/holding-values/", {"holding": holding.pk}).json()["results"]
    assert len(rows) == 1
    assert rows[0]["holding_external_id"] == holding.external_id
    assert rows[0]["renewal_period"] == "year"
    assert 0 < rows[0]["p_renew"] < 1
    assert Decimal(rows[0]["residual_value"]) > 0
    value = rep.get(f"/api/v1/values/{holding.customer_id}/").json()
    assert Decimal(value["contract_value"]) >= Decimal(rows[0]["residual_value"])
    south = subscription_book["api"](sales_org["south_rep1"])
    assert south.get("/api/v1/holding-values/", {"holding": holding.pk}).json()["results"] == []


@pytest.mark.django_db
def test_my_day_and_the_dashboard_list_the_renewals_at_risk(subscription_book, sales_org, client):
    services.run_clv(as_of=AS_OF, shards=1)
    top = renewals.renewals_at_risk(sales_org["north_rep1"], owner_ids=[sales_org["north_rep1"].pk]).first()
    client.force_login(sales_org["north_rep1"])
    page = client.get("/my-day/").content.decode()
    assert 'id="renewals-at-risk"' in page
    assert top.customer.name in page
    assert "do not renew" in page
    holdings = client.get(f"/customers/{top.customer_id}/?tab=holdings").content.decode()
    assert "P(renew)" in holdings
    assert f"renews {top.next_renewal.day} {top.next_renewal:%b %Y}" in holdings
    client.force_login(sales_org["north_manager"])
    dashboard = client.get("/dashboard/").content.decode()
    assert 'id="table-renewals"' in dashboard
    assert top.customer.name in dashboard


@pytest.mark.django_db(transaction=True)
def test_a_failing_contract_fit_fails_the_run_and_keeps_the_previous_values(subscription_book, monkeypatch):
    first = services.run_clv(as_of=AS_OF - timedelta(days=1), shards=1)
    kept = HoldingValue.objects.filter(run=first).count()
    assert kept > 0

    def broken(data, **kwargs):
        raise FloatingPointError("renewal fit diverged")

    monkeypatch.setattr(contracts.engine, "choose_model", broken)
    with pytest.raises(FloatingPointError):
        services.run_clv(as_of=AS_OF, shards=1)
    failed = ClvRun.objects.exclude(pk=first.pk).get()
    assert failed.status == ClvRun.Status.FAILED
    assert "renewal fit diverged" in failed.error
    assert not CustomerValue.objects.filter(run=failed).exists()
    assert not HoldingValue.objects.filter(run=failed).exists()
    first.refresh_from_db()
    assert first.is_current
    assert HoldingValue.objects.filter(run=first).count() == kept


@pytest.mark.django_db
def test_seed_demo_plants_subscriptions_whose_cancellations_fall_on_renewal_dates():
    truth = seed_demo(customers=400, seed=9, as_of=AS_OF)
    assert set(truth["subscriptions"]) == {"API-ACCESS", "MOBILE", "REPORTS", "SSO", "COMPLIANCE"}
    assert sum(p["cancelled"] for p in truth["subscriptions"].values()) > 20
    for sku, planted in truth["subscriptions"].items():
        product = Product.objects.get(sku=sku)
        assert product.renewal_period == planted["renewal_period"]
        assert product.period_price == product.list_price
        assert planted["cancelled"] < planted["contracts"]
        months = Product.PERIOD_MONTHS[product.renewal_period]
        churned = Holding.objects.filter(product=product, status="cancelled", customer__lost_on__isnull=True)
        assert churned.count() == planted["cancelled"]
        for h in churned[:25]:
            held = contracts.full_months(np.array([h.since], dtype="datetime64[D]"),
                                         np.array([h.until], dtype="datetime64[D]"))[0]
            assert held % months == 0
            assert contracts.add_months(np.array([h.since], dtype="datetime64[D]"), np.array([held]))[0] == h.until


@pytest.mark.django_db
def test_products_become_subscriptions_through_the_bulk_api_all_or_nothing(sales_org, api):
    admin = api(sales_org["admin"])
    records = [
        {"external_id": "SUBP-1", "sku": "SUBP-1", "name": "Hosting", "family": "Hosting", "list_price": "90.00",
         "renewal_period": "month", "period_price": "90.00"},
        {"external_id": "SUBP-2", "sku": "SUBP-2", "name": "Care", "family": "Care", "list_price": "10.00",
         "renewal_period": "fortnight", "period_price": "10.00"},
    ]
    refused = admin.post("/api/v1/products/bulk/", {"records": records}, format="json")
    assert refused.status_code == 422
    assert [(e["index"], e["field"]) for e in refused.json()["errors"]] == [(1, "renewal_period")]
    assert not Product.objects.filter(sku__startswith="SUBP-").exists()

    records[1]["renewal_period"] = "quarter"
    assert admin.post("/api/v1/products/bulk/", {"records": records}, format="json").json()["created"] == 2
    hosting = Product.objects.get(sku="SUBP-1")
    assert (hosting.renewal_period, hosting.period_price, hosting.period_months) == ("month", Decimal("90.00"), 1)

    cleared = admin.patch(f"/api/v1/products/{hosting.pk}/", {"renewal_period": ""}, format="json")
    assert cleared.status_code == 200, cleared.content
    assert cleared.json()["period_price"] is None
    priced = admin.patch(f"/api/v1/products/{hosting.pk}/", {"period_price": "5.00"}, format="json")
    assert priced.status_code == 400
    assert "period_price" in priced.json()["errors"][0]["field"]


@pytest.mark.django_db(transaction=True)
def test_a_sharded_run_values_the_contracts_as_one_process_does(subscription_book):
    whole = services.run_clv(as_of=AS_OF, shards=1)
    sharded = services.run_clv(as_of=AS_OF, shards=3)  # tasks run in-process in tests: the same chord, eagerly

    def contract_rows(run):
        return sorted(HoldingValue.objects.filter(run=run).values_list("holding_id", "p_renew", "residual_value"))

    assert sharded.is_current
    assert contract_rows(sharded) == contract_rows(whole) != []
    assert sharded.diagnostics["contracts"]["segments"] == whole.diagnostics["contracts"]["segments"]
    assert sharded.counts["holdings_valued"] == whole.counts["holdings_valued"] > 0
    assert "contracts_seconds" in sharded.timings
