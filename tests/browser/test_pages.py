"""Real-browser scenarios: a salesperson's working loop, form errors, the manager's charts, visibility."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from crm.models import Contact, Customer, Opportunity
from tests.browser.conftest import log_in, wait_for_js
from tests.crm import factories as f
from tests.crm.clv_rows import make_run, set_value, snapshot
from tests.crm.clv_rows import require_clv as _require_clv

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def book(sales_org):
    """Two reps' accounts with facets and opportunities."""
    rep = sales_org["north_rep1"]
    acme = f.customer(name="Acme Tools", owner=rep, lifecycle_stage=Customer.Stage.RETAINED, city="Leeds")
    f.person(customer=acme, first_name="Ada", last_name="Lovelace", dmu_role="decision_maker", job_title="CTO")
    f.person(customer=acme, first_name="Bob", last_name="Buyer", dmu_role="buyer")
    pro = f.product(name="Analytics Pro", family="Analytics", tier=1, capacity_unit="seats", capacity_per_unit=10)
    holding = f.holding(customer=acme, product=pro, quantity=5)
    f.usage(holding=holding, used=47, capacity=50, satisfaction=4, nps=8)
    f.purchase(customer=acme, product=pro, quantity=5, unit_price=100, amount=500,
               purchased_at=timezone.now() - timedelta(days=40))
    f.contact(customer=acme, subject="Quarterly review", occurred_at=timezone.now() - timedelta(days=20),
              salesperson=rep, follow_up_on=timezone.localdate())
    f.event(customer=acme, kind="funding", impact="positive", description="Series B",
            occurred_at=timezone.now() - timedelta(days=10))
    opp = f.opportunity(customer=acme, product=f.product(name="Data Connector"), expected_value=1800, score=0.8,
                        evidence="78% of customers who hold Analytics Pro also hold Data Connector; Acme does not.")
    f.opportunity(customer=acme, product=f.product(name="Analytics Enterprise", family="Analytics", tier=2),
                  kind="up_sell", from_product=pro, expected_value=4200, score=0.9,
                  evidence="Used 94% of 50 seats for 3 months.")
    for i in range(12):
        f.customer(name=f"Northwind {i:02d}", owner=rep, lifecycle_stage="developing")
    other = f.customer(name="Secret Rival Account", owner=sales_org["north_rep2"])
    return {"rep": rep, "acme": acme, "opp": opp, "other": other, **sales_org}


def test_salesperson_logs_contact_and_accepts_opportunity(page, book, screenshot):
    log_in(page, "north_rep1")
    assert page.get_by_role("heading", name="My day").is_visible()
    screenshot(page, "my-day")
    page.get_by_role("link", name="My accounts").first.click()
    page.get_by_role("searchbox", name="Search", exact=True).fill("Acme")
    expect(page.locator("#account-results h2")).to_have_text("1 account")
    screenshot(page, "my-accounts")
    page.get_by_role("link", name="Acme Tools").click()
    page.wait_for_selector("h1:has-text('Acme Tools')")
    screenshot(page, "account-360")

    # The page must not reload: a marker on window survives an htmx swap, not a navigation.
    page.evaluate("window.__sameDocument = true")
    form = page.locator("#contact-form")
    form.get_by_label("Channel").select_option("meeting")
    form.get_by_label("Subject").fill("Renewal and seats upgrade")
    form.get_by_role("group", name="Who took part").get_by_label("Ada Lovelace").check()
    form.get_by_label("Outcome").fill("Wants a quote")
    form.get_by_role("button", name="Log contact").click()
    page.wait_for_selector("#contact-form .flash:has-text('Contact logged.')")
    first = page.locator("#timeline > li").first
    assert "Renewal and seats upgrade" in first.inner_text()
    assert first.get_attribute("data-facet") == "contact"
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator("#contact-form").get_by_label("Subject").input_value() == ""
    contact = Contact.objects.get(subject="Renewal and seats upgrade")
    assert contact.salesperson == book["rep"]
    assert contact.outcome == "Wants a quote"

    card = page.locator(f"#opp-{book['opp'].pk}")
    card.get_by_role("button", name="Accept").click()
    page.wait_for_selector(f"#opp-{book['opp'].pk} [data-status='accepted']")
    assert page.evaluate("window.__sameDocument") is True
    book["opp"].refresh_from_db()
    assert book["opp"].status == Opportunity.Status.ACCEPTED
    screenshot(page, "account-360-after-actions")

    page.get_by_role("tab", name="Holdings & usage").click()
    page.wait_for_selector("#facet-panel >> text=47 of 50 seats (94%)")
    screenshot(page, "account-360-holdings", phone=False)
    assert page.js_errors == []


def test_bad_value_shows_error_beside_field_and_keeps_text(page, book, screenshot):
    log_in(page, "north_rep1")
    page.goto(f"/customers/{book['acme'].pk}/")
    form = page.locator("#event-form")
    form.get_by_label("What happened").select_option("leadership_change")
    form.get_by_label("Description").fill("New CFO from a competitor, wants to review all contracts")
    future = (timezone.localtime() + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M")
    form.get_by_label("When").fill(future)
    form.get_by_role("button", name="Record event").click()
    error = page.locator("#event-form .field.has-error .errorlist")
    error.wait_for()
    assert "cannot be in the future" in error.inner_text()
    # The message sits in the same field block as the input it is about, and the input points at it.
    field = page.locator("#event-form .field.has-error")
    assert field.locator("input#event-occurred_at").count() == 1
    assert "event-occurred_at_error" in (page.locator("#event-occurred_at").get_attribute("aria-describedby") or "")
    assert page.locator("#event-form").get_by_label("Description").input_value().startswith("New CFO from")
    assert page.locator("#event-occurred_at").input_value() == future
    assert not book["acme"].events.filter(kind="leadership_change").exists()
    screenshot(page, "quick-form-error")


def test_manager_sees_dashboard_with_drawn_charts(page, book, screenshot):
    with_clv = True
    try:
        _require_clv()
    except pytest.skip.Exception:
        with_clv = False
    if with_clv:
        old = make_run(as_of=date(2026, 10, 1), current=False)
        run = make_run(as_of=date(2026, 11, 1))
        for i, c in enumerate(Customer.objects.order_by("pk")):
            set_value(old, c, clv=500 + i * 90, p_alive=0.8)
            set_value(run, c, clv=800 + i * 150, p_alive=0.3 if i % 4 == 0 else 0.85, classic=1200 + i * 10)
        snapshot(old)
        snapshot(run)
    log_in(page, "north_manager")
    page.wait_for_selector("h1:has-text('Dashboard')")
    wait_for_js(page, "window.crmCharts && window.crmCharts['chart-pipeline']")
    charts = ["chart-pipeline"] + (["chart-trend", "chart-histogram", "chart-salespeople"] if with_clv else [])
    for chart_id in charts:
        points = page.evaluate(
            "id => window.crmCharts[id].data.datasets.flatMap(d => d.data).filter(v => v > 0).length", chart_id
        )
        assert points > 0, chart_id
        painted = page.evaluate(
            """id => {
                const c = document.getElementById(id);
                const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0;
                for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
                return n;
            }""",
            chart_id,
        )
        assert painted > 500, chart_id  # the canvas has drawn bars / lines, not an empty box
    assert page.js_errors == []
    screenshot(page, "dashboard")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="CLV runs").click()
    page.wait_for_selector("h1:has-text('CLV runs')")
    screenshot(page, "clv-runs")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Analytics").click()
    page.wait_for_selector("h1:has-text('Analytics')")
    screenshot(page, "analytics", phone=False)


def test_salesperson_opening_anothers_account_gets_404_page(page, book, screenshot):
    log_in(page, "north_rep1")
    response = page.goto(f"/customers/{book['other'].pk}/")
    assert response.status == 404
    assert page.get_by_role("heading", name="This page does not exist, or it is not yours to see").is_visible()
    assert "Secret Rival Account" not in page.content()
    assert page.get_by_role("link", name="My day").is_visible()  # the app's own layout
    screenshot(page, "not-found")
    response = page.goto("/dashboard/")
    assert response.status == 403
    screenshot(page, "forbidden", phone=False)


def test_login_page_and_keyboard_navigation(page, book, screenshot):
    page.goto("/accounts/login/")
    screenshot(page, "login")
    page.goto("/accounts/login/")
    # The user name field has focus on arrival, and focus is visible (an outline is drawn).
    assert page.evaluate("document.activeElement.id") == "id_username"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.type("north_rep1")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "id_password"
    page.keyboard.type("pw-Secret-123")
    page.keyboard.press("Enter")
    page.wait_for_selector("h1:has-text('My day')")
    assert page.url.endswith("/my-day/")


def test_pages_fit_a_phone_screen(page, book):
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, "north_manager")
    for url in ("/my-day/", "/customers/", f"/customers/{book['acme'].pk}/", "/dashboard/", "/clv/runs/",
                "/analytics/"):
        page.goto(url)
        page.wait_for_load_state("networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{url} is {width}px wide on a 390px screen"
