"""The shared CSV import (crm.importing), the import commands and the exports they read back."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from crm import importing
from crm.models import Contact, Customer, Event, Holding, Person, Product, Purchase, Usage
from tests.crm import factories as f

pytestmark = pytest.mark.django_db

ORDER = ["customers", "products", "people", "holdings", "usage", "contacts", "events", "purchases"]


def run(kind, text, user, **kw):
    return importing.import_csv(kind, io.StringIO(text), user=user, **kw)


def failure(kind, text, user, **kw) -> importing.ImportResult:
    with pytest.raises(importing.ImportFailed) as caught:
        run(kind, text, user, **kw)
    return caught.value.result


def test_a_bad_row_is_named_by_line_and_nothing_is_written(sales_org):
    text = "external_id,name,owner,email\nC1,Acme,north_rep1,a@example.com\nC2,Beta,,not-an-address\nC3,,north_rep1,\n"
    result = failure("customers", text, sales_org["admin"])
    assert [str(e) for e in result.errors] == [
        "line 3: email: Enter a valid email address.",
        "line 4: name: This field is required.",
    ]
    assert Customer.objects.count() == 0


def test_errors_of_every_batch_are_counted_and_nothing_of_earlier_batches_stays(sales_org):
    rows = [f"C{i},Customer {i}" for i in range(10)]
    rows[7] = "C7,"
    rows[9] = "C9,"
    result = failure("customers", "external_id,name\n" + "\n".join(rows) + "\n", sales_org["admin"], batch_size=3)
    assert result.error_count == 2
    assert [e.line for e in result.errors] == [9, 11]
    assert Customer.objects.count() == 0


def test_differently_named_columns_are_mapped(sales_org):
    text = "Customer number;Company;E-mail\nK-1;Acme;sales@acme.example\n".replace(";", ",")
    mapping = {"Customer number": "external_id", "Company": "name", "E-mail": "email"}
    result = run("customers", text, sales_org["admin"], mapping=mapping)
    assert result.created == 1
    customer = Customer.objects.get(external_id="K-1")
    assert (customer.name, customer.email) == ("Acme", "sales@acme.example")


def test_a_mapped_column_is_named_in_its_error(sales_org):
    text = "Number,Company,E-mail\nK-1,Acme,nope\n"
    mapping = {"Number": "external_id", "Company": "name", "E-mail": "email"}
    result = failure("customers", text, sales_org["admin"], mapping=mapping)
    assert str(result.errors[0]) == "line 2: email (column 'E-mail'): Enter a valid email address."


def test_mapping_without_a_required_field_is_refused(sales_org):
    result = failure("customers", "Number,Company\nK-1,Acme\n", sales_org["admin"], mapping={"Number": "external_id"})
    assert "no column for the required field(s) name" in str(result.errors[0])


def test_a_dry_run_checks_everything_and_writes_nothing(sales_org):
    result = run("customers", "external_id,name\nC1,Acme\n", sales_org["admin"], dry_run=True)
    assert result.created == 1
    assert Customer.objects.count() == 0


def test_importing_the_same_file_twice_changes_nothing(sales_org):
    text = "external_id,name,city\nC1,Acme,Oslo\n"
    run("customers", text, sales_org["admin"])
    again = run("customers", text, sales_org["admin"])
    assert (again.created, again.updated, again.unchanged) == (0, 0, 1)


def test_a_stored_external_id_updates_the_record(sales_org):
    f.customer(external_id="C1", name="Old", owner=sales_org["north_rep1"])
    result = run("customers", "external_id,name\nC1,New\n", sales_org["north_rep1"])
    assert result.updated == 1
    assert Customer.objects.get(external_id="C1").name == "New"


def test_a_rep_cannot_reach_another_reps_customer(sales_org):
    f.customer(external_id="C1", owner=sales_org["north_rep2"])
    people = failure("people", "external_id,customer_external_id,last_name\nP1,C1,Doe\n", sales_org["north_rep1"])
    assert str(people.errors[0]) == (
        "line 2: customer_external_id: No customer with external_id 'C1' (or not one you can see)."
    )
    taken = failure("customers", "external_id,name\nC1,Mine now\n", sales_org["north_rep1"])
    assert "already in use" in str(taken.errors[0])


def test_a_rep_may_not_assign_another_rep(sales_org):
    result = failure("customers", "external_id,name,owner\nC1,Acme,south_rep1\n", sales_org["north_rep1"])
    assert str(result.errors[0]) == "line 2: owner: 'south_rep1' is not someone you may assign."


def test_an_empty_owner_means_the_importer_for_a_new_record_and_no_change_for_a_stored_one(sales_org):
    manager = sales_org["north_manager"]
    f.customer(external_id="C1", owner=sales_org["north_rep1"])
    run("customers", "external_id,name,owner\nC1,Kept,\nC2,New,\n", manager)
    assert Customer.objects.get(external_id="C1").owner == sales_org["north_rep1"]
    assert Customer.objects.get(external_id="C2").owner == manager


def test_only_admins_import_products(sales_org):
    text = "external_id,sku,name,family,list_price\nX,SKU-X,X,F,10\n"
    result = failure("products", text, sales_org["north_manager"])
    assert "only admins import products" in str(result.errors[0])
    assert run("products", text, sales_org["admin"]).created == 1


def test_a_repeated_external_id_is_named(sales_org):
    result = failure("customers", "external_id,name\nC1,A\nC1,B\n", sales_org["admin"])
    assert str(result.errors[0]) == "line 3: external_id: 'C1' is also on line 2; each record once per file."


def test_the_database_rules_are_reported_by_line(sales_org):
    customer = f.customer(external_id="C1")
    f.person(customer=customer, external_id="P0", is_primary=True)
    result = failure(
        "people", "external_id,customer_external_id,last_name,is_primary\nP1,C1,Doe,true\n", sales_org["admin"]
    )
    assert str(result.errors[0]) == "line 2: is_primary: This customer already has a primary contact."


def test_purchases_go_through_the_purchase_import_with_a_mapping(sales_org):
    f.customer(external_id="C1")
    text = "Client,Date,Total\nC1,2026-01-05,100.00\nC1,2026-01-06,-5\n"
    mapping = {"Client": "customer_external_id", "Date": "purchased_at", "Total": "amount"}
    result = failure("purchases", text, sales_org["admin"], mapping=mapping, preview_rows=5)
    assert str(result.errors[0]) == "line 3: amount must not be negative, got -5"
    assert [row.errors for row in result.preview] == [[], ["amount must not be negative, got -5"]]
    assert Purchase.objects.count() == 0
    ok = run("purchases", text.replace("-5", "5"), sales_org["admin"], mapping=mapping)
    assert ok.rows == 2
    assert Purchase.objects.count() == 2


def test_preview_rows_carry_their_errors(sales_org):
    text = "external_id,name,email\nC1,Acme,\nC2,Beta,bad\n"
    result = failure("customers", text, sales_org["admin"], preview_rows=5)
    assert [(r.line, r.errors) for r in result.preview] == [(2, []), (3, ["email: Enter a valid email address."])]


def test_a_value_escaped_against_formulas_imports_as_it_was(sales_org):
    run("customers", "external_id,name,phone\nC1,Acme,'+44 20 7946 0000\n", sales_org["admin"])
    assert Customer.objects.get(external_id="C1").phone == "+44 20 7946 0000"


# --- commands ------------------------------------------------------------------------------


def test_import_command_maps_columns_and_reports(tmp_path, sales_org, capsys):
    f.customer(external_id="C1")
    path = tmp_path / "people.csv"
    path.write_text("Id,Account,Surname,Mail\nP1,C1,Doe,doe@example.com\n")
    call_command(
        "import_people",
        str(path),
        "--map",
        "Id=external_id",
        "--map",
        "Account=customer_external_id",
        "--map",
        "Surname=last_name",
        "--map",
        "Mail=email",
        verbosity=0,
    )
    assert Person.objects.get(external_id="P1").email == "doe@example.com"
    assert "1 created" in capsys.readouterr().out


def test_import_command_names_the_line_and_writes_nothing(tmp_path, sales_org):
    path = tmp_path / "events.csv"
    f.customer(external_id="C1")
    path.write_text(
        "external_id,customer_external_id,kind,occurred_at\n"
        "E1,C1,merger,2026-01-05T10:00:00+00:00\n"
        "E2,C1,party,2026-01-06T10:00:00+00:00\n"
    )
    with pytest.raises(CommandError, match=r'line 3: kind: "party" is not a valid choice\.') as caught:
        call_command("import_events", str(path), verbosity=0)
    assert "nothing was imported" in str(caught.value)
    assert Event.objects.count() == 0


def test_import_command_refuses_a_bad_map(tmp_path, sales_org):
    path = tmp_path / "c.csv"
    path.write_text("external_id,name\nC1,A\n")
    with pytest.raises(CommandError, match="give it as file_column=field"):
        call_command("import_customers", str(path), "--map", "oops", verbosity=0)


# --- exports and the round trip ------------------------------------------------------------


def _book(org) -> None:
    rep = org["north_rep1"]
    acme = f.customer(
        external_id="C1",
        name="Acme",
        owner=rep,
        city="Oslo",
        phone="+47 22 00 00 00",
        lifecycle_stage="retained",
        acquired_on=date(2024, 3, 1),
        notes="=SUM(A1) is not a formula",
    )
    beta = f.customer(external_id="C2", name="Beta", owner=org["south_rep1"], kind="individual")
    pro = f.product(
        external_id="PR1",
        sku="ANA-PRO",
        family="Analytics",
        tier=2,
        capacity_unit="seats",
        capacity_per_unit=Decimal("10"),
    )
    sub = f.product(
        external_id="PR2", sku="SUP-Y", family="Support", renewal_period="year", period_price=Decimal("1200.00")
    )
    anna = f.person(
        customer=acme,
        external_id="P1",
        first_name="Anna",
        last_name="Berg",
        dmu_role="decision_maker",
        email="anna@acme.example",
        is_primary=True,
    )
    f.person(customer=acme, external_id="P2", last_name="Dahl", is_active=False)
    f.person(customer=beta, external_id="P3", last_name="Eik")
    holding = f.holding(customer=acme, product=pro, external_id="H1", quantity=Decimal("3"), since=date(2025, 1, 1))
    f.holding(
        customer=beta, product=sub, external_id="H2", since=date(2025, 6, 1), until=date(2026, 6, 1), status="cancelled"
    )
    f.usage(
        holding=holding,
        external_id="U1",
        used=Decimal("27.5"),
        capacity=Decimal("30"),
        satisfaction=4,
        nps=9,
        note="busy month",
    )
    contact = f.contact(
        customer=acme,
        external_id="K1",
        channel="meeting",
        direction="inbound",
        salesperson=rep,
        subject="Renewal",
        outcome="-2% asked",
        follow_up_on=date.today(),
    )
    contact.people.set([anna])
    f.contact(customer=beta, external_id="K2", channel="email", subject="Hello", salesperson=org["south_rep1"])
    Event.objects.create(
        customer=acme,
        external_id="E1",
        kind="funding",
        impact="positive",
        description="Series B",
        occurred_at=datetime(2026, 2, 3, 14, 30, tzinfo=UTC),
    )
    f.purchase(
        customer=acme,
        product=pro,
        quantity=Decimal("2"),
        unit_price=Decimal("50.00"),
        amount=Decimal("100.00"),
        unit_cost=Decimal("20.00"),
        order_ref="O-1",
        purchased_at=datetime(2026, 1, 5, 12, tzinfo=UTC),
        external_id="L1",
    )
    f.purchase(
        customer=beta,
        amount=Decimal("10.00"),
        unit_price=Decimal("10.00"),
        purchased_at=datetime(2026, 1, 6, 9, 30, tzinfo=UTC),
    )


def _export(client, kind) -> str:
    response = client.get(reverse("crm:records_csv", args=[kind]))
    assert response.status_code == 200
    return b"".join(response.streaming_content).decode()


def _without_ids(text: str) -> list[list[str]]:
    """A purchase export without its first column, the CRM's own id (a new book numbers its lines anew)."""
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][0] == "id"
    return [row[1:] for row in rows]


def test_export_then_import_gives_the_same_records_for_every_kind(client, sales_org):
    _book(sales_org)
    admin = sales_org["admin"]
    client.force_login(admin)
    before = {kind: _export(client, kind) for kind in ORDER}
    Customer.objects.all().delete()
    Product.objects.all().delete()
    for kind in ORDER:
        run(kind, before[kind], admin)
    after = {kind: _export(client, kind) for kind in ORDER}
    assert _without_ids(after.pop("purchases")) == _without_ids(before.pop("purchases"))
    assert after == before
    assert Contact.objects.get(external_id="K1").people.get().external_id == "P1"
    assert Usage.objects.get(external_id="U1").holding.external_id == "H1"
    assert Holding.objects.count() == 2
    assert Purchase.objects.count() == 2


def test_an_export_imported_again_changes_nothing(client, sales_org):
    _book(sales_org)
    admin = sales_org["admin"]
    client.force_login(admin)
    before = {kind: _export(client, kind) for kind in ORDER}
    for kind in ORDER:
        result = run(kind, before[kind], admin)
        assert result.created + result.updated == 0, kind
        assert result.unchanged == result.rows > 0, kind
    assert {kind: _export(client, kind) for kind in ORDER} == before
    assert Purchase.objects.count() == 2  # the line without a key found by its id, the other by its key


def test_a_changed_amount_in_an_exported_purchase_file_updates_the_line(client, sales_org):
    _book(sales_org)
    admin = sales_org["admin"]
    client.force_login(admin)
    rows = list(csv.reader(io.StringIO(_export(client, "purchases"))))
    amount = rows[0].index("amount")
    for row in rows[1:]:
        row[amount] = str(Decimal(row[amount]) + 1)
    edited = io.StringIO()
    csv.writer(edited).writerows(rows)
    result = run("purchases", edited.getvalue(), admin)
    assert (result.created, result.updated, result.unchanged) == (0, 2, 0)
    assert Purchase.objects.count() == 2
    keyed = Purchase.objects.get(external_id="L1")
    assert (keyed.amount, keyed.unit_price) == (Decimal("101.00"), Decimal("50.50"))  # 101 for 2
    assert Purchase.objects.get(external_id__isnull=True).amount == Decimal("11.00")  # found by its id


def test_a_repeated_purchase_key_is_named_with_both_lines(sales_org):
    text = "Key,Client,Date,Total\nL1,C1,2026-01-05,10\nL2,C1,2026-01-06,20\nL1,C1,2026-01-07,30\n"
    mapping = {"Key": "external_id", "Client": "customer_external_id", "Date": "purchased_at", "Total": "amount"}
    result = failure("purchases", text, sales_org["admin"], mapping=mapping)
    assert [str(e) for e in result.errors] == [
        "line 4: external_id 'L1' is also on line 2; each purchase line once per file"
    ]
    assert Purchase.objects.count() == 0


def test_exports_show_only_what_the_user_may_see(client, sales_org):
    _book(sales_org)
    client.force_login(sales_org["north_rep1"])
    people = _export(client, "people")
    assert "P1" in people
    assert "P3" not in people
    assert "ANA-PRO" in _export(client, "products")  # the catalogue is everyone's


def test_exports_neutralise_formulas(client, sales_org):
    _book(sales_org)
    client.force_login(sales_org["admin"])
    customers = _export(client, "customers")
    assert "'=SUM(A1) is not a formula" in customers
    assert "'+47 22 00 00 00" in customers


def test_an_unknown_kind_is_not_found(client, sales_org):
    client.force_login(sales_org["admin"])
    assert client.get(reverse("crm:records_csv", args=["secrets"])).status_code == 404


def test_tasks_export_follows_the_lists_filters(client, sales_org):
    rep = sales_org["north_rep1"]
    acme = f.customer(external_id="C1", owner=rep)
    f.task(customer=acme, title="Call Anna", assigned_to=rep, external_id="T1")
    f.task(customer=acme, title="Done already", assigned_to=rep, done_at=datetime(2026, 1, 1, tzinfo=UTC))
    f.task(customer=f.customer(owner=sales_org["south_rep1"]), title="Not mine", assigned_to=sales_org["south_rep1"])
    client.force_login(rep)
    response = client.get(reverse("crm:tasks_csv"), {"status": "open"})
    text = b"".join(response.streaming_content).decode()
    assert "Call Anna" in text
    assert "Done already" not in text
    assert "Not mine" not in text
    done = b"".join(client.get(reverse("crm:tasks_csv"), {"status": "done"}).streaming_content).decode()
    assert "Done already" in done
