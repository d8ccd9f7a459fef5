"""Bulk paths: binary COPY of numpy columns in and out gives back exactly what was written."""

from datetime import date
from decimal import Decimal

import numpy as np
import pytest
from django.utils import timezone

from accounts.models import User
from clv.models import ClvRun, CustomerValue
from crm.bulk import copy_arrays, fetch_arrays, stored_instances
from crm.models import Customer, Purchase
from tests.crm import factories as f

pytestmark = pytest.mark.django_db


def test_copy_arrays_writes_money_ints_and_floats_exactly():
    run = ClvRun.objects.create(as_of=date(2026, 1, 1), started_at=timezone.now())
    customers = [f.customer() for _ in range(5)]
    money = np.array([0.0, 0.01, -1234.56, 12_345_678_901_234.5, 12.3])
    floats = np.array([0.0, 1e-300, 0.1, 1 / 3, 1.0])
    n = len(customers)
    written = copy_arrays(CustomerValue, {
        "run_id": ("int8", np.full(n, run.pk)),
        "customer_id": ("int8", np.array([c.pk for c in customers])),
        "clv": ("money", money),
        "p_alive": ("float8", floats),
        "expected_purchases": ("float8", floats * 3),
        "expected_avg_value": ("money", np.abs(money) / 10**3),
        "historical_value": ("money", money),
        "classic_value": ("money", -money),
        "frequency": ("int4", np.arange(n, dtype=np.int32)),
        "recency": ("float8", floats),
        "T": ("float8", floats + 1),
    })
    assert written == n
    rows = list(CustomerValue.objects.filter(run=run).order_by("customer_id").values_list(
        "clv", "classic_value", "p_alive", "frequency"))
    assert [r[0] for r in rows] == [Decimal("0.00"), Decimal("0.01"), Decimal("-1234.56"),
                                    Decimal("12345678901234.50"), Decimal("12.30")]
    assert [r[1] for r in rows] == [-r[0] for r in rows]
    assert [r[2] for r in rows] == floats.tolist()
    assert [r[3] for r in rows] == [0, 1, 2, 3, 4]


def test_fetch_arrays_reads_columns_and_refuses_nulls():
    customers = [f.customer() for _ in range(3)]
    ids, halves = fetch_arrays(
        "SELECT id, CAST(id AS double precision) / 2 FROM crm_customer WHERE id >= %s ORDER BY id",
        [customers[0].pk], ["int8", "float8"],
    )
    assert ids.tolist() == [c.pk for c in customers]
    assert halves.tolist() == [c.pk / 2 for c in customers]
    empty = fetch_arrays("SELECT id FROM crm_customer WHERE id < 0", [], ["int8"])
    assert empty[0].size == 0


@pytest.mark.postgres
def test_fetch_arrays_refuses_a_null():
    f.customer()
    with pytest.raises(ValueError, match="NULL"):
        fetch_arrays("SELECT CAST(NULL AS bigint) FROM crm_customer", [], ["int8"])


@pytest.mark.postgres
def test_copy_arrays_to_table_fills_a_table_no_model_describes():
    from django.db import connection

    from crm.bulk import copy_arrays_to_table

    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE staging_lines (customer bigint, amount numeric(14, 2), score float8)")
        written = copy_arrays_to_table("staging_lines", {
            "customer": ("int8", np.array([7, 8, 9])),
            "amount": ("money", np.array([0.1, 19.99, 1234567.5])),
            "score": ("float8", np.array([0.5, -1.25, 3.0])),
        })
        cursor.execute("SELECT customer, amount, score FROM staging_lines ORDER BY customer")
        rows = cursor.fetchall()
    assert written == 3
    assert rows == [(7, Decimal("0.10"), 0.5), (8, Decimal("19.99"), -1.25), (9, Decimal("1234567.50"), 3.0)]
    with pytest.raises(ValueError, match="same length"):
        copy_arrays_to_table("staging_lines", {"customer": ("int8", np.array([1])), "score": ("float8", np.array([]))})


def test_insert_instances_sets_each_primary_key_and_stamps():
    from crm.bulk import insert_instances
    from crm.models import Customer

    before = timezone.now()
    customers = [Customer(name=f"Bulk {i}", external_id=f"BULK-{i}") for i in range(300)]
    insert_instances(Customer, customers)
    stored = dict(Customer.objects.filter(external_id__startswith="BULK-").values_list("pk", "external_id"))
    assert len(stored) == 300
    assert all(stored[c.pk] == c.external_id for c in customers)  # each instance got its own row's id
    assert all(not c._state.adding for c in customers)
    row = Customer.objects.get(pk=customers[7].pk)
    assert row.created_at >= before
    assert row.updated_at >= before
    assert row.lifecycle_stage == Customer.Stage.PROSPECT
    assert row.notes == ""


def test_bulk_insert_reads_back_as_the_orm_wrote_it_and_places_rows_in_the_feed():
    from datetime import UTC, datetime, timedelta
    from datetime import timezone as tz

    from django.db import transaction

    from crm.bulk import bulk_insert
    from crm.models import Holding, Purchase

    customer = f.customer()
    product = f.product()
    earlier = f.purchase(customer=customer)
    at = datetime(2026, 1, 5, 23, 30, tzinfo=tz(timedelta(hours=-5)))  # the next day in UTC
    now = timezone.now()
    with transaction.atomic():
        bulk_insert(Purchase, ["customer_id", "product_id", "quantity", "unit_price", "amount", "unit_cost",
                               "purchased_at", "order_ref", "external_id", "created_at", "updated_at"],
                    [(customer.pk, product.pk, Decimal("2.5"), Decimal("4.00"), Decimal("10.00"), None, at, "R1",
                      "BULK-1", now, now)])
        bulk_insert(Holding, ["customer_id", "product_id", "quantity", "since", "until", "status", "external_id",
                              "created_at", "updated_at"],
                    [(customer.pk, product.pk, Decimal("3"), date(2025, 6, 1), None, "active", "BULK-H", now, now)])
    later = f.purchase(customer=customer)
    written = Purchase.objects.get(external_id="BULK-1")
    assert written.purchased_at == datetime(2026, 1, 6, 4, 30, tzinfo=UTC)
    assert (written.quantity, written.amount, written.unit_cost, written.order_ref) == (
        Decimal("2.5"), Decimal("10.00"), None, "R1")
    assert Holding.objects.get(external_id="BULK-H").since == date(2025, 6, 1)
    earlier.refresh_from_db()
    later.refresh_from_db()
    assert earlier.change_seq < written.change_seq < later.change_seq
    assert written.change_seq % 2 == 0


@pytest.mark.postgres
def test_pg_array_literals_read_back_as_the_values_they_were_made_of():
    from datetime import UTC, datetime, timedelta
    from datetime import timezone as tz

    from django.db import connection

    from crm.bulk import pg_array

    texts = ['plain', '', 'NULL', 'a,b', '{braces}', 'say "hi"', 'back\\slash', 'tail\\', ' spaced ', 'line\nbreak',
             'é ü 漢字', None]
    cases = [
        ("text", texts),
        ("bigint", [1, -2, 2**63 - 1, None]),
        ("numeric", [Decimal("0.10"), Decimal("-19.990"), Decimal("1E+3"), None]),
        ("timestamptz", [datetime(2026, 1, 5, 23, 30, tzinfo=tz(timedelta(hours=-5))),
                         datetime(2026, 3, 1, 0, 0, 0, 123456, tzinfo=UTC), None]),
        ("date", [date(1900, 1, 1), date(2026, 12, 31), None]),
        ("boolean", [True, False, None]),
    ]
    with connection.cursor() as cursor:
        for kind, values in cases:
            cursor.execute(f"SELECT unnest(%s::{kind}[])", [pg_array(values)])
            assert [row[0] for row in cursor.fetchall()] == values, kind
    assert pg_array([{"a": 1}]) is None  # JSON: the caller binds the list itself
    assert pg_array([1.5]) is None
    assert pg_array([]) == "{}"


@pytest.mark.postgres
def test_among_matches_whole_values_only():
    from crm.bulk import among
    from crm.models import Customer

    stored = f.customer(external_id="K" * 100)
    assert list(Customer.objects.filter(among(Customer, "external_id", ["K" * 100])).values_list("pk", flat=True)) == [
        stored.pk]
    assert not Customer.objects.filter(among(Customer, "external_id", ["K" * 101, 'K"', "K\\\\"])).exists()
    assert list(Customer.objects.filter(among(Customer, "id", [stored.pk, 0])).values_list("pk", flat=True)) == [
        stored.pk]


def test_stored_instances_are_what_only_loads():
    owner = User.objects.create_user("si-owner", password="x-pass-2026")
    customers = [f.customer(name=f"C{i}", external_id=f"SI-{i}", owner=owner) for i in range(3)]
    queryset = Customer.objects.filter(pk__in=[c.pk for c in customers]).order_by("pk")
    light = stored_instances(queryset, ["id", "external_id"])
    orm = list(queryset.only("id", "external_id"))
    assert len(light) == 3
    for mine, theirs in zip(light, orm, strict=True):
        assert {k: v for k, v in vars(mine).items() if k != "_state"} == {
            k: v for k, v in vars(theirs).items() if k != "_state"
        }
        assert (mine._state.adding, mine._state.db) == (theirs._state.adding, theirs._state.db) == (False, "default")
        assert mine.get_deferred_fields() == theirs.get_deferred_fields()
        assert "name" in mine.get_deferred_fields()
        assert mine == theirs
        assert mine.name == theirs.name  # a deferred field is read on access
        assert mine.owner_id == owner.pk


def test_stored_instances_with_every_field_are_what_the_orm_loads():
    line = f.purchase(amount=Decimal("12.50"), external_id="SI-LINE")
    queryset = Purchase.objects.filter(pk=line.pk)
    [mine] = stored_instances(queryset, [field.attname for field in Purchase._meta.concrete_fields])
    [theirs] = list(queryset)
    assert {k: v for k, v in vars(mine).items() if k != "_state"} == {
        k: v for k, v in vars(theirs).items() if k != "_state"
    }
    assert mine.get_deferred_fields() == set()
    assert mine.amount == Decimal("12.50")
    assert mine.customer == line.customer


def test_stored_instances_take_the_orms_way_when_a_receiver_listens_to_init():
    from django.db.models.signals import post_init

    from crm.bulk import builds_bare

    f.customer(name="Heard", external_id="SI-HEARD")
    heard = []

    def receiver(sender, instance, **kwargs):
        heard.append(instance)

    post_init.connect(receiver, sender=Customer)
    try:
        assert not builds_bare(Customer)
        [loaded] = stored_instances(Customer.objects.filter(external_id="SI-HEARD"), ["id", "external_id"])
    finally:
        post_init.disconnect(receiver, sender=Customer)
    assert heard == [loaded]
    assert "name" in loaded.get_deferred_fields()
    assert loaded.name == "Heard"
    assert builds_bare(Customer)
