"""The visibility rule: salespeople see their own customers, managers their team's, admins all."""

import pytest

from accounts.selectors import can_see_customer, visible_customers
from crm.models import Contact, Purchase, Usage
from tests.crm import factories as f

pytestmark = pytest.mark.django_db


@pytest.fixture
def book(sales_org):
    """One customer per salesperson, one owned by the north manager, one unowned."""
    customers = {
        key: f.customer(name=key, owner=sales_org[key])
        for key in ("north_rep1", "north_rep2", "south_rep1", "south_rep2", "north_manager")
    }
    customers["unowned"] = f.customer(name="unowned")
    return customers


def names(qs):
    return set(qs.values_list("name", flat=True))


def test_salesperson_sees_only_own_customers(sales_org, book):
    assert names(visible_customers(sales_org["north_rep1"])) == {"north_rep1"}


def test_salesperson_cannot_see_colleagues_customer(sales_org, book):
    assert not can_see_customer(sales_org["north_rep1"], book["north_rep2"].pk)
    assert not can_see_customer(sales_org["north_rep1"], book["south_rep1"].pk)


def test_manager_sees_team_customers_and_own(sales_org, book):
    assert names(visible_customers(sales_org["north_manager"])) == {"north_rep1", "north_rep2", "north_manager"}


def test_manager_does_not_see_other_team(sales_org, book):
    assert not can_see_customer(sales_org["south_manager"], book["north_rep1"].pk)


def test_admin_sees_everything_including_unowned(sales_org, book):
    assert names(visible_customers(sales_org["admin"])) == set(book)


def test_superuser_without_admin_role_sees_everything(sales_org, book, make_user):
    root = make_user("root", is_superuser=True)
    assert visible_customers(root).count() == len(book)


def test_inactive_user_sees_nothing(sales_org, book):
    rep = sales_org["north_rep1"]
    rep.is_active = False
    rep.save()
    assert visible_customers(rep).count() == 0


def test_anonymous_sees_nothing(book):
    from django.contrib.auth.models import AnonymousUser

    assert visible_customers(AnonymousUser()).count() == 0


def test_salesperson_moved_to_other_team_moves_visibility(sales_org, book):
    rep = sales_org["north_rep1"]
    rep.team = sales_org["south_team"]
    rep.save()
    assert "north_rep1" in names(visible_customers(sales_org["south_manager"]))
    assert "north_rep1" not in names(visible_customers(sales_org["north_manager"]))


def test_facets_follow_the_customer_rule(sales_org, book):
    mine, theirs = book["north_rep1"], book["south_rep1"]
    for customer in (mine, theirs):
        f.purchase(customer=customer)
        f.contact(customer=customer)
        f.usage(holding=f.holding(customer=customer))
    rep = sales_org["north_rep1"]
    assert set(Purchase.objects.visible_to(rep).values_list("customer__name", flat=True)) == {"north_rep1"}
    assert set(Contact.objects.visible_to(rep).values_list("customer__name", flat=True)) == {"north_rep1"}
    assert set(Usage.objects.visible_to(rep).values_list("holding__customer__name", flat=True)) == {"north_rep1"}
