"""The published OpenAPI document: the routes FastAPI describes, plus the signature headers,
the problem+json shape and every problem type."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from clearinghouse.api.guard import (
    JSON_TYPE,
    MAX_BODY_BYTES,
    PARTNER_PREFIX,
    STAFF_PREFIXES,
    upload_of,
)
from clearinghouse.api.idempotency import KEY_PATTERN
from clearinghouse.api.problems import HTTP_PROBLEMS, PROBLEM_JSON
from clearinghouse.errors import DomainError

DESCRIPTION = """\
The coalition clearing house's partner API. Every `/v1/` request is signed with the partner's
Ed25519 key following RFC 9421 (HTTP Message Signatures), covering `"@method" "@authority"
"@path" "@query"` and, for requests with a body, `"content-digest" "content-type"
"idempotency-key"`, with the parameters `created`, `keyid`, `nonce` (at least 128 bits) and
optionally `expires`. `Content-Digest` is the RFC 9530 `sha-256` of the raw body. A signature
older than 300 s, more than 30 s ahead, or with a nonce already seen is refused with 401.
Every POST carries an `Idempotency-Key`. Errors are RFC 9457 problem+json; `code` names the kind.
See docs/partner-integration.md."""

SIGNATURE_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "Signature-Input",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": 'RFC 9421 signature input, e.g. sig1=("@method" "@authority" '
        '"@path" "@query");created=1732500000;keyid="teahouse-1a2b3c4d";'
        'nonce="...";alg="ed25519"',
    },
    {
        "name": "Signature",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "RFC 9421 signature: sig1=:base64 Ed25519 signature:",
    },
    {
        "name": "Content-Digest",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "RFC 9530 digest of the raw body, sha-256=:base64:; required with a body",
    },
]

IDEMPOTENCY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "pattern": KEY_PATTERN.pattern},
    "description": "Unique per request, kept 48 hours: 1 to 200 visible ASCII characters (a "
    "UUID, say). A retry with the same key and body gets the first answer (waiting for it while "
    "the first still runs); another body gets 422.",
}

# The signature of a body covers an Idempotency-Key; a PUT sets a value, and keeps no answer.
BODY_KEY_PARAMETER: dict[str, Any] = {
    **IDEMPOTENCY_PARAMETER,
    "description": "Unique per request: 1 to 200 visible ASCII characters (a UUID, say), "
    "covered by the signature of the body. A PUT sets a value: sending it again is harmless, "
    "and no answer is kept under the key.",
}

SECURITY_SCHEMES: dict[str, Any] = {
    "httpSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "Signature",
        "description": "RFC 9421 HTTP Message Signature with Ed25519; see the API description",
    },
    "staffToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A staff member's API token (`clearinghouse user create`): finance or "
        "approver for /finance, auditor for /audit, operator for /operator",
    },
}


def problem_types() -> list[dict[str, Any]]:
    """Every problem the API can return: the domain errors and the HTTP layer's own."""
    found: dict[str, dict[str, Any]] = {}
    pending = [DomainError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        found.setdefault(
            cls.code,
            {"code": cls.code, "type": cls.type_uri(), "status": cls.status, "title": cls.title},
        )
    for status, (code, title) in HTTP_PROBLEMS.items():
        found.setdefault(
            code,
            {
                "code": code,
                "type": DomainError.type_uri().rsplit("/", 1)[0] + "/" + code.replace("_", "-"),
                "status": status,
                "title": title,
            },
        )
    return sorted(found.values(), key=lambda p: (p["status"], p["code"]))


def _problem_schema(types: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "request_id": {
                "type": "string",
                "description": "The request's id, as in its Request-Id header: quote it to "
                "the operator.",
            },
            "code": {"type": "string", "enum": [t["code"] for t in types]},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "field": {"type": "string"},
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                    },
                },
            },
        },
        "additionalProperties": True,
    }


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _problem_responses(path: str, method: str, operation: dict[str, Any]) -> dict[str, str]:
    """The problems an operation can answer, by status, with what each means there: one list
    for every route, partner or staff, so that none is forgotten."""
    partner = path.startswith(PARTNER_PREFIX)
    staff = path.startswith(STAFF_PREFIXES)
    found = {"500": "Internal error, without details"}
    if not (partner or staff):
        return found
    found["401"] = "Signature missing or not valid" if partner else "Token missing or not valid"
    if staff:
        found["403"] = "The token's user lacks the route's role"
    if "{" in path:
        found["404"] = "Not found, or not the partner's" if partner else "Not found"
    limit, media_type = upload_of(path) or (MAX_BODY_BYTES, JSON_TYPE)
    if method == "post":
        if partner:
            found["400"] = "Idempotency-Key missing"
        found["409"] = "Conflict with the current state"
        found["413"] = f"Body over {limit} bytes"
    if "requestBody" in operation:
        found["415"] = f"The body is not `{media_type.decode()}`"
    found["422"] = "Invalid request; field errors in `errors`"
    found["429"] = "Too many requests: try again after the Retry-After header's seconds"
    found["503"] = (
        "The server is saturated or its database unreachable: try again after the Retry-After "
        "header's seconds (a POST with the same Idempotency-Key)"
    )
    return found


def build(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(
        title="Coalition points clearing house",
        version=app.version,
        description=DESCRIPTION,
        routes=app.routes,
        webhooks=app.webhooks.routes,
    )
    types = problem_types()
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = _problem_schema(types)
    # Every 422 is a Problem: FastAPI's own validation error shapes are never sent.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    components["securitySchemes"] = SECURITY_SCHEMES
    spec["x-problem-types"] = types
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path.startswith(PARTNER_PREFIX):
                operation["security"] = [{"httpSignature": []}]
                params = operation.setdefault("parameters", [])
                params.extend(SIGNATURE_PARAMETERS)
                if method == "post":
                    params.append(IDEMPOTENCY_PARAMETER)
                elif "requestBody" in operation:
                    params.append(BODY_KEY_PARAMETER)
            elif path.startswith(STAFF_PREFIXES):
                operation["security"] = [{"staffToken": []}]
            responses = operation["responses"]
            for status, description in _problem_responses(path, method, operation).items():
                responses[status] = _problem_response(description)
    return spec


def render(app: FastAPI) -> str:
    """The document as committed in openapi/openapi.json."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
