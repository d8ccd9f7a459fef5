"""The tasks resource: CRUD, visibility, ETag / If-Match, bulk, filters, assignment rules,
bad input, follow-ups kept in step with their contacts, and the change feed (with tombstones).
Also the opportunity's dismiss reason on the wire."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from crm import services
from crm.models import Contact, Task
from tests.api.test_sync import drain
from tests.crm import factories as f

pytestmark = pytest.mark.django_db
URL = "/api/v1/tasks/"


def today():
    return timezone.localdate()


def test_create_read_update_delete(api, book, sales_org):
    rep = sales_org["north_rep1"]
    client = api(rep)
    response = client.post(URL, {"customer": "C-a1", "title": "Call Anna about the renewal",
                                 "due_on": today().isoformat(), "due_time": "10:30", "external_id": "T-new"},
                           format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["assigned_to"], body["created_by"], body["due_time"], body["done_at"]) == (rep.pk, rep.pk,
                                                                                           "10:30:00", None)
    url = f"{URL}{body['id']}/"
    etag = client.get(url).headers["ETag"]
    done_at = timezone.now().isoformat()
    response = client.patch(url, {"done_at": done_at, "outcome": "Renews"}, format="json", HTTP_IF_MATCH=etag)
    assert response.status_code == 200
    assert response.json()["outcome"] == "Renews"
    assert client.patch(url, {"title": "stale"}, format="json", HTTP_IF_MATCH=etag).status_code == 412
    assert client.get(f"{URL}ext:T-new/").json()["title"] == "Call Anna about the renewal"
    assert client.delete(url).status_code == 204
    assert not Task.objects.filter(external_id="T-new").exists()


def test_tasks_of_customers_out_of_view_are_404_and_not_listed(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    hidden = book["s1"]["task"]
    assert client.get(f"{URL}{hidden.pk}/").status_code == 404
    assert client.patch(f"{URL}{hidden.pk}/", {"title": "x"}, format="json").status_code == 404
    assert client.delete(f"{URL}{hidden.pk}/").status_code == 404
    ids = {row["id"] for row in client.get(URL).json()["results"]}
    assert ids == {book["a1"]["task"].pk, book["a2"]["task"].pk}
    assert client.post(URL, {"customer": "C-s1", "title": "x", "due_on": today().isoformat()},
                       format="json").status_code == 400


def test_filters_by_customer_done_and_due_range(api, book, sales_org):
    client = api(sales_org["admin"])
    task = book["a1"]["task"]
    services.task_complete(task=task)
    assert [r["id"] for r in client.get(URL, {"customer": book["a1"]["customer"].pk}).json()["results"]] == [task.pk]
    assert task.pk in {r["id"] for r in client.get(URL, {"done": "true"}).json()["results"]}
    assert task.pk not in {r["id"] for r in client.get(URL, {"done": "false"}).json()["results"]}
    future = (today() + timedelta(days=1)).isoformat()
    assert client.get(URL, {"due_after": future}).json()["results"] == []


@pytest.mark.parametrize(("payload", "field"), [
    ({"due_on": "1899-12-31"}, "due_on"),
    ({"due_on": "2999-01-01"}, "due_on"),
    ({"due_on": "not a date"}, "due_on"),
    ({"title": "   "}, "title"),
    ({"due_time": "25:99"}, "due_time"),
    ({"colour": "red"}, "colour"),
])
def test_bad_input_is_400_naming_the_field_and_writes_nothing(api, book, sales_org, payload, field):
    client = api(sales_org["north_rep1"])
    before = Task.objects.count()
    data = {"customer": "C-a1", "title": "Call", "due_on": today().isoformat(), **payload}
    response = client.post(URL, data, format="json")
    assert response.status_code == 400
    assert field in str(response.json())
    assert Task.objects.count() == before


def test_due_date_error_states_the_range(api, book, sales_org):
    response = api(sales_org["north_rep1"]).post(
        URL, {"customer": "C-a1", "title": "x", "due_on": "1899-12-31"}, format="json")
    assert "between 1 Jan 1900 and" in str(response.json())


def test_rep_cannot_assign_to_someone_else_and_manager_only_within_the_team(api, book, sales_org):
    task = book["a1"]["task"]
    url = f"{URL}{task.pk}/"
    rep_client = api(sales_org["north_rep1"])
    assert rep_client.patch(url, {"assigned_to": sales_org["north_rep2"].pk}, format="json").status_code == 400
    manager = api(sales_org["north_manager"])
    assert manager.patch(url, {"assigned_to": sales_org["south_rep1"].pk}, format="json").status_code == 400
    task.refresh_from_db()
    assert task.assigned_to == sales_org["north_rep1"]
    assert manager.patch(url, {"assigned_to": sales_org["north_rep2"].pk}, format="json").status_code == 200
    task.refresh_from_db()
    assert task.assigned_to == sales_org["north_rep2"]


def test_bulk_upsert_is_idempotent(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    records = [{"external_id": f"TB-{i}", "customer": "C-a1", "title": f"Bulk {i}",
                "due_on": today().isoformat()} for i in range(3)]
    first = client.post(f"{URL}bulk/", {"records": records}, format="json")
    assert first.status_code == 200
    assert first.json()["created"] == 3
    again = client.post(f"{URL}bulk/", {"records": records}, format="json").json()
    assert (again["created"], again["unchanged"]) == (0, 3)
    bad = [{**records[0], "title": "changed"}, {"external_id": "TB-x", "customer": "C-a1", "title": "x",
                                                 "due_on": "1800-01-01"}]
    response = client.post(f"{URL}bulk/", {"records": bad}, format="json")
    assert response.status_code == 422
    assert Task.objects.get(external_id="TB-0").title == "Bulk 0"


def test_follow_up_task_done_through_the_api_completes_the_contact(api, book, sales_org):
    rep = sales_org["north_rep1"]
    client = api(rep)
    response = client.post("/api/v1/contacts/", {"customer": "C-a1", "channel": "call", "subject": "Pricing",
                                                 "occurred_at": timezone.now().isoformat(),
                                                 "follow_up_on": today().isoformat()}, format="json")
    assert response.status_code == 201
    contact = Contact.objects.get(pk=response.json()["id"])
    task = Task.objects.get(contact=contact)
    later = (today() + timedelta(days=2)).isoformat()
    assert client.patch(f"{URL}{task.pk}/", {"due_on": later}, format="json").status_code == 200
    contact.refresh_from_db()
    assert contact.follow_up_on.isoformat() == later
    assert client.patch(f"{URL}{task.pk}/", {"done_at": timezone.now().isoformat()}, format="json").status_code == 200
    contact.refresh_from_db()
    assert contact.follow_up_done_at is not None


def test_opportunity_dismiss_reason_in_the_api(api, book, sales_org):
    client = api(sales_org["north_rep1"])
    opp = book["a1"]["opportunity"]
    url = f"/api/v1/opportunities/{opp.pk}/"
    response = client.patch(url, {"status": "dismissed", "dismiss_reason": "already_has"}, format="json")
    assert response.status_code == 200
    assert (response.json()["dismiss_reason"], response.json()["status"]) == ("already_has", "dismissed")
    assert client.patch(url, {"dismiss_reason": "because"}, format="json").status_code == 400
    assert client.patch(url, {"status": "dismissed", "dismiss_reason": "other"}, format="json").status_code == 400
    opp.refresh_from_db()
    assert opp.dismiss_reason == "already_has"
    assert client.get("/api/v1/opportunities/", {"dismiss_reason": "already_has"}).json()["results"][0]["id"] == opp.pk


@pytest.mark.django_db(transaction=True)
def test_change_feed_carries_tasks_and_their_tombstones(api, sales_org):
    rep = sales_org["north_rep1"]
    client = api(rep)
    other = api(sales_org["south_rep1"])
    _, cursor = drain(client, types="tasks")
    _, other_cursor = drain(other, types="tasks")
    customer = f.customer(owner=rep)
    task = services.task_create(customer=customer, title="Feed me", due_on=today(), assigned_to=rep,
                                external_id="TF-1")
    changes, cursor = drain(client, cursor, types="tasks")
    assert [(c["type"], c["op"], c["id"], c["data"]["title"]) for c in changes] == [
        ("tasks", "created", task.pk, "Feed me")]
    services.task_snooze(task=task, until=today() + timedelta(days=1))
    changes, cursor = drain(client, cursor, types="tasks")
    assert [(c["op"], c["data"]["due_on"]) for c in changes] == [
        ("updated", (today() + timedelta(days=1)).isoformat())]
    task_id = task.pk
    services.record_delete(instance=task, deleted_by=rep)
    changes, cursor = drain(client, cursor, types="tasks")
    assert [(c["type"], c["op"], c["id"], c["external_id"]) for c in changes] == [
        ("tasks", "deleted", task_id, "TF-1")]
    assert drain(other, other_cursor, types="tasks")[0] == []  # another team's rep learns nothing
