"""crm.services for keeping accounts: update, reassign, mark lost, people with one primary, holdings, usage."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from crm import services
from crm.models import Customer, Person, Tombstone
from tests.crm import factories as f

pytestmark = pytest.mark.django_db


def test_customer_update_refuses_the_owner_and_unknown_fields(sales_org):
    customer = f.customer(owner=sales_org["north_rep1"])
    with pytest.raises(ValidationError) as excinfo:
        services.customer_update(customer=customer, data={"owner": sales_org["north_rep2"]})
    assert "owner" in excinfo.value.message_dict


def test_customer_reassign_moves_the_account_and_everything_under_it(sales_org):
    rep, rep2 = sales_org["north_rep1"], sales_org["north_rep2"]
    customer = f.customer(owner=rep)
    person = f.person(customer=customer)
    holding = f.holding(customer=customer)
    usage = f.usage(holding=holding)
    services.customer_reassign(customer=customer, owner=rep2, by=sales_org["north_manager"])
    customer.refresh_from_db()
    assert customer.owner == rep2
    moved = set(Tombstone.objects.filter(reason="moved", owner=rep).values_list("model", "object_id"))
    assert moved == {("crm.customer", customer.pk), ("crm.person", person.pk), ("crm.holding", holding.pk),
                     ("crm.usage", usage.pk)}


@pytest.mark.parametrize(("by", "to"), [("north_rep1", "north_rep2"), ("north_manager", "south_rep1")])
def test_customer_reassign_is_limited_to_managers_within_their_team(sales_org, by, to):
    customer = f.customer(owner=sales_org["north_rep1"])
    with pytest.raises(ValidationError):
        services.customer_reassign(customer=customer, owner=sales_org[to], by=sales_org[by])
    customer.refresh_from_db()
    assert customer.owner == sales_org["north_rep1"]
    assert not Tombstone.objects.exists()


def test_mark_lost_needs_a_known_reason_and_words_for_other():
    customer = f.customer()
    with pytest.raises(ValidationError):
        services.customer_mark_lost(customer=customer, reason="bored")
    with pytest.raises(ValidationError) as excinfo:
        services.customer_mark_lost(customer=customer, reason="other")
    assert "note" in excinfo.value.message_dict
    services.customer_mark_lost(customer=customer, reason="other", note="Moved abroad", lost_on=date(2026, 1, 5))
    customer.refresh_from_db()
    assert (customer.lifecycle_stage, customer.lost_reason, customer.lost_note, customer.lost_on) == (
        Customer.Stage.LOST, "other", "Moved abroad", date(2026, 1, 5))


def test_a_new_primary_contact_replaces_the_old_one():
    customer = f.customer()
    first = services.person_add(customer=customer, last_name="First", is_primary=True)
    second = services.person_add(customer=customer, last_name="Second", is_primary=True)
    first.refresh_from_db()
    assert (first.is_primary, second.is_primary) == (False, True)
    services.person_update(person=first, data={"is_primary": True})
    assert list(Person.objects.filter(is_primary=True)) == [first]


def test_primary_contacts_of_different_customers_do_not_collide():
    a, b = f.customer(), f.customer()
    services.person_add(customer=a, last_name="A", is_primary=True)
    services.person_add(customer=b, last_name="B", is_primary=True)
    assert Person.objects.filter(is_primary=True).count() == 2


def test_person_remove_leaves_a_tombstone_and_keeps_the_contacts():
    customer = f.customer()
    person = f.person(customer=customer)
    contact = f.contact(customer=customer)
    contact.people.add(person)
    pk = person.pk
    services.person_remove(person=person, removed_by=None)
    assert Tombstone.objects.filter(model="crm.person", object_id=pk).exists()
    assert list(contact.people.all()) == []


def test_usage_record_refuses_a_period_ending_before_the_holding_starts():
    holding = f.holding(since=date(2025, 6, 1))
    with pytest.raises(ValidationError) as excinfo:
        services.usage_record(holding=holding, period_start=date(2025, 1, 1), period_end=date(2025, 1, 31),
                              used=Decimal(1))
    assert "period_end" in excinfo.value.message_dict


def test_constraint_violations_read_in_words_beside_the_field():
    holding = f.holding()
    with pytest.raises(ValidationError) as excinfo:
        services.usage_record(holding=holding, period_start=date(2026, 1, 1), period_end=date(2026, 1, 31),
                              used=Decimal(1), nps=12)
    assert excinfo.value.message_dict == {"nps": ["The NPS answer goes from 0 to 10."]}
