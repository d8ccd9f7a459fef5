"""CSV exports: streamed, bounded by visibility, the list's filters applied, formulas neutralised."""

from __future__ import annotations

import csv
import io

import pytest
from django.http import StreamingHttpResponse

from crm import services
from crm.exports import spreadsheet_safe
from crm.models import Customer
from tests.crm import factories as f

pytestmark = pytest.mark.django_db


def read_csv(response) -> list[dict]:
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def accounts(sales_org):
    rep1, rep2 = sales_org["north_rep1"], sales_org["north_rep2"]
    rows = {
        "mine": f.customer(name="Acme Paris", owner=rep1, city="Paris", lifecycle_stage="retained", external_id="A-1"),
        "mine_lost": f.customer(name="Beta Lyon", owner=rep1, city="Lyon", lifecycle_stage="lost"),
        "evil": f.customer(name="=HYPERLINK(\"http://x\")", owner=rep1, city="+33 Nice"),
        "theirs": f.customer(name="Gamma Paris", owner=rep2, city="Paris"),
    }
    for customer in rows.values():
        f.opportunity(customer=customer, evidence="@risky evidence" if customer.name.startswith("=") else "fits")
    return rows


def test_spreadsheet_safe_neutralises_formula_starts():
    assert [spreadsheet_safe(v) for v in ("=1+1", "+1", "-1", "@SUM", "\tx", "plain")] == [
        "'=1+1", "'+1", "'-1", "'@SUM", "'\tx", "plain"]


def test_account_export_follows_visibility_and_the_lists_filters(client, sales_org, accounts):
    client.force_login(sales_org["north_rep1"])
    everything = read_csv(client.get("/customers/export.csv"))
    assert {r["name"] for r in everything} == {"Acme Paris", "Beta Lyon", "'=HYPERLINK(\"http://x\")"}
    filtered = read_csv(client.get("/customers/export.csv", {"q": "Paris", "stage": "retained"}))
    assert [(r["name"], r["external_id"], r["owner"]) for r in filtered] == [("Acme Paris", "A-1", "north_rep1")]
    evil = next(r for r in everything if "HYPERLINK" in r["name"])
    assert evil["city"] == "'+33 Nice"
    client.force_login(sales_org["north_manager"])
    assert {r["name"] for r in read_csv(client.get("/customers/export.csv", {"q": "Paris"}))} == {
        "Acme Paris", "Gamma Paris"}


def test_account_list_links_to_the_export_with_its_filters(client, sales_org, accounts):
    client.force_login(sales_org["north_rep1"])
    html = client.get("/customers/", {"q": "Paris"}).content.decode()
    assert 'href="/customers/export.csv?q=Paris"' in html


def test_opportunity_export_is_bounded_and_filtered_by_status(client, sales_org, accounts):
    client.force_login(sales_org["north_rep1"])
    opportunity = accounts["mine"].opportunities.get()
    services.opportunity_set_status(opportunity=opportunity, status="accepted", user=sales_org["north_rep1"])
    rows = read_csv(client.get("/opportunities/export.csv"))
    assert {r["customer"] for r in rows} == {"Acme Paris", "Beta Lyon", "'=HYPERLINK(\"http://x\")"}
    assert {r["evidence"] for r in rows} == {"fits", "'@risky evidence"}
    accepted = read_csv(client.get("/opportunities/export.csv", {"status": "accepted"}))
    assert [(r["customer"], r["status"]) for r in accepted] == [("Acme Paris", "accepted")]


def test_analytics_export_is_for_managers_and_matches_the_page(client, sales_org, accounts):
    f.purchase(customer=accounts["mine"])
    client.force_login(sales_org["north_rep1"])
    assert client.get("/analytics/most_profitable/export.csv").status_code == 403
    client.force_login(sales_org["north_manager"])
    rows = read_csv(client.get("/analytics/most_profitable/export.csv"))
    assert rows
    assert client.get("/analytics/nonsense/export.csv").status_code == 404


@pytest.mark.postgres
def test_history_export_lists_each_changed_field(client, sales_org, accounts):
    customer = Customer.objects.get(pk=accounts["mine"].pk)
    services.record_update(instance=customer, data={"city": "=Bordeaux"})
    client.force_login(sales_org["north_rep1"])
    rows = read_csv(client.get(f"/customers/{customer.pk}/history.csv"))
    change = next(r for r in rows if r["op"] == "updated" and r["resource"] == "customers")
    assert (change["field"], change["old"], change["new"]) == ("city", "Paris", "'=Bordeaux")
    client.force_login(sales_org["north_rep2"])
    assert client.get(f"/customers/{customer.pk}/history.csv").status_code == 404
