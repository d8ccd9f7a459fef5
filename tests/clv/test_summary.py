"""The kept CLV purchase summary: every write path keeps it equal to a full rebuild, and runs read it."""

import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO

import numpy as np
import pytest
from django.db import connection, connections, transaction

from clv import services
from clv.models import PurchaseDay, PurchaseSummary
from clv.summary import read_summary, summary_apply, summary_rebuild, summary_source
from crm import services as crm
from crm.demo.seed import seed_demo
from crm.imports import import_purchases_csv
from crm.models import Customer, Purchase
from tests.crm import factories as f

pytestmark = pytest.mark.django_db(transaction=True)
AS_OF = date(2026, 6, 30)
PURCHASE_COLUMNS = ["customer_id", "product_id", "quantity", "unit_price", "amount", "unit_cost", "purchased_at",
                    "order_ref", "external_id", "created_at", "updated_at"]


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def kept_rows() -> tuple[list, list]:
    """Both kept tables as sorted tuples (money rounded to what the columns hold)."""
    def norm(value):
        if isinstance(value, Decimal | float):
            return round(Decimal(str(value)), 5)
        return value

    days = sorted(tuple(norm(v) for v in row) for row in PurchaseDay.objects.values_list(
        "customer_id", "day", "lines", "amount", "cost", "uncosted_price"))
    customers = sorted(tuple(norm(v) for v in row) for row in PurchaseSummary.objects.values_list(
        "customer_id", "first_day", "last_day", "days", "lines", "total_value", "repeat_value", "cost",
        "uncosted_price"))
    return days, customers


def test_every_write_path_keeps_the_summary_equal_to_a_full_rebuild():
    kit = f.product(unit_cost=Decimal("40.00"))
    free = f.product(unit_cost=Decimal("0.00"))
    a = crm.customer_create(name="A", external_id="A")
    b = crm.customer_create(name="B", external_id="B")
    c = crm.customer_create(name="C", external_id="C")
    gone = crm.customer_create(name="Gone", external_id="GONE")

    # single inserts: two lines on one day, a product's cost, a line's own cost, no cost at all
    p1 = crm.purchase_record(customer=a, purchased_at=at(date(2026, 1, 10), 9), amount=Decimal("100"),
                             product=kit, quantity=Decimal("2"))
    crm.purchase_record(customer=a, purchased_at=at(date(2026, 1, 10), 17), amount=Decimal("50"))
    p3 = crm.purchase_record(customer=a, purchased_at=at(date(2026, 3, 1)), amount=Decimal("80"),
                             unit_cost=Decimal("30"))
    p4 = crm.purchase_record(customer=b, purchased_at=at(date(2026, 2, 2)), amount=Decimal("75.50"), product=free)
    p5 = crm.purchase_record(customer=c, purchased_at=at(date(2026, 2, 3)), amount=Decimal("20"))
    crm.purchase_record(customer=gone, purchased_at=at(date(2026, 2, 4)), amount=Decimal("999"), product=kit)

    # bulk insert (the seed's and the import's path), touching old and new customers
    d = crm.customer_create(name="D")
    now = datetime(2026, 7, 1, tzinfo=UTC)
    crm.purchases_bulk_insert(columns=PURCHASE_COLUMNS, rows=[
        (a.pk, None, Decimal("1"), Decimal("12.00"), Decimal("12.00"), None, at(date(2026, 3, 1), 8), "", None, now, now),
        (d.pk, kit.pk, Decimal("3"), Decimal("10.00"), Decimal("30.00"), None, at(date(2026, 4, 4)), "", None, now, now),
        (d.pk, None, Decimal("1"), Decimal("5.00"), Decimal("5.00"), Decimal("1.25"), at(date(2026, 5, 5)), "", None,
         now, now),
    ])

    # CSV import in tiny batches: a new customer and an existing one, across batches
    csv = StringIO(
        "customer_external_id,purchased_at,amount,product_sku,quantity,unit_cost\n"
        f"E,2026-01-05,40.00,{kit.sku},2,\n"
        "B,2026-02-02,10.00,,1,4.00\n"
        "E,2026-01-20,15.00,,1,\n"
        "B,2026-06-01,60.00,,3,\n"
        "E,2026-01-05,5.00,,1,1.00\n"
    )
    import_purchases_csv(csv, batch_size=2)
    assert Customer.objects.filter(external_id="E").exists()

    # bulk upsert (the API's path): new lines are added to their customers' kept days (an existing
    # day, a new day, a customer with no lines yet), and a customer with a changed line in the same
    # batch is recomputed, together with a new line of its own
    f_ = crm.customer_create(name="F", external_id="F")
    keyed = crm.purchase_record(customer=c, purchased_at=at(date(2026, 2, 9)), amount=Decimal("7"), external_id="K1")
    moving = crm.purchase_record(customer=d, purchased_at=at(date(2026, 5, 5), 9), amount=Decimal("3"),
                                 external_id="K2")
    batch = [
        {"external_id": "N1", "customer": a, "purchased_at": at(date(2026, 3, 1), 10), "amount": Decimal("8.00"),
         "unit_price": Decimal("8.00"), "quantity": Decimal("1"), "product": kit},
        {"external_id": "N2", "customer": a, "purchased_at": at(date(2026, 4, 1)), "amount": Decimal("9.00"),
         "unit_price": Decimal("3.00"), "quantity": Decimal("3"), "unit_cost": Decimal("1.00")},
        {"external_id": "N3", "customer": f_, "purchased_at": at(date(2026, 4, 2)), "amount": Decimal("11.00"),
         "unit_price": Decimal("11.00"), "quantity": Decimal("1")},
        {"external_id": "K1", "amount": Decimal("70.00"), "unit_price": Decimal("70.00")},
        {"external_id": "N4", "customer": c, "purchased_at": at(date(2026, 2, 9), 18), "amount": Decimal("1.00"),
         "unit_price": Decimal("1.00"), "quantity": Decimal("1")},
        # to another customer and day: both customers' days before and after are recomputed
        {"external_id": "K2", "customer": f_, "purchased_at": at(date(2026, 4, 9))},
    ]
    results = crm.records_upsert(model=Purchase, records=batch, existing={"K1": keyed, "K2": moving})
    assert [r for r, _ in results] == ["created", "created", "created", "updated", "created", "updated"]
    kept_after_upsert = kept_rows()
    summary_rebuild()
    assert kept_rows() == kept_after_upsert

    # updates: amount, date (to another day), customer (moving b's only line away empties b), product cost
    crm.record_update(instance=p3, data={"amount": Decimal("90.00")})
    crm.record_update(instance=p1, data={"purchased_at": at(date(2026, 1, 11))})
    crm.record_update(instance=p4, data={"customer": c})
    crm.record_update(instance=kit, data={"unit_cost": Decimal("45.00")})

    # deletes: a purchase, and a customer (its purchases go with it)
    crm.record_delete(instance=p5)
    crm.record_delete(instance=gone)

    kept = kept_rows()
    assert kept[0]
    assert kept[1]
    assert not PurchaseDay.objects.filter(customer_id=gone.pk).exists()
    assert not PurchaseSummary.objects.filter(customer_id=gone.pk).exists()
    a_row = PurchaseSummary.objects.get(customer=a)
    assert (a_row.first_day, a_row.last_day, a_row.days, a_row.lines) == (date(2026, 1, 10), date(2026, 4, 1), 4, 6)
    assert a_row.total_value == Decimal("269.00")  # 100 + 50 + 90 + 12 + 8 + 9
    assert a_row.repeat_value == Decimal("219.00")  # everything after Jan 10 (p1 moved to Jan 11)

    result = summary_rebuild()
    assert kept_rows() == kept
    assert result["lines"] == Purchase.objects.count()
    assert summary_source(as_of=date(2026, 12, 31)).name == "kept"



@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lines_added_by_bulk_upsert_keep_the_summary_equal_to_a_full_rebuild(seed):
    """New lines only (the bulk upsert's common batch): each summary row is updated from the added
    days alone. Added days fall before, on, between and after a customer's kept days, several on one
    day, for customers with lines and without; rows and days must equal a rebuild from every line."""
    rng = np.random.default_rng(seed)
    products = [None, f.product(unit_cost=Decimal("4.00")), f.product(unit_cost=Decimal("0.00"))]
    customers = [crm.customer_create(name=f"C{i}", external_id=f"C{seed}-{i}") for i in range(12)]
    base = date(2026, 3, 1)

    def line(customer, key):
        day = base + timedelta(days=int(rng.integers(-40, 40)))
        quantity = Decimal(int(rng.integers(1, 4)))
        amount = Decimal(int(rng.integers(0, 20000))) / 100
        record = {"external_id": key, "customer": customer, "purchased_at": at(day, int(rng.integers(0, 24))),
                  "amount": amount, "unit_price": (amount / quantity).quantize(Decimal("0.01")), "quantity": quantity,
                  "product": products[int(rng.integers(0, 3))]}
        if rng.random() < 0.3:
            record["unit_cost"] = Decimal(int(rng.integers(0, 500))) / 100
        return record

    for i, customer in enumerate(customers[:9]):  # the last three have no lines before the batch
        for j in range(int(rng.integers(1, 5))):
            crm.records_upsert(model=Purchase, records=[line(customer, f"old-{seed}-{i}-{j}")], existing={})
    summary_rebuild()
    batch = [line(customers[int(rng.integers(0, 12))], f"new-{seed}-{k}") for k in range(60)]
    # certain cases, whatever the draws: a day before a customer's first, on its first day, twice on one new day
    first = PurchaseSummary.objects.get(customer=customers[0]).first_day
    batch += [{**line(customers[0], f"new-{seed}-before"), "purchased_at": at(first - timedelta(days=3))},
              {**line(customers[1], f"new-{seed}-on"),
               "purchased_at": at(PurchaseSummary.objects.get(customer=customers[1]).first_day, 23)},
              {**line(customers[11], f"new-{seed}-twice-1"), "purchased_at": at(base, 1)},
              {**line(customers[11], f"new-{seed}-twice-2"), "purchased_at": at(base, 2)}]
    results = crm.records_upsert(model=Purchase, records=batch, existing={})
    assert {r for r, _ in results} == {"created"}
    after_upsert = kept_rows()
    assert len(after_upsert[1]) == 12
    summary_rebuild()
    assert kept_rows() == after_upsert



@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lines_changed_by_bulk_upsert_keep_the_summary_equal_to_a_full_rebuild(seed):
    """Changed lines in one batch: a line that keeps its customer and day (a new amount, price,
    quantity, cost or product, another hour of the day) adds its difference to the kept rows; a
    customer with a line moved to another day or customer, or with new lines too, is recomputed."""
    rng = np.random.default_rng(100 + seed)
    products = [None, f.product(unit_cost=Decimal("4.00")), f.product(unit_cost=Decimal("0.00"))]
    customers = [crm.customer_create(name=f"C{i}", external_id=f"R{seed}-{i}") for i in range(10)]
    base = date(2026, 3, 1)

    def money(high):
        return Decimal(int(rng.integers(1, high))) / 100

    stored = []
    for i, customer in enumerate(customers):
        for j in range(int(rng.integers(1, 5))):
            quantity = Decimal(int(rng.integers(1, 4)))
            [(_, row)] = crm.records_upsert(model=Purchase, records=[{
                "external_id": f"R{seed}-{i}-{j}", "customer": customer, "quantity": quantity,
                "purchased_at": at(base + timedelta(days=int(rng.integers(-30, 30))), int(rng.integers(0, 24))),
                "amount": money(20000), "unit_price": money(5000), "product": products[int(rng.integers(0, 3))],
                **({"unit_cost": money(500)} if rng.random() < 0.4 else {}),
            }], existing={})
            stored.append(row)
    summary_rebuild()
    changes = []
    for row in stored:
        draw = rng.random()
        change = {"external_id": row.external_id}
        if draw < 0.5:  # same customer and day: values only
            same_day = row.purchased_at.replace(hour=int(rng.integers(0, 24)))
            options = {"amount": money(30000), "unit_price": money(5000), "quantity": Decimal(int(rng.integers(1, 5))),
                       "unit_cost": money(700) if rng.random() < 0.7 else None,
                       "product": products[int(rng.integers(0, 3))], "purchased_at": same_day}
            for name in rng.choice(list(options), size=int(rng.integers(1, 4)), replace=False):
                change[str(name)] = options[str(name)]
        elif draw < 0.6:  # another day
            change["purchased_at"] = row.purchased_at + timedelta(days=int(rng.integers(1, 40)))
        elif draw < 0.65:  # another customer
            change["customer"] = customers[int(rng.integers(0, 10))]
        else:
            continue
        changes.append(change)
    new_lines = [{"external_id": f"R{seed}-new-{k}", "customer": customers[int(rng.integers(0, 10))],
                  "purchased_at": at(base + timedelta(days=int(rng.integers(-30, 30)))), "amount": money(9000),
                  "unit_price": money(9000), "quantity": Decimal(1)} for k in range(3)]
    results = crm.records_upsert(model=Purchase, records=changes + new_lines,
                                 existing={row.external_id: row for row in stored})
    assert "updated" in {r for r, _ in results}
    after_upsert = kept_rows()
    summary_rebuild()
    assert kept_rows() == after_upsert

    # a batch of value changes only, none moved and nothing new: every customer takes differences
    stored = list(Purchase.objects.filter(external_id__startswith=f"R{seed}-"))
    changes = [{"external_id": row.external_id, "amount": row.amount + 1, "unit_cost": money(300),
                "product": products[int(rng.integers(0, 3))]} for row in stored]
    crm.records_upsert(model=Purchase, records=changes, existing={row.external_id: row for row in stored})
    after_upsert = kept_rows()
    summary_rebuild()
    assert kept_rows() == after_upsert


def test_kept_summary_reads_exactly_what_the_aggregate_computes():
    seed_demo(customers=200, seed=5, as_of=AS_OF)
    for as_of, source in ((AS_OF, "kept"), (AS_OF - timedelta(days=90), "days")):
        kept = read_summary(source=source, as_of=as_of, default_margin=0.3)
        aggregate = services.summarise(as_of=as_of, default_margin=0.3)
        for field in ("customer_ids", "frequency", "recency", "T", "monetary", "total_value", "total_margin"):
            if connection.vendor == "postgresql":  # exact decimal sums, one conversion to float
                np.testing.assert_array_equal(getattr(kept, field), getattr(aggregate, field), err_msg=field)
            else:  # SQLite sums money as floats, in another order
                np.testing.assert_allclose(getattr(kept, field), getattr(aggregate, field), rtol=1e-12, err_msg=field)


def test_deleting_a_customer_drops_its_summary_rows():
    customer = crm.customer_create(name="Short-lived")
    crm.purchase_record(customer=customer, purchased_at=at(date(2026, 1, 2)), amount=Decimal("10"))
    assert PurchaseSummary.objects.filter(customer=customer).exists()
    customer_id = customer.pk
    crm.record_delete(instance=customer)
    assert not PurchaseSummary.objects.filter(customer_id=customer_id).exists()
    assert not PurchaseDay.objects.filter(customer_id=customer_id).exists()


def test_a_failed_bulk_write_leaves_the_summary_as_it_was():
    customer = crm.customer_create(name="Steady", external_id="STEADY")
    crm.purchase_record(customer=customer, purchased_at=at(date(2026, 1, 2)), amount=Decimal("10"))
    before = kept_rows()
    csv = StringIO("customer_external_id,purchased_at,amount\nSTEADY,2026-02-01,5.00\nSTEADY,not a date,1\n")
    with pytest.raises(Exception, match="line 3"):
        import_purchases_csv(csv, batch_size=1)
    assert kept_rows() == before


@pytest.mark.postgres
def test_two_concurrent_writes_to_one_customer_both_count():
    customer = crm.customer_create(name="Busy")
    crm.purchase_record(customer=customer, purchased_at=at(date(2026, 1, 1)), amount=Decimal("1"))
    first_wrote = threading.Event()
    release_first = threading.Event()
    errors = []

    def writer(day: date, amount: str, hold: bool):
        try:
            with transaction.atomic():
                crm.purchase_record(customer=Customer.objects.get(pk=customer.pk), purchased_at=at(day),
                                    amount=Decimal(amount))
                if hold:
                    first_wrote.set()
                    release_first.wait(10)
        except Exception as exc:  # reported below; a thread's exception would be lost
            errors.append(exc)
        finally:
            connections.close_all()

    one = threading.Thread(target=writer, args=(date(2026, 3, 3), "30", True))
    two = threading.Thread(target=writer, args=(date(2026, 3, 3), "40", False))
    one.start()
    assert first_wrote.wait(10)
    two.start()
    time.sleep(0.5)  # the second write now waits for the first customer-row lock
    release_first.set()
    one.join(20)
    two.join(20)
    assert not errors
    row = PurchaseSummary.objects.get(customer=customer)
    assert (row.days, row.lines, row.total_value) == (2, 3, Decimal("71.00"))
    before = kept_rows()
    summary_rebuild()
    assert kept_rows() == before


def test_summary_apply_ignores_unknown_and_empty_customers():
    assert summary_apply(customer_ids=[]) == 0
    assert summary_apply(customer_ids=[None, 987654321]) == 1
    assert not PurchaseSummary.objects.exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
