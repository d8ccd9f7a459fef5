"""Next best actions in a real browser: the card on My day (total = sum of its items), the full
list, and the team's page a manager reaches from the dashboard, at desktop and phone width."""

from __future__ import annotations

from decimal import Decimal

import pytest
from playwright.sync_api import expect

from crm.templatetags.crm_ui import money
from tests.browser.conftest import log_in
from tests.crm.nba_rows import build_book

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def fits_a_phone(page) -> bool:
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(150)
    width = page.evaluate("document.documentElement.scrollWidth")
    page.set_viewport_size({"width": 1280, "height": 900})
    return width <= 390


def test_my_day_card_full_list_and_team_page(page, sales_org, screenshot):
    build_book(sales_org)
    log_in(page, "north_rep1")
    page.goto("/my-day/")
    card = page.locator("#next-best-actions")
    expect(card.get_by_role("heading", name="Next best actions")).to_be_visible()
    rows = card.locator("tbody tr")
    expect(rows).to_have_count(4)
    expect(card).not_to_contain_text("Rival Co")
    values = [Decimal(v) for v in card.locator("[data-nba-value]").evaluate_all(
        "cells => cells.map(c => c.dataset.nbaValue)")]
    assert values == sorted(values, reverse=True)
    expect(card.locator("#nba-total")).to_have_text(money(sum(values)))
    expect(card.get_by_role("link", name="Offer Data Connector to Offer Co")).to_be_visible()
    screenshot(page, "next-actions-my-day")
    assert fits_a_phone(page)
    card.get_by_role("link", name="See all 4 next best actions").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Next best actions")
    expect(page.locator("#nba-total")).to_have_text(money(sum(values)))
    page.get_by_role("link", name="Call Sliding Co").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sliding Co")

    page.context.clear_cookies()
    log_in(page, "north_manager")
    page.goto("/dashboard/")
    page.get_by_role("link", name="Team next best actions and what was acted on").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Team next best actions")
    expect(page.locator("#team-acted")).to_contain_text("acted on: 0 of 6")
    expect(page.locator("#outcome-rates")).to_contain_text("Cross-sell")
    expect(page.locator("body")).not_to_contain_text("Far South Co")
    screenshot(page, "next-actions-team")
    assert fits_a_phone(page)
    assert page.js_errors == []
