"""import_purchases: streamed CSV import that names the bad line and writes nothing on error."""

from datetime import datetime
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from crm.models import Customer, Purchase
from tests.crm import factories as f

pytestmark = pytest.mark.django_db


def write(tmp_path, text: str):
    path = tmp_path / "purchases.csv"
    path.write_text(text)
    return str(path)


def test_imports_rows_and_creates_unseen_customers(tmp_path, capsys):
    f.customer(external_id="C1", name="Known")
    f.product(sku="ANA-PRO")
    path = write(tmp_path, (
        "customer_external_id,purchased_at,amount,product_sku,quantity,unit_cost,order_ref\n"
        "C1,2026-01-05,100.00,ANA-PRO,2,30,O-1\n"
        "C2,2026-01-06T10:30:00+00:00,50.5,,,,\n"
        "C2,2026-02-01,20,,,,O-3\n"
    ))
    call_command("import_purchases", path, verbosity=0)
    assert Purchase.objects.count() == 3
    assert Customer.objects.get(external_id="C2").lifecycle_stage == "acquired"
    first = Purchase.objects.get(order_ref="O-1")
    assert (first.quantity, first.unit_price, first.amount, first.unit_cost) == (2, Decimal("50.00"), 100, 30)
    assert first.product.sku == "ANA-PRO"
    assert "created 1 customers" in capsys.readouterr().out


def test_bad_row_in_the_middle_writes_nothing_and_names_the_line(tmp_path):
    rows = ["customer_external_id,purchased_at,amount"] + [f"N{i},2026-01-{i + 1:02d},10" for i in range(10)]
    rows.insert(6, "N99,2026-01-07,-5")  # line 7 of the file
    path = write(tmp_path, "\n".join(rows) + "\n")
    with pytest.raises(CommandError, match="line 7: amount must not be negative"):
        call_command("import_purchases", path, batch_size=2, verbosity=0)
    assert Purchase.objects.count() == 0
    assert Customer.objects.count() == 0


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("C1,yesterday,10", "line 2: purchased_at 'yesterday' is not a date"),
        ("C1,2026-01-01,ten", "line 2: amount is not a number"),
        (",2026-01-01,10", "line 2: customer_external_id is empty"),
        ("C1,2026-01-01", "line 2: expected 3 values, found 2"),
    ],
)
def test_each_kind_of_bad_value_is_named(tmp_path, row, message):
    path = write(tmp_path, f"customer_external_id,purchased_at,amount\n{row}\n")
    with pytest.raises(CommandError, match=message):
        call_command("import_purchases", path, verbosity=0)
    assert not Purchase.objects.exists()


def test_unknown_sku_is_an_error(tmp_path):
    path = write(tmp_path, "customer_external_id,purchased_at,amount,product_sku\nC1,2026-01-01,10,NOPE\n")
    with pytest.raises(CommandError, match="line 2: unknown product_sku 'NOPE'"):
        call_command("import_purchases", path, verbosity=0)


def test_header_must_name_the_required_columns(tmp_path):
    path = write(tmp_path, "customer,purchased_at,amount,colour\nC1,2026-01-01,10,red\n")
    with pytest.raises(CommandError, match="line 1: missing column.*customer_external_id.*unknown column.*colour"):
        call_command("import_purchases", path, verbosity=0)


def test_date_format_option(tmp_path):
    path = write(tmp_path, "customer_external_id,purchased_at,amount\nC1,31/12/2025,10\n")
    call_command("import_purchases", path, date_format="%d/%m/%Y", verbosity=0)
    assert Purchase.objects.get().purchased_at.date() == datetime(2025, 12, 31).date()


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="cannot read the file"):
        call_command("import_purchases", str(tmp_path / "absent.csv"), verbosity=0)


def test_imported_purchase_realises_a_won_opportunity(tmp_path, make_user):
    from crm.services import opportunity_set_status

    customer = f.customer(external_id="C1")
    product = f.product(sku="ANA-PRO")
    won = f.opportunity(customer=customer, product=product)
    other = f.opportunity(customer=customer, product=f.product(sku="OTHER"))
    opportunity_set_status(opportunity=won, status="won", user=make_user("rep"))
    opportunity_set_status(opportunity=other, status="won", user=make_user("rep2"))
    path = write(tmp_path, "customer_external_id,purchased_at,amount,product_sku\nC1,2026-01-01,10,ANA-PRO\n")
    call_command("import_purchases", path, verbosity=0)
    won.refresh_from_db()
    other.refresh_from_db()
    assert won.won_purchase == Purchase.objects.get()
    assert other.won_purchase is None


def test_imported_lines_take_places_in_the_change_feed_between_the_writes_around_them(tmp_path):
    before = f.purchase(customer=f.customer(external_id="C1"))
    path = write(tmp_path, "customer_external_id,purchased_at,amount\nC1,2026-01-02,10\nC2,2026-01-03,20\n"
                 "C1,2026-01-04,30\n")
    call_command("import_purchases", path, batch_size=2, verbosity=0)
    after = f.purchase(customer=f.customer(external_id="C3"))
    imported = list(Purchase.objects.exclude(pk__in=[before.pk, after.pk]).order_by("change_seq")
                    .values_list("change_seq", flat=True))
    before.refresh_from_db()
    after.refresh_from_db()
    assert len(imported) == 3
    assert len(set(imported)) == 3
    assert all(seq % 2 == 0 for seq in imported)  # inserts
    assert before.change_seq < imported[0]
    assert imported[-1] < after.change_seq  # the feed's insert trigger is back for later writes
    created = Customer.objects.get(external_id="C2")
    assert created.change_seq > before.change_seq


def test_import_keeps_each_customers_summary_equal_to_a_full_rebuild(tmp_path):
    from clv.summary import summary_rebuild
    from tests.clv.test_summary import kept_rows

    f.purchase(customer=f.customer(external_id="C1"), amount=Decimal("5.00"), unit_price=Decimal("5.00"))
    path = write(tmp_path, "customer_external_id,purchased_at,amount,quantity\nC1,2026-01-02,10,2\n"
                 "C2,2026-01-03,20,\nC1,2026-01-02,30,1\nC2,2026-02-03,7.5,3\n")
    call_command("import_purchases", path, batch_size=3, verbosity=0)
    kept = kept_rows()
    summary_rebuild()
    assert kept == kept_rows()
    assert len(kept[1]) == 2


# --- lines keyed by external_id or by the CRM's id --------------------------------------------

KEYED = "external_id,customer_external_id,purchased_at,amount\n"


def test_a_stored_external_id_updates_its_line_and_an_unchanged_one_is_left_alone(tmp_path):
    from clv.summary import summary_rebuild
    from crm.imports import import_purchases_csv
    from tests.clv.test_summary import kept_rows

    first = import_purchases_csv(write(tmp_path, KEYED + "L1,C1,2026-01-02,10\nL2,C1,2026-01-03,20\n"))
    assert (first.created, first.updated, first.unchanged) == (2, 0, 0)
    line = Purchase.objects.get(external_id="L1")
    stamp = line.updated_at
    again = import_purchases_csv(write(tmp_path, KEYED + "L1,C1,2026-01-02,10.00\nL2,C1,2026-01-03,25\nL3,C2,2026-01-04,5\n"))
    assert (again.rows, again.created, again.updated, again.unchanged) == (3, 1, 1, 1)
    assert Purchase.objects.count() == 3
    assert Purchase.objects.get(external_id="L2").amount == Decimal("25.00")
    line.refresh_from_db()
    assert line.updated_at == stamp  # not written at all
    kept = kept_rows()
    summary_rebuild()
    assert kept == kept_rows()  # the summary follows the changed amount


def test_a_key_can_move_its_line_to_another_customer(tmp_path):
    from clv.summary import summary_rebuild
    from crm.imports import import_purchases_csv
    from tests.clv.test_summary import kept_rows

    import_purchases_csv(write(tmp_path, KEYED + "L1,C1,2026-01-02,10\nL2,C1,2026-01-03,20\n"))
    result = import_purchases_csv(write(tmp_path, KEYED + "L2,C2,2026-01-03,20\n"))
    assert result.updated == 1
    assert Purchase.objects.get(external_id="L2").customer.external_id == "C2"
    kept = kept_rows()
    summary_rebuild()
    assert kept == kept_rows()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (KEYED + "L1,C1,2026-01-02,10\nL2,C1,2026-01-03,20\nL1,C1,2026-01-04,30\n",
         "line 4: external_id 'L1' is also on line 2; each purchase line once per file"),
        ("id,customer_external_id,purchased_at,amount\n7,C1,2026-01-02,10\n7,C1,2026-01-03,20\n",
         "line 3: id 7 is also on line 2; each purchase line once per file"),
        ("id,customer_external_id,purchased_at,amount\nseven,C1,2026-01-02,10\n",
         "line 2: id 'seven' is not the CRM's number of a purchase line"),
        (KEYED + f"{'x' * 101},C1,2026-01-02,10\n", "line 2: external_id is longer than 100 characters"),
    ],
)
def test_a_repeated_or_bad_key_is_named_and_nothing_is_written(tmp_path, text, message):
    with pytest.raises(CommandError, match=message):
        call_command("import_purchases", write(tmp_path, text), batch_size=2, verbosity=0)
    assert Purchase.objects.count() == 0
    assert Customer.objects.count() == 0


def test_an_id_matches_a_stored_line_of_the_same_customer(tmp_path):
    from crm.imports import import_purchases_csv

    acme = f.customer(external_id="C1")
    line = f.purchase(customer=acme, amount=Decimal("10.00"))
    other = f.purchase(customer=f.customer(external_id="C2"))
    header = "id,customer_external_id,purchased_at,amount\n"
    result = import_purchases_csv(write(tmp_path, header + f"{line.pk},C1,2026-01-15T10:00:00+00:00,12.50\n"))
    assert (result.created, result.updated) == (0, 1)
    line.refresh_from_db()
    assert (line.amount, line.unit_price, line.external_id) == (Decimal("12.50"), Decimal("12.50"), None)
    with pytest.raises(CommandError, match=f"line 2: id {other.pk} is a purchase line of another customer"):
        call_command("import_purchases", write(tmp_path, header + f"{other.pk},C1,2026-01-15,10\n"), verbosity=0)
    # An id the book does not have (a file of another book, a line deleted since) adds the line.
    added = import_purchases_csv(write(tmp_path, header + f"{other.pk + 100},C1,2026-01-16,3\n"))
    assert added.created == 1
    assert Purchase.objects.count() == 3


def test_an_id_and_a_new_external_id_give_the_stored_line_its_key(tmp_path):
    from crm.imports import import_purchases_csv

    line = f.purchase(customer=f.customer(external_id="C1"))
    header = "id,external_id,customer_external_id,purchased_at,amount\n"
    result = import_purchases_csv(write(tmp_path, header + f"{line.pk},ERP-1,C1,2026-01-15T10:00:00+00:00,10\n"))
    assert result.updated == 1
    line.refresh_from_db()
    assert line.external_id == "ERP-1"
    with pytest.raises(CommandError, match=f"line 2: id {line.pk} is the line with external_id 'ERP-1', not 'ERP-2'"):
        call_command("import_purchases", write(tmp_path, header + f"{line.pk},ERP-2,C1,2026-01-15,10\n"), verbosity=0)
    later = f.purchase(customer=line.customer, external_id="ERP-3")
    with pytest.raises(CommandError, match=f"line 2: external_id 'ERP-3' is the line with id {later.pk}, not id {line.pk}"):
        call_command("import_purchases", write(tmp_path, header + f"{line.pk},ERP-3,C1,2026-01-15,10\n"), verbosity=0)
    twice = header + f"{line.pk},,C1,2026-01-15,10\n,ERP-1,C1,2026-01-15,10\n"
    with pytest.raises(CommandError, match=f"line 3: the same purchase line \\(id {line.pk}\\) as line 2"):
        call_command("import_purchases", write(tmp_path, twice), verbosity=0)
    assert Purchase.objects.count() == 2


def test_lines_the_import_adds_are_not_matched_by_a_later_id_of_the_same_file(tmp_path):
    from crm.imports import import_purchases_csv

    stored = f.purchase(customer=f.customer(external_id="C1"))
    header = "id,customer_external_id,purchased_at,amount\n"
    # From another book: the first line is new here and gets the next id, which the second line names.
    text = header + f"{stored.pk + 50},C1,2026-01-02,10\n{stored.pk + 1},C1,2026-01-03,20\n"
    result = import_purchases_csv(write(tmp_path, text), batch_size=1)
    assert result.created == 2
    assert Purchase.objects.count() == 3


def test_keys_are_found_only_among_the_lines_the_importer_may_see(tmp_path, sales_org):
    from crm.imports import ImportError_, import_purchases_csv

    theirs = f.customer(external_id="C9", owner=sales_org["south_rep1"])
    f.purchase(customer=theirs, external_id="L9")
    path = write(tmp_path, KEYED + "L9,C1,2026-01-02,10\n")
    with pytest.raises(ImportError_, match="line 2: external_id 'L9' is a purchase line of a customer you cannot see"):
        import_purchases_csv(path, user=sales_org["north_manager"])
    assert import_purchases_csv(path, user=sales_org["admin"]).updated == 1


def test_a_line_found_by_its_key_and_by_its_id_on_two_rows_is_named(tmp_path):
    line = f.purchase(customer=f.customer(external_id="C1"), external_id="ERP-1")
    header = "id,external_id,customer_external_id,purchased_at,amount\n"
    for text, message in (
        (f",ERP-1,C1,2026-01-15,10\n{line.pk},,C1,2026-01-15,10\n", f"line 3: the same purchase line \\(id {line.pk}\\) as line 2"),
        (f"{line.pk},,C1,2026-01-15,10\n,ERP-1,C1,2026-01-15,10\n", f"line 3: the same purchase line \\(id {line.pk}\\) as line 2"),
    ):
        for batch_size in (1, 10):
            with pytest.raises(CommandError, match=message):
                call_command("import_purchases", write(tmp_path, header + text), batch_size=batch_size, verbosity=0)
    assert Purchase.objects.count() == 1


def test_a_manager_adds_lines_only_to_customers_they_can_see_and_owns_the_ones_the_file_creates(sales_org):
    from io import StringIO

    from crm.imports import ImportError_, import_purchases_csv

    manager = sales_org["north_manager"]
    f.customer(external_id="MINE", name="North account", owner=sales_org["north_rep1"])
    f.customer(external_id="THEIRS", name="South account", owner=sales_org["south_rep1"])
    header = "customer_external_id,purchased_at,amount\n"
    with pytest.raises(ImportError_) as refused:
        import_purchases_csv(StringIO(header + "MINE,2026-01-05,10\nNEW,2026-01-05,5\nTHEIRS,2026-01-06,20\n"),
                             user=manager)
    assert refused.value.line == 4
    assert "cannot see" in refused.value.problem
    assert not Purchase.objects.exists()
    assert not Customer.objects.filter(external_id="NEW").exists()

    result = import_purchases_csv(StringIO(header + "MINE,2026-01-05,10\nNEW,2026-01-05,5\n"), user=manager)
    assert (result.rows, result.customers_created) == (2, 1)
    assert Customer.objects.get(external_id="NEW").owner == manager
    assert Customer.objects.visible_to(manager).filter(external_id="NEW").exists()

    # an admin sees every account: lines go to any of them, and the new ones stay unassigned as before
    import_purchases_csv(StringIO(header + "THEIRS,2026-01-06,20\nNEWER,2026-01-07,1\n"), user=sales_org["admin"])
    assert Purchase.objects.filter(customer__external_id="THEIRS").count() == 1
    assert Customer.objects.get(external_id="NEWER").owner is None
