"""The fast list path gives exactly the serializer's JSON, for every resource."""

from __future__ import annotations

import pytest
from rest_framework.test import APIRequestFactory

from crm.api import fast
from crm.api import serializers as s
from crm.api.views import FEED_SERIALIZERS
from crm.models import Customer
from crm.sync import FEED_TYPES

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("resource", list(FEED_TYPES))
def test_fast_rows_equal_serializer_output(book, sales_org, resource):
    serializer_class = FEED_SERIALIZERS[resource][0]
    plan = fast.plan_for(serializer_class)
    if resource == "contacts":
        assert plan is None  # people (many-to-many) are rendered by the serializer
        return
    assert plan is not None
    model = FEED_TYPES[resource]
    customer = book["a1"]["customer"]
    Customer.objects.filter(pk=customer.pk).update(email="a@b.example", website="https://b.example")
    rows = list(model.objects.order_by("id").values(*fast.values_keys(plan)))
    request = APIRequestFactory().get("/")
    request.user = sales_org["admin"]
    expected = serializer_class(model.objects.order_by("id"), many=True, context={"request": request}).data
    assert fast.represent(rows, plan) == [dict(item) for item in expected]
    assert len(rows) >= 4


def test_unsupported_fields_fall_back(sales_org):
    class WithMethod(s.CustomerSerializer):
        shout = s.serializers.SerializerMethodField()

        class Meta(s.CustomerSerializer.Meta):
            fields = [*s.CustomerSerializer.Meta.fields, "shout"]

    assert fast.plan_for(WithMethod) is None
