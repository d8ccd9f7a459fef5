"""Next best actions in API v1: `GET next-actions/`, the caller's ranked list (crm/selectors/next_actions.py).

A manager may pass `?user=<id>` for a salesperson of a team they manage, an admin anyone; any
other user is a 403, an unknown one a 404. The list is computed, not stored, so it is paged by an
opaque cursor over its ranked positions, in the same envelope as the other lists
(`next`, `previous`, `results`), plus the list's `total_expected_value`.
"""

from __future__ import annotations

from base64 import b64decode, b64encode
from binascii import Error as Base64Error

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, viewsets
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from accounts.models import User
from crm.api.pagination import INVALID_CURSOR, ApiCursorPagination
from crm.next_action_records import own_next_actions
from crm.selectors import next_actions as nba


class NextActionSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=nba.Kind.choices, read_only=True)
    key = serializers.CharField(read_only=True, help_text='What the item is about, e.g. "task:12", "retention:40".')
    customer = serializers.IntegerField(source="customer_id", read_only=True)
    customer_name = serializers.CharField(read_only=True)
    owner = serializers.IntegerField(source="owner_id", read_only=True, help_text="The salesperson whose list it is.")
    object_id = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="The task, opportunity or holding the item is about."
    )
    expected_value = serializers.DecimalField(
        max_digits=14, decimal_places=2, read_only=True,
        help_text="What acting is expected to add or save, in the same units as CLV (margin, discounted), whole units.",
    )
    currency = serializers.CharField(read_only=True)
    reason = serializers.CharField(read_only=True, help_text="Why, in one sentence a salesperson can say aloud.")
    action = serializers.ChoiceField(choices=list(nba.ACTIONS), read_only=True)
    url = serializers.SerializerMethodField(help_text="The page to act from.")

    def get_url(self, item) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(item.url) if request is not None else item.url


class RankedListPagination(BasePagination):
    """Pages of a computed, ranked list: `cursor` is an opaque position, `page_size` as in the other lists."""

    page_size = settings.API_PAGE_SIZE
    cursor_query_param = "cursor"

    def paginate_list(self, items: list, request) -> list:
        self.request = request
        self.size = ApiCursorPagination().get_page_size(request)
        self.offset = self._decode(request.query_params.get(self.cursor_query_param))
        self.count = len(items)
        return items[self.offset : self.offset + self.size]

    def _decode(self, raw: str | None) -> int:
        if not raw:
            return 0
        try:
            text = b64decode(raw.encode("ascii"), validate=True).decode("ascii")
        except (Base64Error, UnicodeError, ValueError):
            raise exceptions.ValidationError({"cursor": [INVALID_CURSOR]}) from None
        if not text.startswith("o=") or not text[2:].isdigit() or int(text[2:]) > 10**9:
            raise exceptions.ValidationError({"cursor": [INVALID_CURSOR]})
        return int(text[2:])

    def _link(self, offset: int | None) -> str | None:
        if offset is None:
            return None
        url = self.request.build_absolute_uri()
        if offset == 0:
            return remove_query_param(url, self.cursor_query_param)
        return replace_query_param(url, self.cursor_query_param, b64encode(f"o={offset}".encode()).decode())

    def get_paginated_response(self, data, total=None):
        following = self.offset + self.size if self.offset + self.size < self.count else None
        preceding = max(self.offset - self.size, 0) if self.offset > 0 else None
        return Response({
            "next": self._link(following), "previous": self._link(preceding), "results": data,
            "total_expected_value": None if total is None else f"{total:.2f}",
        })

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results"],
            "properties": {
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
                "total_expected_value": {
                    "type": "string", "format": "decimal", "pattern": r"^-?\d{0,16}(?:\.\d{0,2})?$",
                    "description": "The sum of the expected values of the whole list (every page).",
                },
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {"name": self.cursor_query_param, "required": False, "in": "query",
             "description": "The pagination cursor value.", "schema": {"type": "string"}},
            {"name": "page_size", "required": False, "in": "query",
             "description": f"Results per page (default {self.page_size}; above {settings.API_MAX_PAGE_SIZE}: "
                            f"{settings.API_MAX_PAGE_SIZE}).",
             "schema": {"type": "integer", "minimum": 1}},
        ]


class NextActionViewSet(viewsets.GenericViewSet):
    """The ranked next-best-action list of the caller (or, `?user=`, of a salesperson they manage)."""

    serializer_class = NextActionSerializer
    pagination_class = RankedListPagination
    filter_backends: list = []

    @extend_schema(parameters=[
        OpenApiParameter("user", int, description="A salesperson of a team you manage (admins: anyone); "
                                                  "default: yourself."),
    ])
    def list(self, request, *args, **kwargs):
        raw = request.query_params.get("user")
        if raw is not None and not (raw.isascii() and raw.isdigit() and 0 < int(raw) < 2**63):
            raise exceptions.ValidationError({"user": ["Give a user id (a whole number)."]})
        try:
            owner = nba.list_owner_for(request.user, int(raw) if raw is not None else None)
        except User.DoesNotExist:
            raise exceptions.NotFound("No such user.") from None
        except PermissionError as exc:
            raise exceptions.PermissionDenied(str(exc)) from None
        if owner == request.user:
            result = own_next_actions(owner)
        else:
            result = nba.next_actions(owner, viewer=request.user)
        page = self.paginator.paginate_list(result.items, request)
        data = self.get_serializer(page, many=True).data
        return self.paginator.get_paginated_response(data, total=result.total)
