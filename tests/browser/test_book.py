"""A salesperson keeps their book in the browser: a new account, its stage, two people, a contact with
both, a holding with its usage bar; a manager reassigns an account; Account 360's order on a phone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from crm.models import Contact, Customer, Usage
from tests.browser.conftest import PHONE, log_in
from tests.crm import factories as f

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_salesperson_keeps_a_new_account(page, sales_org, screenshot):
    rep = sales_org["north_rep1"]
    f.product(name="Analytics Pro", family="Analytics", tier=1, capacity_unit="seats", capacity_per_unit=10)
    log_in(page, "north_rep1")
    page.get_by_role("link", name="My accounts").first.click()
    page.get_by_role("link", name="New account").click()
    form = page.locator("#account-form")
    form.get_by_label("Name").fill("Globex Logistics")
    form.get_by_label("Company or individual").select_option("company")
    form.get_by_label("Relationship").select_option("repeat")
    form.get_by_label("E-mail").fill("info@globex.test")
    form.get_by_label("Phone").fill("+44 20 7946 0001")
    form.get_by_label("Address").fill("1 Dock Road")
    form.get_by_label("City").fill("Hull")
    form.get_by_label("Country").fill("gb")
    screenshot(page, "account-new")
    form.get_by_role("button", name="Create account").click()
    page.wait_for_selector("h1:has-text('Globex Logistics')")
    customer = Customer.objects.get(name="Globex Logistics")
    assert (customer.owner, customer.country, customer.address) == (rep, "GB", "1 Dock Road")

    # Edit the stage in place.
    page.evaluate("window.__sameDocument = true")
    page.get_by_role("link", name="Edit", exact=True).click()
    page.locator("#account-form").get_by_label("Lifecycle stage").select_option("developing")
    page.locator("#account-form").get_by_role("button", name="Save").click()
    expect(page.locator("#account-summary .flash")).to_have_text("Account saved.")
    assert page.evaluate("window.__sameDocument") is True
    customer.refresh_from_db()
    assert customer.lifecycle_stage == "developing"

    # Two people of the decision-making unit.
    for first, last, role, email, phone in (("Ada", "Lovelace", "decision_maker", "ada@globex.test", "+44 20 7946 0002"),
                                            ("Bob", "Buyer", "buyer", "bob@globex.test", "")):
        page.get_by_role("link", name="Add person").click()
        person_form = page.get_by_role("form", name="New person")
        person_form.get_by_label("First name").fill(first)
        person_form.get_by_label("Last name").fill(last)
        person_form.get_by_label("Role in the decision-making unit").select_option(role)
        person_form.get_by_label("E-mail").fill(email)
        person_form.get_by_label("Phone").fill(phone)
        if first == "Ada":
            person_form.get_by_label("Primary contact").check()
        person_form.get_by_role("button", name="Save person").click()
        expect(page.locator("#dmu .flash")).to_have_text(f"{first} {last} added.")
    expect(page.locator("#dmu a[href='tel:+442079460002']")).to_be_visible()
    expect(page.locator("#dmu a[href='mailto:bob@globex.test']")).to_be_visible()

    # A contact with both people, ticked as checkboxes. The contact form was rendered before the
    # people were added: reload so it lists them.
    page.reload()
    contact_form = page.locator("#contact-form")
    contact_form.get_by_label("Subject").fill("Kick-off call")
    people = contact_form.get_by_role("group", name="Who took part")
    people.get_by_label("Ada Lovelace").check()
    people.get_by_label("Bob Buyer").check()
    contact_form.get_by_role("button", name="Log contact").click()
    page.wait_for_selector("#contact-form .flash:has-text('Contact logged.')")
    contact = Contact.objects.get(subject="Kick-off call")
    assert sorted(str(p) for p in contact.people.all()) == ["Ada Lovelace", "Bob Buyer"]

    # A holding, a usage period, and its bar.
    page.get_by_role("tab", name="Holdings & usage").click()
    page.get_by_role("link", name="Add holding").click()
    holding_form = page.locator("#holding-form")
    holding_form.get_by_label("Product").select_option(index=1)
    holding_form.get_by_label("Quantity or seats").fill("5")
    holding_form.get_by_label("Since").fill("2025-01-01")
    holding_form.get_by_role("button", name="Save holding").click()
    expect(page.locator("#facets .flash")).to_have_text("Analytics Pro added.")
    page.get_by_role("link", name="Record usage").click()
    usage_form = page.locator("#usage-form")
    today = timezone.localdate()
    usage_form.get_by_label("Period from").fill(today.replace(day=1).isoformat())
    usage_form.get_by_label("Period to").fill(today.isoformat())
    usage_form.get_by_label("Used").fill("40")
    usage_form.get_by_label("Satisfaction (1–5)").fill("4")
    usage_form.get_by_role("button", name="Save usage").click()
    bar = page.get_by_role("img", name="80% of capacity used")
    expect(bar).to_be_visible()
    expect(page.locator(".usage-bars")).to_contain_text("40 of 50 seats (80%)")
    width = bar.locator("span").evaluate(
        "el => el.getBoundingClientRect().width / el.parentElement.getBoundingClientRect().width")
    assert 0.75 < width < 0.85
    assert Usage.objects.get().used == 40
    screenshot(page, "account-360-kept")
    assert page.js_errors == []


def test_a_bad_value_in_a_new_form_stays_beside_its_field(page, sales_org):
    customer = f.customer(name="Acme Tools", owner=sales_org["north_rep1"])
    log_in(page, "north_rep1")
    page.goto(f"/customers/{customer.pk}/")
    page.get_by_role("link", name="Add person").click()
    person_form = page.get_by_role("form", name="New person")
    person_form.get_by_label("Last name").fill("Lovelace")
    person_form.get_by_label("E-mail").fill("ada@")
    person_form.get_by_role("button", name="Save person").click()
    error = page.locator("#person-new-email_error")
    expect(error).to_be_visible()
    assert page.get_by_role("form", name="New person").get_by_label("Last name").input_value() == "Lovelace"
    assert not customer.people.exists()


def test_manager_reassigns_an_account_and_the_old_owner_loses_it(page, chromium, live_server, sales_org):
    rep, rep2 = sales_org["north_rep1"], sales_org["north_rep2"]
    customer = f.customer(name="Moving Co", owner=rep)
    log_in(page, "north_manager")
    page.goto(f"/customers/{customer.pk}/")
    reassign = page.locator("#account-reassign")
    reassign.get_by_label("New owner").select_option(label=str(rep2))
    reassign.get_by_role("button", name="Reassign").click()
    expect(page.locator(".messages")).to_contain_text(f"Moving Co now belongs to {rep2}.")
    expect(page.locator("#account-summary .meta")).to_contain_text(f"Owner: {rep2}")

    for username, status in (("north_rep1", 404), ("north_rep2", 200)):
        context = chromium.new_context(base_url=live_server.url)
        other = context.new_page()
        log_in(other, username)
        response = other.goto(f"/customers/{customer.pk}/")
        assert response.status == status, username
        if status == 404:
            assert other.get_by_role("heading", name="This page does not exist, or it is not yours to see").is_visible()
            assert "Moving Co" not in other.content()
        else:
            assert other.get_by_role("heading", name="Moving Co").is_visible()
        context.close()


def test_on_a_phone_people_and_opportunities_come_before_the_timeline(page, sales_org):
    rep = sales_org["north_rep1"]
    customer = f.customer(name="Acme Tools", owner=rep)
    f.person(customer=customer, first_name="Ada", last_name="Lovelace", phone="+44 113 496 0001")
    f.contact(customer=customer, subject="Review", occurred_at=timezone.now() - timedelta(days=3))
    f.opportunity(customer=customer, expected_value=900)
    page.set_viewport_size(PHONE)
    log_in(page, "north_rep1")
    page.goto(f"/customers/{customer.pk}/")

    def top(selector: str) -> float:
        return page.locator(selector).bounding_box()["y"]

    assert top("#dmu") < top("#timeline")
    assert top("#opportunities") < top("#timeline")
    assert top("#dmu") < top("#opportunities")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_a_task_added_on_account_360_shows_on_my_day(page, sales_org):
    customer = f.customer(name="Acme Tools", owner=sales_org["north_rep1"])
    log_in(page, "north_rep1")
    page.goto(f"/customers/{customer.pk}/")
    page.get_by_role("link", name="Add task").click()
    form = page.get_by_role("form", name="New task")
    form.get_by_label("What to do").fill("Call Anna about the renewal")
    form.get_by_label("Due on").fill(timezone.localdate().isoformat())
    form.get_by_role("button", name="Add task").click()
    expect(page.get_by_text("Call Anna about the renewal").first).to_be_visible()
    task = customer.tasks.get()
    assert task.assigned_to == sales_org["north_rep1"]
    assert task.due_on == timezone.localdate()
    page.goto(f"/customers/{customer.pk}/")
    expect(page.locator("#account-tasks")).to_contain_text("Call Anna about the renewal")
    expect(page.locator("#account-tasks")).to_contain_text("Due today")
    page.get_by_role("link", name="My day").first.click()
    expect(page.locator("#tasks-today")).to_contain_text("Call Anna about the renewal")
    assert page.js_errors == []
