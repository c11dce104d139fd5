"""A decimal in an answer is written one way: plain digits, never an exponent."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Annotated, Any, get_args, get_origin

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import BaseRoute

from clearinghouse.api.app import create_app
from clearinghouse.numbers import DECIMAL_PATTERN, PlainDecimal, plain_decimal

WRITER = get_args(PlainDecimal)[1]


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("50.00000000", "50"),
        ("0E-8", "0"),
        ("-0.000", "0"),
        ("1E+3", "1000"),
        ("100", "100"),
        ("-0.32000", "-0.32"),
        ("0.4666", "0.4666"),
        ("5E-10", "0.0000000005"),
        ("123456789012345678901234567890.100", "123456789012345678901234567890.1"),
    ],
)
def test_plain_decimal_keeps_the_value_and_drops_exponents_and_trailing_zeros(
    value: str, written: str
) -> None:
    assert plain_decimal(Decimal(value)) == written
    assert re.fullmatch(DECIMAL_PATTERN, written)
    assert Decimal(written) == Decimal(value)


def _loose_decimals(model: type[BaseModel], seen: set[type[BaseModel]]) -> Iterator[str]:
    """The fields of `model`, and of the models it holds, whose decimals are not PlainDecimal."""
    if model in seen:
        return
    seen.add(model)
    for name, field in model.model_fields.items():
        yield from _loose(field.annotation, field.metadata, f"{model.__name__}.{name}", seen)


def _loose(
    annotation: Any, metadata: Sequence[Any], where: str, seen: set[type[BaseModel]]
) -> Iterator[str]:
    if get_origin(annotation) is Annotated:
        inner, *extra = get_args(annotation)
        yield from _loose(inner, [*metadata, *extra], where, seen)
    elif annotation is Decimal:
        if WRITER not in metadata:
            yield where
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _loose_decimals(annotation, seen)
    else:
        for argument in get_args(annotation):
            yield from _loose(argument, (), where, seen)


class _Rates(BaseModel):
    written: PlainDecimal | None
    loose: list[Decimal]


def test_the_check_finds_a_decimal_written_any_other_way() -> None:
    assert list(_loose_decimals(_Rates, set())) == ["_Rates.loose"]


def _api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        # Newer FastAPI keeps an included router whole rather than copying its routes.
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(included.routes)


def test_every_answer_writes_its_decimals_as_plain_decimal() -> None:
    models = [
        model
        for route in _api_routes(create_app().routes)
        for model in [route.response_model, *(r.get("model") for r in route.responses.values())]
        if isinstance(model, type) and issubclass(model, BaseModel)
    ]
    assert models
    seen: set[type[BaseModel]] = set()
    assert [where for model in models for where in _loose_decimals(model, seen)] == []
