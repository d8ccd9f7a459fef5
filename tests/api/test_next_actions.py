"""GET /api/v1/next-actions/: the caller's own list, a manager's salesperson's, and who may not."""

from __future__ import annotations

from decimal import Decimal

import pytest

from crm.models import NextActionShown
from crm.selectors import next_actions as nba
from tests.crm import factories as f
from tests.crm.nba_rows import build_book

pytestmark = pytest.mark.django_db


@pytest.fixture
def nba_book(sales_org):
    return build_book(sales_org)


def test_own_list_ranked_with_reasons_actions_and_total(api, nba_book):
    response = api(nba_book["rep"]).get("/api/v1/next-actions/")
    assert response.status_code == 200
    body = response.json()
    rows = body["results"]
    expected = nba.next_actions(nba_book["rep"])
    assert [r["key"] for r in rows] == [i.key for i in expected.items]
    assert {r["kind"] for r in rows} == {"retention", "renewal", "follow_up", "cross_sell"}
    assert [Decimal(r["expected_value"]) for r in rows] == sorted((Decimal(r["expected_value"]) for r in rows),
                                                                  reverse=True)
    assert Decimal(body["total_expected_value"]) == sum(Decimal(r["expected_value"]) for r in rows)
    assert {r["owner"] for r in rows} == {nba_book["rep"].pk}
    offer = next(r for r in rows if r["kind"] == "cross_sell")
    assert offer["action"] == "offer"
    assert offer["currency"] == "EUR"
    assert offer["reason"] == "Customers like this one hold Data Connector."
    assert offer["url"].endswith(f"/customers/{offer['customer']}/#opp-{offer['object_id']}")
    # the API's read counts as the first view of the day: the list is recorded
    assert NextActionShown.objects.filter(user=nba_book["rep"]).count() == len(rows)


def test_pages_follow_the_ranking(api, nba_book):
    client = api(nba_book["rep"])
    everything = client.get("/api/v1/next-actions/").json()["results"]
    first = client.get("/api/v1/next-actions/", {"page_size": 3}).json()
    assert first["previous"] is None
    second = client.get(first["next"]).json()
    assert [r["key"] for r in first["results"] + second["results"]] == [r["key"] for r in everything]
    assert second["next"] is None
    assert client.get(second["previous"]).json()["results"] == first["results"]
    assert Decimal(first["total_expected_value"]) == Decimal(second["total_expected_value"])


def test_a_manager_reads_a_salesperson_of_their_team(api, nba_book):
    response = api(nba_book["north_manager"]).get("/api/v1/next-actions/", {"user": nba_book["rep"].pk})
    assert response.status_code == 200
    assert {r["customer_name"] for r in response.json()["results"]} == {
        "Sliding Co", "Renewing Co", "Late Co", "Offer Co"}


def test_a_salesperson_may_not_read_another_salespersons_list(api, nba_book):
    response = api(nba_book["rep"]).get("/api/v1/next-actions/", {"user": nba_book["rep2"].pk})
    assert response.status_code == 403
    assert response["Content-Type"].startswith("application/problem+json")


def test_a_manager_may_not_read_outside_their_teams_but_an_admin_may(api, nba_book):
    south = nba_book["south"]
    assert api(nba_book["north_manager"]).get("/api/v1/next-actions/", {"user": south.pk}).status_code == 403
    response = api(nba_book["admin"]).get("/api/v1/next-actions/", {"user": south.pk})
    assert response.status_code == 200
    assert [r["customer_name"] for r in response.json()["results"]] == ["Far South Co"]


def test_unknown_user_is_404_and_a_bad_one_400(api, nba_book):
    client = api(nba_book["north_manager"])
    assert client.get("/api/v1/next-actions/", {"user": 987654}).status_code == 404
    bad = client.get("/api/v1/next-actions/", {"user": "abc"})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "user"
    assert client.get("/api/v1/next-actions/", {"cursor": "not-a-cursor"}).status_code == 400


def test_query_count_does_not_grow_with_the_list(api, nba_book, django_assert_max_num_queries):
    for i in range(40):
        f.opportunity(customer=f.customer(owner=nba_book["rep"]), expected_value=Decimal(10 + i))
    client = api(nba_book["rep"])
    client.get("/api/v1/next-actions/")
    # token and user, the list (a run: 6) and the day's record: 9
    with django_assert_max_num_queries(9):
        assert client.get("/api/v1/next-actions/", {"page_size": 500}).status_code == 200


def test_in_the_openapi_schema(client):
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/v1/next-actions/"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"user", "cursor", "page_size"}
    assert {"200", "403", "404"} <= set(operation["responses"])
