"""Global search: what it finds, that it never returns what the user may not see, typo tolerance
on PostgreSQL, the suggestions and the results page, bounded queries."""

from __future__ import annotations

import pytest
from django.urls import reverse

from crm.selectors.workspace import search
from tests.crm import factories as f

pytestmark = pytest.mark.django_db
HTMX_SUGGEST = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "search-suggest"}


@pytest.fixture
def book(sales_org):
    rep, rep2, south = sales_org["north_rep1"], sales_org["north_rep2"], sales_org["south_rep1"]
    acme = f.customer(name="Acme Tools", owner=rep, city="Leeds", email="info@acmetools.example",
                      website="https://www.acmetools.example", external_id="ERP-1001")
    f.person(customer=acme, first_name="Ada", last_name="Lovelace", email="ada@acmetools.example",
             phone="+44 113 496 0000")
    rival = f.customer(name="Acme Rival", owner=rep2, city="York")
    f.person(customer=rival, first_name="Ada", last_name="Lovelock", email="ada@rival.example")
    south_co = f.customer(name="Southern Acme", owner=south)
    f.person(customer=south_co, first_name="Sam", last_name="Hidden", phone="+44 20 7946 0999")
    return {"acme": acme, "rival": rival, "south": south_co, **sales_org}


@pytest.mark.parametrize(
    "q", ["acme", "Leeds", "ERP-1001", "acmetools.example", "info@acme"],
)
def test_accounts_found_by_name_city_external_id_email_and_domain(book, q):
    results = search(book["north_rep1"], q)
    assert [c.name for c in results.accounts] == ["Acme Tools"]


@pytest.mark.parametrize("q", ["Ada Lovelace", "lovelace", "ada@acmetools", "496 0000"])
def test_people_found_by_name_email_and_phone(book, q):
    results = search(book["north_rep1"], q)
    assert [(str(p), p.customer_id) for p in results.people] == [("Ada Lovelace", book["acme"].pk)]


def test_search_never_returns_what_the_user_may_not_see(book):
    rep = book["north_rep1"]
    for q in ("acme", "ada", "Lovelock", "Hidden", "Southern", "7946", "York", "rival.example"):
        results = search(rep, q)
        seen = {c.owner_id for c in results.accounts} | {p.customer.owner_id for p in results.people}
        assert seen <= {rep.pk}, q
    manager = book["north_manager"]
    names = {c.name for c in search(manager, "acme").accounts}
    assert names == {"Acme Tools", "Acme Rival"}
    assert {c.name for c in search(book["admin"], "acme").accounts} == {"Acme Tools", "Acme Rival", "Southern Acme"}
    assert search(book["south_manager"], "lovelace").empty


def test_pages_never_show_what_the_user_may_not_see(client, book):
    client.force_login(book["north_rep1"])
    for url_kwargs in ({}, HTMX_SUGGEST):
        html = client.get(reverse("crm:search"), {"q": "acme"}, **url_kwargs).content.decode()
        assert "Acme Tools" in html
        assert "Acme Rival" not in html
        assert "Southern Acme" not in html


@pytest.mark.postgres
def test_a_typo_still_finds_the_name_on_postgresql(book):
    rep = book["north_rep1"]
    assert [str(p) for p in search(rep, "Ada Lovelase").people] == ["Ada Lovelace"]
    assert [c.name for c in search(rep, "Acme Tols").accounts] == ["Acme Tools"]


def test_short_empty_and_odd_queries_answer_without_error(client, book):
    client.force_login(book["north_rep1"])
    for q in ("", "a", "%", "_", "\x00acme", "x" * 500, "' OR 1=1 --"):
        response = client.get(reverse("crm:search"), {"q": q})
        assert response.status_code == 200
        response = client.get(reverse("crm:search"), {"q": q}, **HTMX_SUGGEST)
        assert response.status_code == 200
    assert "Type at least two characters." in client.get(reverse("crm:search"), {"q": "a"}).content.decode()


def test_suggestions_link_to_the_account_and_to_all_results(client, book):
    client.force_login(book["north_rep1"])
    html = client.get(reverse("crm:search"), {"q": "lovelace"}, **HTMX_SUGGEST).content.decode()
    assert reverse("crm:account_detail", args=[book["acme"].pk]) in html
    assert "All results for" in html
    assert "<html" not in html  # a fragment, not a page


def test_every_page_has_the_header_search_form(client, book):
    client.force_login(book["north_rep1"])
    for name in ("crm:my_day", "crm:account_list", "crm:task_list", "crm:opportunity_list"):
        html = client.get(reverse(name)).content.decode()
        assert 'role="search" aria-label="Search"' in html, name
        assert 'id="global-search"' in html, name


def test_search_queries_are_bounded(client, book, django_assert_max_num_queries):
    """Session and user, the visible owners, one setting, one query for accounts and one for people: fixed."""
    for i in range(30):
        c = f.customer(name=f"Acme {i}", owner=book["north_rep1"])
        f.person(customer=c, first_name="Acme", last_name=f"Person {i}")
    client.force_login(book["north_rep1"])
    with django_assert_max_num_queries(8):
        assert client.get(reverse("crm:search"), {"q": "acme"}).status_code == 200
    with django_assert_max_num_queries(8):
        assert client.get(reverse("crm:search"), {"q": "acme"}, **HTMX_SUGGEST).status_code == 200


def test_a_phone_number_is_found_from_bare_digits(sales_org):
    rep = sales_org["north_rep1"]
    customer = f.customer(owner=rep)
    anna = f.person(customer=customer, first_name="Anna", last_name="Phonebook", phone="+33 6 12 34 56 78")
    hidden = f.person(customer=f.customer(owner=sales_org["south_rep1"]), first_name="Hidden", last_name="Caller",
                      phone="+33 6 12 34 56 78")
    for typed in ("0612345678", "612 345", "+33 6 12", "06 12 34 56 78"):
        found = [p.pk for p in search(rep, typed).people]
        assert anna.pk in found, typed
        assert hidden.pk not in found, typed


# -- the search text and its index ----------------------------------------------------------------


def test_search_finds_accounts_and_people_as_soon_as_they_are_created_or_edited(sales_org):
    from crm import services

    rep = sales_org["north_rep1"]
    account = services.customer_create(name="Zephyr Labs", owner=rep, city="Ghent")
    assert [c.pk for c in search(rep, "zephyr").accounts] == [account.pk]
    services.customer_update(customer=account, data={"name": "Quasar Labs", "city": "Bruges"})
    assert search(rep, "zephyr").accounts == []
    assert [c.pk for c in search(rep, "Quasar").accounts] == [account.pk]
    assert [c.pk for c in search(rep, "bruges").accounts] == [account.pk]
    person = services.person_add(customer=account, first_name="Mila", last_name="Kowalski", phone="+48 601 234 567",
                                 email="mila@quasar.example")
    assert [p.pk for p in search(rep, "kowalski").people] == [person.pk]
    assert [p.pk for p in search(rep, "601 234").people] == [person.pk]
    services.person_update(person=person, data={"last_name": "Nowak", "phone": "+48 700 111 222"})
    assert search(rep, "kowalski").people == []
    assert search(rep, "601 234").people == []
    assert [p.pk for p in search(rep, "Mila Nowak").people] == [person.pk]
    assert [p.pk for p in search(rep, "700111").people] == [person.pk]


def test_search_finds_rows_written_by_a_bulk_upsert(sales_org):
    from crm import services
    from crm.models import Customer, Person

    rep = sales_org["north_rep1"]
    services.records_upsert(model=Customer, records=[{"external_id": "ERP-77", "name": "Orbit Foods", "owner": rep}],
                            existing={})
    account = Customer.objects.get(external_id="ERP-77")
    services.records_upsert(model=Person, existing={}, records=[
        {"external_id": "P-77", "customer": account, "first_name": "Ivo", "last_name": "Petrov"}])
    assert [c.pk for c in search(rep, "orbit").accounts] == [account.pk]
    assert [str(p) for p in search(rep, "petrov").people] == ["Ivo Petrov"]
    services.records_upsert(model=Customer, records=[{"external_id": "ERP-77", "name": "Comet Foods", "owner": rep}],
                            existing=services.records_locked(model=Customer, external_ids=["ERP-77"]))
    assert search(rep, "orbit").accounts == []
    assert [c.pk for c in search(rep, "comet").accounts] == [account.pk]


def test_search_finds_a_customer_created_by_the_purchase_import(sales_org, tmp_path):
    from crm.imports import import_purchases_csv

    path = tmp_path / "purchases.csv"
    path.write_text("customer_external_id,purchased_at,amount\nSHOP-991,2025-03-01,10\n")
    import_purchases_csv(path)
    assert [c.external_id for c in search(sales_org["admin"], "SHOP-991").accounts] == ["SHOP-991"]
    assert search(sales_org["north_rep1"], "SHOP-991").empty  # no owner yet: only admins see it


def test_a_rep_finds_their_own_among_many_matches_in_books_they_cannot_see(sales_org):
    """The candidates are narrowed to the visible owners before any limit, so others' matches
    never crowd out the user's own; and none of them is returned."""
    rep, other = sales_org["north_rep1"], sales_org["south_rep1"]
    for i in range(60):
        c = f.customer(name=f"Nimbus Trading {i}", owner=other)
        f.person(customer=c, first_name="Nimbus", last_name=f"Other{i}")
    mine = f.customer(name="Nimbus Works", owner=rep)
    f.person(customer=mine, first_name="Nimbus", last_name="Mine")
    for q in ("nimbus", "Nimbus Mine", "Nimbus Works"):
        results = search(rep, q)
        assert {c.owner_id for c in results.accounts} <= {rep.pk}, q
        assert {p.customer.owner_id for p in results.people} <= {rep.pk}, q
    assert [c.pk for c in search(rep, "nimbus").accounts] == [mine.pk]
    assert [str(p) for p in search(rep, "nimbus").people] == ["Nimbus Mine"]
    assert [c.name for c in search(sales_org["north_manager"], "nimbus").accounts] == ["Nimbus Works"]
    assert len(search(sales_org["south_manager"], "nimbus").accounts) == 8


@pytest.mark.postgres
def test_a_typo_finds_only_what_the_user_may_see_among_many_similar_rows(sales_org):
    rep, other = sales_org["north_rep1"], sales_org["south_rep1"]
    for i in range(60):
        f.person(customer=f.customer(name=f"Harbour {i}", owner=other), first_name="Evangeline", last_name="Brookes")
    mine = f.customer(name="Harbour Mine", owner=rep)
    f.person(customer=mine, first_name="Evangeline", last_name="Brookes")
    assert [p.customer_id for p in search(rep, "Evangelnie Brookes").people] == [mine.pk]


@pytest.mark.postgres
def test_similar_names_are_offered_only_when_nothing_contains_the_query(sales_org):
    rep = sales_org["north_rep1"]
    account = f.customer(owner=rep)
    f.person(customer=account, first_name="Ada", last_name="Lovelace")
    f.person(customer=account, first_name="Ada", last_name="Lovelase")
    assert [str(p) for p in search(rep, "Lovelace").people] == ["Ada Lovelace"]
    assert [str(p) for p in search(rep, "Lovelacy").people] == ["Ada Lovelace", "Ada Lovelase"]  # closest first


def test_an_inactive_user_finds_nothing(book):
    rep = book["north_rep1"]
    rep.is_active = False
    rep.save(update_fields=["is_active"])
    assert search(rep, "acme").empty


@pytest.mark.postgres
@pytest.mark.parametrize("q", ["acme", "Lovelase", "496 0000"])
def test_the_search_is_served_by_the_two_search_text_indexes(book, q):
    """The search's text expressions equal those migration 0017 built the indexes on."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from crm.selectors.workspace import SEARCH_SETTINGS

    with CaptureQueriesContext(connection) as captured:
        search(book["admin"], q)
    [candidates] = [x["sql"] for x in captured.captured_queries if x["sql"].startswith(SEARCH_SETTINGS)]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(SEARCH_SETTINGS + " EXPLAIN " + candidates.removeprefix(SEARCH_SETTINGS))
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "customer_search_trgm" in plan
    assert "person_search_trgm" in plan
    assert "Seq Scan" not in plan


@pytest.mark.postgres
def test_the_search_settings_do_not_outlive_the_search(book):
    """Inside a transaction (as here) the search resets what it set for its own query."""
    from django.db import connection

    def settings():
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('enable_seqscan'), current_setting('jit')")
            return cursor.fetchone()

    before = settings()
    assert search(book["admin"], "acme").accounts
    assert settings() == before
