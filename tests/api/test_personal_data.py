"""Personal-data requests over the API and from Account 360: export and erasure, admins only."""

from datetime import date

import pytest
from django.urls import reverse

from crm import services
from crm.history import history_recorded
from crm.models import Contact, Person
from crm.privacy import ERASED_LAST_NAME
from tests.crm import factories as f

pytestmark = pytest.mark.django_db


@pytest.fixture
def anna(book):
    """A person of a1 who took part in one contact (with a follow-up) and not in another, and a task naming her."""
    customer = book["a1"]["customer"]
    person = services.person_add(customer=customer, last_name="Berg", first_name="Anna", email="anna@example.com",
                                 phone="+44 20 7946 0001", job_title="CFO", external_id="PE-anna")
    services.person_update(person=person, data={"job_title": "Finance director"})
    met = f.contact(customer=customer, subject="Renewal call", follow_up_on=date(2026, 3, 1), external_id="CO-anna")
    met.people.set([person])
    other = f.contact(customer=customer, subject="Without her")
    named = f.task(customer=customer, title="Send Anna Berg the price list")
    f.task(customer=customer, title="Unrelated")
    return {"person": person, "contact": met, "other": other, "named": named, "customer": customer}


def test_personal_data_export_holds_fields_contacts_tasks_and_history(api, sales_org, anna):
    response = api(sales_org["admin"]).get(f"/api/v1/people/{anna['person'].pk}/personal-data/")
    assert response.status_code == 200
    body = response.json()
    assert body["person"]["email"] == "anna@example.com"
    assert body["person"]["job_title"] == "Finance director"
    assert body["person"]["customer"]["id"] == anna["customer"].pk
    assert [c["id"] for c in body["contacts"]] == [anna["contact"].pk]
    assert {t["id"] for t in body["tasks"]} == {anna["contact"].task.pk, anna["named"].pk}
    if history_recorded():
        assert [h["label"] for h in body["history"]] == ["insert", "update"]
        assert body["history"][0]["values"]["job_title"] == "CFO"
    else:
        assert body["history"] == []


def test_personal_data_by_external_id(api, sales_org, anna):
    response = api(sales_org["admin"]).get("/api/v1/people/ext:PE-anna/personal-data/")
    assert response.json()["person"]["id"] == anna["person"].pk


@pytest.mark.parametrize("who", ["north_rep1", "north_manager"])
def test_non_admins_get_403_and_nothing_is_erased(api, sales_org, anna, who):
    client = api(sales_org[who])
    assert client.get(f"/api/v1/people/{anna['person'].pk}/personal-data/").status_code == 403
    assert client.post(f"/api/v1/people/{anna['person'].pk}/erase/").status_code == 403
    anna["person"].refresh_from_db()
    assert anna["person"].erased_at is None
    assert anna["person"].email == "anna@example.com"


def test_erase_anonymises_and_keeps_the_row_its_external_id_and_contacts(api, sales_org, anna):
    response = api(sales_org["admin"]).post(f"/api/v1/people/{anna['person'].pk}/erase/")
    assert response.status_code == 200
    assert response.json()["already_erased"] is False
    person = Person.objects.get(pk=anna["person"].pk)
    assert (person.first_name, person.last_name, person.email, person.phone, person.job_title) == (
        "", ERASED_LAST_NAME, "", "", "")
    assert person.erased_at is not None
    assert person.external_id == "PE-anna"
    assert list(anna["contact"].people.all()) == [person]
    assert Contact.objects.filter(customer=anna["customer"]).count() == 3  # the book's contact and these two
    read = api(sales_org["north_rep1"]).get(f"/api/v1/people/{person.pk}/").json()
    assert read["erased_at"] is not None
    assert read["email"] == ""


def test_erasing_twice_is_harmless(api, sales_org, anna):
    client = api(sales_org["admin"])
    first = client.post(f"/api/v1/people/{anna['person'].pk}/erase/").json()
    person = Person.objects.get(pk=anna["person"].pk)
    second = client.post(f"/api/v1/people/{anna['person'].pk}/erase/")
    assert second.status_code == 200
    assert second.json()["already_erased"] is True
    assert second.json()["erased_at"] == first["erased_at"]
    again = Person.objects.get(pk=person.pk)
    assert (again.change_txid, again.change_seq) == (person.change_txid, person.change_seq)


def test_an_erased_person_cannot_be_edited_back(api, sales_org, anna):
    api(sales_org["admin"]).post(f"/api/v1/people/{anna['person'].pk}/erase/")
    response = api(sales_org["north_rep1"]).patch(f"/api/v1/people/{anna['person'].pk}/", {"first_name": "Anna"},
                                                 format="json")
    assert response.status_code in (400, 422)
    assert Person.objects.get(pk=anna["person"].pk).first_name == ""


def test_account_360_offers_personal_data_actions_to_admins_only(client, sales_org, anna):
    url = reverse("crm:account_detail", args=[anna["customer"].pk])
    client.force_login(sales_org["north_rep1"])
    assert "Erase the personal data of Anna Berg" not in client.get(url).content.decode()
    assert client.get(reverse("crm:person_erase", args=[anna["person"].pk])).status_code == 403
    assert client.get(reverse("crm:person_personal_data", args=[anna["person"].pk])).status_code == 403
    client.force_login(sales_org["admin"])
    page = client.get(url).content.decode()
    assert "Erase the personal data of Anna Berg" in page
    assert "Download the personal data of Anna Berg" in page


def test_erase_page_asks_for_confirmation_then_erases(client, sales_org, anna):
    client.force_login(sales_org["admin"])
    url = reverse("crm:person_erase", args=[anna["person"].pk])
    assert "I confirm" in client.get(url).content.decode()
    refused = client.post(url, {})
    assert refused.status_code == 400
    assert "Tick the box" in refused.content.decode()
    assert Person.objects.get(pk=anna["person"].pk).erased_at is None
    done = client.post(url, {"confirm": "erase"})
    assert done.status_code == 302
    assert Person.objects.get(pk=anna["person"].pk).erased_at is not None
    page = client.get(done["Location"]).content.decode()
    assert "Personal data erased" in page
    assert "anna@example.com" not in page


def test_personal_data_download_is_a_json_attachment(client, sales_org, anna):
    client.force_login(sales_org["admin"])
    response = client.get(reverse("crm:person_personal_data", args=[anna["person"].pk]))
    assert response["Content-Disposition"] == f'attachment; filename="person-{anna["person"].pk}-personal-data.json"'
    assert response.json()["person"]["last_name"] == "Berg"
