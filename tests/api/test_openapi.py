"""The published OpenAPI document matches the app and describes the signed partner API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clearinghouse.api.app import create_app
from clearinghouse.api.openapi import render

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
