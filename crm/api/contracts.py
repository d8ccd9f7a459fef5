"""Contract values in API v1: per-holding values of a CLV run and the renewals at risk.

- `GET holding-values/`: every valued subscription holding of the current run (or `?run=`),
  for the customers the caller may see.
- `GET renewals-at-risk/`: the caller's visible contracts renewing in the next `?days=` days
  (default 90), ranked by value at stake, each with the reason in words.
Both cursor-paginated like the other lists.
"""

from __future__ import annotations

import django_filters as filters
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, viewsets

from clv import renewals
from clv.models import HoldingValue
from crm.api.filters import IdFilters
from crm.api.pagination import ApiCursorPagination


class HoldingValueSerializer(serializers.ModelSerializer):
    as_of = serializers.DateField(source="run.as_of", read_only=True)
    holding_external_id = serializers.CharField(source="holding.external_id", read_only=True, allow_null=True)
    customer_external_id = serializers.CharField(source="customer.external_id", read_only=True, allow_null=True)
    product = serializers.IntegerField(source="holding.product_id", read_only=True)
    product_sku = serializers.CharField(source="holding.product.sku", read_only=True)
    renewal_period = serializers.CharField(source="holding.product.renewal_period", read_only=True)

    class Meta:
        model = HoldingValue
        fields = [
            "id", "run", "as_of", "holding", "holding_external_id", "customer", "customer_external_id", "product",
            "product_sku", "renewal_period", "segment", "model", "periods", "next_renewal", "p_renew",
            "expected_remaining_periods", "period_value", "residual_value", "value_at_stake",
        ]
        read_only_fields = fields


class RenewalAtRiskSerializer(HoldingValueSerializer):
    customer_name = serializers.CharField(source="customer.name", read_only=True)
    owner = serializers.IntegerField(source="customer.owner_id", read_only=True, allow_null=True)
    reason = serializers.CharField(read_only=True, help_text="Why the renewal is at risk, in words.")

    class Meta(HoldingValueSerializer.Meta):
        fields = [*HoldingValueSerializer.Meta.fields, "customer_name", "owner", "reason"]
        read_only_fields = fields


class HoldingValueFilter(filters.FilterSet):
    customer_external_id = filters.CharFilter(field_name="customer__external_id")
    next_renewal_before = filters.DateFilter(field_name="next_renewal", lookup_expr="lte")
    next_renewal_after = filters.DateFilter(field_name="next_renewal", lookup_expr="gte")

    class Meta(IdFilters):
        model = HoldingValue
        fields = ["customer", "holding"]


def _positive_int(value: str | None, name: str, *, default: int, maximum: int) -> int:
    if value is None:
        return default
    if value.isascii() and value.isdigit() and 0 < int(value) <= maximum:
        return int(value)
    raise exceptions.ValidationError({name: [f"Give a whole number from 1 to {maximum}."]})


class HoldingValueViewSet(viewsets.ReadOnlyModelViewSet):
    """Subscription holdings valued by a CLV run: renewal probability, expected periods, residual value."""

    serializer_class = HoldingValueSerializer
    filterset_class = HoldingValueFilter
    ordering_fields = ["id", "next_renewal", "value_at_stake", "residual_value"]
    ordering = "id"

    @extend_schema(parameters=[OpenApiParameter("run", int, description="A run id; default: the current run.")])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        run = self.request.query_params.get("run")
        run_id = None if run is None else _positive_int(run, "run", default=0, maximum=2**63 - 1)
        return renewals.holding_values(self.request.user, run=run_id)


class MostAtStakeFirst(ApiCursorPagination):
    ordering = ("-value_at_stake", "-id")


class RenewalAtRiskViewSet(viewsets.GenericViewSet):
    """Contracts renewing in the next `days` days (default 90), most value at stake first, with reasons."""

    serializer_class = RenewalAtRiskSerializer
    pagination_class = MostAtStakeFirst
    filter_backends: list = []

    @extend_schema(parameters=[
        OpenApiParameter("days", int, description="Renewals due within this many days (1-366; default 90)."),
    ])
    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        rows = renewals.with_reasons(list(page))
        return self.get_paginated_response(self.get_serializer(rows, many=True).data)

    def get_queryset(self):
        days = _positive_int(self.request.query_params.get("days"), "days", default=renewals.RENEWAL_WINDOW_DAYS,
                             maximum=366)
        return renewals.renewals_at_risk(self.request.user, days=days)
