"""OpenAPI details drf-spectacular cannot infer on its own."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "crm.api.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token from POST /api/v1/auth/token/, as `Bearer <key>` or `Token <key>`.",
        }


# --- error responses ---------------------------------------------------------------------------

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details: every error of the API has this shape.",
    "properties": {
        "type": {"type": "string", "description": "A URI naming the kind of problem, or about:blank."},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The path of the request."},
        "errors": {
            "type": "array",
            "description": "Field-level messages (validation errors; bulk: with the record's index).",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "code": {"type": "string"},
                },
            },
        },
        "retry_after": {"type": "integer", "description": "Seconds to wait (429), as the Retry-After header says."},
    },
    "required": ["type", "title", "status", "detail"],
}

ERROR_DESCRIPTIONS = {
    "400": "Invalid input (body, query parameter or cursor); `errors` names the fields.",
    "401": "No valid token or session.",
    "403": "Authenticated, but your role may not do this (or the CSRF check failed).",
    "404": "No such record, or not one you may see (the two are answered alike).",
    "406": "The Accept header asks for a format the API does not serve.",
    "409": "Conflicts with stored data: the external_id is in use, or a unique value is taken.",
    "410": "The cursor is older than the deletion log kept, or your view changed: resync without a cursor.",
    "412": "If-Match does not match the record's current ETag: read it again; nothing was written.",
    "413": "The request body is larger than this endpoint accepts (see the security guide's limits).",
    "415": "Send the body as application/json.",
    "422": "Some records of the batch are invalid; nothing was written.",
    "429": "Too many requests (rate limit or login lockout); wait Retry-After seconds.",
    "501": "Not available on this server's database.",
}


def _error_codes(path: str, method: str, operation: dict) -> list[str]:
    codes = ["400", "401", "403", "404", "406", "429"]
    if method in ("post", "put", "patch"):
        codes += ["409", "413", "415"]
    if path.endswith("/bulk/"):
        codes.append("422")
    parameters = {p.get("name") for p in operation.get("parameters", [])}
    if "If-Match" in parameters:
        codes.append("412")
    if path.endswith("/sync/changes/"):
        codes.append("410")
    if "/analytics/" in path:
        codes.append("501")
    return codes


def document_errors(result, generator, request, public):
    """drf-spectacular postprocessing hook: every operation lists the errors it can answer, each as
    application/problem+json; and the opportunity a client reads may be `expired` (set by the
    engine), though a client may not set that status."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for code in _error_codes(path, method, operation):
                operation["responses"].setdefault(code, {"description": ERROR_DESCRIPTIONS[code], "content": problem})
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                _non_empty_query_text(parameter)
    for name, component in schemas.items():  # every request body refuses fields it does not know
        if name.endswith("Request") and component.get("type") == "object" and "properties" in component:
            component["additionalProperties"] = False
    _opportunity_status_as_read(schemas)
    return result


# Query parameters where an empty value means "the default" (and is accepted as such).
EMPTY_MEANS_DEFAULT = {"cursor", "ordering", "types"}


def _non_empty_query_text(parameter: dict) -> None:
    """A filter given with no value is a 400 (crm.api.filters), so text query parameters say minLength 1."""
    schema = parameter.get("schema", {})
    if schema.get("type") == "boolean":  # true or false, as crm.api.filters.StrictBooleanFilter reads them
        schema.pop("enum", None)
        parameter.pop("description", None)
    if parameter.get("in") == "query" and parameter.get("name") not in EMPTY_MEANS_DEFAULT and (
        schema.get("type") == "string" and "enum" not in schema
    ):
        schema.setdefault("minLength", 1)


def _opportunity_status_as_read(schemas: dict) -> None:
    from crm.models import Opportunity

    read = schemas.get("Opportunity", {}).get("properties", {})
    if "status" not in read:
        return
    schemas["OpportunityStatusReadEnum"] = {
        "enum": list(Opportunity.Status.values),
        "type": "string",
        "description": "\n".join(f"* `{value}` - {label}" for value, label in Opportunity.Status.choices),
    }
    read["status"] = {
        "allOf": [{"$ref": "#/components/schemas/OpportunityStatusReadEnum"}],
        "description": "open, accepted, dismissed, won, lost, or expired (set by the engine only; a client "
        "may set the others).",
    }
