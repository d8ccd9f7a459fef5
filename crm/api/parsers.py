"""The API's JSON parser, bounded: body size, nesting depth and numbers are checked here, once.

DRF reads JSON from the request stream, so Django's upload limit does not apply; this parser
refuses a body larger than the endpoint's maximum (413) from its Content-Length before reading
it, and never reads more than the maximum plus one byte of a body sent without one. Nesting
deeper than API_MAX_JSON_DEPTH and numbers a float cannot hold (1e309) are 400s, as is any
other malformed JSON.
"""

from __future__ import annotations

import json
import math

from django.conf import settings
from rest_framework import exceptions
from rest_framework.parsers import JSONParser

from crm.api.problems import RequestTooLarge


def body_limit(view) -> int:
    """Bytes a request body to `view` may have: bulk endpoints have their own, larger maximum."""
    if getattr(view, "action", None) == "bulk":
        return settings.API_BULK_MAX_BODY_BYTES
    return getattr(view, "max_body_bytes", None) or settings.API_MAX_BODY_BYTES


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _too_deep(data, limit: int) -> bool:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        context = parser_context or {}
        limit = body_limit(context.get("view"))
        request = context.get("request")
        meta = getattr(request, "META", {}) if request is not None else {}
        try:
            declared = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            raise RequestTooLarge(limit)
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestTooLarge(limit)
        try:
            text = raw.decode(context.get("encoding", settings.DEFAULT_CHARSET))
            data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the body is nested too deeply.") from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, out-of-range numbers
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        if isinstance(data, dict | list) and _too_deep(data, settings.API_MAX_JSON_DEPTH):
            raise exceptions.ParseError(
                f"JSON parse error - nested deeper than {settings.API_MAX_JSON_DEPTH} levels."
            )
        return data
