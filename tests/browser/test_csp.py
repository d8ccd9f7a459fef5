"""The Content-Security-Policy breaks nothing: every page works in Chromium with no violation reported."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.browser.conftest import log_in, wait_for_js
from tests.crm import factories as f

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WATCH_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
    e => window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline')));
"""


@pytest.fixture
def watched(page):
    """The page, recording CSP violations (events and console reports) for the test to assert on."""
    page.context.add_init_script(WATCH_VIOLATIONS)
    reports: list[str] = []
    page.on("console", lambda msg: reports.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.csp_reports = reports
    return page


def violations(page) -> list[str]:
    return page.csp_reports + page.evaluate("window.__csp || []")


@pytest.fixture
def account(sales_org):
    rep = sales_org["north_rep1"]
    acme = f.customer(name="Acme Tools", owner=rep, city="Leeds")
    f.person(customer=acme, first_name="Ada", last_name="Lovelace")
    product = f.product(name="Analytics Pro", capacity_unit="seats", capacity_per_unit=10)
    holding = f.holding(customer=acme, product=product, quantity=5)
    f.usage(holding=holding, used=47, capacity=50)
    f.contact(customer=acme, subject="Quarterly review", salesperson=rep, occurred_at=timezone.now() - timedelta(days=3))
    f.event(customer=acme, kind="funding", occurred_at=timezone.now() - timedelta(days=2))
    f.opportunity(customer=acme, product=f.product(name="Data Connector"), expected_value=1800, score=0.8)
    for i in range(3):
        f.customer(name=f"Northwind {i}", owner=rep)
    return acme


def test_salesperson_pages_work_under_the_policy(watched, account):
    page = watched
    log_in(page, "north_rep1")
    page.goto("/customers/")
    page.get_by_role("searchbox", name="Search", exact=True).fill("Northwind")
    wait_for_js(page, "location.search.includes('Northwind')")  # htmx swapped the rows and pushed the URL
    assert "Acme" not in page.locator("#account-results").inner_text()
    page.goto(f"/customers/{account.pk}/")
    page.wait_for_selector("text=Ada")
    assert violations(page) == []
    assert page.js_errors == []


def test_manager_pages_and_charts_work_under_the_policy(watched, account):
    page = watched
    log_in(page, "north_manager")
    wait_for_js(page, "window.crmCharts && window.crmCharts['chart-pipeline']")  # Chart.js ran
    for path, heading in (("/clv/runs/", "CLV runs"), ("/analytics/", "Analytics")):
        page.goto(path)
        page.wait_for_selector(f"h1:has-text('{heading}')")
    assert violations(page) == []
    assert page.js_errors == []


def test_api_docs_and_admin_render_under_the_policy(watched, sales_org):
    page = watched
    log_in(page, "admin1")
    page.goto("/api/v1/docs/")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)  # the operations are drawn
    page.goto("/admin/")
    page.wait_for_selector("#site-name")
    assert violations(page) == []
