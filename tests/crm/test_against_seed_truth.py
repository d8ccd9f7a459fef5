"""Opportunities and analytics checked against the ground truth that seed_demo planted."""

import numpy as np
import pytest
from django.utils import timezone

from accounts.models import Team, User
from crm import analytics
from crm.demo.seed import seed_demo
from crm.models import Customer, Holding, Opportunity, Product
from crm.opportunities import engine
from crm.opportunities.services import opportunities_regenerate

AS_OF = timezone.localdate()  # the demo's histories end today
pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def seeded(django_db_setup, django_db_blocker):
    """One seeded book shared by the module (2,000 customers), with opportunities generated."""
    with django_db_blocker.unblock():
        truth = seed_demo(customers=2000, seed=42, as_of=AS_OF)
        opportunities_regenerate(as_of=AS_OF)
        yield truth
        Customer.objects.all().delete()
        Product.objects.all().delete()
        User.objects.all().delete()
        Team.objects.all().delete()


@pytest.fixture
def admin(seeded):
    return User.objects.get(username="admin")


def test_planted_associations_are_top3_for_80_percent_and_beat_popularity(seeded):
    cids = sorted(Customer.objects.values_list("pk", flat=True))
    pids = sorted(Product.objects.values_list("pk", flat=True))
    ci, pi = zip(*Holding.objects.values_list("customer_id", "product_id"), strict=True)
    baseline = engine.popularity_baseline(
        engine.holding_matrix(np.searchsorted(cids, ci), np.searchsorted(pids, pi), len(cids), len(pids)), top_k=3
    )
    for rule in seeded["associations"]:
        a, b = (Product.objects.get(sku=rule["antecedent"]), Product.objects.get(sku=rule["consequent"]))
        holders = set(Holding.objects.filter(product=a).values_list("customer_id", flat=True))
        target = holders - set(Holding.objects.filter(product=b).values_list("customer_id", flat=True))
        suggested = set(
            Opportunity.objects.filter(product=b, kind="cross_sell").values_list("customer_id", flat=True)
        )
        recall = len(target & suggested) / len(target)
        assert recall >= 0.8, (rule, recall)
        # Precision: of the customers offered the consequent, how many are the planted targets.
        # Popularity offers popular products to everybody, so its precision is the yardstick.
        by_popularity = {c for k, c in enumerate(cids) if pids.index(b.pk) in baseline[k]}
        precision = len(target & suggested) / len(suggested)
        popularity_precision = len(target & by_popularity) / len(by_popularity)
        assert precision > 2 * popularity_precision, (rule, precision, popularity_precision)


def test_planted_near_capacity_holdings_get_up_sell(seeded):
    planted = {(p["customer"], p["sku"]) for p in seeded["near_capacity"]}
    upsells = set(
        Opportunity.objects.filter(kind="up_sell").values_list("customer__external_id", "from_product__sku")
    )
    found = planted & upsells
    assert len(found) / len(planted) >= 0.9, (len(found), len(planted))


@pytest.mark.postgres
def test_planted_loss_signals_top_question_4(seeded, admin):
    answer = analytics.events_before_loss(
        admin, window_days=seeded["events_before_loss"]["window_days"], as_of=AS_OF
    )
    top2 = {k["kind"] for k in sorted(answer["kinds"], key=lambda k: -(k["lift"] or 0))[:2]}
    assert top2 == set(seeded["events_before_loss"]["kinds"]), answer["kinds"][:3]


@pytest.mark.postgres
def test_planted_purchase_signals_top_question_6(seeded, admin):
    answer = analytics.events_before_purchase(admin, window_days=seeded["events_before_purchase"]["lead_days"][1])
    top2 = {k["kind"] for k in answer["kinds"][:2]}
    assert top2 == set(seeded["events_before_purchase"]["kinds"]), answer["kinds"][:3]
    low, high = seeded["events_before_purchase"]["lead_days"]
    for k in answer["kinds"][:2]:
        assert low <= k["median_lead_days"] <= high
