"""A manager imports accounts from the web: upload, map the columns, see a bad row in the preview,
upload the corrected file, import, and watch the progress until done."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from crm.models import Customer
from tests.browser.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BAD = "Number,Company,Mail\nK-1,Acme,sales@acme.example\nK-2,Beta,not-an-address\n"
GOOD = "Number,Company,Mail\nK-1,Acme,sales@acme.example\nK-2,Beta,hello@beta.example\n"


def csv_file(name: str, text: str) -> dict:
    return {"name": name, "mimeType": "text/csv", "buffer": text.encode()}


def test_manager_imports_accounts_after_fixing_a_bad_row(page, sales_org, screenshot):
    manager = sales_org["north_manager"]
    log_in(page, "north_manager")
    page.get_by_role("link", name="Import", exact=True).click()
    page.get_by_label("What the file holds").select_option("customers")
    page.get_by_label("CSV file").set_input_files(csv_file("book.csv", BAD))
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("heading", name="Import customers")).to_be_visible()

    page.get_by_label("Number").select_option("external_id")
    page.get_by_label("Company").select_option("name")
    page.get_by_label("Mail").select_option("email")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#preview-summary")).to_contain_text("1 error in the whole file")
    expect(page.locator("#preview-table")).to_contain_text("email (column 'Mail'): Enter a valid email address.")
    expect(page.get_by_role("button", name="Import 2 rows")).to_have_count(0)
    screenshot(page, "import-preview-error")
    assert Customer.objects.count() == 0

    page.get_by_label("Corrected CSV file").set_input_files(csv_file("book-fixed.csv", GOOD))
    page.get_by_role("button", name="Replace the file").click()
    expect(page.get_by_label("Mail")).to_have_value("email")  # the mapping stays
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#preview-summary")).to_contain_text("All 2 rows are good")
    page.get_by_role("button", name="Import 2 rows").click()
    expect(page.locator("#import-state")).to_have_attribute("data-status", "succeeded", timeout=20_000)
    expect(page.locator("#import-state")).to_contain_text("Imported 2 rows: 2 created")
    screenshot(page, "import-done")
    assert set(Customer.objects.values_list("external_id", "email", "owner")) == {
        ("K-1", "sales@acme.example", manager.pk), ("K-2", "hello@beta.example", manager.pk)}
    assert page.js_errors == []
