"""The change history: every create, update and delete of every tracked model, with who and old -> new.

Recorded by database triggers, so these run on PostgreSQL (history is not recorded on SQLite).
"""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.urls import reverse

from crm import history, services
from crm.history_models import EVENT_MODELS, HISTORY_MODELS
from crm.models import Customer, Opportunity, Purchase, Task
from tests.crm import factories as f

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

# resource -> (book key, a change a salesperson may make, the field it changes)
CHANGES = {
    "customers": ("customer", {"city": "Lyon"}, "city"),
    "people": ("person", {"job_title": "CFO"}, "job_title"),
    "products": ("product", {"name": "Renamed product"}, "name"),
    "purchases": ("purchase", {"order_ref": "R-9"}, "order_ref"),
    "holdings": ("holding", {"status": "suspended"}, "status"),
    "usage": ("usage", {"note": "busy month"}, "note"),
    "contacts": ("contact", {"subject": "Renewal talk"}, "subject"),
    "events": ("event", {"description": "Series B"}, "description"),
    "opportunities": ("opportunity", {"status": "accepted"}, "status"),
    "tasks": ("task", {"title": "Call Anna about the renewal"}, "title"),
}


def _history(client, resource, pk, **params):
    response = client.get(f"/api/v1/{resource}/{pk}/history/", params)
    assert response.status_code == 200, response.content
    return response.json()


def test_every_tracked_model_has_a_change_to_check():
    assert set(CHANGES) == set(HISTORY_MODELS)


@pytest.mark.parametrize("resource", list(CHANGES))
def test_create_update_delete_recorded_with_old_and_new_and_who(resource, api, book, sales_org):
    key, patch, field = CHANGES[resource]
    record = f.product() if resource == "products" else book["a1"][key]  # a product nothing references
    actor = sales_org["admin"] if resource == "products" else sales_org["north_rep1"]
    client = api(actor)
    old = getattr(record, field)

    response = client.patch(f"/api/v1/{resource}/{record.pk}/", patch, format="json")
    assert response.status_code == 200, response.content
    if resource == "opportunities":  # not deletable through the API: the service does it
        services.record_delete(instance=Opportunity.objects.get(pk=record.pk), deleted_by=actor)
    else:
        deleter = api(sales_org["north_manager"]) if resource == "customers" else client  # managers delete customers
        assert deleter.delete(f"/api/v1/{resource}/{record.pk}/").status_code == 204

    entries = _history(api(sales_org["admin"]), resource, record.pk)["results"]
    assert [e["op"] for e in entries] == ["deleted", "updated", "created"]
    deleted, updated, created = entries
    assert {"field": field, "old": old, "new": patch[field]} in updated["changes"]
    also = ["status_changed_at", "status_changed_by"] if resource == "opportunities" else []
    assert [c["field"] for c in updated["changes"]] == [field, *also]
    assert updated["actor"]["user"] == actor.pk
    assert updated["actor"]["username"] == actor.username
    assert updated["actor"]["token_name"] == "tests"
    assert updated["actor"]["method"] == "PATCH"
    assert any(c["field"] == field and c["new"] is None for c in deleted["changes"]) or old in ("", None)
    assert created["actor"] == {}  # the fixture wrote it outside any request


def test_history_follows_the_visibility_rule(api, book, sales_org):
    purchase = book["a1"]["purchase"]
    api(sales_org["north_rep1"]).patch(f"/api/v1/purchases/{purchase.pk}/", {"order_ref": "X"}, format="json")
    assert api(sales_org["north_rep1"]).get(f"/api/v1/purchases/{purchase.pk}/history/").status_code == 200
    assert api(sales_org["north_manager"]).get(f"/api/v1/purchases/{purchase.pk}/history/").status_code == 200
    hidden = api(sales_org["south_rep1"]).get(f"/api/v1/purchases/{purchase.pk}/history/")
    assert hidden.status_code == 404
    assert hidden["Content-Type"].startswith("application/problem+json")
    assert api(sales_org["north_rep2"]).get("/api/v1/customers/ext:C-a1/history/").status_code == 404
    assert api(sales_org["north_rep1"]).get("/api/v1/nonsense/1/history/").status_code == 404


def test_history_by_external_id_and_cursor_pages(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    for n in range(5):
        client.patch("/api/v1/customers/ext:C-a1/", {"city": f"City {n}"}, format="json")
    first = _history(client, "customers", "ext:C-a1", page_size=4)
    assert len(first["results"]) == 4
    assert first["results"][0]["changes"] == [{"field": "city", "old": "City 3", "new": "City 4"}]
    assert first["next"]
    rest = client.get(first["next"]).json()
    assert [e["op"] for e in rest["results"]] == ["updated", "created"]
    assert rest["results"][0]["changes"] == [{"field": "city", "old": "", "new": "City 0"}]
    assert first["recorded"] is True


def test_bulk_upsert_records_creates_and_field_changes(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    records = [{"external_id": f"ERP-{i}", "customer": "C-a1", "amount": "10.00",
                "purchased_at": "2026-03-01T12:00:00Z"} for i in range(3)]
    assert client.post("/api/v1/purchases/bulk/", {"records": records}, format="json").status_code == 200
    client.post("/api/v1/purchases/bulk/", {"records": records}, format="json")  # replay: nothing changes
    records[1]["amount"] = "25.50"
    assert client.post("/api/v1/purchases/bulk/", {"records": records}, format="json").json()["updated"] == 1

    changed = Purchase.objects.get(external_id="ERP-1")
    entries = _history(client, "purchases", changed.pk)["results"]
    assert [e["op"] for e in entries] == ["updated", "created"]
    assert {"field": "amount", "old": "10.00", "new": "25.50"} in entries[0]["changes"]
    assert entries[0]["actor"]["user"] == sales_org["north_rep1"].pk
    events = EVENT_MODELS[Purchase].objects.filter(pgh_obj_id__in=Purchase.objects.filter(
        external_id__startswith="ERP-").values("pk"))
    assert sorted(events.values_list("pgh_label", flat=True)) == ["insert", "insert", "insert", "update"]


def test_csv_import_is_recorded_with_the_command_as_actor(tmp_path, api, sales_org):
    path = tmp_path / "purchases.csv"
    path.write_text("customer_external_id,purchased_at,amount\nNEW-1,2026-01-05,100.00\nNEW-1,2026-01-06,50\n")
    call_command("import_purchases", str(path), verbosity=0)
    customer = Customer.objects.get(external_id="NEW-1")
    purchases = EVENT_MODELS[Purchase].objects.filter(customer_id=customer.pk)
    assert purchases.count() == 2
    assert {e.pgh_context.metadata["via"] for e in purchases.select_related("pgh_context")} == {"import_purchases"}
    assert EVENT_MODELS[Customer].objects.filter(pgh_obj_id=customer.pk, pgh_label="insert").count() == 1
    created = history.entries(Purchase, purchases)
    assert [e.op for e in created] == ["created", "created"]
    values = [{c.field: c.new for c in e.changes} for e in created]
    assert sorted(v["amount"] for v in values) == [Decimal("50.00"), Decimal("100.00")]
    assert {v["customer"] for v in values} == {customer.pk}


def test_saving_without_a_change_records_nothing(book):
    customer = Customer.objects.get(pk=book["a1"]["customer"].pk)
    before = EVENT_MODELS[Customer].objects.filter(pgh_obj_id=customer.pk).count()
    customer.save()
    services.record_update(instance=customer, data={"name": customer.name})
    assert EVENT_MODELS[Customer].objects.filter(pgh_obj_id=customer.pk).count() == before


def test_account_360_history_tab_shows_this_account_only(client, book, sales_org):
    rep = sales_org["north_rep1"]
    client.force_login(rep)
    customer = book["a1"]["customer"]
    url = reverse("crm:contact_create", args=[customer.pk])
    response = client.post(url, {"channel": "call", "direction": "outbound", "subject": "Pricing question",
                                 "occurred_at": "2026-03-02T10:00"})
    assert response.status_code in (200, 302), response.content[:500]
    services.record_update(instance=Purchase.objects.get(pk=book["a1"]["purchase"].pk),
                           data={"amount": Decimal("42.00"), "unit_price": Decimal("42.00")})
    f.purchase(customer=book["a2"]["customer"], order_ref="OTHER-ACCOUNT")

    page = client.get(reverse("crm:account_detail", args=[customer.pk]), {"tab": "history"})
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="history"' in html
    assert "Pricing question" in html
    assert rep.username in html
    assert "Amount: 10 → 42" in html
    assert "OTHER-ACCOUNT" not in html

    client.force_login(sales_org["south_rep1"])
    assert client.get(reverse("crm:account_detail", args=[customer.pk]), {"tab": "history"}).status_code == 404



def _bulk_record(resource, book, n, changed=False):
    """One record for `resource`'s bulk upsert, keyed BK-<n>; `changed` alters the field checked."""
    a1 = book["a1"]
    value = "after" if changed else "before"
    return {
        "customers": {"name": f"Bulk {value}"},
        "people": {"customer": "C-a1", "last_name": "Bulk", "job_title": value},
        "products": {"sku": f"BK-SKU-{n}", "name": f"Bulk {value}", "family": f"bulk {n}", "list_price": "10.00"},
        "purchases": {"customer": "C-a1", "amount": "10.00" if not changed else "11.00",
                      "purchased_at": "2026-03-01T12:00:00Z"},
        "holdings": {"customer": "C-a1", "product": a1["product"].pk, "quantity": 2 if not changed else 3,
                     "since": "2026-01-01"},
        "usage": {"holding": a1["holding"].pk, "period_start": f"2025-0{n + 1}-01", "period_end": f"2025-0{n + 1}-28",
                  "used": "1", "note": value},
        "contacts": {"customer": "C-a1", "channel": "call", "subject": f"Bulk {value}",
                     "occurred_at": "2026-03-02T10:00:00Z"},
        "events": {"customer": "C-a1", "kind": "funding", "occurred_at": "2026-03-02T10:00:00Z",
                   "description": value},
        "tasks": {"customer": "C-a1", "title": f"Bulk {value}", "due_on": "2026-12-01"},
    }[resource] | {"external_id": f"BK-{resource}-{n}"}


BULK_FIELDS = {"customers": "name", "people": "job_title", "products": "name", "purchases": "amount",
               "holdings": "quantity", "usage": "note", "contacts": "subject", "events": "description",
               "tasks": "title"}


def test_every_bulk_resource_has_a_bulk_history_check():
    bulk_resources = set(HISTORY_MODELS) - {"opportunities"}  # suggestions are not created by clients
    assert set(BULK_FIELDS) == bulk_resources


@pytest.mark.parametrize("resource", list(BULK_FIELDS))
def test_bulk_upsert_of_every_resource_records_who_and_old_and_new(resource, api, book, sales_org):
    actor = sales_org["admin"] if resource == "products" else sales_org["north_rep1"]
    client = api(actor)
    model = HISTORY_MODELS[resource]
    records = [_bulk_record(resource, book, n) for n in range(2)]
    created = client.post(f"/api/v1/{resource}/bulk/", {"records": records}, format="json")
    assert created.status_code == 200, created.content
    assert client.post(f"/api/v1/{resource}/bulk/", {"records": records}, format="json").json()["updated"] == 0
    records[1] = _bulk_record(resource, book, 1, changed=True)
    assert client.post(f"/api/v1/{resource}/bulk/", {"records": records}, format="json").json()["updated"] == 1

    field = BULK_FIELDS[resource]
    unchanged, changed = (model.objects.get(external_id=r["external_id"]) for r in records)
    assert [e["op"] for e in _history(client, resource, unchanged.pk)["results"]] == ["created"]
    entries = _history(client, resource, changed.pk)["results"]
    assert [e["op"] for e in entries] == ["updated", "created"]
    update = entries[0]
    [change] = [c for c in update["changes"] if c["field"] == field]
    assert change["old"] != change["new"]
    assert str(change["new"]) == str(getattr(changed, field))
    assert {"field": field, "old": change["old"], "new": change["new"]} in update["changes"]
    assert update["actor"]["user"] == actor.pk
    assert update["actor"]["token_name"] == "tests"
    assert update["actor"]["url"] == f"/api/v1/{resource}/bulk/"
    created_entry = entries[1]
    assert created_entry["actor"]["method"] == "POST"
    assert any(c["field"] == "external_id" and c["old"] is None and c["new"] == records[1]["external_id"]
               for c in created_entry["changes"])


def test_task_history_shows_follow_ups_and_completion_on_the_history_tab(client, api, book, sales_org):
    rep = sales_org["north_rep1"]
    task = book["a1"]["task"]
    response = api(rep).patch(f"/api/v1/tasks/{task.pk}/", {"done_at": "2026-03-03T09:00:00Z", "outcome": "Booked"},
                              format="json")
    assert response.status_code == 200, response.content
    entries = _history(api(rep), "tasks", task.pk)["results"]
    assert [e["op"] for e in entries] == ["updated", "created"]
    assert {"field": "outcome", "old": "", "new": "Booked"} in entries[0]["changes"]

    contact = f.contact(customer=book["a1"]["customer"], follow_up_on=datetime.date(2026, 12, 1), subject="Demo")
    follow_up = Task.objects.get(contact=contact)
    follow_up_entries = _history(api(rep), "tasks", follow_up.pk)["results"]
    assert follow_up_entries[-1]["op"] == "created"
    assert {"field": "contact", "old": None, "new": contact.pk} in follow_up_entries[-1]["changes"]

    client.force_login(rep)
    html = client.get(reverse("crm:account_detail", args=[book["a1"]["customer"].pk]), {"tab": "history"}).content
    assert "Outcome: — → Booked" in html.decode()
    assert "Outcome" in html.decode()


def test_task_history_follows_the_task_visibility_rule(api, book, sales_org):
    task = book["a1"]["task"]  # a customer of north_rep1
    api(sales_org["north_rep1"]).patch(f"/api/v1/tasks/{task.pk}/", {"title": "Renamed"}, format="json")
    assert api(sales_org["south_rep1"]).get(f"/api/v1/tasks/{task.pk}/history/").status_code == 404
    assert api(sales_org["north_manager"]).get(f"/api/v1/tasks/{task.pk}/history/").status_code == 200
    # Assigned to someone who does not see the customer: the assignee sees the task and its history.
    Task.objects.filter(pk=task.pk).update(assigned_to=sales_org["south_rep1"])
    entries = _history(api(sales_org["south_rep1"]), "tasks", task.pk)["results"]
    assert [e["op"] for e in entries] == ["updated", "updated", "created"]
    assert api(sales_org["north_rep2"]).get(f"/api/v1/tasks/{task.pk}/history/").status_code == 404


def test_csv_import_into_an_existing_account_records_the_lines_and_leaves_the_account_alone(tmp_path, book):
    path = tmp_path / "purchases.csv"
    customer_events = EVENT_MODELS[Customer].objects.filter(pgh_obj_id=book["a1"]["customer"].pk).count()
    path.write_text("customer_external_id,purchased_at,amount\nC-a1,2026-01-05,100.00\n")
    call_command("import_purchases", str(path), verbosity=0)
    events = EVENT_MODELS[Purchase].objects.filter(customer_id=book["a1"]["customer"].pk, pgh_label="insert")
    [imported] = [e for e in history.entries(Purchase, events) if {c.field: c.new for c in e.changes}.get("amount")
                  == Decimal("100.00")]
    assert imported.actor == {"via": "import_purchases"}
    assert EVENT_MODELS[Customer].objects.filter(pgh_obj_id=book["a1"]["customer"].pk).count() == customer_events


def test_one_update_of_many_rows_records_exactly_the_rows_whose_kept_fields_changed(book):
    """The update trigger runs once per statement and joins the statement's old and new rows;
    small statements first (PL/pgSQL caches plans after a few), then one large one."""
    from django.db import connection

    customer = book["a1"]["customer"]
    lines = [f.purchase(customer=customer, amount=Decimal("10.00")) for _ in range(60)]
    ids = [p.pk for p in lines]
    events = EVENT_MODELS[Purchase].objects.filter(pgh_obj_id__in=ids, pgh_label="update")
    with connection.cursor() as cursor:
        for pk in ids[:8]:  # one row each, amounts changed
            cursor.execute("UPDATE crm_purchase SET amount = amount + 1 WHERE id = %s", [pk])
        # One statement: every other row gets a new amount, the rest only a new updated_at (not kept).
        cursor.execute(
            "UPDATE crm_purchase SET updated_at = now(), amount = CASE WHEN id %% 2 = 0 THEN amount + 5 ELSE amount END "
            "WHERE id = ANY(%s)", [ids],
        )
    assert events.filter(pgh_obj_id__in=ids[:8]).count() == 8 + sum(1 for pk in ids[:8] if pk % 2 == 0)
    later = [pk for pk in ids[8:] if pk % 2 == 0]
    assert sorted(events.filter(pgh_obj_id__in=ids[8:]).values_list("pgh_obj_id", flat=True)) == later
    assert all(e.amount == Decimal("15.00") for e in events.filter(pgh_obj_id__in=later))


def test_an_update_of_an_opportunitys_scores_only_records_nothing(book):
    opportunity = Opportunity.objects.get(pk=book["a1"]["opportunity"].pk)
    events = EVENT_MODELS[Opportunity].objects.filter(pgh_obj_id=opportunity.pk)
    before = events.count()
    Opportunity.objects.filter(pk=opportunity.pk).update(score=0.42, evidence="re-scored")
    assert events.count() == before
    Opportunity.objects.filter(pk=opportunity.pk).update(status="accepted", score=0.5)
    assert events.count() == before + 1
    assert events.order_by("-pgh_id").first().score == pytest.approx(0.5)


def test_the_demo_data_is_recorded_as_made_by_seed_demo():
    call_command("seed_demo", customers=30, seed=3)
    events = EVENT_MODELS[Customer].objects.filter(pgh_label="insert")
    assert events.count() >= 30
    assert set(events.values_list("pgh_context__metadata__via", flat=True)) == {"seed_demo"}
