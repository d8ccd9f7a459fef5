"""Fast paths through the resources' serializers, each giving exactly what the serializer gives.

Reads: list pages as `.values()` dicts, turned into exactly what the resource's serializer
would produce, without building model instances or DRF field calls. A list page of 50
customers through DRF's serializer costs about 10 ms of Python; from `.values()` with
precomputed converters it is well under 1 ms. The plan is derived from the serializer's own
fields, so a new field is covered or (if unsupported) the view falls back to the serializer;
`tests/api/test_fast_lists.py` checks both give identical JSON.

Writes: `BulkValidation` validates the records of a bulk upsert or an import with each field's
own conversion and validators, without DRF's layers around them (about 40 us a record through
`run_validation`, half of it in those layers). A record it does not take as it is (a missing
value, an empty one DRF must answer, an unknown field, a field of a kind it does not know, any
error) is validated by the serializer itself, which gives DRF's answer and its error messages;
`tests/api/test_fast_writes.py` checks both give the same values and errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC
from decimal import Decimal
from functools import cache

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.dateparse import parse_datetime
from rest_framework import serializers
from rest_framework.fields import ISO_8601, empty
from rest_framework.settings import api_settings

from crm.api.serializers import RefField, run_validation_for


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


# --- writes ---------------------------------------------------------------------------------

# Field kinds validated here with their own to_internal_value and validators: DRF's
# run_validation adds only the handling of empty values (left to DRF) to these.
_DIRECT_KINDS = (
    serializers.CharField, serializers.DecimalField, serializers.IntegerField, serializers.BooleanField,
    serializers.DateField, serializers.ChoiceField, RefField,
)
_RUN_VALIDATION = {
    serializers.Field.run_validation, serializers.CharField.run_validation, serializers.RelatedField.run_validation,
}
# DecimalField's own differs only for blank text (None where null is allowed), left to DRF.
_EMPTY_VALUES = {serializers.Field.validate_empty_values, serializers.DecimalField.validate_empty_values}


class _Fallback(Exception):
    """This record goes through the serializer."""


class BulkValidation:
    """Validate many records with one serializer (its fields built once): record by record, as
    `run_validation_for` would, with the same values as a result (see the module's docstring)."""

    def __init__(self, serializer: serializers.Serializer):
        self.serializer = serializer
        # (name, source, field, convert, validate_<name> or None, blank, checks) in the serializer's order
        self.fields = []
        self.known = set()
        self.required = set()
        self.has_default = set()
        if serializer.validators:
            return  # serializer-level validators: every record goes through DRF
        for name, field in serializer.fields.items():
            if field.read_only:
                continue
            if field.required:
                self.required.add(name)
            if field.default is not empty:
                self.has_default.add(name)
            convert = self._converter(field)
            if convert is None or field.source == "*" or "." in field.source:
                continue
            # Blank text: a CharField's run_validation answers it ('' or DRF's error); a ChoiceField
            # converts '' as any value; to the others DRF gives its own answer.
            if type(field).run_validation is serializers.CharField.run_validation:
                blank = "empty" if field.allow_blank else "drf"
            else:
                blank = "convert" if isinstance(field, serializers.ChoiceField) else "drf"
            self.fields.append(
                (name, field.source, field, convert, getattr(serializer, f"validate_{name}", None), blank,
                 self._checks(field))
            )
            self.known.add(name)

    @staticmethod
    def _checks(field):
        """The field's validators as run_validators calls them, (validator, takes the field) each;
        None where the field runs them its own way (any error falls back to DRF, which reports it)."""
        if type(field).run_validators is not serializers.Field.run_validators:
            return None
        return tuple((validator, getattr(validator, "requires_context", False)) for validator in field.validators)

    def _converter(self, field):
        kind = type(field)
        if kind.run_validation not in _RUN_VALIDATION or kind.validate_empty_values not in _EMPTY_VALUES:
            return None
        if isinstance(field, serializers.DateTimeField):
            formats = getattr(field, "input_formats", api_settings.DATETIME_INPUT_FORMATS)
            if list(formats) != [ISO_8601] or kind.enforce_timezone is not serializers.DateTimeField.enforce_timezone:
                return None
            return self._datetime(field)
        if isinstance(field, serializers.DecimalField):
            return self._decimal(field)
        if isinstance(field, _DIRECT_KINDS):
            return field.to_internal_value
        return None

    @staticmethod
    def _decimal(field):
        """DecimalField's conversion, with a shortcut for plain text within its digits (e.g. "12.50"):
        DRF would find it precise enough and quantize it without rounding, so the Decimal quantized
        to the field's places is what it returns. Anything else (a number, a sign, spaces, an
        exponent, more digits) takes the field's own to_internal_value."""
        kind = type(field)
        own = (kind.to_internal_value is serializers.DecimalField.to_internal_value
               and kind.validate_precision is serializers.DecimalField.validate_precision
               and kind.quantize is serializers.DecimalField.quantize)
        places, digits = field.decimal_places, field.max_digits
        if not own or field.localize or places is None or digits is None or not 1 <= digits - places <= 28 - places:
            return field.to_internal_value
        whole = digits - places
        fraction = rf"(\.[0-9]{{1,{places}}})?" if places else ""
        plain = re.compile(rf"(0|[1-9][0-9]{{0,{whole - 1}}}){fraction}").fullmatch
        quantum = Decimal(1).scaleb(-places)
        slow = field.to_internal_value

        def convert(value):
            if type(value) is str and plain(value):
                return Decimal(value).quantize(quantum)
            return slow(value)

        return convert

    @staticmethod
    def _datetime(field):
        zone = field.timezone if hasattr(field, "timezone") else field.default_timezone()

        def convert(value):
            if type(value) is not str or zone is None:
                raise _Fallback
            try:
                parsed = parse_datetime(value)
                if parsed is None or parsed.tzinfo is None:
                    raise _Fallback
                return parsed.astimezone(zone)
            except (ValueError, TypeError, OverflowError):
                raise _Fallback from None

        return convert

    def __call__(self, record, *, instance=None, partial=False):
        """The record's validated values, or the serializer's ValidationError."""
        try:
            return self._fast(record, instance, partial)
        except _Fallback:
            return run_validation_for(self.serializer, record, instance=instance, partial=partial)

    def _fast(self, record, instance, partial):
        if type(record) is not dict or not self.fields or not self.known.issuperset(record):
            raise _Fallback
        if not partial and not (self.required.issubset(record) and self.has_default.issubset(record)):
            raise _Fallback
        serializer = self.serializer
        serializer.instance, serializer.partial = instance, partial
        attrs = {}
        try:
            for name, source, field, convert, validate_field, blank, checks in self.fields:
                if name not in record:
                    continue
                value = record[name]
                if value is None:
                    if not field.allow_null:
                        raise _Fallback
                elif blank != "convert" and type(value) is str and (not value or value.isspace()):
                    if blank == "drf":
                        raise _Fallback
                    value = ""
                else:
                    value = convert(value)
                    if checks is None:
                        field.run_validators(value)
                    else:
                        for validator, with_field in checks:
                            if with_field:
                                validator(value, field)
                            else:
                                validator(value)
                if validate_field is not None:
                    value = validate_field(value)
                attrs[source] = value
            attrs = serializer.validate(attrs)
        except (serializers.ValidationError, DjangoValidationError, serializers.SkipField):
            raise _Fallback from None
        if attrs is None:
            raise _Fallback
        return attrs
