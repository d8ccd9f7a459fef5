"""An erasure reaches webhook subscribers as person.updated with the anonymised record (real receiver)."""

import json

import pytest

from crm.privacy import ERASED_LAST_NAME
from tests.api.test_webhooks import Receiver, subscribe

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def test_erasure_sends_the_anonymised_person_to_subscribers(api, book, sales_org):
    person = book["a1"]["person"]
    client = api(sales_org["admin"])
    client.patch(f"/api/v1/people/{person.pk}/", {"first_name": "Anna", "email": "anna@example.com"}, format="json")
    with Receiver() as receiver:
        subscribe(api(sales_org["north_rep1"]), receiver.url, ["person.updated"])
        assert client.post(f"/api/v1/people/{person.pk}/erase/").status_code == 200
    events = receiver.events()
    assert [e["type"] for e in events] == ["person.updated"]
    assert events[0]["object_id"] == person.pk
    assert events[0]["data"]["last_name"] == ERASED_LAST_NAME
    assert events[0]["data"]["erased_at"] is not None
    assert "anna@example.com" not in json.dumps(events)
