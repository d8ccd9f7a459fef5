"""Writes through crm.services: validation before save, tombstones on delete, no-op updates."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from crm import services
from crm.models import Contact, Customer, Opportunity, Purchase, Tombstone
from tests.crm import factories as f

pytestmark = pytest.mark.django_db

WHEN = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


def test_purchase_record_derives_amount_from_unit_price():
    purchase = services.purchase_record(
        customer=f.customer(), purchased_at=WHEN, quantity=Decimal("3"), unit_price=Decimal("19.99")
    )
    assert purchase.amount == Decimal("59.97")


def test_purchase_record_derives_unit_price_from_amount():
    purchase = services.purchase_record(customer=f.customer(), purchased_at=WHEN, amount=Decimal("100"), quantity=4)
    assert purchase.unit_price == Decimal("25.00")


def test_purchase_record_needs_amount_or_price():
    with pytest.raises(ValidationError) as excinfo:
        services.purchase_record(customer=f.customer(), purchased_at=WHEN)
    assert "amount" in excinfo.value.message_dict


def test_purchase_record_rejects_negative_amount_with_field_message_and_writes_nothing():
    with pytest.raises(ValidationError) as excinfo:
        services.purchase_record(customer=f.customer(), purchased_at=WHEN, amount=Decimal("-3"))
    assert excinfo.value.message_dict
    assert Purchase.objects.count() == 0


def test_customer_create_validates_choices():
    with pytest.raises(ValidationError) as excinfo:
        services.customer_create(name="Acme", lifecycle_stage="zombie")
    assert "lifecycle_stage" in excinfo.value.message_dict
    assert not Customer.objects.exists()


def test_record_update_without_change_does_not_bump_updated_at():
    customer = f.customer(name="Acme")
    before = customer.updated_at
    _, changed = services.record_update(instance=customer, data={"name": "Acme"})
    customer.refresh_from_db()
    assert changed is False
    assert customer.updated_at == before


def test_record_update_with_change_saves_and_bumps_updated_at():
    customer = f.customer(name="Acme")
    before = customer.updated_at
    _, changed = services.record_update(instance=customer, data={"name": "Acme Corp"})
    customer.refresh_from_db()
    assert changed is True
    assert customer.name == "Acme Corp"
    assert customer.updated_at > before


def test_deleting_a_customer_logs_tombstones_for_it_and_its_facets(sales_org):
    customer = f.customer(external_id="ERP-9")
    purchase = f.purchase(customer=customer, external_id="P-1")
    holding = f.holding(customer=customer)
    usage = f.usage(holding=holding)
    contact = f.contact(customer=customer)
    customer_pk = customer.pk
    services.record_delete(instance=customer, deleted_by=sales_org["admin"])
    logged = set(Tombstone.objects.values_list("model", "object_id", "external_id"))
    assert ("crm.customer", customer_pk, "ERP-9") in logged
    assert ("crm.purchase", purchase.pk, "P-1") in logged
    assert ("crm.holding", holding.pk, None) in logged
    assert ("crm.usage", usage.pk, None) in logged
    assert ("crm.contact", contact.pk, None) in logged
    assert not Customer.objects.exists()


def test_contact_log_refuses_people_of_another_customer(sales_org):
    customer, other = f.customer(), f.customer()
    stranger = f.person(customer=other)
    with pytest.raises(ValidationError) as excinfo:
        services.contact_log(
            customer=customer, salesperson=sales_org["north_rep1"], channel="call", subject="Hi", people=[stranger]
        )
    assert "people" in excinfo.value.message_dict
    assert not Contact.objects.exists()


def test_contact_log_links_people_and_defaults_time(sales_org):
    customer = f.customer()
    buyer = f.person(customer=customer, dmu_role="buyer")
    contact = services.contact_log(
        customer=customer, salesperson=sales_org["north_rep1"], channel="meeting", subject="Renewal", people=[buyer]
    )
    assert list(contact.people.all()) == [buyer]
    assert contact.occurred_at is not None


def test_event_record_rejects_unknown_kind():
    with pytest.raises(ValidationError) as excinfo:
        services.event_record(customer=f.customer(), kind="alien_landing")
    assert "kind" in excinfo.value.message_dict


def test_opportunity_status_change_is_recorded(sales_org):
    opp = f.opportunity()
    services.opportunity_set_status(opportunity=opp, status="accepted", user=sales_org["north_rep1"])
    opp.refresh_from_db()
    assert opp.status == Opportunity.Status.ACCEPTED
    assert opp.status_changed_by == sales_org["north_rep1"]
    assert opp.status_changed_at is not None


def test_people_cannot_expire_an_opportunity(sales_org):
    with pytest.raises(ValidationError):
        services.opportunity_set_status(opportunity=f.opportunity(), status="expired", user=sales_org["admin"])
