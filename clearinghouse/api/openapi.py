"""The published OpenAPI document: the routes FastAPI describes, plus the signature headers,
the problem+json shape and every problem type."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from clearinghouse.api.gate import MAX_BODY_BYTES, PARTNER_PREFIX
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
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "Unique per request, kept 48 hours: a retry with the same key and body gets "
    "the first answer (waiting for it while the first still runs); another body gets 422.",
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


def build(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(
        title="Coalition points clearing house",
        version=app.version,
        description=DESCRIPTION,
        routes=app.routes,
    )
    types = problem_types()
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = _problem_schema(types)
    components["securitySchemes"] = {
        "httpSignature": {
            "type": "apiKey",
            "in": "header",
            "name": "Signature",
            "description": "RFC 9421 HTTP Message Signature with Ed25519; see the API description",
        }
    }
    spec["x-problem-types"] = types
    for path, operations in spec["paths"].items():
        if not path.startswith(PARTNER_PREFIX):
            continue
        for method, operation in operations.items():
            operation["security"] = [{"httpSignature": []}]
            params = operation.setdefault("parameters", [])
            params.extend(SIGNATURE_PARAMETERS)
            responses = operation["responses"]
            responses["401"] = _problem_response("Signature missing or not valid")
            responses.setdefault("404", _problem_response("Not found, or not the partner's"))
            if method == "post":
                params.append(IDEMPOTENCY_PARAMETER)
                responses["400"] = _problem_response("Idempotency-Key missing")
                responses.setdefault("409", _problem_response("Conflict"))
                responses["413"] = _problem_response(f"Body over {MAX_BODY_BYTES} bytes")
            responses["422"] = _problem_response("Invalid request; field errors in `errors`")
            responses["500"] = _problem_response("Internal error, without details")
            responses["503"] = _problem_response(
                "The server is saturated: try again after the Retry-After header's seconds"
            )
    return spec


def render(app: FastAPI) -> str:
    """The document as committed in openapi/openapi.json."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
