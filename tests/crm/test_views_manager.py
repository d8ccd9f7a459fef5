"""Manager pages: dashboard (from stored CLV aggregates), CSV exports, analytics frame, CLV runs and recompute."""

from __future__ import annotations

import csv
import io
from contextlib import contextmanager
from datetime import date

import pytest
from django.urls import reverse

from crm.models import Customer
from tests.crm import factories as f
from tests.crm.clv_rows import make_run, require_clv, set_value, snapshot

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def rows_of(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.content.decode())))


@pytest.fixture
def book(sales_org):
    """Customers for both teams' reps, with opportunities."""
    customers = {}
    for key in ("north_rep1", "north_rep2", "south_rep1"):
        for i in range(3):
            c = f.customer(name=f"{key} account {i}", owner=sales_org[key])
            customers[c.name] = c
            f.opportunity(customer=c, expected_value=100 * (i + 1), kind="cross_sell" if i % 2 else "up_sell")
    return customers


@pytest.fixture
def scored(book):
    require_clv()
    old = make_run(as_of=date(2026, 10, 1), current=False)
    run = make_run(as_of=date(2026, 11, 1))
    for i, c in enumerate(Customer.objects.order_by("pk")):
        set_value(old, c, clv=100, p_alive=0.9)
        set_value(run, c, clv=1000 + 1000 * i, p_alive=0.2 if i % 3 == 0 else 0.9, classic=5000 - 100 * i)
    snapshot(old)
    snapshot(run)
    return run


def test_dashboard_for_manager_and_admin_only(client, sales_org, book):
    for who in ("north_manager", "admin"):
        client.force_login(sales_org[who])
        assert client.get(reverse("crm:dashboard")).status_code == 200
    client.force_login(sales_org["north_rep1"])
    assert client.get(reverse("crm:dashboard")).status_code == 403


def test_dashboard_without_run_says_what_to_do_and_still_shows_pipeline(client, sales_org, book):
    client.force_login(sales_org["north_manager"])
    html = client.get(reverse("crm:dashboard")).content.decode()
    assert "No CLV run yet" in html
    assert 'id="table-pipeline"' in html
    assert 'id="chart-pipeline"' in html


def test_pipeline_csv_counts_only_visible_opportunities(client, sales_org, book):
    client.force_login(sales_org["north_manager"])
    response = client.get(reverse("crm:dashboard"), {"export": "pipeline"})
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = rows_of(response)
    assert rows[0] == ["Kind", "Status", "Opportunities", "Expected value (EUR)"]
    # north team: two reps × 3 opportunities (values 100, 200, 300); south is not visible.
    by_kind = {(r[0], r[1]): (int(r[2]), float(r[3])) for r in rows[1:]}
    assert by_kind == {("Cross-sell", "Open"): (2, 400.0), ("Up-sell", "Open"): (4, 800.0)}


def test_dashboard_filter_by_salesperson(client, sales_org, book):
    client.force_login(sales_org["north_manager"])
    rows = rows_of(client.get(reverse("crm:dashboard"),
                              {"export": "pipeline", "salesperson": sales_org["north_rep2"].pk}))
    assert sum(int(r[2]) for r in rows[1:]) == 3
    # A salesperson outside the manager's teams is ignored, not shown.
    rows = rows_of(client.get(reverse("crm:dashboard"),
                              {"export": "pipeline", "salesperson": sales_org["south_rep1"].pk}))
    assert sum(int(r[2]) for r in rows[1:]) == 6


def test_unknown_export_is_404(client, sales_org):
    client.force_login(sales_org["admin"])
    assert client.get(reverse("crm:dashboard"), {"export": "passwords"}).status_code == 404


def test_dashboard_with_run_shows_totals_by_salesperson_and_at_risk(client, sales_org, scored):
    client.force_login(sales_org["north_manager"])
    html = client.get(reverse("crm:dashboard")).content.decode()
    assert 'id="chart-trend"' in html
    assert 'id="chart-histogram"' in html
    assert 'id="chart-salespeople"' in html
    rows = rows_of(client.get(reverse("crm:dashboard"), {"export": "salespeople"}))
    assert [r[0] for r in rows[1:]] == ["north_rep2", "north_rep1"]  # higher CLV first
    assert sum(int(r[1]) for r in rows[1:]) == 6
    at_risk = rows_of(client.get(reverse("crm:dashboard"), {"export": "at_risk"}))
    assert at_risk[0][:4] == ["Customer", "External id", "Owner", "CLV (EUR)"]
    assert all(float(r[4]) < 50 for r in at_risk[1:])  # probability active, in percent
    assert all(r[2] in ("north_rep1", "north_rep2") for r in at_risk[1:])
    stakes = [float(r[3]) for r in at_risk[1:]]
    assert stakes == sorted(stakes, reverse=True)
    hist = rows_of(client.get(reverse("crm:dashboard"), {"export": "histogram"}))
    assert sum(int(r[2]) for r in hist[1:]) == 6
    trend = rows_of(client.get(reverse("crm:dashboard"), {"export": "trend"}))
    assert [r[1] for r in trend[1:]] == ["2026-10-01", "2026-11-01"]
    assert all(r[0] for r in trend[1:])  # each point names its run


def test_dashboard_team_filter(client, sales_org, scored):
    client.force_login(sales_org["admin"])
    rows = rows_of(client.get(reverse("crm:dashboard"), {"export": "salespeople", "team": sales_org["south_team"].pk}))
    assert [r[0] for r in rows[1:]] == ["south_rep1"]


def test_csv_cells_cannot_start_formulas(client, sales_org, scored):
    c = Customer.objects.order_by("pk").first()
    c.name = "=HYPERLINK(\"http://evil\")"
    c.save()
    client.force_login(sales_org["admin"])
    at_risk = rows_of(client.get(reverse("crm:dashboard"), {"export": "at_risk"}))
    assert any(r[0].startswith("'=") for r in at_risk[1:])


def test_dashboard_query_count_is_bounded(client, sales_org, scored, django_assert_max_num_queries):
    for i in range(60):
        c = f.customer(owner=sales_org["north_rep1"])
        f.opportunity(customer=c)
        set_value(scored, c, clv=10 * i, p_alive=0.1)
    client.force_login(sales_org["north_manager"])
    with django_assert_max_num_queries(16):  # + owner ids, previous run, movers (bounded, not per row)
        assert client.get(reverse("crm:dashboard")).status_code == 200


def test_account_list_with_values_sorts_and_filters_by_risk(client, sales_org, scored):
    client.force_login(sales_org["north_rep1"])
    html = client.get(reverse("crm:account_list"), {"sort": "-clv"}).content.decode()
    names = [n for n in ("north_rep1 account 0", "north_rep1 account 1", "north_rep1 account 2")]
    positions = [html.index(n) for n in names]
    assert positions == sorted(positions, reverse=True)  # later accounts were given higher CLV
    html = client.get(reverse("crm:account_list"), {"risk": "high"}).content.decode()
    assert '<span class="badge bad">High risk</span>' in html
    assert '<span class="badge good">Low risk</span>' not in html


def test_account_360_header_shows_values_and_trend(client, sales_org, scored):
    c = Customer.objects.filter(owner=sales_org["north_rep1"]).order_by("pk").first()
    client.force_login(sales_org["north_rep1"])
    html = client.get(reverse("crm:account_detail", args=[c.pk])).content.decode()
    assert "Customer lifetime value" in html
    assert "Probability active" in html
    assert '<svg class="sparkline"' in html


def test_analytics_page_lists_the_seven_questions(client, sales_org):
    client.force_login(sales_org["north_manager"])
    html = client.get(reverse("crm:analytics")).content.decode()
    assert html.count('<section class="card" id="q-') == 7


def test_clv_runs_page_empty_and_with_runs(client, sales_org):
    client.force_login(sales_org["north_manager"])
    html = client.get(reverse("crm:clv_runs")).content.decode()
    assert "Recompute now" in html
    require_clv()
    make_run(as_of=date(2026, 11, 1))
    html = client.get(reverse("crm:clv_runs")).content.decode()
    assert "current" in html
    assert "mape" in html
    assert "fit 3.50 s" in html


def test_clv_runs_forbidden_for_salesperson(client, sales_org):
    client.force_login(sales_org["north_rep1"])
    assert client.get(reverse("crm:clv_runs")).status_code == 403
    assert client.post(reverse("crm:clv_recompute"), **HTMX).status_code == 403


@contextmanager
def a_live_run_holds_the_run_lock():
    """What a run that is alive holds (a run left running with the lock free has lost its worker)."""
    from django.db import connection, connections

    from clv import services

    if connection.vendor != "postgresql":
        with services.run_lock(wait_seconds=0):
            yield
        return
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [services.LOCK_KEY])
        yield
    finally:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [services.LOCK_KEY])
        other.close()


def test_recompute_shows_progress_while_a_run_is_running(client, sales_org):
    require_clv()
    running = make_run(as_of=date(2026, 11, 2), current=False, status="running")
    client.force_login(sales_org["north_manager"])
    with a_live_run_holds_the_run_lock():
        html = client.post(reverse("crm:clv_recompute"), **HTMX).content.decode()
    assert "already in progress" in html
    assert 'hx-trigger="every 2s"' in html
    assert f"Run #{running.pk}" in html
    running.status = "succeeded"
    running.save()
    html = client.get(reverse("crm:clv_progress"), {"since": running.started_at.isoformat()}, **HTMX).content.decode()
    assert "hx-trigger" not in html.split('id="run-history"')[0]  # polling stops
    assert 'data-status="succeeded"' in html
    assert 'hx-swap-oob="true"' in html


def test_recompute_now_runs_the_clv_task(client, sales_org, settings):
    from django.utils import timezone

    from clv.models import ClvRun
    from crm.demo.seed import seed_demo

    settings.CLV_RECOMPUTE_IN_BACKGROUND = False  # the task itself, in the request (as with a broker in tests)
    seed_demo(customers=150, seed=3, as_of=timezone.localdate())
    client.force_login(sales_org["admin"])
    response = client.post(reverse("crm:clv_recompute"), **HTMX)
    assert response.status_code == 200
    run = ClvRun.objects.get()  # tasks run in-process in tests: the run is done
    assert run.status == ClvRun.Status.SUCCEEDED
    assert run.as_of == timezone.localdate()
    assert run.is_current


def test_my_day_lists_valuable_customers_at_risk_not_contacted_lately(client, sales_org, scored):
    from datetime import timedelta

    from django.utils import timezone

    from crm.selectors.values import clv_model

    rep = sales_org["north_rep1"]
    mine = list(Customer.objects.filter(owner=rep).order_by("pk"))
    values = {v.customer_id: v for v in clv_model("CustomerValue").objects.filter(run=scored)}
    risky = [c for c in mine if values[c.pk].p_alive < 0.5]
    safe = [c for c in mine if values[c.pk].p_alive >= 0.5]
    assert risky
    assert safe
    client.force_login(rep)

    def at_risk_section() -> str:
        html = client.get(reverse("crm:my_day")).content.decode()
        return html.split('id="risk-title"')[1].split("</section>")[0]

    section = at_risk_section()
    assert all(c.name in section for c in risky)
    assert not any(c.name in section for c in safe)
    f.contact(customer=risky[0], subject="Just called", occurred_at=timezone.now() - timedelta(days=2))
    assert risky[0].name not in at_risk_section()  # contacted lately: no longer listed


def test_analytics_inputs_are_validated_beside_the_field(client, sales_org):
    client.force_login(sales_org["north_manager"])
    html = client.get(reverse("crm:analytics"), {"since": "2026-05-01", "until": "2026-01-01",
                                                 "window_days": "0"}).content.decode()
    assert 'id="id_until_error"' in html
    assert 'id="id_window_days_error"' in html
    assert 'value="2026-05-01"' in html


def test_analytics_answers_from_the_selectors(client, sales_org, book):
    from datetime import UTC, datetime

    product = f.product(sku="AN-1", name="Analytics One")
    c = next(iter(book.values()))
    f.purchase(customer=c, product=product, purchased_at=datetime(2026, 3, 1, tzinfo=UTC))
    f.purchase(customer=c, product=product, purchased_at=datetime(2026, 4, 1, tzinfo=UTC))
    client.force_login(sales_org["north_manager"])
    response = client.get(reverse("crm:analytics"), {"product": product.pk})
    assert response.status_code == 200
    html = response.content.decode()
    section = html.split('id="q-product_buyers"')[1].split("</section>")[0]
    answer = section.split('class="answer"')[1].split("</p>")[0]
    assert "1 customer bought Analytics One so far; 1 of them (100%) bought it more than once" in answer
    assert f'href="{reverse("crm:account_detail", args=[c.pk])}"' in section  # names link to Account 360
    csv_rows = rows_of(client.get(reverse("crm:analytics"), {"product": product.pk, "export": "product_buyers.buyers"}))
    assert csv_rows[0] == ["Customer", "Purchases", "Bought again", "Amount (EUR)", "Last purchase"]
    assert csv_rows[1][:3] == [c.name, "2", "yes"]


def test_clv_runs_page_shows_a_real_run_readably(client, sales_org):
    from django.utils import timezone

    from clv.services import run_clv
    from crm.demo.seed import seed_demo

    seed_demo(customers=150, seed=4, as_of=timezone.localdate())
    run = run_clv()
    client.force_login(sales_org["admin"])
    html = client.get(reverse("crm:clv_runs")).content.decode()
    holdout = run.diagnostics["holdout"]
    words = html.split('id="holdout-words">')[1].split("</p>")[0]
    assert f"predicted {round(holdout['total_predicted']):,} purchases over the last 180 days" in words
    assert f"{round(holdout['total_actual']):,} happened" in words
    assert 'id="chart-calibration"' in html
    assert html.count("<tr>", html.index('id="table-calibration"'), html.index("</table>", html.index(
        'id="table-calibration"'))) == 1 + len(holdout["by_calibration_frequency"])
    assert "fit score " in html
    assert "_seconds" not in html.split("<details")[0]
    assert "{&#x27;" not in html  # no raw dicts in the table
    assert "{'" not in html


@pytest.mark.django_db(transaction=True)
def test_recompute_now_without_a_worker_answers_at_once_and_progress_shows_the_run(client, sales_org, settings):
    from django.utils import timezone

    from clv.models import ClvRun
    from crm.demo.seed import seed_demo
    from crm.views import manager

    settings.CLV_RECOMPUTE_IN_BACKGROUND = True
    seed_demo(customers=150, seed=3)
    client.force_login(sales_org["admin"])
    html = client.post(reverse("crm:clv_recompute"), **HTMX).content.decode()
    assert "Recompute started" in html
    assert 'hx-trigger="every 2s"' in html  # the box polls while the run works in the background
    since = html.split("since=")[1].split('"')[0]
    for thread in manager.BACKGROUND_RUNS:
        thread.join(timeout=120)
    run = ClvRun.objects.get()
    assert run.status == ClvRun.Status.SUCCEEDED
    assert run.as_of == timezone.localdate()
    from urllib.parse import unquote

    html = client.get(reverse("crm:clv_progress"), {"since": unquote(since)}, **HTMX).content.decode()
    assert 'data-status="succeeded"' in html
