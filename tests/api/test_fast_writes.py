"""The fast write path (crm.api.fast.BulkValidation) gives exactly what the serializer gives:
the same validated values for a record it takes, and DRF's own errors for every other one."""

from __future__ import annotations

import json

import pytest
from rest_framework import serializers
from rest_framework.test import APIRequestFactory

from crm.api import fast
from crm.api import serializers as s
from crm.api.views import FEED_SERIALIZERS
from crm.sync import FEED_TYPES

pytestmark = pytest.mark.django_db

# What a client may send instead of a field's value: empty, of the wrong type, out of range,
# badly formed, padded, very long.
VARIANTS = [
    None, "", "   ", [], {}, True, 0, -1, 10**20, 1.5, "abc", " 12.50 ", "12.345678", "1e400", "NaN", "-0",
    "2026-13-01", "2026-02-10", "2026-02-10T09:30:00", "2026-02-10T09:30:00+02:00", "2026-02-10T09:30:00Z",
    "9999-12-31T23:59:59-12:00", " padded text ", "x" * 300, "a\x00b", "\ud800", "retained", "won", "email@x.example",
]
# Decimal text around the fast conversion's shortcut (plain digits within the field's precision).
DECIMALS = [
    "0", "0.5", "12.5", "12.50", "007.5", "1.", ".5", "1.000", "0.001", "0.0005", "1e2", "+5", "-5", "\u0663",
    "9" * 9, "9" * 10, "9" * 11, "9" * 12, "9" * 13, "9" * 9 + ".99", "9" * 10 + ".99", "9" * 12 + ".99", "1_000",
]
VARIANTS += DECIMALS


def _outcome(call):
    try:
        return "ok", dict(call())
    except serializers.ValidationError as exc:
        return "error", exc.detail


def _records(resource, user):
    """Each stored record of the resource as a client would send it back (its writable fields)."""
    serializer_class = FEED_SERIALIZERS[resource][0]
    model = FEED_TYPES[resource]
    request = APIRequestFactory().get("/")
    request.user = user
    serializer = serializer_class(context={"request": request})
    writable = {name for name, field in serializer.fields.items() if not field.read_only}
    rows = list(model.objects.order_by("id"))
    data = serializer_class(rows, many=True, context={"request": request}).data
    return serializer, [(row, {k: v for k, v in item.items() if k in writable}) for row, item in zip(rows, data, strict=True)]


@pytest.mark.parametrize("resource", list(FEED_SERIALIZERS))
def test_bulk_validation_equals_the_serializer_for_every_field_and_value(book, sales_org, resource):
    serializer, records = _records(resource, sales_org["admin"])
    validate = fast.BulkValidation(serializer)
    assert records
    taken = 0
    for row, record in records[:3]:
        record = {k: v for k, v in record.items() if k in validate.known}  # what the fast path may take
        for instance, partial in ((None, False), (row, True)):
            try:
                validate._fast(dict(record), instance, partial)
                taken += 1
            except fast._Fallback:
                pass
            variants = [record] + [{**record, name: value} for name in record for value in VARIANTS]
            for variant in variants:
                expected = _outcome(lambda v=variant, i=instance, p=partial: s.run_validation_for(
                    serializer, v, instance=i, partial=p))
                got = _outcome(lambda v=variant, i=instance, p=partial: validate(v, instance=i, partial=p))
                assert got == expected, (resource, variant)
    assert taken > 0  # clean records do go the fast way


@pytest.mark.parametrize("resource", list(FEED_SERIALIZERS))
def test_decimal_conversion_gives_the_very_decimal_drf_gives(sales_org, resource):
    """Not only an equal number: the same digits and places (Decimal("12.5") == Decimal("12.50"))."""
    serializer = FEED_SERIALIZERS[resource][0](context={"request": None})
    validate = fast.BulkValidation(serializer)
    checked = 0
    for _name, _source, field, convert, _validate, _blank, _checks in validate.fields:
        if not isinstance(field, serializers.DecimalField):
            continue
        for value in [*DECIMALS, " 12.50 ", 12, 1.5, "abc"]:
            expected = _outcome(lambda f=field, v=value: {"v": f.to_internal_value(v)})
            got = _outcome(lambda c=convert, v=value: {"v": c(v)})
            assert (got[0], str(got[1])) == (expected[0], str(expected[1])), (resource, field.field_name, value)
            checked += 1
    if resource == "purchases":
        assert checked  # the purchase line's quantity, prices and cost


def test_records_it_does_not_know_go_through_the_serializer(book, sales_org):
    serializer, records = _records("contacts", sales_org["admin"])
    validate = fast.BulkValidation(serializer)
    row, record = records[0]
    assert "people" in record
    assert "people" not in validate.known  # many-to-many: the serializer's
    with pytest.raises(fast._Fallback):
        validate._fast(record, row, True)
    assert _outcome(lambda: validate(record, instance=row, partial=True)) == _outcome(
        lambda: s.run_validation_for(serializer, record, instance=row, partial=True))
    with pytest.raises(fast._Fallback):
        validate._fast({**record, "no_such_field": 1}, None, False)


def test_a_key_the_database_cannot_store_is_a_field_error_not_a_server_error(api, book, sales_org):
    client = api(sales_org["admin"])
    line = {"customer": book["a1"]["customer"].pk, "amount": "5.00", "purchased_at": "2026-02-01T10:00:00Z"}
    response = client.post("/api/v1/purchases/bulk/", json.dumps({"records": [{**line, "external_id": "bad\ud800key"}]}),
                           content_type="application/json")  # JSON escapes the lone surrogate: \ud800
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "external_id"
    response = client.post("/api/v1/purchases/bulk/",
                           json.dumps({"records": [{**line, "external_id": "ok-1", "customer": "\ud800"}]}),
                           content_type="application/json")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "customer"


@pytest.mark.parametrize("resource", list(FEED_SERIALIZERS))
def test_new_instance_equals_the_models_own_constructor(book, sales_org, resource):
    from crm.services import new_instance

    serializer, records = _records(resource, sales_org["admin"])
    model = FEED_TYPES[resource]
    for row, record in records:
        data = dict(s.run_validation_for(serializer, record, instance=row, partial=True))
        data.pop("people", None)  # many-to-many: records_upsert sets them after the insert
        ours, django_s = new_instance(model, dict(data)), model(**data)
        for field in model._meta.concrete_fields:
            assert getattr(ours, field.attname) == getattr(django_s, field.attname), field.name
        assert {k: v for k, v in vars(ours).items() if k != "_state"} == {
            k: v for k, v in vars(django_s).items() if k != "_state"
        }
        assert ours._state.fields_cache == django_s._state.fields_cache
        assert (ours._state.adding, ours._state.db) == (django_s._state.adding, django_s._state.db)
    with pytest.raises(TypeError):  # a name the model does not have: Django's own answer
        new_instance(model, {"no_such_field": 1})
    from crm.services import _construction_plan

    if not any(f.one_to_one for f in model._meta.concrete_fields):  # (a task's contact is one)
        assert _construction_plan(model) is not None  # the fast construction serves this resource
