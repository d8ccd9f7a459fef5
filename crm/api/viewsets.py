"""The behaviour every synced resource shares.

- Reads and writes see only what the caller may see (404 otherwise, in every verb).
- Lookup by id (`/customers/42/`) or by external_id (`/customers/ext:ERP-42/`).
- `ETag` on every object read; `If-None-Match` gives 304; `If-Match` on PUT/PATCH/DELETE is
  checked under a row lock, so a stale tag gets 412 and nothing is written.
- `Idempotency-Key` on POST: the first successful response is stored and replayed.
- `POST <resource>/bulk/`: up to 1,000 records keyed by external_id, all or nothing.
Writes go through crm.services, like the pages and the CSV import.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from crm import services
from crm.api import fast
from crm.api.problems import BulkInvalid, ExternalIdTaken, PreconditionFailed, flatten_errors
from crm.api.serializers import prefetch_refs
from crm.bulk import storable_key
from crm.conflicts import retrying
from crm.models import IdempotencyRecord

EXTERNAL_PREFIX = "ext:"
BIGINT_MAX = 2**63 - 1

IF_MATCH = OpenApiParameter(
    "If-Match", str, OpenApiParameter.HEADER, required=False,
    description="The ETag you read; if the record changed since, the write is refused with 412.",
)
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
    description="A unique key per intended write: a retry with the same key and body returns the first response.",
)
LOOKUP = OpenApiParameter(
    "id", str, OpenApiParameter.PATH,
    description="The record's id, or `ext:` followed by its external_id.",
)


def etag_for(instance) -> str:
    """A strong validator from the record's place in the change feed (moves on every write)."""
    raw = f"{instance._meta.label_lower}:{instance.pk}:{instance.change_txid}:{instance.change_seq}"
    return '"' + hashlib.sha256(raw.encode()).hexdigest()[:24] + '"'


def _matches(header: str, etag: str) -> bool:
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in tags or f"W/{etag}" in tags


BULK_RESULT = inline_serializer(
    "BulkResult",
    {
        "results": inline_serializer(
            "BulkRecordResult",
            {
                "index": serializers.IntegerField(),
                "id": serializers.IntegerField(),
                "external_id": serializers.CharField(),
                "result": serializers.ChoiceField(choices=["created", "updated", "unchanged"]),
            },
            many=True,
        ),
        "created": serializers.IntegerField(),
        "updated": serializers.IntegerField(),
        "unchanged": serializers.IntegerField(),
    },
)


class SyncedViewSet(viewsets.ModelViewSet):
    """CRUD for one synced model, over the visibility rule and the services."""

    model = None
    select_related: tuple[str, ...] = ()
    prefetch_related: tuple[str, ...] = ()
    ordering_fields = ["id", "updated_at", "created_at"]
    lookup_value_regex = r"[^/]+"
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    # --- reading ---------------------------------------------------------------------

    def base_queryset(self):
        return self.model.objects.visible_to(self.request.user)

    def get_queryset(self):
        qs = self.base_queryset()
        if self.select_related:
            qs = qs.select_related(*self.select_related)
        if self.prefetch_related:
            qs = qs.prefetch_related(*self.prefetch_related)
        return qs

    def lookup_filter(self) -> dict:
        value = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        if "\x00" in value:
            raise Http404
        if value.startswith(EXTERNAL_PREFIX) and len(value) > len(EXTERNAL_PREFIX):
            return {"external_id": value[len(EXTERNAL_PREFIX):]}
        if value.isascii() and value.isdigit() and 0 < int(value) <= BIGINT_MAX:
            return {"pk": int(value)}
        raise Http404

    def get_object(self, *, lock: bool = False):
        qs = self.filter_queryset_for_object(self.get_queryset())
        if lock:
            qs = qs.select_for_update(of=("self",))
        obj = qs.filter(**self.lookup_filter()).first()
        if obj is None:
            raise Http404
        self.check_object_permissions(self.request, obj)
        return obj

    def filter_queryset_for_object(self, qs):
        return qs

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if any("\x00" in value for values in request.query_params.lists() for value in values[1]):
            raise exceptions.ValidationError({"query": ["Query parameters must not contain NUL characters."]})

    def list(self, request, *args, **kwargs):
        """Pages are read as `.values()` rows and rendered by crm.api.fast when the serializer allows."""
        plan = fast.plan_for(self.get_serializer_class())
        if plan is None or self.prefetch_related:
            return super().list(request, *args, **kwargs)
        queryset = self.filter_queryset(self.get_queryset()).values(*fast.values_keys(plan))
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(fast.represent(page, plan))

    @extend_schema(parameters=[LOOKUP])
    def retrieve(self, request, *args, **kwargs):
        obj = self.get_object()
        etag = etag_for(obj)
        if _matches(request.headers.get("If-None-Match", ""), etag) and request.headers.get("If-None-Match"):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
        return Response(self.get_serializer(obj).data, headers={"ETag": etag})

    # --- writing ---------------------------------------------------------------------

    def perform_create_record(self, data: dict):
        return services.record_create(model=self.model, data=data)

    def perform_update_record(self, instance, data: dict):
        return services.record_update(instance=instance, data=data)[0]

    def perform_delete_record(self, instance):
        services.record_delete(instance=instance, deleted_by=self.request.user)

    def _respond_with(self, instance, status_code: int) -> Response:
        instance.refresh_from_db(fields=["change_txid", "change_seq", "updated_at"])
        # Read back as a list row would be (related fields loaded); a write that moved the record
        # out of the caller's sight still answers with what was written.
        instance = self.get_queryset().filter(pk=instance.pk).first() or instance
        headers = {"ETag": etag_for(instance)}
        if status_code == status.HTTP_201_CREATED:
            headers["Location"] = f"{self.request.path.rstrip('/')}/{instance.pk}/"
        return Response(self.get_serializer(instance).data, status=status_code, headers=headers)

    @extend_schema(parameters=[IDEMPOTENCY_KEY])
    def create(self, request, *args, **kwargs):
        return self.idempotent(request, lambda: self._create(request))

    def _create(self, request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        external_id = data.get("external_id")
        if external_id and self.model.objects.filter(external_id=external_id).exists():
            raise ExternalIdTaken(external_id)
        instance = self.perform_create_record(data)
        return self._respond_with(instance, status.HTTP_201_CREATED)

    def _check_if_match(self, request, instance) -> None:
        header = request.headers.get("If-Match")
        if header and not _matches(header, etag_for(instance)):
            raise PreconditionFailed()

    @extend_schema(parameters=[LOOKUP, IF_MATCH])
    def update(self, request, *args, **kwargs):
        partial = kwargs.pop("partial", False)
        with transaction.atomic():
            instance = self.get_object(lock=True)
            self._check_if_match(request, instance)
            serializer = self.get_serializer(instance, data=request.data, partial=partial)
            serializer.is_valid(raise_exception=True)
            data = dict(serializer.validated_data)
            external_id = data.get("external_id")
            if external_id and external_id != instance.external_id and (
                self.model.objects.filter(external_id=external_id).exists()
            ):
                raise ExternalIdTaken(external_id)
            instance = self.perform_update_record(instance, data)
        return self._respond_with(instance, status.HTTP_200_OK)

    @extend_schema(parameters=[LOOKUP, IF_MATCH])
    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    @extend_schema(parameters=[LOOKUP, IF_MATCH])
    def destroy(self, request, *args, **kwargs):
        with transaction.atomic():
            instance = self.get_object(lock=True)
            self._check_if_match(request, instance)
            self.perform_delete_record(instance)
        return Response(status=status.HTTP_204_NO_CONTENT)

    # --- Idempotency-Key ---------------------------------------------------------------

    def idempotent(self, request, handler) -> Response:
        key = request.headers.get("Idempotency-Key")
        if not key:
            return handler()
        if len(key) > 255:
            raise exceptions.ValidationError({"Idempotency-Key": ["At most 255 characters."]})
        body_hash = hashlib.sha256(
            json.dumps(request.data, sort_keys=True, default=str, separators=(",", ":")).encode()
        ).hexdigest()
        with transaction.atomic():
            try:
                with transaction.atomic():
                    record = IdempotencyRecord.objects.create(
                        user=request.user, key=key, method=request.method, path=request.path[:500],
                        request_hash=body_hash, status_code=0,
                    )
            except IntegrityError:
                first = IdempotencyRecord.objects.get(user=request.user, key=key)
                if first.request_hash != body_hash or first.path != request.path[:500]:
                    raise exceptions.ValidationError(
                        {"Idempotency-Key": ["This key was used for a different request; use a new key."]}
                    ) from None
                headers = {**first.response_headers, "Idempotent-Replayed": "true"}
                return Response(first.response_body, status=first.status_code, headers=headers)
            response = handler()
            record.status_code = response.status_code
            record.response_body = json.loads(JSONRenderer().render(response.data) or b"null")
            record.response_headers = {k: v for k, v in response.items() if k in ("ETag", "Location")}
            record.save(update_fields=["status_code", "response_body", "response_headers"])
        return response

    # --- bulk upsert -----------------------------------------------------------------------

    @extend_schema(
        request=inline_serializer("BulkRequest", {"records": serializers.ListField(
            child=serializers.DictField(), min_length=1, max_length=settings.API_BULK_MAX,
            help_text="The records, each with its external_id and the resource's fields.",
        )}),
        responses={200: BULK_RESULT, 422: OpenApiResponse(description="Invalid records; nothing was written.")},
        parameters=[IDEMPOTENCY_KEY],
        description="Create or update up to 1,000 records keyed by external_id, in one transaction.",
    )
    @action(detail=False, methods=["post"], url_path="bulk")
    def bulk(self, request, *args, **kwargs):
        # A batch that lost a race with a concurrent one (deadlock, a new key created meanwhile) runs again.
        return self.idempotent(request, lambda: retrying(lambda: self._bulk(request)))

    def _bulk(self, request) -> Response:
        records = request.data.get("records") if isinstance(request.data, dict) else None
        if not isinstance(records, list):
            raise exceptions.ValidationError({"records": ["Send {\"records\": [...]} with up to 1,000 records."]})
        unknown = [k for k in request.data if k != "records"]
        if unknown:
            raise exceptions.ValidationError({k: ["Unknown field."] for k in unknown})
        if not records:
            raise exceptions.ValidationError({"records": ["Send at least one record."]})
        if len(records) > settings.API_BULK_MAX:
            raise exceptions.ValidationError(
                {"records": [f"At most {settings.API_BULK_MAX} records per request; got {len(records)}."]}
            )
        errors: list[dict] = []
        keys = []
        for index, record in enumerate(records):
            key = record.get("external_id") if isinstance(record, dict) else None
            if not isinstance(key, str) or not key or not storable_key(key):
                errors.append({"index": index, "field": "external_id",
                               "message": "Every record needs an external_id (a string of 1 to 100 characters).",
                               "code": "required"})
            keys.append(key)
        for key, count in Counter(k for k in keys if isinstance(k, str)).items():
            if count > 1:
                for index, k in enumerate(keys):
                    if k == key:
                        errors.append({"index": index, "field": "external_id",
                                       "message": f"external_id {key!r} appears {count} times in this batch.",
                                       "code": "duplicate"})
        if errors:
            raise BulkInvalid(errors)
        with transaction.atomic():
            stored = services.records_locked(model=self.model, external_ids=keys)
            visible = services.records_visible(queryset=self.get_queryset(), stored=stored)
            serializer = self.get_serializer()
            serializer.context["ref_cache"] = prefetch_refs(serializer, records, request.user)
            validate = fast.BulkValidation(serializer)
            validated = []
            for index, (record, key) in enumerate(zip(records, keys, strict=True)):
                if key in stored and key not in visible:
                    errors.append({"index": index, "field": "external_id", "message": ExternalIdTaken.message(key),
                                   "code": "external_id_taken"})
                    continue
                try:
                    validated.append(validate(record, instance=stored.get(key), partial=key in stored))
                except exceptions.ValidationError as exc:
                    for error in flatten_errors(exc.detail):
                        errors.append({"index": index, **error})
            if errors:
                raise BulkInvalid(errors)
            try:
                results = services.records_upsert(model=self.model, records=validated, existing=stored)
            except services.RecordErrors as exc:
                raise BulkInvalid([
                    {"index": index, "field": field, "message": message, "code": "invalid"}
                    for index, fields in exc.errors.items() for field, messages in fields.items()
                    for message in messages
                ]) from None
        counts = Counter(result for result, _ in results)
        body = {
            "results": [
                {"index": i, "id": row.pk, "external_id": row.external_id, "result": result}
                for i, (result, row) in enumerate(results)
            ],
            "created": counts["created"], "updated": counts["updated"], "unchanged": counts["unchanged"],
        }
        return Response(body, status=status.HTTP_200_OK)
