"""Query filters per resource: the fields a syncing client or a search would use.

A filter named with no value (`?updated_before=`) is a 400, not an unfiltered answer.
"""

from __future__ import annotations

from datetime import UTC

import django_filters as filters
from django import forms
from django.db import models
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError

from clv.models import ClvRun, CustomerValue
from crm.models import Contact, Customer, Event, Holding, Opportunity, Person, Product, Purchase, Task, Usage


class IdFilter(filters.Filter):
    """A related record's id: an integer in the database's range (no lookup, so no existence leak)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(*args, **kwargs)


class WholeNumberFilter(filters.Filter):
    """An integer column: a whole number (django-filter's NumberFilter would take 0.5)."""

    field_class = forms.IntegerField


class CountFilter(WholeNumberFilter):
    """A positive integer column: a whole number from 0 to what the column holds."""

    max_value = 2**31 - 1

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", self.max_value)
        super().__init__(*args, **kwargs)


class SmallCountFilter(CountFilter):
    max_value = 32767


class StrictBooleanFilter(filters.BooleanFilter):
    """true or false (django-filter's would read any other value, such as null, as no filter)."""

    field_class = forms.TypedChoiceField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("choices", [("true", "true"), ("false", "false")])
        kwargs.setdefault("coerce", lambda value: value == "true")
        super().__init__(*args, **kwargs)


class IdFilters:
    filter_overrides = {
        models.ForeignKey: {"filter_class": IdFilter},
        models.OneToOneField: {"filter_class": IdFilter},
        models.IntegerField: {"filter_class": WholeNumberFilter},
        models.SmallIntegerField: {"filter_class": WholeNumberFilter},
        models.PositiveSmallIntegerField: {"filter_class": SmallCountFilter},
        models.PositiveIntegerField: {"filter_class": CountFilter},
        models.BooleanField: {"filter_class": StrictBooleanFilter},
    }


class UtcIsoDateTimeField(forms.DateTimeField):
    """An ISO 8601 date-time, turned into UTC (the database refuses offsets beyond ±15:59)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("input_formats", ["iso-8601"])
        super().__init__(*args, **kwargs)

    def strptime(self, value, format):
        return filters.fields.IsoDateTimeField().strptime(value, format)

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError("This date-time is out of range.", code="invalid") from None


class DateTimeFilter(filters.Filter):
    field_class = UtcIsoDateTimeField


class SyncedFilterSet(filters.FilterSet):
    """Every synced resource: by external_id (one or several) and by time of change."""

    external_id = filters.BaseInFilter(field_name="external_id", help_text="One or more, comma-separated.")
    updated_after = DateTimeFilter(field_name="updated_at", lookup_expr="gte")
    updated_before = DateTimeFilter(field_name="updated_at", lookup_expr="lt")
    created_after = DateTimeFilter(field_name="created_at", lookup_expr="gte")


class CustomerFilter(SyncedFilterSet):
    q = filters.CharFilter(field_name="name", lookup_expr="icontains", help_text="Name contains.")

    class Meta(IdFilters):
        model = Customer
        fields = ["owner", "kind", "relationship_type", "lifecycle_stage", "country", "industry", "city"]


class CustomerChildFilter(SyncedFilterSet):
    customer_external_id = filters.CharFilter(field_name="customer__external_id")


class PersonFilter(CustomerChildFilter):
    email = filters.CharFilter(lookup_expr="iexact")

    class Meta(IdFilters):
        model = Person
        fields = ["customer", "dmu_role", "is_active"]


class ProductFilter(SyncedFilterSet):
    class Meta(IdFilters):
        model = Product
        fields = ["sku", "family", "tier", "is_active"]


class PurchaseFilter(CustomerChildFilter):
    purchased_after = DateTimeFilter(field_name="purchased_at", lookup_expr="gte")
    purchased_before = DateTimeFilter(field_name="purchased_at", lookup_expr="lt")

    class Meta(IdFilters):
        model = Purchase
        fields = ["customer", "product", "order_ref"]


class HoldingFilter(CustomerChildFilter):
    class Meta(IdFilters):
        model = Holding
        fields = ["customer", "product", "status"]


class UsageFilter(SyncedFilterSet):
    customer = IdFilter(field_name="holding__customer")
    period_after = filters.DateFilter(field_name="period_start", lookup_expr="gte")

    class Meta(IdFilters):
        model = Usage
        fields = ["holding"]


class ContactFilter(CustomerChildFilter):
    occurred_after = DateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    occurred_before = DateTimeFilter(field_name="occurred_at", lookup_expr="lt")
    follow_up_due = filters.DateFilter(field_name="follow_up_on", lookup_expr="lte")

    class Meta(IdFilters):
        model = Contact
        fields = ["customer", "salesperson", "channel", "direction"]


class TaskFilter(CustomerChildFilter):
    due_after = filters.DateFilter(field_name="due_on", lookup_expr="gte")
    due_before = filters.DateFilter(field_name="due_on", lookup_expr="lte")
    done = StrictBooleanFilter(field_name="done_at", lookup_expr="isnull", exclude=True,
                        help_text="true: completed tasks; false: open ones.")

    class Meta(IdFilters):
        model = Task
        fields = ["customer", "contact", "assigned_to"]


class EventFilter(CustomerChildFilter):
    occurred_after = DateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    occurred_before = DateTimeFilter(field_name="occurred_at", lookup_expr="lt")

    class Meta(IdFilters):
        model = Event
        fields = ["customer", "kind", "impact"]


class OpportunityFilter(CustomerChildFilter):
    class Meta(IdFilters):
        model = Opportunity
        fields = ["customer", "product", "kind", "status", "dismiss_reason"]


class CustomerValueFilter(filters.FilterSet):
    min_clv = filters.NumberFilter(field_name="clv", lookup_expr="gte")
    max_p_alive = filters.NumberFilter(field_name="p_alive", lookup_expr="lte")
    customer_external_id = filters.CharFilter(field_name="customer__external_id")

    class Meta(IdFilters):
        model = CustomerValue
        fields = ["customer"]


class ClvRunFilter(filters.FilterSet):
    class Meta(IdFilters):
        model = ClvRun
        fields = ["status", "is_current", "as_of"]


class FilterBackend(DjangoFilterBackend):
    """django-filter, skipped when the request names none of the filters (saves a form per request)."""

    def filter_queryset(self, request, queryset, view):
        filterset_class = self.get_filterset_class(view, queryset)
        named = set(filterset_class.base_filters) & set(request.query_params) if filterset_class else set()
        if not named:
            return queryset
        empty = sorted(name for name in named if "" in request.query_params.getlist(name))
        if empty:  # django-filter would ignore them: say so instead of answering unfiltered
            raise ValidationError({name: ["Give a value, or leave the parameter out."] for name in empty})
        return super().filter_queryset(request, queryset, view)
