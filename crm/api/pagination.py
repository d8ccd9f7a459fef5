"""Cursor pagination with a default page size and a clamped maximum."""

from __future__ import annotations

from django.conf import settings
from rest_framework import exceptions
from rest_framework.pagination import CursorPagination


class ApiCursorPagination(CursorPagination):
    page_size = settings.API_PAGE_SIZE
    max_page_size = settings.API_MAX_PAGE_SIZE  # larger page_size values are clamped to this
    page_size_query_param = "page_size"
    ordering = "id"

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound as exc:
            raise exceptions.ValidationError({"cursor": ["This cursor is not valid; start again without one."]}) from exc
