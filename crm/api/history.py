"""`GET /api/v1/<resource>/{id}/history/`: a record's change history, newest first.

Bounded by the visibility rule (a record the caller may not see answers 404, as everywhere),
cursor-paginated, problem details on errors. History is recorded on PostgreSQL only.
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from crm import history
from crm.api.pagination import ApiCursorPagination
from crm.api.viewsets import BIGINT_MAX, EXTERNAL_PREFIX
from crm.history_models import HISTORY_MODELS


class HistoryPagination(ApiCursorPagination):
    ordering = "-pgh_id"


HISTORY_ENTRIES = inline_serializer(
    "HistoryEntry",
    {
        "id": serializers.IntegerField(),
        "resource": serializers.CharField(),
        "object_id": serializers.IntegerField(),
        "op": serializers.ChoiceField(choices=["created", "updated", "deleted"]),
        "at": serializers.DateTimeField(),
        "actor": serializers.DictField(help_text="user, username, token, token_name, via, url, method (those known)"),
        "changes": inline_serializer(
            "HistoryFieldChange",
            {"field": serializers.CharField(), "old": serializers.JSONField(), "new": serializers.JSONField()},
            many=True,
        ),
    },
    many=True,
)


def _visible_record(model, user, value: str):
    qs = model.objects.all() if model._meta.label_lower == "crm.product" else model.objects.visible_to(user)
    if not user.is_authenticated:
        return None
    if value.startswith(EXTERNAL_PREFIX) and len(value) > len(EXTERNAL_PREFIX):
        return qs.filter(external_id=value[len(EXTERNAL_PREFIX):]).values_list("pk", flat=True).first()
    if value.isascii() and value.isdigit() and 0 < int(value) <= BIGINT_MAX:
        pk = int(value)
        if qs.filter(pk=pk).exists():
            return pk
        # A deleted record keeps its history, for those who may still see its customer.
        return pk if history.object_events(model, pk, user).exists() else None
    return None


class RecordHistoryView(APIView):
    """The change history of one record: who (user or API token), when, old -> new per field."""

    pagination_class = HistoryPagination

    @extend_schema(
        parameters=[
            OpenApiParameter("resource", str, OpenApiParameter.PATH, enum=list(HISTORY_MODELS)),
            OpenApiParameter("pk", str, OpenApiParameter.PATH, description="The record's id, or `ext:` and its external_id."),
            OpenApiParameter("cursor", str, description="The `next` link's cursor."),
            OpenApiParameter("page_size", int, description="Entries per page (default 50, at most 500)."),
        ],
        responses=inline_serializer(
            "HistoryPage",
            {"next": serializers.URLField(allow_null=True), "previous": serializers.URLField(allow_null=True),
             "recorded": serializers.BooleanField(help_text="False where history is not recorded (SQLite)."),
             "results": HISTORY_ENTRIES},
        ),
    )
    def get(self, request, resource: str, pk: str):
        model = HISTORY_MODELS.get(resource)
        if model is None or "\x00" in pk:
            raise Http404
        object_id = _visible_record(model, request.user, pk)
        if object_id is None:
            raise Http404
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(history.object_events(model, object_id, request.user), request, view=self)
        response = paginator.get_paginated_response([e.as_json() for e in history.entries(model, page)])
        response.data["recorded"] = history.history_recorded()
        return Response(response.data)
