"""A contact's people belong to its customer, whichever of the two moves (crm.services)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from crm import services
from crm.models import Contact
from tests.crm import factories as f

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_customers(sales_org):
    old = f.customer(owner=sales_org["north_rep1"])
    new = f.customer(owner=sales_org["north_rep2"])
    person = f.person(customer=old, last_name="Oldco")
    contact = f.contact(customer=old)
    contact.people.set([person])
    return old, new, person, contact


def test_moving_a_contact_drops_the_people_of_its_old_customer(two_customers):
    _, new, _, contact = two_customers
    services.record_update(instance=contact, data={"customer": new})
    assert list(Contact.objects.get(pk=contact.pk).people.all()) == []


def test_moving_a_contact_with_its_new_customers_people_keeps_them(two_customers):
    _, new, _, contact = two_customers
    newcomer = f.person(customer=new)
    services.record_update(instance=contact, data={"customer": new, "people": [newcomer]})
    assert list(Contact.objects.get(pk=contact.pk).people.all()) == [newcomer]


def test_setting_people_of_another_customer_is_refused(two_customers):
    _, new, _, contact = two_customers
    stranger = f.person(customer=new)
    with pytest.raises(ValidationError) as error:
        services.record_update(instance=contact, data={"people": [stranger]})
    assert "people" in error.value.message_dict
    assert [p.last_name for p in Contact.objects.get(pk=contact.pk).people.all()] == ["Oldco"]


def test_moving_a_contact_with_people_of_its_old_customer_is_refused(two_customers):
    old, new, person, contact = two_customers
    with pytest.raises(ValidationError):
        services.record_update(instance=contact, data={"customer": new, "people": [person]})
    assert Contact.objects.get(pk=contact.pk).customer_id == old.pk


def test_moving_a_person_unlinks_it_from_contacts_of_its_old_customer(two_customers):
    _, new, person, contact = two_customers
    before = Contact.objects.get(pk=contact.pk).change_seq
    services.record_update(instance=person, data={"customer": new})
    moved = Contact.objects.get(pk=contact.pk)
    assert list(moved.people.all()) == []
    assert moved.change_seq != before  # the contact changed: it moves in the change feed


def test_bulk_moving_contacts_drops_the_old_people(two_customers):
    _, new, _, contact = two_customers
    contact.external_id = "CO-MOVE"
    contact.save(update_fields=["external_id"])
    services.records_upsert(model=Contact, records=[{"external_id": "CO-MOVE", "customer": new}],
                            existing={"CO-MOVE": contact})
    assert list(Contact.objects.get(pk=contact.pk).people.all()) == []
