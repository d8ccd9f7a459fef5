"""The API after the account-keeping services: dates refused as field errors (400 / 422), new fields,
a primary contact through the API, and a reassignment from the pages reaching the old owner's feed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from crm.models import Person
from tests.api.test_sync import mirror, server_view
from tests.crm import factories as f


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/contacts/", {"channel": "call", "subject": "x", "occurred_at": "0001-01-01T10:00:00Z"}, "occurred_at"),
        ("/api/v1/contacts/", {"channel": "call", "subject": "x", "occurred_at": "2026-01-01T10:00:00Z",
                               "follow_up_on": "2099-01-01"}, "follow_up_on"),
        ("/api/v1/events/", {"kind": "funding", "occurred_at": "1000-06-01T10:00:00Z"}, "occurred_at"),
        ("/api/v1/purchases/", {"amount": "10", "purchased_at": "1850-01-01T10:00:00Z"}, "purchased_at"),
    ],
)
def test_api_refuses_dates_that_make_no_sense_as_field_errors(api, sales_org, path, body, field):
    rep = sales_org["north_rep1"]
    customer = f.customer(owner=rep)
    response = api(rep).post(path, {**body, "customer": customer.pk}, format="json")
    assert response.status_code == 400, response.json()
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == [field]
    assert "1 Jan 1900" in errors[0]["message"]


@pytest.mark.django_db
def test_api_bulk_refuses_a_future_event_naming_the_record(api, sales_org):
    rep = sales_org["north_rep1"]
    customer = f.customer(owner=rep, external_id="C-1")
    future = (timezone.now() + timedelta(days=5)).isoformat()
    response = api(rep).post("/api/v1/events/bulk/", {"records": [
        {"external_id": "E-1", "customer": "C-1", "kind": "funding", "occurred_at": timezone.now().isoformat()},
        {"external_id": "E-2", "customer": "C-1", "kind": "funding", "occurred_at": future},
    ]}, format="json")
    assert response.status_code == 422, response.json()
    assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [(1, "occurred_at")]
    assert not customer.events.exists()


@pytest.mark.django_db
def test_api_people_carry_the_primary_mark_and_a_new_primary_replaces_the_old(api, sales_org):
    rep = sales_org["north_rep1"]
    customer = f.customer(owner=rep)
    client = api(rep)
    first = client.post("/api/v1/people/", {"customer": customer.pk, "last_name": "A", "is_primary": True},
                        format="json").json()
    second = client.post("/api/v1/people/", {"customer": customer.pk, "last_name": "B"}, format="json").json()
    assert first["is_primary"] is True
    response = client.patch(f"/api/v1/people/{second['id']}/", {"is_primary": True}, format="json")
    assert response.status_code == 200, response.json()
    assert list(Person.objects.filter(is_primary=True).values_list("pk", flat=True)) == [second["id"]]


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_a_reassignment_on_the_pages_reaches_both_owners_sync_feeds(api, client, sales_org):
    rep, rep2, manager = sales_org["north_rep1"], sales_org["north_rep2"], sales_org["north_manager"]
    customer = f.customer(owner=rep)
    person = f.person(customer=customer)
    old_copy, old_cursor, _ = mirror(api(rep))
    new_copy, new_cursor, _ = mirror(api(rep2))
    client.force_login(manager)
    response = client.post(reverse("crm:account_reassign", args=[customer.pk]), {"owner": rep2.pk})
    assert response.status_code == 302
    old_copy, _, old_changes = mirror(api(rep), old_copy, old_cursor)
    new_copy, _, new_changes = mirror(api(rep2), new_copy, new_cursor)
    assert old_copy == server_view(rep)
    assert new_copy == server_view(rep2)
    gone = {(c["type"], c["id"], c["reason"]) for c in old_changes if c["op"] == "deleted"}
    assert {("customers", customer.pk, "moved"), ("people", person.pk, "moved")} <= gone
    assert ("customers", customer.pk) in {(c["type"], c["id"]) for c in new_changes if c["op"] != "deleted"}
