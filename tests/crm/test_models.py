"""The database itself refuses what must never be stored: each constraint rejects its bad value."""

from datetime import date
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from crm.models import Customer, Opportunity
from tests.crm import factories as f

pytestmark = pytest.mark.django_db


def assert_rejected(build, constraint: str):
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        build()
    # PostgreSQL names the constraint; SQLite names it too for CHECK, and the columns for UNIQUE.
    message = str(excinfo.value)
    assert constraint in message or "UNIQUE" in message.upper(), message


@pytest.mark.parametrize(
    ("field", "value", "constraint"),
    [
        ("quantity", Decimal("-1"), "purchase_quantity_positive"),
        ("quantity", Decimal("0"), "purchase_quantity_positive"),
        ("unit_price", Decimal("-0.01"), "purchase_unit_price_nonnegative"),
        ("amount", Decimal("-5"), "purchase_amount_nonnegative"),
        ("unit_cost", Decimal("-1"), "purchase_unit_cost_nonnegative"),
    ],
)
def test_purchase_rejects_negative_values(field, value, constraint):
    assert_rejected(lambda: f.purchase(**{field: value}), constraint)


@pytest.mark.parametrize(
    ("field", "value", "constraint"),
    [
        ("list_price", Decimal("-1"), "product_list_price_nonnegative"),
        ("unit_cost", Decimal("-1"), "product_unit_cost_nonnegative"),
        ("tier", 0, "product_tier_positive"),
        ("capacity_per_unit", Decimal("0"), "product_capacity_positive"),
    ],
)
def test_product_rejects_bad_values(field, value, constraint):
    assert_rejected(lambda: f.product(**{field: value}), constraint)


def test_product_family_tier_is_unique():
    f.product(family="Analytics", tier=2)
    assert_rejected(lambda: f.product(family="Analytics", tier=2), "product_family_tier_unique")


def test_product_sku_is_unique():
    f.product(sku="DUP-1")
    assert_rejected(lambda: f.product(sku="DUP-1"), "sku")


def test_holding_cannot_end_before_it_starts():
    assert_rejected(lambda: f.holding(since=date(2026, 5, 1), until=date(2026, 4, 30)), "holding_until_after_since")


def test_holding_may_end_the_day_it_starts():
    assert f.holding(since=date(2026, 5, 1), until=date(2026, 5, 1)).pk


def test_holding_rejects_negative_quantity():
    assert_rejected(lambda: f.holding(quantity=Decimal("-2")), "holding_quantity_nonnegative")


def test_holding_rejects_unknown_status():
    assert_rejected(lambda: f.holding(status="borrowed"), "holding_status_valid")


@pytest.mark.parametrize(
    ("field", "value", "constraint"),
    [
        ("used", Decimal("-1"), "usage_used_nonnegative"),
        ("capacity", Decimal("-1"), "usage_capacity_nonnegative"),
        ("satisfaction", 0, "usage_satisfaction_range"),
        ("satisfaction", 6, "usage_satisfaction_range"),
        ("nps", 11, "usage_nps_range"),
    ],
)
def test_usage_rejects_out_of_range(field, value, constraint):
    assert_rejected(lambda: f.usage(**{field: value}), constraint)


def test_usage_period_cannot_end_before_start():
    assert_rejected(
        lambda: f.usage(period_start=date(2026, 2, 1), period_end=date(2026, 1, 31)), "usage_period_end_after_start"
    )


def test_usage_one_row_per_holding_and_period():
    holding = f.holding()
    f.usage(holding=holding)
    assert_rejected(lambda: f.usage(holding=holding), "usage_one_per_holding_period")


def test_customer_cannot_be_lost_before_acquired():
    assert_rejected(
        lambda: f.customer(acquired_on=date(2026, 3, 1), lost_on=date(2026, 2, 1)), "customer_lost_after_acquired"
    )


@pytest.mark.parametrize(
    ("field", "value", "constraint"),
    [
        ("kind", "robot", "customer_kind_valid"),
        ("relationship_type", "frenemy", "customer_relationship_valid"),
        ("lifecycle_stage", "zombie", "customer_stage_valid"),
    ],
)
def test_customer_rejects_unknown_choices(field, value, constraint):
    assert_rejected(lambda: f.customer(**{field: value}), constraint)


def test_external_id_is_unique_but_may_be_empty_many_times():
    f.customer(external_id="ERP-1")
    assert_rejected(lambda: f.customer(external_id="ERP-1"), "external_id")
    f.customer(external_id=None)
    f.customer(external_id=None)
    assert Customer.objects.filter(external_id__isnull=True).count() == 2


def test_contact_rejects_unknown_channel():
    assert_rejected(lambda: f.contact(channel="pigeon"), "contact_channel_valid")


def test_event_rejects_unknown_kind_and_impact():
    assert_rejected(lambda: f.event(kind="alien_landing"), "event_kind_valid")
    assert_rejected(lambda: f.event(impact="huge"), "event_impact_valid")


def test_person_rejects_unknown_dmu_role():
    assert_rejected(lambda: f.person(dmu_role="spy"), "person_dmu_role_valid")


@pytest.mark.parametrize(
    ("field", "value", "constraint"),
    [
        ("score", -0.1, "opportunity_score_nonnegative"),
        ("expected_value", Decimal("-1"), "opportunity_value_nonnegative"),
        ("kind", "down_sell", "opportunity_kind_valid"),
        ("status", "maybe", "opportunity_status_valid"),
    ],
)
def test_opportunity_rejects_bad_values(field, value, constraint):
    assert_rejected(lambda: f.opportunity(**{field: value}), constraint)


def test_one_opportunity_per_customer_product_and_kind():
    opp = f.opportunity()
    assert_rejected(
        lambda: f.opportunity(customer=opp.customer, product=opp.product, kind=Opportunity.Kind.CROSS_SELL),
        "opportunity_one_per_suggestion",
    )
    # The same product as an up-sell is a different suggestion.
    assert f.opportunity(customer=opp.customer, product=opp.product, kind=Opportunity.Kind.UP_SELL).pk


def test_user_role_must_be_known(make_user):
    from accounts.models import User

    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(username="x", role="overlord")
