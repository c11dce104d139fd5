"""The published OpenAPI document matches the app and describes the signed partner API."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from clearinghouse.api.openapi import render
from clearinghouse.app import create_app

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(render(create_app()))
    return document


def v1_operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = [
        (path, method, operation)
        for path, operations in spec["paths"].items()
        if path.startswith("/v1/")
        for method, operation in operations.items()
        if method in METHODS
    ]
    assert found
    return found


def test_committed_document_matches_the_app() -> None:
    assert render(create_app()) == COMMITTED.read_text(), (
        "openapi/openapi.json is out of date: run `clearinghouse openapi` and commit the result"
    )


def test_every_v1_operation_documents_the_signature_and_401(spec: dict[str, Any]) -> None:
    for path, method, operation in v1_operations(spec):
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert {"Signature", "Signature-Input"} <= headers, (method, path)
        assert "401" in operation["responses"], (method, path)
        assert operation["security"] == [{"httpSignature": []}], (method, path)


def test_every_post_documents_the_idempotency_key(spec: dict[str, Any]) -> None:
    posts = [(path, op) for path, method, op in v1_operations(spec) if method == "post"]
    assert posts
    for path, operation in posts:
        key = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert len(key) == 1, path
        assert key[0]["in"] == "header"
        assert key[0]["required"] is True
        assert {"409", "422", "503"} <= set(operation["responses"]), path


def test_problem_types_are_listed(spec: dict[str, Any]) -> None:
    codes = {problem["code"] for problem in spec["x-problem-types"]}
    assert {
        "unauthorized",
        "idempotency_key_reused",
        "unavailable",
        "validation_error",
        "idempotency_key_required",
        "payload_too_large",
        "internal_error",
    } <= codes
    by_code = {problem["code"]: problem for problem in spec["x-problem-types"]}
    assert by_code["unauthorized"]["status"] == 401
    assert by_code["unavailable"]["status"] == 503
    assert by_code["idempotency_key_reused"]["status"] == 422
    assert spec["components"]["schemas"]["Problem"]["properties"]["code"]["enum"] == sorted(
        by_code, key=lambda code: (by_code[code]["status"], code)
    )


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, ops in spec["paths"].items()
        for method, operation in ops.items()
        if method in METHODS
    ]


def staff_operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = [
        op for op in operations(spec) if op[0].startswith(("/finance/", "/audit/", "/operator/"))
    ]
    assert {path.split("/")[1] for path, _, _ in found} == {"finance", "audit", "operator"}
    return found


def test_staff_routes_declare_the_bearer_token_and_their_problems(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["staffToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["staffToken"]["description"],
    }
    for path, method, operation in staff_operations(spec):
        assert operation["security"] == [{"staffToken": []}], (method, path)
        expected = {"401", "403", "422", "429", "500", "503"}
        if "{" in path:
            expected.add("404")
        if method == "post":
            expected |= {"409", "413"}
        assert expected <= set(operation["responses"]), (method, path)


def test_every_problem_response_is_problem_json(spec: dict[str, Any]) -> None:
    for path, _, operation in operations(spec):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert list(response["content"]) == ["application/problem+json"], (path, status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def _untyped(schema: dict[str, Any]) -> bool:
    if "$ref" in schema:
        return False
    if schema.get("type") == "array":
        return _untyped(schema["items"])
    return schema.get("type") != "string" and "properties" not in schema


def test_every_json_answer_is_typed(spec: dict[str, Any]) -> None:
    for path, method, operation in operations(spec):
        for status, response in operation["responses"].items():
            content = response.get("content", {}).get("application/json")
            if status.startswith("2") and content is not None:
                assert not _untyped(content["schema"]), (method, path, content["schema"])


def test_request_bodies_refuse_unknown_fields(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    contents = [
        op["requestBody"]["content"] for _, _, op in operations(spec) if "requestBody" in op
    ]
    # Every body is JSON but the files': a batch's JSON Lines and a reconciliation's CSV.
    files = sorted(media for c in contents if "application/json" not in c for media in c)
    assert files == ["application/x-ndjson", "text/csv"]
    bodies = [c["application/json"]["schema"]["$ref"] for c in contents if "application/json" in c]
    assert len(bodies) > 10
    for ref in bodies:
        body = schemas[ref.rsplit("/", 1)[1]]
        assert body["additionalProperties"] is False, ref


def test_the_idempotency_key_states_its_characters(spec: dict[str, Any]) -> None:
    posts = [op for path, method, op in v1_operations(spec) if method == "post"]
    patterns = {
        p["schema"]["pattern"]
        for op in posts
        for p in op["parameters"]
        if p["name"] == "Idempotency-Key"
    }
    assert len(patterns) == 1
    pattern = re.compile(patterns.pop())
    assert pattern.fullmatch("3f2c1a9e-8b7d-4c6e-a5f4-0123456789ab")
    for refused in ("", "a b", "ключ", "x" * 201, "a\tb"):
        assert not pattern.fullmatch(refused), refused
