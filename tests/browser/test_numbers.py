"""Real-browser checks of the numbers: the seven analytics answers on whatever database the suite uses,
and Account 360's change since the previous run with its drivers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from clv.models import CustomerValue
from clv.services import run_clv
from crm.demo.seed import DEMO_PASSWORD, seed_demo
from crm.opportunities.services import opportunities_regenerate
from tests.browser.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def demo():
    today = timezone.localdate()
    seed_demo(customers=150, seed=5)
    previous = run_clv(as_of=today - timedelta(days=30))
    current = run_clv(as_of=today)
    opportunities_regenerate(as_of=today)
    return {"previous": previous, "current": current}


def test_analytics_answers_all_seven_questions(page, demo):
    log_in(page, "manager_north", DEMO_PASSWORD)
    page.goto("/analytics/")
    answers = page.locator("p.answer")
    expect(answers).to_have_count(7)
    for i in range(7):
        text = answers.nth(i).inner_text()
        assert len(text) > 30, text
        assert "Widen" not in text
    buyers = page.locator("#q-product_buyers table a[href^='/customers/']")
    assert buyers.count() > 0  # question 1 lists the customers, linked to Account 360
    assert page.locator("#q-most_profitable h3").all_inner_texts()[:2] == [
        "By margin so far", "By predicted CLV (current run)"]
    page.wait_for_function("window.crmCharts && Object.keys(window.crmCharts).length >= 5")
    # At phone width the tables stack, every cell showing its column's name.
    page.set_viewport_size({"width": 390, "height": 800})
    cell = page.locator("#q-events_before_loss td[data-label='Lift']").first
    label = cell.evaluate("td => getComputedStyle(td, '::before').content")
    assert "Lift" in label
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_account_360_shows_the_change_since_the_previous_run_with_its_drivers(page, demo):
    previous, current = demo["previous"], demo["current"]
    old = dict(CustomerValue.objects.filter(run=previous).values_list("customer_id", "frequency"))
    moved = next(
        v for v in CustomerValue.objects.filter(run=current, customer__owner__username="rep_north_1")
        .order_by("-frequency", "customer_id")
        if v.customer_id in old and v.frequency > old[v.customer_id]
    )
    log_in(page, "rep_north_1", DEMO_PASSWORD)
    page.goto(f"/customers/{moved.customer_id}/")
    box = page.locator("#value-change")
    expect(box).to_be_visible()
    expect(box).to_contain_text(f"since run {previous.pk}")
    expect(box.locator("ul.drivers li").first).to_contain_text("new purchase")
    # The hint beside the CLV opens its definition.
    page.locator(".stat details.hint summary").first.click()
    expect(page.locator(".stat details.hint[open] .hint-text").first).to_contain_text("margin (not revenue)")
