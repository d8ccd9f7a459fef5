"""Renewals at risk in a real browser: the card on My day and the dashboard, at desktop and phone width."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from clv.models import HoldingValue
from tests.browser.conftest import log_in
from tests.crm import factories as f
from tests.crm.clv_rows import make_run, set_value

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def renewals(sales_org):
    """Two contracts of north_rep1 renewing soon, one of north_rep2, as a run valued them."""
    today = timezone.localdate()
    run = make_run(as_of=today)
    plan = f.product(name="Hosting Plus", family="Hosting", renewal_period="month", period_price=Decimal("400.00"),
                     unit_cost=Decimal("100.00"))
    rows = []
    for name, owner, p_renew, residual, days in (
        ("Harbor Labs", "north_rep1", 0.62, "18000.00", 12),
        ("Cedar Works", "north_rep1", 0.91, "9000.00", 40),
        ("Rival Corp", "north_rep2", 0.50, "50000.00", 5),
    ):
        customer = f.customer(name=name, owner=sales_org[owner])
        holding = f.holding(customer=customer, product=plan, since=today - timedelta(days=200))
        set_value(run, customer, clv=residual, p_alive=1.0)
        rows.append(HoldingValue.objects.create(
            run=run, holding=holding, customer=customer, segment="Hosting, monthly", model="sbg", periods=7,
            next_renewal=today + timedelta(days=days), p_renew=p_renew, expected_remaining_periods=20.0,
            period_value=Decimal("300.00"), residual_value=Decimal(residual),
            value_at_stake=(Decimal(1) - Decimal(str(p_renew))) * Decimal(residual),
        ))
    return rows


def test_renewals_at_risk_card_on_my_day_and_dashboard(page, renewals, screenshot):
    log_in(page, "north_rep1")
    page.goto("/my-day/")
    card = page.locator("#renewals-at-risk")
    expect(card.get_by_role("heading", name="Renewals at risk")).to_be_visible()
    rows = card.locator("tbody tr")
    expect(rows).to_have_count(2)  # north_rep2's contract is not theirs
    expect(rows.nth(0)).to_contain_text("Harbor Labs")  # 38% x 18,000 at stake before 9% x 9,000
    expect(rows.nth(0)).to_contain_text("6,840")
    expect(rows.nth(0)).to_contain_text("38% of Hosting, monthly contracts in their 7th month do not renew")
    expect(card).not_to_contain_text("Rival Corp")
    screenshot(page, "renewals-my-day")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280

    page.context.clear_cookies()
    log_in(page, "north_manager")
    page.goto("/dashboard/")
    dashboard = page.locator("#renewals-at-risk")
    expect(dashboard.locator("tbody tr")).to_have_count(3)
    expect(dashboard.locator("tbody tr").nth(0)).to_contain_text("Rival Corp")  # 25,000 at stake
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(150)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.js_errors == []
