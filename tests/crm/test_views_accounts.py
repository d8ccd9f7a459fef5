"""Keeping the book from the pages: accounts, people, holdings and usage; errors beside the field,
nothing written on bad input, never a 500; duplicate hints within the visibility rule; bounded queries."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from crm.models import Customer, Holding, Person, Tombstone, Usage
from tests.crm import factories as f

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def rep(sales_org):
    return sales_org["north_rep1"]


@pytest.fixture
def account(rep):
    return f.customer(name="Acme Tools", owner=rep, lifecycle_stage=Customer.Stage.RETAINED, email="info@acme.test",
                      phone="+44 113 496 0000")


def login(client, user):
    client.force_login(user)
    return client


ACCOUNT = {"name": "Globex Ltd", "kind": "company", "relationship_type": "repeat", "lifecycle_stage": "prospect",
           "email": "hello@globex.test", "phone": "+44 20 7946 0000", "website": "globex.test",
           "address": "1 High Street", "city": "London", "country": "gb", "notes": "Met at the fair",
           "external_id": ""}


# -- create ---------------------------------------------------------------------------------


def test_my_accounts_has_a_new_account_button(client, rep):
    html = login(client, rep).get(reverse("crm:account_list")).content.decode()
    assert f'href="{reverse("crm:account_create")}">New account</a>' in html


def test_salesperson_creates_an_account_they_own(client, rep):
    response = login(client, rep).post(reverse("crm:account_create"), ACCOUNT)
    customer = Customer.objects.get(name="Globex Ltd")
    assert response.status_code == 302
    assert response["Location"] == reverse("crm:account_detail", args=[customer.pk])
    assert (customer.owner, customer.country, customer.website, customer.address, customer.external_id) == (
        rep, "GB", "https://globex.test", "1 High Street", None)


def test_salesperson_create_form_has_no_owner_field(client, rep):
    html = login(client, rep).get(reverse("crm:account_create")).content.decode()
    assert 'name="owner"' not in html


def test_manager_chooses_an_owner_among_their_team_only(client, sales_org):
    manager = sales_org["north_manager"]
    login(client, manager)
    html = client.get(reverse("crm:account_create")).content.decode()
    assert "north_rep2" in html
    assert "south_rep1" not in html
    response = client.post(reverse("crm:account_create"), {**ACCOUNT, "owner": sales_org["south_rep1"].pk})
    assert response.status_code == 422
    assert "Select a valid choice" in response.content.decode()
    assert not Customer.objects.exists()
    client.post(reverse("crm:account_create"), {**ACCOUNT, "owner": sales_org["north_rep2"].pk})
    assert Customer.objects.get().owner == sales_org["north_rep2"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "   ", "This field is required."),
        ("email", "not-an-email", "Enter a valid email address."),
        ("country", "G1", "two-letter country code"),
        ("lifecycle_stage", "zombie", "Select a valid choice"),
        ("website", "http://", "Enter a"),
    ],
)
def test_create_with_a_bad_value_shows_the_error_beside_the_field_and_keeps_the_input(client, rep, field, value,
                                                                                       message):
    response = login(client, rep).post(reverse("crm:account_create"), {**ACCOUNT, field: value})
    html = response.content.decode()
    assert response.status_code == 422
    assert f'id="account-{field}_error"' in html
    assert message in html
    assert 'value="1 High Street"' in html  # what was typed stays
    assert not Customer.objects.exists()


def test_create_with_a_taken_external_id_is_refused_beside_the_field(client, rep):
    f.customer(name="Other", external_id="ERP-1", owner=rep)
    response = login(client, rep).post(reverse("crm:account_create"), {**ACCOUNT, "external_id": "ERP-1"})
    assert response.status_code == 422
    assert 'id="account-external_id_error"' in response.content.decode()
    assert Customer.objects.count() == 1


# -- duplicates -----------------------------------------------------------------------------


def test_create_shows_visible_duplicates_and_saves_only_when_confirmed(client, rep, account):
    login(client, rep)
    response = client.post(reverse("crm:account_create"), {**ACCOUNT, "name": "ACME Tools Limited"})
    html = response.content.decode()
    assert response.status_code == 200
    assert reverse("crm:account_detail", args=[account.pk]) in html
    assert "same name" in html
    assert Customer.objects.count() == 1
    response = client.post(reverse("crm:account_create"),
                           {**ACCOUNT, "name": "ACME Tools Limited", "confirm_duplicates": "1"})
    assert response.status_code == 302
    assert Customer.objects.count() == 2


@pytest.mark.parametrize(("field", "value", "reason"), [("email", "sales@acme.test", "same e-mail domain"),
                                                        ("phone", "0113 4960000", "same phone")])
def test_duplicates_by_email_domain_and_phone(client, rep, account, field, value, reason):
    response = login(client, rep).post(reverse("crm:account_create"), {**ACCOUNT, field: value})
    html = response.content.decode()
    assert reason in html
    assert "Acme Tools" in html


def test_duplicate_hints_never_reveal_accounts_the_user_cannot_see(client, rep, sales_org):
    f.customer(name="Hidden Rival GmbH", owner=sales_org["south_rep1"], email="x@rival.test", phone="+49 30 1234567")
    f.customer(name="Hidden Rival GmbH", owner=sales_org["north_rep2"])
    login(client, rep)
    live = client.get(reverse("crm:account_duplicates"),
                      {"name": "Hidden Rival", "email": "y@rival.test", "phone": "030 1234567"})
    assert "Hidden Rival" not in live.content.decode()
    assert "<li>" not in live.content.decode()
    response = client.post(reverse("crm:account_create"), {**ACCOUNT, "name": "Hidden Rival", "email": "y@rival.test",
                                                           "phone": "030 1234567"})
    assert response.status_code == 302  # no hint stopped the save


def test_manager_sees_duplicates_among_the_team(client, sales_org):
    f.customer(name="Team Account", owner=sales_org["north_rep2"])
    f.customer(name="Team Account", owner=sales_org["south_rep1"])
    login(client, sales_org["north_manager"])
    response = client.get(reverse("crm:account_duplicates"), {"name": "team account ltd"})
    assert response.content.decode().count("<li>") == 1


# -- edit -----------------------------------------------------------------------------------


def test_account_360_has_an_edit_action_and_edit_saves_in_place(client, rep, account):
    login(client, rep)
    html = client.get(reverse("crm:account_detail", args=[account.pk])).content.decode()
    assert ">Edit</a>" in html
    form = client.get(reverse("crm:account_edit", args=[account.pk]), **HTMX).content.decode()
    assert 'value="Acme Tools"' in form
    data = {**ACCOUNT, "name": "Acme Tools", "email": "info@acme.test", "phone": "+44 113 496 0000",
            "lifecycle_stage": "advocate"}
    response = client.post(reverse("crm:account_edit", args=[account.pk]), data, **HTMX)
    account.refresh_from_db()
    assert response.status_code == 200
    assert "Account saved." in response.content.decode()
    assert account.lifecycle_stage == "advocate"
    assert account.city == "London"


def test_edit_with_a_bad_value_keeps_the_input_and_writes_nothing(client, rep, account):
    before = Customer.objects.values().get(pk=account.pk)
    response = login(client, rep).post(reverse("crm:account_edit", args=[account.pk]),
                                       {**ACCOUNT, "name": "Acme Renamed", "email": "broken@"}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 422
    assert 'id="account-email_error"' in html
    assert 'value="Acme Renamed"' in html
    assert Customer.objects.values().get(pk=account.pk) == before


def test_edit_cannot_make_an_account_lost_without_a_reason(client, rep, account):
    response = login(client, rep).post(reverse("crm:account_edit", args=[account.pk]),
                                       {**ACCOUNT, "lifecycle_stage": "lost"}, **HTMX)
    assert response.status_code == 422
    account.refresh_from_db()
    assert account.lifecycle_stage == "retained"


def test_other_salespeople_get_404_for_edit_and_every_write(client, sales_org, account):
    holding = f.holding(customer=account)
    person = f.person(customer=account)
    login(client, sales_org["north_rep2"])
    for url in (reverse("crm:account_edit", args=[account.pk]), reverse("crm:account_mark_lost", args=[account.pk]),
                reverse("crm:person_create", args=[account.pk]), reverse("crm:person_edit", args=[person.pk]),
                reverse("crm:person_remove", args=[person.pk]), reverse("crm:holding_create", args=[account.pk]),
                reverse("crm:usage_create", args=[holding.pk])):
        assert client.post(url, {"name": "x", "last_name": "x"}).status_code == 404, url
    assert Person.objects.filter(pk=person.pk).exists()
    assert client.get(reverse("crm:account_summary", args=[account.pk])).status_code == 404


# -- reassign -------------------------------------------------------------------------------


def test_manager_reassigns_within_the_team_and_the_old_owner_loses_sight(client, sales_org, account):
    manager, rep, rep2 = sales_org["north_manager"], sales_org["north_rep1"], sales_org["north_rep2"]
    f.person(customer=account)
    login(client, manager)
    response = client.post(reverse("crm:account_reassign", args=[account.pk]), {"owner": rep2.pk}, **HTMX)
    assert response.status_code == 204
    assert response["HX-Redirect"] == reverse("crm:account_detail", args=[account.pk])
    account.refresh_from_db()
    assert account.owner == rep2
    moved = Tombstone.objects.filter(reason=Tombstone.Reason.MOVED, owner=rep)
    assert set(moved.values_list("model", flat=True)) == {"crm.customer", "crm.person"}
    assert login(client, rep).get(reverse("crm:account_detail", args=[account.pk])).status_code == 404
    assert login(client, rep2).get(reverse("crm:account_detail", args=[account.pk])).status_code == 200


def test_manager_cannot_reassign_outside_the_team(client, sales_org, account):
    login(client, sales_org["north_manager"])
    response = client.post(reverse("crm:account_reassign", args=[account.pk]), {"owner": sales_org["south_rep1"].pk},
                           **HTMX)
    assert response.status_code == 422
    assert 'id="reassign-owner_error"' in response.content.decode()
    account.refresh_from_db()
    assert account.owner == sales_org["north_rep1"]


def test_salesperson_cannot_reassign(client, rep, account, sales_org):
    response = login(client, rep).post(reverse("crm:account_reassign", args=[account.pk]),
                                       {"owner": sales_org["north_rep2"].pk})
    assert response.status_code == 403
    html = client.get(reverse("crm:account_detail", args=[account.pk])).content.decode()
    assert "account-reassign" not in html


def test_admin_reassigns_to_anyone(client, sales_org, account):
    login(client, sales_org["admin"])
    client.post(reverse("crm:account_reassign", args=[account.pk]), {"owner": sales_org["south_rep2"].pk})
    account.refresh_from_db()
    assert account.owner == sales_org["south_rep2"]


# -- mark lost ------------------------------------------------------------------------------


def test_mark_lost_asks_for_a_reason_and_records_it_with_the_date(client, rep, account):
    login(client, rep)
    response = client.post(reverse("crm:account_mark_lost", args=[account.pk]), {"reason": ""}, **HTMX)
    assert response.status_code == 422
    assert 'id="lost-reason_error"' in response.content.decode()
    response = client.post(reverse("crm:account_mark_lost", args=[account.pk]), {"reason": "other", "note": " "},
                           **HTMX)
    assert response.status_code == 422
    assert 'id="lost-note_error"' in response.content.decode()
    account.refresh_from_db()
    assert account.lifecycle_stage == "retained"
    response = client.post(reverse("crm:account_mark_lost", args=[account.pk]),
                           {"reason": "competitor", "note": "Chose Initech"}, **HTMX)
    account.refresh_from_db()
    assert response.status_code == 200
    assert (account.lifecycle_stage, account.lost_reason, account.lost_note, account.lost_on) == (
        "lost", "competitor", "Chose Initech", timezone.localdate())
    assert "Went to a competitor" in response.content.decode()


def test_winning_back_a_lost_account_clears_its_lost_date(client, rep, account):
    from crm import services

    services.customer_mark_lost(customer=account, reason="price")
    login(client, rep).post(reverse("crm:account_edit", args=[account.pk]),
                            {**ACCOUNT, "name": "Acme Tools", "lifecycle_stage": "acquired"}, **HTMX)
    account.refresh_from_db()
    assert (account.lifecycle_stage, account.lost_on, account.lost_reason) == ("acquired", None, "")


# -- people ---------------------------------------------------------------------------------


PERSON = {"first_name": "Ada", "last_name": "Lovelace", "job_title": "CTO", "dmu_role": "decision_maker",
          "email": "ada@acme.test", "phone": "+44 113 496 0001"}


def test_add_edit_and_remove_people(client, rep, account):
    login(client, rep)
    response = client.post(reverse("crm:person_create", args=[account.pk]), {**PERSON, "is_primary": "on"}, **HTMX)
    html = response.content.decode()
    ada = Person.objects.get(last_name="Lovelace")
    assert response.status_code == 200
    assert 'href="tel:+441134960001"' in html
    assert 'href="mailto:ada@acme.test"' in html
    assert ada.is_primary
    client.post(reverse("crm:person_create", args=[account.pk]),
                {**PERSON, "first_name": "Bob", "last_name": "Buyer", "dmu_role": "buyer", "is_primary": "on"}, **HTMX)
    ada.refresh_from_db()
    assert not ada.is_primary  # the new primary replaced her
    assert Person.objects.get(last_name="Buyer").is_primary
    response = client.post(reverse("crm:person_edit", args=[ada.pk]), {**PERSON, "job_title": "CEO"}, **HTMX)
    ada.refresh_from_db()
    assert ada.job_title == "CEO"
    response = client.post(reverse("crm:person_remove", args=[ada.pk]), **HTMX)
    assert "Ada Lovelace removed." in response.content.decode()
    assert not Person.objects.filter(pk=ada.pk).exists()
    assert Tombstone.objects.filter(model="crm.person", object_id=ada.pk).exists()


def test_person_form_errors_stay_beside_the_field(client, rep, account):
    response = login(client, rep).post(reverse("crm:person_create", args=[account.pk]),
                                       {**PERSON, "last_name": " ", "email": "ada@"}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 422
    assert 'id="person-new-last_name_error"' in html
    assert 'id="person-new-email_error"' in html
    assert 'value="CTO"' in html
    assert not Person.objects.exists()


def test_one_primary_contact_per_customer_in_the_database(account):
    from django.db import IntegrityError, transaction

    f.person(customer=account, is_primary=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        f.person(customer=account, is_primary=True)


def test_contact_form_lists_people_as_checkboxes(client, rep, account):
    ada = f.person(customer=account, first_name="Ada", last_name="Lovelace")
    bob = f.person(customer=account, first_name="Bob", last_name="Buyer")
    login(client, rep)
    html = client.get(reverse("crm:account_detail", args=[account.pk])).content.decode()
    assert f'type="checkbox" name="people" value="{ada.pk}"' in html
    assert "<select name=\"people\"" not in html
    client.post(reverse("crm:contact_create", args=[account.pk]),
                {"channel": "call", "direction": "outbound", "subject": "Both", "people": [ada.pk, bob.pk]}, **HTMX)
    assert set(account.contacts.get().people.all()) == {ada, bob}


# -- holdings and usage ---------------------------------------------------------------------


@pytest.fixture
def product():
    return f.product(name="Analytics Pro", capacity_unit="seats", capacity_per_unit=10)


def test_add_holding_and_record_usage_shows_a_bar_with_its_value(client, rep, account, product):
    login(client, rep)
    today = timezone.localdate()
    response = client.post(reverse("crm:holding_create", args=[account.pk]),
                           {"product": product.pk, "quantity": "5", "since": "2025-01-01", "until": "",
                            "status": "active"}, **HTMX)
    assert response.status_code == 200
    holding = Holding.objects.get(customer=account)
    assert "Record usage" in response.content.decode()
    start = today.replace(day=1)
    response = client.post(reverse("crm:usage_create", args=[holding.pk]),
                           {"period_start": start.isoformat(), "period_end": today.isoformat(), "used": "47",
                            "capacity": "", "satisfaction": "4", "nps": "9", "note": "Busy month"}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert Usage.objects.get(holding=holding).used == Decimal("47")
    assert "47 of 50 seats (94%)" in html
    assert 'role="img" aria-label="94% of capacity used' in html


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"since": "1899-12-31"}, "since", "between 1 Jan 1900"),
        ({"since": "2025-01-01", "until": "2024-01-01"}, "until", "on or after the start date"),
        ({"quantity": "-1"}, "quantity", "The quantity held cannot be negative."),
        ({"product": ""}, "product", "This field is required."),
    ],
)
def test_holding_form_errors(client, rep, account, product, data, field, message):
    base = {"product": product.pk, "quantity": "5", "since": "2025-01-01", "until": "", "status": "active"}
    response = login(client, rep).post(reverse("crm:holding_create", args=[account.pk]), {**base, **data}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 422
    assert f'id="holding-{field}_error"' in html
    assert message in html
    assert not Holding.objects.exists()


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"period_start": "0001-01-01"}, "period_start", "between 1 Jan 1900"),
        ({"period_start": "2030-01-01", "period_end": "2030-01-31"}, "period_start", "cannot be in the future"),
        ({"period_end": "2025-12-01"}, "period_end", "on or after its start"),
        ({"satisfaction": "7"}, "satisfaction", "Satisfaction goes from 1 (poor) to 5"),
        ({"nps": "11"}, "nps", "The NPS answer goes from 0 to 10."),
        ({"used": "-2"}, "used", "cannot be negative"),
    ],
)
def test_usage_form_errors(client, rep, account, product, data, field, message):
    holding = f.holding(customer=account, product=product, quantity=5)
    base = {"period_start": "2026-01-01", "period_end": "2026-01-31", "used": "10", "capacity": "",
            "satisfaction": "", "nps": "", "note": "typed note"}
    response = login(client, rep).post(reverse("crm:usage_create", args=[holding.pk]), {**base, **data}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 422
    assert f'id="usage-{holding.pk}-{field}_error"' in html
    assert message in html
    assert "typed note" in html
    assert not Usage.objects.exists()


def test_usage_for_a_period_already_recorded_is_refused_in_words(client, rep, account, product):
    holding = f.holding(customer=account, product=product)
    f.usage(holding=holding, period_start=date(2026, 1, 1), period_end=date(2026, 1, 31))
    response = login(client, rep).post(
        reverse("crm:usage_create", args=[holding.pk]),
        {"period_start": "2026-01-01", "period_end": "2026-01-31", "used": "3"}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 422
    assert "already recorded" in html
    assert "usage_one_per_holding_period" not in html


def test_forms_work_without_javascript(client, rep, account, product):
    login(client, rep)
    page = client.get(reverse("crm:person_create", args=[account.pk]))
    assert page.status_code == 200
    assert "<html" in page.content.decode()
    done = client.post(reverse("crm:person_create", args=[account.pk]), PERSON)
    assert done.status_code == 302
    bad = client.post(reverse("crm:holding_create", args=[account.pk]), {"product": product.pk, "since": "x"})
    assert bad.status_code == 422
    assert "<html" in bad.content.decode()


# -- query bounds ---------------------------------------------------------------------------


def _rich_account(rep, n: int):
    customer = f.customer(name="Big Co", owner=rep)
    for i in range(n):
        f.person(customer=customer, last_name=f"P{i}", email=f"p{i}@big.test")
        holding = f.holding(customer=customer, product=f.product(capacity_per_unit=5))
        for m in range(1, 4):
            f.usage(holding=holding, period_start=date(2025, m, 1), period_end=date(2025, m, 28))
    return customer


@pytest.mark.parametrize("n", [2, 12])
def test_new_pages_issue_a_bounded_number_of_queries(client, rep, n, django_assert_max_num_queries):
    customer = _rich_account(rep, n)
    holding = customer.holdings.first()
    person = customer.people.first()
    login(client, rep)
    urls = [
        (reverse("crm:account_create"), {}),
        (reverse("crm:account_edit", args=[customer.pk]), HTMX),
        (reverse("crm:person_create", args=[customer.pk]), HTMX),
        (reverse("crm:person_edit", args=[person.pk]), HTMX),
        (reverse("crm:holding_create", args=[customer.pk]), HTMX),
        (reverse("crm:usage_create", args=[holding.pk]), HTMX),
        (reverse("crm:account_facets", args=[customer.pk]) + "?tab=holdings", HTMX),
        (reverse("crm:account_detail", args=[customer.pk]), {}),
    ]
    for url, headers in urls:
        with django_assert_max_num_queries(16):
            assert client.get(url, **headers).status_code == 200


def test_duplicate_check_is_two_queries(client, rep, django_assert_max_num_queries):
    for i in range(30):
        f.customer(name=f"Acme {i}", owner=rep, email=f"a{i}@acme.test")
    login(client, rep)
    client.get(reverse("crm:account_duplicates"), {"name": "x"})  # session and user cached
    with django_assert_max_num_queries(4):
        response = client.get(reverse("crm:account_duplicates"),
                              {"name": "Acme 3", "email": "z@acme.test", "phone": "0113 496 0000"})
    assert response.content.decode().count("<li>") == 5


def test_dates_stay_sane_through_every_form(client, rep, account):
    login(client, rep)
    far = (timezone.localdate() + timedelta(days=800)).isoformat()
    response = client.post(reverse("crm:contact_create", args=[account.pk]),
                           {"channel": "call", "direction": "outbound", "subject": "Later", "follow_up_on": far},
                           **HTMX)
    assert response.status_code == 422
    assert 'id="contact-follow_up_on_error"' in response.content.decode()
    assert "must be between 1 Jan 1900 and" in response.content.decode()
    response = client.post(reverse("crm:event_create", args=[account.pk]),
                           {"kind": "funding", "impact": "positive", "occurred_at": "1000-01-01T10:00"}, **HTMX)
    assert response.status_code == 422
    assert 'id="event-occurred_at_error"' in response.content.decode()
    assert not account.contacts.exists()
    assert not account.events.exists()
