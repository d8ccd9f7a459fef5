"""Opportunities and analytics checked against the ground truth that seed_demo planted."""

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from accounts.models import Team, User
from crm import analytics
from crm.demo.seed import seed_demo
from crm.models import Customer, Holding, Opportunity, Product, Purchase
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
        # Among customers with holdings: purchase-only customers get suggestions from their purchases (below).
        suggested = set(
            Opportunity.objects.filter(product=b, kind="cross_sell", customer__holdings__isnull=False)
            .values_list("customer_id", flat=True)
        )
        recall = len(target & suggested) / len(target)
        assert recall >= 0.8, (rule, recall)
        # Precision: of the customers offered the consequent, how many are the planted targets.
        # Popularity offers popular products to everybody, so its precision is the yardstick.
        by_popularity = {c for k, c in enumerate(cids) if pids.index(b.pk) in baseline[k]}
        precision = len(target & suggested) / len(suggested)
        popularity_precision = len(target & by_popularity) / len(by_popularity)
        assert precision > 2 * popularity_precision, (rule, precision, popularity_precision)


def test_planted_purchase_only_associations_are_found_for_customers_without_holdings(seeded, settings):
    lookback = settings.OPPORTUNITY_PURCHASE_LOOKBACK_DAYS  # what the engine looks at
    purchase_only = set(
        Customer.objects.filter(external_id__in=seeded["purchase_only_customers"]).values_list("pk", flat=True)
    )
    assert len(purchase_only) > 300
    assert not Holding.objects.filter(customer_id__in=purchase_only).exists()
    for rule in seeded["purchase_associations"]:
        a, b = (Product.objects.get(sku=rule["antecedent"]), Product.objects.get(sku=rule["consequent"]))
        recent = Purchase.objects.filter(purchased_at__date__gte=AS_OF - timedelta(days=lookback))
        buyers_a = set(recent.filter(product=a).values_list("customer_id", flat=True)) & purchase_only
        buyers_b = set(recent.filter(product=b).values_list("customer_id", flat=True))
        target = buyers_a - buyers_b
        assert len(target) >= 20, (rule, len(target))
        offered = Opportunity.objects.filter(product=b, kind="cross_sell", customer_id__in=purchase_only)
        suggested = set(offered.values_list("customer_id", flat=True))
        recall = len(target & suggested) / len(target)
        assert recall >= 0.8, (rule, recall)
        # Offered mostly to the planted targets: at least twice the share a random offer would reach.
        precision = len(target & suggested) / len(suggested)
        assert precision > 2 * len(target) / len(purchase_only), (rule, precision)
        rules = set(offered.filter(customer_id__in=target).values_list("rule", flat=True))
        assert rules == {f"purchases:{settings.OPPORTUNITY_PURCHASE_MODEL}"}


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


def test_evaluate_recommendations_on_the_demo_beats_popularity_twice(seeded):
    from crm.opportunities.offline import evaluate_history

    report = evaluate_history(as_of=AS_OF - timedelta(days=365), horizon_days=365)
    product, popularity = report.row("product"), report.row("popularity")
    assert product.customers == popularity.customers >= 30
    assert product.precision_at_3 >= 2 * popularity.precision_at_3, (product, popularity)
    assert 0 < product.coverage <= 1


def test_evaluate_recommendations_command_prints_the_three_recommenders(seeded, settings):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    as_of = (AS_OF - timedelta(days=365)).isoformat()
    call_command("evaluate_recommendations", "--as-of", as_of, "--horizon-days", "365", stdout=out)
    text = out.getvalue()
    for name in (f"product ({settings.OPPORTUNITY_PURCHASE_MODEL})", "popularity", "cooccurrence", "precision@3", "recall@10", "coverage"):
        assert name in text
    assert "product vs popularity at precision@3:" in text
