"""The admin shows every model: list, search, filters, add and change pages render for an admin."""

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.crm import factories as f

pytestmark = pytest.mark.django_db

CRM_MODELS = {"customer", "person", "product", "purchase", "holding", "usage", "contact", "event", "opportunity", "tombstone"}


@pytest.fixture
def admin_client(client, make_user):
    user = make_user("boss", role="admin", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


@pytest.fixture
def one_of_each():
    customer = f.customer(name="Acme", external_id="ACME")
    holding = f.holding(customer=customer)
    f.usage(holding=holding)
    f.purchase(customer=customer, product=holding.product)
    f.person(customer=customer)
    f.contact(customer=customer)
    f.event(customer=customer)
    f.opportunity(customer=customer)
    return customer


def test_every_crm_model_is_registered():
    registered = {m._meta.model_name for m in admin.site._registry if m._meta.app_label == "crm"}
    assert registered == CRM_MODELS


@pytest.mark.parametrize("model", sorted(CRM_MODELS) + ["user", "team"])
def test_changelist_renders_with_search(admin_client, one_of_each, model):
    app = "accounts" if model in {"user", "team"} else "crm"
    response = admin_client.get(reverse(f"admin:{app}_{model}_changelist"), {"q": "Acme"})
    assert response.status_code == 200


@pytest.mark.parametrize("model", sorted(CRM_MODELS - {"tombstone"}))
def test_add_page_renders(admin_client, model):
    assert admin_client.get(reverse(f"admin:crm_{model}_add")).status_code == 200


def test_customer_change_page_shows_its_facets_inline(admin_client, one_of_each):
    response = admin_client.get(reverse("admin:crm_customer_change", args=[one_of_each.pk]))
    assert response.status_code == 200
    content = response.content.decode()
    for heading in ("People", "Holdings", "Purchases", "Contacts", "Events", "Opportunities"):
        assert heading in content


def test_salesperson_cannot_open_admin(client, make_user):
    client.force_login(make_user("rep", role="salesperson"))
    response = client.get(reverse("admin:crm_customer_changelist"))
    assert response.status_code == 302


def test_admin_giving_a_customer_to_another_owner_tells_the_previous_ones_feed(rf, make_user, one_of_each):
    from types import SimpleNamespace

    from crm.models import Customer, Tombstone

    rep_a, rep_b = make_user("rep_a"), make_user("rep_b")
    Customer.objects.filter(pk=one_of_each.pk).update(owner=rep_a)
    customer = Customer.objects.get(pk=one_of_each.pk)
    customer.owner = rep_b
    model_admin = admin.site._registry[Customer]
    model_admin.save_model(rf.post("/"), customer, SimpleNamespace(changed_data=["owner"]), change=True)
    moved = Tombstone.objects.filter(reason=Tombstone.Reason.MOVED)
    assert set(moved.values_list("model", flat=True)) == {
        "crm.customer", "crm.person", "crm.purchase", "crm.holding", "crm.usage", "crm.contact", "crm.event",
        "crm.opportunity",
    }
    assert set(moved.values_list("owner_id", "customer_id", "now_customer_id")) == {
        (rep_a.pk, customer.pk, customer.pk)
    }
    customer.name = "Renamed"  # a change that moves nothing writes nothing
    model_admin.save_model(rf.post("/"), customer, SimpleNamespace(changed_data=["name"]), change=True)
    assert Tombstone.objects.count() == moved.count()


def test_admin_shows_constraint_violations_in_words_beside_the_field(admin_client):
    from datetime import date

    usage = f.usage(period_start=date(2026, 1, 1), period_end=date(2026, 1, 31))
    url = reverse("admin:crm_usage_change", args=[usage.pk])
    response = admin_client.post(url, {"holding": usage.holding_id, "period_start": "2026-01-01",
                                       "period_end": "2025-12-01", "used": "3", "nps": "12", "note": ""})
    html = response.content.decode()
    assert response.status_code == 200
    assert "The NPS answer goes from 0 to 10." in html
    assert "The end of the period must be on or after its start." in html
    assert "is violated" not in html
    assert "usage_nps_range" not in html


def test_admin_refuses_two_primary_contacts_in_words(admin_client):
    customer = f.customer(name="Acme")
    f.person(customer=customer, last_name="First", is_primary=True)
    other = f.person(customer=customer, last_name="Second")
    url = reverse("admin:crm_person_change", args=[other.pk])
    response = admin_client.post(url, {"customer": customer.pk, "last_name": "Second", "dmu_role": "user",
                                       "is_primary": "on", "is_active": "on"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "This customer already has a primary contact." in html
    other.refresh_from_db()
    assert not other.is_primary


def test_admin_refuses_dates_before_1900(admin_client):
    customer = f.customer(name="Acme")
    url = reverse("admin:crm_event_add")
    response = admin_client.post(url, {"customer": customer.pk, "kind": "funding", "impact": "neutral",
                                       "occurred_at_0": "1000-01-01", "occurred_at_1": "10:00:00"})
    assert response.status_code == 200
    assert "The event date must be between 1 Jan 1900 and now." in response.content.decode()


def _posted(response) -> dict:
    """The change page's form as the browser would post it unchanged (the main form and every inline)."""
    data = {}
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        management = formset.management_form
        data.update({management.add_prefix(name): management[name].value() for name in management.fields})
        forms += formset.forms
    for form in forms:
        for name, field in form.fields.items():
            value = form[name].value()
            if field.widget.__class__.__name__ == "CheckboxInput":
                if value:
                    data[form.add_prefix(name)] = "on"
            elif value is not None:
                data[form.add_prefix(name)] = value
    return data


def test_an_erased_person_cannot_be_edited_in_the_customer_inline_or_the_person_admin(admin_client, make_user):
    from crm.models import Person
    from crm.privacy import ERASED_LAST_NAME, person_erase

    customer = f.customer(name="Acme", external_id="ACME")
    erased = f.person(customer=customer, first_name="Ada", last_name="Lovelace", email="ada@acme.example")
    kept = f.person(customer=customer, last_name="Berg")
    person_erase(person=erased, erased_by=make_user("dpo", role="admin"))
    url = reverse("admin:crm_customer_change", args=[customer.pk])
    page = admin_client.get(url)
    data = _posted(page)
    rows = {data[key]: key.rsplit("-", 1)[0] for key in data if key.startswith("people-") and key.endswith("-id")}
    data[f"{rows[erased.pk]}-last_name"] = "Lovelace"
    data[f"{rows[erased.pk]}-email"] = "ada@acme.example"
    data[f"{rows[kept.pk]}-last_name"] = "Dahl"
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context and response.context["errors"]
    erased.refresh_from_db()
    assert (erased.last_name, erased.email) == (ERASED_LAST_NAME, "")  # the posted values were ignored
    assert Person.objects.get(pk=kept.pk).last_name == "Dahl"  # the other rows stay editable

    change = reverse("admin:crm_person_change", args=[erased.pk])
    shown = admin_client.get(change)
    assert shown.status_code == 200
    assert 'name="_save"' not in shown.content.decode()  # the read-only view
    assert admin_client.post(change, {"last_name": "Lovelace", "customer": customer.pk}).status_code == 403
    erased.refresh_from_db()
    assert erased.last_name == ERASED_LAST_NAME
    assert admin_client.get(reverse("admin:crm_person_change", args=[kept.pk])).content.decode().count(
        'name="_save"'
    ) == 1
