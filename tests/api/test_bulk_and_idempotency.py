"""Bulk upsert (all or nothing, per-record results, replay is a no-op) and Idempotency-Key."""

from __future__ import annotations

import pytest

from crm.models import Contact, Customer, Purchase
from crm.sync import changes_since

pytestmark = pytest.mark.django_db


def _purchases(customer_ref, n, start=0, amount="10.00"):
    return [
        {"external_id": f"ERP-{i}", "customer": customer_ref, "amount": amount,
         "purchased_at": f"2026-03-{1 + i % 28:02d}T12:00:00Z"}
        for i in range(start, start + n)
    ]


def test_bulk_creates_updates_and_replays_as_unchanged(api, book, sales_org):
    rep = sales_org["north_rep1"]
    client = api(rep)
    records = _purchases("C-a1", 5)
    first = client.post("/api/v1/purchases/bulk/", {"records": records}, format="json")
    assert first.status_code == 200, first.json()
    assert (first.json()["created"], first.json()["updated"], first.json()["unchanged"]) == (5, 0, 0)
    assert [r["index"] for r in first.json()["results"]] == list(range(5))
    stamps = dict(Purchase.objects.filter(external_id__startswith="ERP-").values_list("external_id", "updated_at"))
    feed = changes_since(user=rep, types=["purchases"], cursor=None, limit=1000)

    replay = client.post("/api/v1/purchases/bulk/", {"records": records}, format="json")
    assert replay.json()["unchanged"] == 5
    assert replay.json()["created"] == replay.json()["updated"] == 0
    assert dict(Purchase.objects.filter(external_id__startswith="ERP-").values_list("external_id", "updated_at")) == stamps
    assert Purchase.objects.filter(external_id__startswith="ERP-").count() == 5
    after = changes_since(user=rep, types=["purchases"], cursor=feed.cursor, limit=1000)
    assert after.changes == []  # a replay leaves nothing in the change feed

    records[2]["amount"] = "99.00"
    mixed = client.post("/api/v1/purchases/bulk/", {"records": records + _purchases("C-a2", 1, start=50)},
                        format="json").json()
    assert (mixed["created"], mixed["updated"], mixed["unchanged"]) == (1, 1, 4)
    assert mixed["results"][2]["result"] == "updated"
    assert str(Purchase.objects.get(external_id="ERP-2").amount) == "99.00"


def test_one_bad_record_fails_the_batch_and_names_it(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    records = _purchases("C-a1", 4)
    records[1]["amount"] = "-5"
    records[3]["purchased_at"] = "yesterday"
    records[3]["colour"] = "red"
    response = client.post("/api/v1/purchases/bulk/", {"records": records}, format="json")
    assert response.status_code == 422
    body = response.json()
    assert response["Content-Type"] == "application/problem+json"
    assert body["status"] == 422
    assert {(e["index"], e["field"]) for e in body["errors"]} == {(1, "amount"), (3, "colour")}
    assert not Purchase.objects.filter(external_id__startswith="ERP-").exists()


def test_bulk_refuses_records_of_customers_the_caller_cannot_see(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    theirs = book["b1"]["purchase"]
    records = [*_purchases("C-a1", 1), {"external_id": theirs.external_id, "customer": "C-a1", "amount": "1.00",
                                        "purchased_at": "2026-01-01T00:00:00Z"}, *_purchases("C-b1", 1, start=7)]
    response = client.post("/api/v1/purchases/bulk/", {"records": records}, format="json")
    assert response.status_code == 422
    assert {(e["index"], e["field"]) for e in response.json()["errors"]} == {(1, "external_id"), (2, "customer")}
    theirs_after = Purchase.objects.get(pk=theirs.pk)
    assert (theirs_after.customer_id, theirs_after.amount) == (theirs.customer_id, theirs.amount)
    assert not Purchase.objects.filter(external_id__startswith="ERP-").exists()


def test_bulk_limits_and_duplicates(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    too_many = client.post("/api/v1/purchases/bulk/", {"records": _purchases("C-a1", 1001)}, format="json")
    assert too_many.status_code == 400
    assert too_many.json()["errors"][0]["field"] == "records"
    dupes = _purchases("C-a1", 2) + _purchases("C-a1", 1)
    response = client.post("/api/v1/purchases/bulk/", {"records": dupes}, format="json")
    assert response.status_code == 422
    assert {e["index"] for e in response.json()["errors"]} == {0, 2}
    missing = client.post("/api/v1/customers/bulk/", {"records": [{"name": "No key"}]}, format="json")
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "external_id"
    assert client.post("/api/v1/customers/bulk/", [{"name": "x"}], format="json").status_code == 400


def test_bulk_database_refusals_are_reported_per_record(api, sales_org):
    admin = api(sales_org["admin"])
    records = [
        {"external_id": "P-1", "sku": "S-1", "name": "One", "family": "F", "tier": 1, "list_price": "1.00"},
        {"external_id": "P-2", "sku": "S-2", "name": "Two", "family": "F", "tier": 1, "list_price": "2.00"},
    ]
    response = admin.post("/api/v1/products/bulk/", {"records": records}, format="json")
    assert response.status_code == 422, response.json()
    assert {e["index"] for e in response.json()["errors"]} <= {0, 1}
    from crm.models import Product

    assert not Product.objects.filter(sku__in=["S-1", "S-2"]).exists()


def test_bulk_customers_and_contacts_with_people(api, book, sales_org):
    rep = sales_org["north_rep1"]
    client = api(rep)
    customers = [{"external_id": f"NEWC-{i}", "name": f"New {i}"} for i in range(3)]
    assert client.post("/api/v1/customers/bulk/", {"records": customers}, format="json").json()["created"] == 3
    assert set(Customer.objects.filter(external_id__startswith="NEWC-").values_list("owner", flat=True)) == {rep.pk}
    person = book["a1"]["person"]
    contacts = [{"external_id": "K-1", "customer": "C-a1", "channel": "call", "subject": "Hi",
                 "occurred_at": "2026-04-01T10:00:00Z", "people": [person.pk]}]
    assert client.post("/api/v1/contacts/bulk/", {"records": contacts}, format="json").json()["created"] == 1
    assert list(Contact.objects.get(external_id="K-1").people.all()) == [person]
    again = client.post("/api/v1/contacts/bulk/", {"records": contacts}, format="json").json()
    assert again["unchanged"] == 1
    contacts[0]["people"] = []
    assert client.post("/api/v1/contacts/bulk/", {"records": contacts}, format="json").json()["updated"] == 1
    assert not Contact.objects.get(external_id="K-1").people.exists()


def test_idempotency_key_replays_the_first_response(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    body = {"customer": "C-a1", "kind": "merger", "occurred_at": "2026-05-01T00:00:00Z"}
    first = client.post("/api/v1/events/", body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    again = client.post("/api/v1/events/", body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again["Idempotent-Replayed"] == "true"
    assert first["ETag"] == again["ETag"]
    from crm.models import Event

    assert Event.objects.filter(kind="merger", customer__external_id="C-a1").count() == 1
    other = client.post("/api/v1/events/", {**body, "kind": "funding"}, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert other.status_code == 400
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    fresh = client.post("/api/v1/events/", body, format="json", HTTP_IDEMPOTENCY_KEY="key-2")
    assert fresh.status_code == 201
    assert fresh.json()["id"] != first.json()["id"]


def test_a_failed_request_is_not_stored_under_its_key(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    bad = client.post("/api/v1/events/", {"customer": "C-a1", "kind": "nope"}, format="json",
                      HTTP_IDEMPOTENCY_KEY="retry-me")
    assert bad.status_code == 400
    good = client.post("/api/v1/events/", {"customer": "C-a1", "kind": "nope"}, format="json",
                       HTTP_IDEMPOTENCY_KEY="retry-me")
    assert good.status_code == 400  # evaluated again, not replayed from storage
    assert "Idempotent-Replayed" not in good


def test_api_purchase_writes_keep_the_clv_summary_equal_to_a_rebuild(api, book, sales_org):
    """Bulk create, bulk update (moving a line to another customer and day), single POST, PATCH
    and DELETE through the API leave the kept CLV summary equal to a full rebuild. Each path
    touches customers no other path touches, so a missing update cannot be healed by a later one."""
    from clv.models import PurchaseSummary
    from clv.summary import summary_rebuild
    from tests.clv.test_summary import kept_rows

    rep = sales_org["north_rep1"]
    for name in ("BULK", "MOVED-TO", "SINGLE"):
        f_customer = Customer.objects.create(name=name, owner=rep, external_id=name)
        assert f_customer.pk
    client = api(rep)
    records = _purchases("BULK", 6)
    assert client.post("/api/v1/purchases/bulk/", {"records": records}, format="json").status_code == 200
    assert PurchaseSummary.objects.get(customer__external_id="BULK").lines == 6
    records[0].update(customer="MOVED-TO", purchased_at="2026-04-09T08:00:00Z")
    records[1]["amount"] = "55.00"
    assert client.post("/api/v1/purchases/bulk/", {"records": records}, format="json").json()["updated"] == 2
    assert PurchaseSummary.objects.get(customer__external_id="MOVED-TO").lines == 1
    single = client.post("/api/v1/purchases/", {"customer": "SINGLE", "amount": "7.00",
                                                 "purchased_at": "2026-05-01T00:00:00Z"}, format="json").json()
    client.patch(f"/api/v1/purchases/{single['id']}/", {"purchased_at": "2026-05-02T00:00:00Z"}, format="json")
    assert client.delete("/api/v1/purchases/ext:ERP-3/").status_code == 204
    kept = kept_rows()
    summary_rebuild()
    assert kept_rows() == kept
