"""A fast read path for list pages: rows as `.values()` dicts, turned into exactly what the
resource's serializer would produce, without building model instances or DRF field calls.

A list page of 50 customers through DRF's serializer costs about 10 ms of Python; from
`.values()` with precomputed converters it is well under 1 ms. The plan is derived from the
serializer's own fields, so a new field is covered or (if unsupported) the view falls back to
the serializer; `tests/api/test_fast_lists.py` checks both give identical JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from decimal import Decimal
from functools import cache

from rest_framework import serializers
from rest_framework.settings import api_settings

from crm.api.serializers import RefField


def _datetime(value):
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _date(value):
    return value.isoformat()


def _decimal(places: int) -> Callable:
    quantum = Decimal(1).scaleb(-places)

    def convert(value):
        return str(value.quantize(quantum))

    return convert


def _same(value):
    return value


@cache
def plan_for(serializer_class) -> tuple[tuple[str, str, Callable], ...] | None:
    """(output name, values() key, converter) per readable field, or None if a field is not covered."""
    serializer = serializer_class()
    plan = []
    for name, field in serializer.fields.items():
        if field.write_only:
            continue
        source = field.source
        if isinstance(field, serializers.ManyRelatedField):
            return None
        if isinstance(field, RefField | serializers.PrimaryKeyRelatedField):
            plan.append((name, f"{source}_id" if source != "*" else name, _same))
            continue
        key = source.replace(".", "__")
        if isinstance(field, serializers.DateTimeField):
            plan.append((name, key, _datetime))
        elif isinstance(field, serializers.DateField):
            plan.append((name, key, _date))
        elif isinstance(field, serializers.TimeField):
            if getattr(field, "format", api_settings.TIME_FORMAT) != "iso-8601":
                return None
            plan.append((name, key, _date))
        elif isinstance(field, serializers.DecimalField):
            if not getattr(field, "coerce_to_string", api_settings.COERCE_DECIMAL_TO_STRING) or getattr(
                field, "normalize_output", False
            ) or field.localize:
                return None
            plan.append((name, key, _decimal(field.decimal_places)))
        elif isinstance(field, serializers.ChoiceField | serializers.CharField | serializers.IntegerField
                        | serializers.BooleanField | serializers.FloatField | serializers.JSONField
                        | serializers.ModelField):
            plan.append((name, key, _same))
        else:
            return None
    return tuple(plan)


def values_keys(plan) -> list[str]:
    return list(dict.fromkeys(key for _, key, _ in plan))


def represent(rows, plan) -> list[dict]:
    out = []
    for row in rows:
        item = {}
        for name, key, convert in plan:
            value = row[key]
            item[name] = None if value is None else convert(value)
        out.append(item)
    return out
