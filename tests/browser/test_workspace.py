"""Real-browser walks of the workspace: a follow-up from Account 360 lands on My day under Today
and is completed there; the header search finds a person and opens their account; the
opportunities page dismisses with a reason and undoes it."""

from __future__ import annotations

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from crm.models import Opportunity, Task
from tests.browser.conftest import log_in
from tests.crm import factories as f

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def book(sales_org):
    rep = sales_org["north_rep1"]
    acme = f.customer(name="Acme Tools", owner=rep, city="Leeds")
    f.person(customer=acme, first_name="Ada", last_name="Lovelace", dmu_role="decision_maker")
    f.customer(name="Secret Rival", owner=sales_org["south_rep1"])
    opp = f.opportunity(customer=acme, product=f.product(name="Data Connector"), expected_value=1800,
                        evidence="Customers like this one hold Data Connector.")
    return {"rep": rep, "acme": acme, "opp": opp, **sales_org}


def test_follow_up_logged_today_shows_on_my_day_under_today_and_is_completed(page, book):
    log_in(page, "north_rep1")
    page.goto(f"/customers/{book['acme'].pk}/")
    form = page.locator("#contact-form")
    form.get_by_label("Subject").fill("Renewal call")
    form.get_by_label("Follow up on").fill(timezone.localdate().isoformat())
    form.get_by_role("button", name="Log contact").click()
    page.wait_for_selector("#contact-form .flash:has-text('Contact logged.')")
    page.get_by_role("link", name="My day").click()
    today = page.locator("#tasks-today")
    expect(today.locator("strong", has_text="Follow up: Renewal call")).to_be_visible()
    expect(page.locator("#count-today")).to_have_text("1")
    today.get_by_label("Outcome of Follow up: Renewal call").fill("Renewing")
    today.get_by_role("button", name="Complete").click()
    expect(today.get_by_role("status")).to_contain_text("Done.")
    expect(page.locator("#count-today")).to_have_text("0")
    task = Task.objects.get(title="Follow up: Renewal call")
    assert task.done_at is not None
    assert task.contact.follow_up_done_at is not None
    assert page.js_errors == []


def test_header_search_finds_a_person_and_opens_their_account(page, book):
    log_in(page, "north_manager")
    page.get_by_role("heading", name="Dashboard").wait_for()
    page.keyboard.press("/")
    box = page.get_by_role("search", name="Search").get_by_role("searchbox")
    expect(box).to_be_focused()
    box.press_sequentially("Lovelace", delay=20)
    suggestion = page.locator("#search-suggest").get_by_role("link", name="Ada Lovelace")
    suggestion.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Acme Tools")
    assert page.url.endswith(f"/customers/{book['acme'].pk}/")
    box = page.get_by_role("search", name="Search").get_by_role("searchbox")
    box.fill("Secret")
    box.press("Enter")
    expect(page.get_by_role("heading", name="Search")).to_be_visible()
    expect(page.get_by_text("Nothing found for")).to_be_visible()  # another team's account: never hinted at


def test_opportunities_page_dismiss_with_a_reason_then_undo(page, book):
    log_in(page, "north_rep1")
    page.get_by_role("link", name="Opportunities").click()
    row = page.locator(f"#opp-row-{book['opp'].pk}")
    row.locator("summary", has_text="Dismiss").click()
    row.get_by_label("Bad timing").check()
    row.get_by_role("button", name="Confirm dismissal").click()
    row = page.locator(f"#opp-row-{book['opp'].pk}")
    expect(row.get_by_role("status")).to_contain_text("Marked dismissed.")
    expect(row.locator("[data-status]")).to_have_attribute("data-status", "dismissed")
    opp = Opportunity.objects.get(pk=book["opp"].pk)
    assert (opp.status, opp.dismiss_reason) == ("dismissed", "bad_timing")
    row.get_by_role("button", name="Undo").click()
    expect(page.locator(f"#opp-row-{book['opp'].pk}").get_by_role("status")).to_contain_text("Undone.")
    opp.refresh_from_db()
    assert (opp.status, opp.dismiss_reason) == ("open", "")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f"#opp-row-{book['opp'].pk}").get_by_role("button", name="Won").click()
    expect(page.locator(f"#opp-row-{book['opp'].pk} [data-status]")).to_have_attribute("data-status", "won")
    assert page.js_errors == []
