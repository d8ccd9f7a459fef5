"""CRUD on every resource, lookups by id and external_id, filters, ordering and page bounds."""

from __future__ import annotations

import pytest

from crm.models import Contact, Customer, Event, Holding, Person, Product, Purchase, Tombstone, Usage
from tests.crm import factories as f

pytestmark = pytest.mark.django_db


def payloads(row, admin_product=None):
    """resource -> (model, create body, patch body) for a customer of the caller."""
    c, p = row["customer"], row["product"]
    return {
        "customers": (Customer, {"name": "New Co", "kind": "company", "country": "NL"}, {"city": "Utrecht"}),
        "people": (Person, {"customer": c.pk, "last_name": "Jansen", "dmu_role": "buyer"}, {"job_title": "CFO"}),
        "purchases": (
            Purchase,
            {"customer": c.external_id, "product": p.pk, "quantity": "2", "unit_price": "12.50",
             "purchased_at": "2026-05-01T10:00:00Z"},
            {"order_ref": "SO-9"},
        ),
        "holdings": (Holding, {"customer": c.pk, "product": p.external_id, "since": "2026-01-01"}, {"quantity": "3"}),
        "usage": (
            Usage,
            {"holding": row["holding"].pk, "period_start": "2026-04-01", "period_end": "2026-04-30", "used": "7"},
            {"satisfaction": 4},
        ),
        "contacts": (
            Contact,
            {"customer": c.pk, "channel": "call", "subject": "Renewal", "occurred_at": "2026-05-02T09:00:00Z",
             "people": [row["person"].pk]},
            {"outcome": "Agreed"},
        ),
        "events": (Event, {"customer": c.pk, "kind": "merger", "occurred_at": "2026-05-03T09:00:00Z"},
                   {"impact": "negative"}),
    }


RESOURCES = ["customers", "people", "purchases", "holdings", "usage", "contacts", "events"]


@pytest.mark.parametrize("resource", RESOURCES)
def test_crud_round_trip(api, book, sales_org, resource):
    rep = sales_org["north_rep1"]
    client = api(rep)
    model, body, patch = payloads(book["a1"])[resource]
    created = client.post(f"/api/v1/{resource}/", {**body, "external_id": f"NEW-{resource}"}, format="json")
    assert created.status_code == 201, created.json()
    data = created.json()
    assert created["ETag"]
    assert created["Location"].endswith(f"/api/v1/{resource}/{data['id']}/")
    assert model.objects.filter(pk=data["id"], external_id=f"NEW-{resource}").exists()

    by_id = client.get(f"/api/v1/{resource}/{data['id']}/")
    by_ext = client.get(f"/api/v1/{resource}/ext:NEW-{resource}/")
    assert by_id.status_code == by_ext.status_code == 200
    assert by_id.json() == by_ext.json() == data
    assert by_id["ETag"] == created["ETag"]

    patched = client.patch(f"/api/v1/{resource}/{data['id']}/", patch, format="json")
    assert patched.status_code == 200, patched.json()
    for field, value in patch.items():
        assert str(patched.json()[field]).rstrip("0").rstrip(".") == str(value).rstrip("0").rstrip(".")
    assert patched["ETag"] != created["ETag"]

    listed = client.get(f"/api/v1/{resource}/", {"external_id": f"NEW-{resource}"})
    assert [r["id"] for r in listed.json()["results"]] == [data["id"]]

    deleter = api(sales_org["north_manager"]) if resource == "customers" else client
    deleted = deleter.delete(f"/api/v1/{resource}/{data['id']}/")
    assert deleted.status_code == 204
    assert not model.objects.filter(pk=data["id"]).exists()
    assert Tombstone.objects.filter(model=model._meta.label_lower, object_id=data["id"]).exists()
    assert client.get(f"/api/v1/{resource}/{data['id']}/").status_code == 404


def test_put_replaces_the_writable_fields(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    event = book["a1"]["event"]
    body = {"customer": event.customer_id, "kind": "referral", "occurred_at": "2026-06-01T00:00:00Z",
            "impact": "positive", "description": "Sent us a friend", "external_id": event.external_id}
    response = client.put(f"/api/v1/events/{event.pk}/", body, format="json")
    assert response.status_code == 200, response.json()
    event.refresh_from_db()
    assert (event.kind, event.impact, event.description) == ("referral", "positive", "Sent us a friend")


def test_customer_created_by_a_salesperson_is_theirs(api, sales_org):
    rep = sales_org["north_rep1"]
    response = api(rep).post("/api/v1/customers/", {"name": "Mine"}, format="json")
    assert response.status_code == 201
    assert response.json()["owner"] == rep.pk


def test_salesperson_cannot_assign_another_owner(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    response = client.post("/api/v1/customers/", {"name": "X", "owner": sales_org["north_rep2"].pk}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "owner"
    patch = client.patch(f"/api/v1/customers/{book['a1']['customer'].pk}/", {"owner": sales_org["north_rep2"].pk},
                         format="json")
    assert patch.status_code == 400
    assert Customer.objects.get(pk=book["a1"]["customer"].pk).owner == sales_org["north_rep1"]


def test_manager_assigns_within_their_team_only(api, book, sales_org):
    client = api(sales_org["north_manager"])
    customer = book["a1"]["customer"]
    ok = client.patch(f"/api/v1/customers/{customer.pk}/", {"owner": sales_org["north_rep2"].pk}, format="json")
    assert ok.status_code == 200
    refused = client.patch(f"/api/v1/customers/{customer.pk}/", {"owner": sales_org["south_rep1"].pk}, format="json")
    assert refused.status_code == 400
    customer.refresh_from_db()
    assert customer.owner == sales_org["north_rep2"]


def test_unknown_and_read_only_fields_are_refused(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    customer = book["a1"]["customer"]
    unknown = client.patch(f"/api/v1/customers/{customer.pk}/", {"nmae": "typo"}, format="json")
    assert unknown.status_code == 400
    assert unknown.json()["errors"] == [{"field": "nmae", "message": "Unknown field.", "code": "invalid"}]
    read_only = client.patch(f"/api/v1/customers/{customer.pk}/", {"created_at": "2020-01-01T00:00:00Z"},
                             format="json")
    assert read_only.status_code == 400
    assert read_only.json()["errors"][0]["field"] == "created_at"
    opp = book["a1"]["opportunity"]
    score = client.patch(f"/api/v1/opportunities/{opp.pk}/", {"score": 99, "expected_value": "1e9"}, format="json")
    assert score.status_code == 400
    assert {e["field"] for e in score.json()["errors"]} == {"score", "expected_value"}


def test_opportunity_status_change_is_recorded(api, book, sales_org):
    rep = sales_org["north_rep1"]
    opp = book["a1"]["opportunity"]
    response = api(rep).patch(f"/api/v1/opportunities/{opp.pk}/", {"status": "accepted"}, format="json")
    assert response.status_code == 200
    opp.refresh_from_db()
    assert (opp.status, opp.status_changed_by) == ("accepted", rep)
    assert api(rep).patch(f"/api/v1/opportunities/{opp.pk}/", {"status": "expired"}, format="json").status_code == 400
    assert api(rep).delete(f"/api/v1/opportunities/{opp.pk}/").status_code == 405
    assert api(rep).post("/api/v1/opportunities/", {}, format="json").status_code == 405


def test_products_are_read_by_all_and_written_by_admins(api, book, sales_org):
    rep, admin = api(sales_org["north_rep1"]), api(sales_org["admin"])
    assert rep.get("/api/v1/products/").status_code == 200
    body = {"sku": "NEW-1", "name": "New", "family": "New family", "list_price": "10.00"}
    assert rep.post("/api/v1/products/", body, format="json").status_code == 403
    assert admin.post("/api/v1/products/", body, format="json").status_code == 201
    negative = admin.post("/api/v1/products/", {**body, "sku": "NEW-2", "list_price": "-1"}, format="json")
    assert negative.status_code == 400
    assert negative.json()["errors"][0]["field"] == "list_price"


def test_product_category_is_written_and_read(api, sales_org):
    admin = api(sales_org["admin"])
    body = {"sku": "CAT-1", "name": "Cat", "family": "Fam", "category": "Security", "list_price": "10.00"}
    created = admin.post("/api/v1/products/", body, format="json")
    assert created.status_code == 201
    assert admin.get(f"/api/v1/products/{created.json()['id']}/").json()["category"] == "Security"
    without = admin.post("/api/v1/products/", {**body, "sku": "CAT-2", "tier": 2, "category": ""}, format="json")
    assert without.status_code == 201, without.json()
    assert without.json()["category"] == ""
    too_long = admin.post("/api/v1/products/", {**body, "sku": "CAT-3", "tier": 3, "category": "x" * 101}, format="json")
    assert too_long.status_code == 400
    assert too_long.json()["errors"][0]["field"] == "category"


def test_only_managers_delete_customers(api, book, sales_org):
    customer = book["a1"]["customer"]
    assert api(sales_org["north_rep1"]).delete(f"/api/v1/customers/{customer.pk}/").status_code == 403
    assert api(sales_org["north_manager"]).delete(f"/api/v1/customers/{customer.pk}/").status_code == 204
    assert Tombstone.objects.filter(model="crm.purchase", customer_id=customer.pk).exists()


def test_filters(api, book, sales_org):
    client = api(sales_org["admin"])
    by_owner = client.get("/api/v1/customers/", {"owner": sales_org["north_rep1"].pk}).json()["results"]
    assert {r["external_id"] for r in by_owner} == {"C-a1", "C-a2"}
    by_parent = client.get("/api/v1/purchases/", {"customer_external_id": "C-b1"}).json()["results"]
    assert [r["external_id"] for r in by_parent] == ["PU-b1"]
    several = client.get("/api/v1/events/", {"external_id": "E-a1,E-s1"}).json()["results"]
    assert {r["external_id"] for r in several} == {"E-a1", "E-s1"}
    bad = client.get("/api/v1/purchases/", {"purchased_after": "not a date"})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "purchased_after"


def test_pages_have_a_default_size_and_a_clamped_maximum(api, sales_org):
    owner = sales_org["north_rep1"]
    Customer.objects.bulk_create([Customer(name=f"Bulk {i:04d}", owner=owner) for i in range(620)])
    client = api(owner)
    first = client.get("/api/v1/customers/").json()
    assert len(first["results"]) == 50
    assert first["next"]
    clamped = client.get("/api/v1/customers/", {"page_size": 10_000}).json()
    assert len(clamped["results"]) == 500
    seen, url = [], "/api/v1/customers/?page_size=200&ordering=name"
    while url:
        page = client.get(url).json()
        seen += [r["id"] for r in page["results"]]
        url = page["next"]
    assert len(seen) == len(set(seen)) == 620
    assert client.get("/api/v1/customers/", {"cursor": "garbage"}).status_code == 400


def test_references_must_be_visible(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    other = book["b1"]["customer"]
    for ref in (other.pk, other.external_id, 10**30, True):
        response = client.post("/api/v1/events/", {"customer": ref, "kind": "merger",
                                                   "occurred_at": "2026-01-01T00:00:00Z"}, format="json")
        assert response.status_code == 400, ref
        assert response.json()["errors"][0]["field"] == "customer"
    assert not Event.objects.filter(customer=other, kind="merger").exists()


def test_contact_people_must_belong_to_the_customer(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    a1, a2 = book["a1"], book["a2"]
    response = client.post("/api/v1/contacts/", {
        "customer": a1["customer"].pk, "channel": "call", "subject": "x", "occurred_at": "2026-01-01T00:00:00Z",
        "people": [a2["person"].pk]}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "people"


def test_product_lookup_by_external_id_and_catalogue(api, sales_org):
    product = f.product(external_id="ERP-77")
    data = api(sales_org["south_rep2"]).get("/api/v1/products/ext:ERP-77/").json()
    assert data["id"] == product.pk
    assert Product.objects.count() == 1
