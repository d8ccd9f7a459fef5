"""The visibility rule in every verb (404, never 403 or data), ETags and If-Match."""

from __future__ import annotations

import pytest

from crm.models import Customer, Event

pytestmark = pytest.mark.django_db

FACETS = {
    "customers": "customer", "people": "person", "purchases": "purchase", "holdings": "holding",
    "usage": "usage", "contacts": "contact", "events": "event", "opportunities": "opportunity",
}


@pytest.mark.parametrize("resource", list(FACETS))
def test_another_reps_records_are_404_in_every_verb(api, book, sales_org, resource):
    client = api(sales_org["north_rep1"])
    theirs = book["b1"][FACETS[resource]]
    before = type(theirs).objects.filter(pk=theirs.pk).values().get()
    for path in (f"/api/v1/{resource}/{theirs.pk}/", f"/api/v1/{resource}/ext:{theirs.external_id}/"):
        responses = [
            client.get(path), client.put(path, {"external_id": "x"}, format="json"),
            client.patch(path, {"status": "won"} if resource == "opportunities" else {"notes": "x"}, format="json"),
        ]
        if resource != "opportunities":
            responses.append(client.delete(path))
        for response in responses:
            assert response.status_code in (404, 405), (path, response.status_code)
            if response.status_code == 404:
                assert response["Content-Type"] == "application/problem+json"
                assert set(response.json()) == {"type", "title", "status", "detail", "instance"}
    assert type(theirs).objects.filter(pk=theirs.pk).values().get() == before
    listed = client.get(f"/api/v1/{resource}/", {"page_size": 500}).json()["results"]
    assert theirs.pk not in {r["id"] for r in listed}
    assert book["a1"][FACETS[resource]].pk in {r["id"] for r in listed}


def test_managers_see_their_teams_and_admins_everything(api, book, sales_org):
    manager = {r["external_id"] for r in api(sales_org["north_manager"]).get("/api/v1/customers/").json()["results"]}
    assert manager == {"C-a1", "C-a2", "C-b1"}
    admin = {r["external_id"] for r in api(sales_org["admin"]).get("/api/v1/customers/").json()["results"]}
    assert admin == {"C-a1", "C-a2", "C-b1", "C-s1"}


def test_every_read_has_an_etag_and_if_none_match_gives_304(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    path = f"/api/v1/customers/{book['a1']['customer'].pk}/"
    first = client.get(path)
    assert first["ETag"].startswith('"')
    assert client.get(path, HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 304


def test_stale_if_match_gets_412_and_writes_nothing(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    customer = book["a1"]["customer"]
    path = f"/api/v1/customers/{customer.pk}/"
    etag = client.get(path)["ETag"]
    changed = client.patch(path, {"city": "Leiden"}, format="json", HTTP_IF_MATCH=etag)
    assert changed.status_code == 200
    assert changed["ETag"] != etag
    stale = client.patch(path, {"city": "Delft"}, format="json", HTTP_IF_MATCH=etag)
    assert stale.status_code == 412
    assert stale.json()["status"] == 412
    assert stale["Content-Type"] == "application/problem+json"
    assert client.put(path, {"name": "Renamed"}, format="json", HTTP_IF_MATCH=etag).status_code == 412
    assert api(sales_org["north_manager"]).delete(path, HTTP_IF_MATCH=etag).status_code == 412
    customer.refresh_from_db()
    assert (customer.city, customer.name) == ("Leiden", "Customer a1")
    assert Customer.objects.filter(pk=customer.pk).exists()
    fresh = client.patch(path, {"city": "Delft"}, format="json", HTTP_IF_MATCH=changed["ETag"])
    assert fresh.status_code == 200


def test_a_write_from_elsewhere_also_moves_the_etag(api, book, sales_org):
    """The tag follows the row's change position, which a database trigger moves on any write."""
    client = api(sales_org["north_rep1"])
    event = book["a1"]["event"]
    etag = client.get(f"/api/v1/events/{event.pk}/")["ETag"]
    Event.objects.filter(pk=event.pk).update(description="edited in the admin")
    response = client.patch(f"/api/v1/events/{event.pk}/", {"impact": "negative"}, format="json", HTTP_IF_MATCH=etag)
    assert response.status_code == 412
