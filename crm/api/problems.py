"""Every API error as RFC 9457 problem details (application/problem+json).

{"type": ".../problems/validation-error", "title": "...", "status": 400, "detail": "...",
 "instance": "/api/v1/customers/", "errors": [{"field": "name", "message": "...", "code": "..."}]}
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from crm.conflicts import RETRY_AFTER_SECONDS, lost_a_race

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "/api/v1/problems/"


class PreconditionFailed(exceptions.APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = "The record changed since you read it (its ETag does not match If-Match); read it again."
    default_code = "precondition_failed"


class Gone(exceptions.APIException):
    status_code = status.HTTP_410_GONE
    default_detail = "This resource is gone."
    default_code = "gone"


class NotOnThisDatabase(exceptions.APIException):
    """A feature that needs PostgreSQL, asked of a development install on SQLite."""

    status_code = status.HTTP_501_NOT_IMPLEMENTED
    default_detail = "Not available on this database."
    default_code = "not_implemented"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the data."
    default_code = "conflict"


class WriteConflict(exceptions.APIException):
    """The write lost a race with a concurrent one (the server already tried again): send it again."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = ("A concurrent request wrote the same records; nothing of this request was written. "
                      "Send the same request again after Retry-After seconds.")
    default_code = "concurrent_write"
    retry_after = RETRY_AFTER_SECONDS


class DatabaseUnavailable(exceptions.APIException):
    """The database connection failed (restart, failover): nothing was written; send it again later."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The database is not reachable just now; nothing was written. Send the request again later."
    default_code = "service_unavailable"
    retry_after = 5

class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"

    def __init__(self, limit: int):
        super().__init__(f"The request body is larger than this endpoint accepts ({limit:,} bytes at most).")


class ExternalIdTaken(exceptions.APIException):
    """A write names an external_id already in use: said the same way whether the record using it
    is one the caller may see or not, so the answer tells nothing of whose it is."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "external_id_taken"

    @staticmethod
    def message(external_id: str) -> str:
        return f"external_id {external_id!r} is already in use; choose another one."

    def __init__(self, external_id: str):
        super().__init__(self.message(external_id))


class BulkInvalid(exceptions.APIException):
    """A bulk request with invalid records: nothing was written. `detail` is a list of record errors."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "invalid_records"

    def __init__(self, errors: list[dict]):
        self.record_errors = errors
        super().__init__(f"{len({e['index'] for e in errors})} record(s) are invalid; nothing was written.")


TITLES = {
    400: "Your request is not valid.",
    401: "Authentication is needed.",
    403: "You may not do this.",
    404: "Not found.",
    405: "Method not allowed.",
    406: "Not acceptable.",
    409: "Conflict.",
    410: "Gone.",
    412: "Precondition failed.",
    413: "Request too large.",
    415: "Unsupported media type.",
    422: "Some records are not valid.",
    429: "Too many requests.",
    500: "Server error.",
    503: "Service unavailable.",
}


def problem(
    status_code: int, *, detail: str = "", code: str = "", instance: str = "", errors=None, title: str = "",
) -> dict:
    body = {
        "type": f"{PROBLEM_BASE}{code.replace('_', '-')}" if code else "about:blank",
        "title": title or TITLES.get(status_code, "Error."),
        "status": status_code,
        "detail": detail,
        "instance": instance,
    }
    if errors is not None:
        body["errors"] = errors
    return body


def flatten_errors(detail, prefix: str = "") -> list[dict]:
    """DRF's nested error detail as a flat list of {field, message, code}."""
    out: list[dict] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key in ("non_field_errors", "__all__"):
                name = prefix
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
            out.extend(flatten_errors(value, name))
    elif isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            for item in detail:
                out.append({"field": prefix, "message": str(item), "code": getattr(item, "code", "invalid")})
        else:
            for i, item in enumerate(detail):
                out.extend(flatten_errors(item, f"{prefix}[{i}]" if prefix else f"[{i}]"))
    else:
        out.append({"field": prefix, "message": str(detail), "code": getattr(detail, "code", "invalid")})
    return out


def _django_validation_detail(exc: DjangoValidationError):
    if hasattr(exc, "error_dict"):
        return {field: [str(m) for m in messages] for field, messages in exc.message_dict.items()}
    return {"non_field_errors": [str(m) for m in exc.messages]}


def exception_handler(exc, context):
    """DRF's handler, then reshaped as problem details; unexpected errors stay 500s (logged)."""
    if lost_a_race(exc):
        logger.info("write lost a race, answered 409: %s", exc)
        exc = WriteConflict()
    elif isinstance(exc, OperationalError):
        logger.warning("database unavailable, answered 503: %s", exc)
        exc = DatabaseUnavailable()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(_django_validation_detail(exc))
    elif isinstance(exc, DataError):
        logger.info("data error turned into 400: %s", exc)
        exc = exceptions.ValidationError({"non_field_errors": ["A value is out of the range the database can store."]})
    elif isinstance(exc, IntegrityError):
        logger.info("integrity error turned into 409: %s", exc)
        exc = Conflict("The record conflicts with another one (a unique value is taken, or it is still in use).")
    request = context.get("request")
    instance = request.path if request is not None else ""
    if isinstance(exc, BulkInvalid):
        body = problem(422, detail=str(exc.detail), code="invalid-records", instance=instance, errors=exc.record_errors)
        return Response(body, status=422, content_type=PROBLEM_CONTENT_TYPE)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = flatten_errors(exc.detail)
        body = problem(
            400, detail="Some fields are not valid; see errors.", code="validation-error", instance=instance,
            errors=errors,
        )
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        if isinstance(detail, dict | list):
            errors = flatten_errors(detail)
            detail_text = "; ".join(e["message"] for e in errors)
        else:
            detail_text = str(detail)
        code = exc.get_codes() if isinstance(exc, exceptions.APIException) else ""
        body = problem(
            response.status_code, detail=detail_text, code=code if isinstance(code, str) else "", instance=instance,
        )
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            body["retry_after"] = int(exc.wait) + 1
            response["Retry-After"] = str(int(exc.wait) + 1)
        elif isinstance(exc, WriteConflict | DatabaseUnavailable):
            body["retry_after"] = exc.retry_after
            response["Retry-After"] = str(exc.retry_after)
    response.data = body
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def api_aware_404(request, exception=None):
    if _is_api(request):
        body = problem(404, detail="No such endpoint or record.", code="not_found", instance=request.path)
        return JsonResponse(body, status=404, content_type=PROBLEM_CONTENT_TYPE)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Http404())


def api_aware_500(request):
    if _is_api(request):
        body = problem(500, detail="Something went wrong on our side; it has been logged.", instance=request.path)
        return JsonResponse(body, status=500, content_type=PROBLEM_CONTENT_TYPE)
    from django.views.defaults import server_error

    return server_error(request)


def api_aware_403(request, exception=None):
    if _is_api(request):
        body = problem(403, detail="You may not do this.", code="permission_denied", instance=request.path)
        return JsonResponse(body, status=403, content_type=PROBLEM_CONTENT_TYPE)
    from django.views.defaults import permission_denied

    return permission_denied(request, exception or DjangoPermissionDenied())
