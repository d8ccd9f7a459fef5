"""Opportunity regeneration against planted facts: associations, near-capacity holdings, status keeping, won linking.

seed_demo was not on main when this was written, so a small deterministic generator here plants
the facts (an association A -> B, near-capacity holdings of a tier-1 product).
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.utils import timezone

from crm.models import Customer, Holding, Opportunity, Product, Usage
from crm.opportunities import engine
from crm.opportunities.services import opportunities_regenerate
from crm.services import opportunity_set_status, purchase_record

AS_OF = date(2026, 6, 30)


def plant(n_customers=400, seed=7, owner=None):
    """Customers holding random products, with 'ANA-PRO -> DATA-CONN' planted and near-capacity SEATS-1 holdings."""
    rng = random.Random(seed)
    products = {}
    for i in range(12):
        products[f"P{i:02d}"] = Product.objects.create(
            sku=f"P{i:02d}", name=f"Product {i:02d}", family=f"fam{i}", tier=1,
            list_price=Decimal(100 + 10 * i), unit_cost=Decimal(40),
        )
    products["ANA-PRO"] = Product.objects.create(
        sku="ANA-PRO", name="Analytics Pro", family="analytics", tier=1, list_price=500, unit_cost=100
    )
    products["DATA-CONN"] = Product.objects.create(
        sku="DATA-CONN", name="Data Connector", family="connector", tier=1, list_price=300, unit_cost=50
    )
    seats1 = Product.objects.create(
        sku="SEATS-1", name="Seats Basic", family="seats", tier=1, list_price=200, unit_cost=50,
        capacity_unit="seats", capacity_per_unit=50,
    )
    seats2 = Product.objects.create(
        sku="SEATS-2", name="Seats Plus", family="seats", tier=2, list_price=400, unit_cost=80,
        capacity_unit="seats", capacity_per_unit=100,
    )
    customers = Customer.objects.bulk_create(
        [Customer(name=f"C{i:04d}", external_id=f"T-{i:04d}", owner=owner, lifecycle_stage="retained")
         for i in range(n_customers)]
    )
    holdings = []
    for c in customers:
        for sku in products:
            if sku.startswith("P") and rng.random() < 0.1 + 0.03 * int(sku[1:]):
                holdings.append(Holding(customer=c, product=products[sku], since=date(2025, 1, 1)))
        if rng.random() < 0.3:
            holdings.append(Holding(customer=c, product=products["ANA-PRO"], since=date(2025, 1, 1)))
            if rng.random() < 0.7:
                holdings.append(Holding(customer=c, product=products["DATA-CONN"], since=date(2025, 1, 1)))
        elif rng.random() < 0.03:
            holdings.append(Holding(customer=c, product=products["DATA-CONN"], since=date(2025, 1, 1)))
    Holding.objects.bulk_create(holdings)
    near = []
    usage = []
    for i, c in enumerate(customers[:60]):
        h = Holding.objects.create(customer=c, product=seats1, since=date(2025, 1, 1), quantity=1)
        hot = i % 2 == 0
        for m in range(3):
            start = date(2026, 4 + m, 1)
            used = 48 if hot else 20
            usage.append(Usage(holding=h, period_start=start, period_end=start + timedelta(days=27), used=used))
        if hot:
            near.append(c.external_id)
    Usage.objects.bulk_create(usage)
    return {"customers": customers, "products": products, "seats2": seats2, "near_capacity": near}


@pytest.mark.django_db
def test_planted_association_top3_and_beats_popularity():
    truth = plant()
    r = opportunities_regenerate(as_of=AS_OF)
    assert r.value_source in {"historical", "clv"}
    assert r.created == r.cross_sell + r.up_sell > 0
    ana, conn = truth["products"]["ANA-PRO"], truth["products"]["DATA-CONN"]
    holders = set(Holding.objects.filter(product=ana).values_list("customer_id", flat=True))
    conn_holders = set(Holding.objects.filter(product=conn).values_list("customer_id", flat=True))
    target = holders - conn_holders
    assert len(target) >= 20
    suggested = set(
        Opportunity.objects.filter(product=conn, kind="cross_sell", status="open").values_list("customer_id", flat=True)
    )
    recall = len(target & suggested) / len(target)
    assert recall >= 0.8, recall
    # Popularity baseline on the same holdings: top-3 most-held products not held.
    cids = sorted(c.pk for c in truth["customers"])
    pids = sorted(Product.objects.values_list("pk", flat=True))
    ci, pi = zip(*Holding.objects.values_list("customer_id", "product_id"), strict=True)
    X = engine.holding_matrix(
        np.searchsorted(cids, ci), np.searchsorted(pids, pi), len(cids), len(pids)
    )
    base = engine.popularity_baseline(X, top_k=3)
    j = pids.index(conn.pk)
    base_recall = np.mean([j in base[cids.index(c)] for c in target])
    assert recall > base_recall, (recall, base_recall)
    o = Opportunity.objects.filter(product=conn, customer_id__in=target).first()
    assert "of customers who hold Analytics Pro also hold Data Connector (lift" in o.evidence
    assert o.evidence_data["rule"] == {"antecedent": "ANA-PRO", "consequent": "DATA-CONN"}
    assert float(o.expected_value) > 0
    assert o.score > 0


@pytest.mark.django_db
def test_near_capacity_holdings_get_up_sell():
    truth = plant()
    opportunities_regenerate(as_of=AS_OF)
    ups = Opportunity.objects.filter(kind="up_sell", product=truth["seats2"])
    got = set(ups.filter(evidence_data__reason="capacity").values_list("customer__external_id", flat=True))
    assert got == set(truth["near_capacity"])
    o = ups.filter(customer__external_id=truth["near_capacity"][0]).get()
    assert o.evidence.startswith("used 96% of 50 seats of Seats Basic for 3 periods")
    assert o.from_product.sku == "SEATS-1"


@pytest.mark.django_db
def test_status_preserved_across_regenerations(make_user):
    user = make_user("rep")
    truth = plant()
    opportunities_regenerate(as_of=AS_OF)
    conn = truth["products"]["DATA-CONN"]
    opens = list(Opportunity.objects.filter(product=conn, status="open").order_by("pk")[:5])
    statuses = ["accepted", "dismissed", "won", "lost"]
    for o, st in zip(opens, statuses, strict=False):
        opportunity_set_status(opportunity=o, status=st, user=user)
    still_open = opens[4]
    # Make the open one unsupported: the customer now holds the product.
    Holding.objects.create(customer=still_open.customer, product=conn, since=date(2026, 6, 1))
    total = Opportunity.objects.count()
    r = opportunities_regenerate(as_of=AS_OF)
    assert r.kept == 4
    assert r.expired >= 1
    # Nothing deleted; only that customer's freed top-3 slot may bring a new suggestion.
    assert r.created <= 1
    assert Opportunity.objects.count() == total + r.created
    for o, st in zip(opens, statuses, strict=False):
        o.refresh_from_db()
        assert o.status == st
    still_open.refresh_from_db()
    assert still_open.status == "expired"
    # Supported again: reopens.
    Holding.objects.filter(customer=still_open.customer, product=conn).delete()
    r = opportunities_regenerate(as_of=AS_OF)
    still_open.refresh_from_db()
    assert still_open.status == "open"
    assert r.reopened == 1


@pytest.mark.django_db
def test_won_links_the_later_purchase(make_user):
    user = make_user("rep")
    truth = plant(n_customers=200)
    opportunities_regenerate(as_of=AS_OF)
    o = Opportunity.objects.filter(status="open", kind="cross_sell").first()
    other = Opportunity.objects.filter(status="open", kind="cross_sell").exclude(customer=o.customer).first()
    opportunity_set_status(opportunity=o, status="won", user=user)
    # A purchase of another product does not link.
    p_other = next(p for p in truth["products"].values() if p.pk != o.product_id)
    purchase_record(customer=o.customer, product=p_other, purchased_at=timezone.now(), amount=Decimal(10))
    o.refresh_from_db()
    assert o.won_purchase is None
    p = purchase_record(
        customer=o.customer, product=o.product, purchased_at=datetime(2026, 7, 1, tzinfo=UTC),
        amount=Decimal(500),
    )
    o.refresh_from_db()
    assert o.won_purchase == p
    # Open (not won) opportunities are not linked.
    purchase_record(customer=other.customer, product=other.product, purchased_at=timezone.now(), amount=Decimal(5))
    other.refresh_from_db()
    assert other.won_purchase is None


@pytest.mark.django_db
def test_task_and_command_regenerate():
    from io import StringIO

    from django.core.management import CommandError, call_command

    from crm.tasks import regenerate_opportunities_task

    plant(n_customers=150)
    result = regenerate_opportunities_task.apply(kwargs={"as_of": AS_OF.isoformat()}).get()
    assert result["created"] == Opportunity.objects.count() > 0
    # Chained after a CLV run, the previous task's result arrives as a positional argument.
    result = regenerate_opportunities_task.apply(args=[{"run": 1}], kwargs={"as_of": AS_OF.isoformat()}).get()
    assert result["created"] == 0
    assert result["updated"] == 0  # nothing changed: nothing written
    assert result["unchanged"] == Opportunity.objects.count()
    out = StringIO()
    call_command("regenerate_opportunities", "--as-of", AS_OF.isoformat(), stdout=out)
    assert "created 0, updated" in out.getvalue()
    with pytest.raises(CommandError, match="--as-of"):
        call_command("regenerate_opportunities", "--as-of", "soon")
    with pytest.raises(CommandError, match="--top-k"):
        call_command("regenerate_opportunities", "--top-k", "0")
