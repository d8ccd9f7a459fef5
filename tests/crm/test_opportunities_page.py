"""The opportunities page: scope (mine / my team's), filters, order, paging, actions in place
with a dismiss reason and undo, bad input, bounded queries."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from crm.models import Opportunity
from tests.crm import factories as f

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def book(sales_org):
    rep = sales_org["north_rep1"]
    acme = f.customer(name="Acme Tools", owner=rep)
    beta = f.customer(name="Beta Ltd", owner=rep)
    connector = f.product(name="Data Connector")
    opps = {
        "small": f.opportunity(customer=acme, product=connector, expected_value=Decimal("100")),
        "big": f.opportunity(customer=beta, product=f.product(name="Analytics Enterprise"), kind="up_sell",
                             expected_value=Decimal("9000")),
        "mid": f.opportunity(customer=beta, product=connector, expected_value=Decimal("500")),
        "rep2": f.opportunity(customer=f.customer(name="Rep2 Co", owner=sales_org["north_rep2"]),
                              expected_value=Decimal("700")),
        "south": f.opportunity(customer=f.customer(name="South Co", owner=sales_org["south_rep1"]),
                               expected_value=Decimal("800")),
    }
    f.opportunity(customer=acme, status="won", expected_value=Decimal("50000"))
    return {"rep": rep, "acme": acme, "beta": beta, "connector": connector, "opps": opps, **sales_org}


def rows(html: str) -> list[str]:
    return [chunk.split('"')[0] for chunk in html.split('id="opp-row-')[1:]]


def test_rep_sees_own_open_opportunities_by_expected_value(client, book):
    client.force_login(book["rep"])
    html = client.get(reverse("crm:opportunity_list")).content.decode()
    o = book["opps"]
    assert rows(html) == [str(o["big"].pk), str(o["mid"].pk), str(o["small"].pk)]


def test_manager_sees_the_teams(client, book):
    client.force_login(book["north_manager"])
    ids = rows(client.get(reverse("crm:opportunity_list")).content.decode())
    o = book["opps"]
    assert ids == [str(o[k].pk) for k in ("big", "rep2", "mid", "small")]


def test_filters_by_kind_product_status_and_account(client, book):
    client.force_login(book["rep"])
    url = reverse("crm:opportunity_list")
    o = book["opps"]
    assert rows(client.get(url, {"kind": "up_sell"}).content.decode()) == [str(o["big"].pk)]
    assert rows(client.get(url, {"product": book["connector"].pk}).content.decode()) == [str(o["mid"].pk),
                                                                                          str(o["small"].pk)]
    assert rows(client.get(url, {"customer": book["acme"].pk}).content.decode()) == [str(o["small"].pk)]
    assert len(rows(client.get(url, {"status": "won"}).content.decode())) == 1
    assert client.get(url, {"product": "nope", "kind": "bogus", "customer": "x"}).status_code == 200


def test_dismiss_needs_a_reason_and_keeps_it_then_undo_restores(client, book):
    opp = book["opps"]["big"]
    client.force_login(book["rep"])
    url = reverse("crm:opportunity_act", args=[opp.pk])
    response = client.post(url, {"status": "dismissed"}, **HTMX)
    assert response.status_code == 422
    assert "Choose why you dismiss it." in response.content.decode()
    response = client.post(url, {"status": "dismissed", "dismiss_reason": "other", "dismiss_note": " "}, **HTMX)
    assert response.status_code == 422
    opp.refresh_from_db()
    assert opp.status == "open"
    response = client.post(url, {"status": "dismissed", "dismiss_reason": "bad_timing"}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "Marked dismissed." in html
    assert "Undo" in html
    opp.refresh_from_db()
    assert (opp.status, opp.dismiss_reason, opp.status_changed_by) == ("dismissed", "bad_timing", book["rep"])
    response = client.post(url, {"status": "open", "undo": "on"}, **HTMX)
    assert response.status_code == 200
    assert "Undone." in response.content.decode()
    opp.refresh_from_db()
    assert (opp.status, opp.dismiss_reason) == ("open", "")


def test_won_and_lost_ask_for_confirmation(client, book):
    client.force_login(book["rep"])
    html = client.get(reverse("crm:opportunity_list")).content.decode()
    assert 'hx-confirm="Mark Analytics Enterprise for Beta Ltd as won?"' in html
    assert 'hx-confirm="Mark Analytics Enterprise for Beta Ltd as lost?"' in html


def test_actions_on_an_invisible_opportunity_are_404(client, book):
    opp = book["opps"]["south"]
    client.force_login(book["rep"])
    response = client.post(reverse("crm:opportunity_act", args=[opp.pk]), {"status": "won"}, **HTMX)
    assert response.status_code == 404
    opp.refresh_from_db()
    assert opp.status == "open"


def test_bad_status_is_an_error_not_a_500(client, book):
    opp = book["opps"]["big"]
    client.force_login(book["rep"])
    for data in ({"status": "expired"}, {"status": "nonsense"}, {}):
        response = client.post(reverse("crm:opportunity_act", args=[opp.pk]), data, **HTMX)
        assert response.status_code == 422, data
    opp.refresh_from_db()
    assert opp.status == Opportunity.Status.OPEN


def test_opportunities_page_paginates_with_bounded_queries(client, book, django_assert_max_num_queries):
    for i in range(40):
        f.opportunity(customer=f.customer(owner=book["rep"]), expected_value=Decimal(i))
    client.force_login(book["rep"])
    with django_assert_max_num_queries(8):
        response = client.get(reverse("crm:opportunity_list"), {"page": 2})
    assert response.status_code == 200
    assert len(rows(response.content.decode())) == 18  # 43 open: 25 + 18
