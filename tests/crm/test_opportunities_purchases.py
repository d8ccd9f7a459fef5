"""Cross-sell from purchase lines: customers with purchases and no holdings get suggestions, with the
look-back window and the product hierarchy (category level) respected."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from crm.models import Customer, Holding, Opportunity, Product
from crm.opportunities.services import opportunities_regenerate
from crm.services import purchases_bulk_insert

AS_OF = date(2026, 6, 30)
COLUMNS = ["customer_id", "product_id", "quantity", "unit_price", "amount", "unit_cost", "purchased_at", "order_ref",
           "external_id", "created_at", "updated_at"]


def plant_purchases(n_customers=300, seed=11, days_ago=(30, 300)):
    """Purchases only: random products, and buyers of GEAR-A go on to buy GLUE-B (70%); no holdings.

    Products: 4 families x 2 tiers in categories Tools/Supplies, plus GEAR-A (Tools) and GLUE-B (Supplies).
    """
    rng = random.Random(seed)
    products = {}
    for f in range(4):
        for tier in (1, 2):
            sku = f"F{f}-T{tier}"
            products[sku] = Product.objects.create(
                sku=sku, name=f"Family {f} tier {tier}", family=f"fam{f}", tier=tier,
                category="Tools" if f < 2 else "Supplies", list_price=Decimal(100 * tier), unit_cost=Decimal(30),
            )
    products["GEAR-A"] = Product.objects.create(sku="GEAR-A", name="Gear A", family="gear", category="Gears",
                                                list_price=500, unit_cost=100)
    products["GLUE-B"] = Product.objects.create(sku="GLUE-B", name="Glue B", family="glue", category="Glues",
                                                list_price=300, unit_cost=50)
    customers = Customer.objects.bulk_create(
        [Customer(name=f"Shop {i:04d}", external_id=f"S-{i:04d}", lifecycle_stage="retained")
         for i in range(n_customers)]
    )
    now = datetime.now(UTC)
    rows = []
    buyers_a = set()
    end = datetime.combine(AS_OF, datetime.min.time(), tzinfo=UTC)

    def line(c, p, ago):
        rows.append((c.pk, p.pk, 1, p.list_price, p.list_price, None, end - timedelta(days=ago), "", None, now, now))

    for c in customers:
        for sku, p in products.items():
            if sku.startswith("F") and rng.random() < 0.1 + 0.05 * int(sku[1]):
                line(c, p, rng.randint(*days_ago))
        if rng.random() < 0.3:
            ago = rng.randint(days_ago[0] + 20, days_ago[1])
            line(c, products["GEAR-A"], ago)
            buyers_a.add(c.pk)
            if rng.random() < 0.7:
                line(c, products["GLUE-B"], ago - 10)
    purchases_bulk_insert(columns=COLUMNS, rows=rows)
    buyers_b = {r[0] for r in rows if r[1] == products["GLUE-B"].pk}
    return {"products": products, "target": buyers_a - buyers_b}


@pytest.mark.django_db
def test_purchase_only_association_is_suggested_with_its_evidence(settings):
    truth = plant_purchases()
    assert not Holding.objects.exists()
    r = opportunities_regenerate(as_of=AS_OF)
    assert r.purchase_cross_sell > 0
    glue = truth["products"]["GLUE-B"]
    offered = Opportunity.objects.filter(product=glue, kind="cross_sell", status="open")
    suggested = set(offered.values_list("customer_id", flat=True))
    recall = len(truth["target"] & suggested) / len(truth["target"])
    assert recall >= 0.8, recall
    o = offered.filter(customer_id__in=truth["target"]).first()
    assert o.rule == f"purchases:{settings.OPPORTUNITY_PURCHASE_MODEL}"
    assert "of customers who buy Gear A also buy Glue B" in o.evidence
    assert "x the usual rate" in o.evidence
    assert o.evidence_data["lift"] > 1
    assert o.evidence_data["co_buyers"] >= 5
    assert o.expected_value > 0


@pytest.mark.django_db
def test_purchases_older_than_the_look_back_window_are_ignored(settings):
    plant_purchases(days_ago=(400, 700))
    settings.OPPORTUNITY_PURCHASE_LOOKBACK_DAYS = 365
    r = opportunities_regenerate(as_of=AS_OF)
    assert r.purchase_cross_sell == 0
    assert not Opportunity.objects.filter(rule__startswith="purchases:").exists()
    settings.OPPORTUNITY_PURCHASE_LOOKBACK_DAYS = 730
    assert opportunities_regenerate(as_of=AS_OF).purchase_cross_sell > 0


@pytest.mark.django_db
def test_category_level_suggests_the_categorys_most_bought_product(settings):
    truth = plant_purchases()
    settings.OPPORTUNITY_PURCHASE_LEVEL = "category"
    opportunities_regenerate(as_of=AS_OF)
    purchases = Opportunity.objects.filter(rule=f"purchases:{settings.OPPORTUNITY_PURCHASE_MODEL}:category", status="open")
    assert purchases.exists()
    glues = purchases.filter(customer_id__in=truth["target"], evidence_data__rule__consequent="GLUE-B")
    assert glues.count() >= 0.8 * len(truth["target"])
    o = glues.first()
    assert "of customers who buy Gears also buy Glues" in o.evidence
    assert "start with Glue B" in o.evidence
    # A category's suggestion is its most bought product, never one the customer already bought.
    for opp in purchases.select_related("product"):
        assert not opp.customer.purchases.filter(product__category=opp.product.category).exists()


@pytest.mark.django_db
def test_auto_level_groups_a_catalogue_larger_than_the_limit(settings):
    plant_purchases(n_customers=120)
    settings.OPPORTUNITY_PRODUCT_LEVEL_MAX = 5
    opportunities_regenerate(as_of=AS_OF)
    rules = set(Opportunity.objects.filter(rule__startswith="purchases:").values_list("rule", flat=True))
    assert rules == {f"purchases:{settings.OPPORTUNITY_PURCHASE_MODEL}:category"}


@pytest.mark.django_db
def test_adoption_model_says_how_many_customers_like_this_one_started_buying(settings):
    settings.OPPORTUNITY_PURCHASE_MODEL = "adoption"
    settings.OPPORTUNITY_ADOPTION_WINDOW_DAYS = 30
    # Recent history: buyers of Gear A buy Glue B ten days later, some of them within the last 30 days.
    truth = plant_purchases(n_customers=600, days_ago=(1, 120))
    opportunities_regenerate(as_of=AS_OF)
    glue = truth["products"]["GLUE-B"]
    offered = Opportunity.objects.filter(product=glue, kind="cross_sell", status="open", rule="purchases:adoption")
    suggested = set(offered.values_list("customer_id", flat=True))
    assert len(truth["target"] & suggested) >= 0.8 * len(truth["target"])
    o = offered.filter(customer_id__in=truth["target"], evidence_data__adoption__isnull=False).first()
    assert o is not None
    a = o.evidence_data["adoption"]
    assert a["window_days"] == 30
    assert a["adopters"] >= settings.OPPORTUNITY_MIN_COUNT
    assert a["at_risk"] >= a["adopters"]
    assert a["rate"] > a["base_rate"]
    assert o.evidence.startswith("Customers like this one, buying Gear A and not Glue B, started buying Glue B "
                                 f"within 30 days: {a['adopters']} of {a['at_risk']}")
    assert "this customer buys Gear A and not Glue B" in o.evidence
    assert o.expected_value > 0
