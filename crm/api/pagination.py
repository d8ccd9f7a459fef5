"""Cursor pagination with a default page size and a clamped maximum.

What a client sends is checked here, for every cursor-paginated list at once: a page_size that
is not a positive whole number, and a cursor that this server did not hand out (undecodable,
or whose position is not a value of the ordering field, e.g. `p=abc` for an id), are 400s.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.pagination import CursorPagination

BIGINT = 2**63
INVALID_CURSOR = "This cursor is not valid; start again without one."


class ApiCursorPagination(CursorPagination):
    page_size = settings.API_PAGE_SIZE
    max_page_size = settings.API_MAX_PAGE_SIZE  # larger page_size values are clamped to this
    page_size_query_param = "page_size"
    ordering = "id"

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
            raise exceptions.ValidationError({self.page_size_query_param: ["Give a whole number of at least 1."]})
        return min(int(raw), self.max_page_size)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
                parameter["description"] = f"Results per page (default {self.page_size}; above {self.max_page_size}: {self.max_page_size})."
        return parameters

    def paginate_queryset(self, queryset, request, view=None):
        self._model = queryset.model
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound as exc:
            raise exceptions.ValidationError({"cursor": [INVALID_CURSOR]}) from exc
        if cursor is not None and cursor.position is not None:
            self._check_position(cursor.position)
        return cursor

    def _check_position(self, position: str) -> None:
        """The position must be a value the ordering field can hold (it goes into a WHERE)."""
        invalid = exceptions.ValidationError({"cursor": [INVALID_CURSOR]})
        if "\x00" in position:
            raise invalid
        name = self.ordering[0].lstrip("-")
        try:
            value = self._model._meta.get_field(name).to_python(position)
        except (FieldDoesNotExist, DjangoValidationError, ValueError, TypeError, OverflowError):
            raise invalid from None
        if value is None or (isinstance(value, int) and not -BIGINT <= value < BIGINT):
            raise invalid
