"""What every route shares about its inputs and answers: strict request bodies, answers read
from the domain's objects, ids and instants within what the database stores, and no NUL
character anywhere in a request.

No input of any shape may reach the database in a form it refuses (a 5xx): PostgreSQL's
`bigint` holds 64 bits, its text no NUL, and Python's datetime nothing beyond year 9999 once
moved to UTC; each is refused here with 422 naming the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Annotated, Any

from annotated_types import Interval
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Strict

BIGINT_MAX = 2**63 - 1
"""The largest id, cursor or amount PostgreSQL's bigint holds."""

RowId = Annotated[int, Interval(ge=1, le=BIGINT_MAX)]
"""An id the database gives a row (an entry, a reconciliation)."""

EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
"""Instants and dates outside [EARLIEST, LATEST) are refused: nothing the ledger records is
near either end, and so no date arithmetic on them leaves Python's range."""


def _within_range(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError(f"must lie between the years {EARLIEST.year} and {LATEST.year - 1}")
    return value


def _date_within_range(value: date) -> date:
    if not EARLIEST.date() <= value < LATEST.date():
        raise ValueError(f"must lie between the years {EARLIEST.year} and {LATEST.year - 1}")
    return value


def _text(value: Any) -> Any:
    # JSON has no date type: a date or an instant is a string, never a number of seconds.
    if not isinstance(value, str):
        raise ValueError("an ISO 8601 string")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_within_range)]
"""An instant with its offset, in a query parameter or a path."""
Day = Annotated[date, AfterValidator(_date_within_range)]
"""A calendar date, in a query parameter or a path."""
JsonInstant = Annotated[Instant, Strict(False), BeforeValidator(_text)]
"""An instant in a request body: an ISO 8601 string with its offset."""
JsonDay = Annotated[Day, Strict(False), BeforeValidator(_text)]
"""A calendar date in a request body: an ISO 8601 string."""


class RequestBody(BaseModel):
    """A JSON request body, strict as a financial API must be: an amount or a count is a JSON
    integer (never a string, a boolean or a float), a string is a JSON string, and a field the
    schema does not know is refused by name rather than ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ResponseModel(BaseModel):
    """An answer, read from a domain object's attributes or a mapping's keys by
    `model_validate`."""

    model_config = ConfigDict(from_attributes=True)


NUL = "\x00"


def _nul_locations(value: Any, location: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
    if isinstance(value, str):
        if NUL in value:
            yield location
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nul_locations(item, (*location, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_locations(item, (*location, index))


async def _body_nuls(request: Request) -> list[tuple[str | int, ...]]:
    """Where the body holds a NUL, from what the route read (Starlette keeps it); the body of a
    route that takes none is never read here."""
    route = request.scope.get("route")
    if getattr(route, "body_field", None) is None:
        return []
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        return [
            ("body", name)
            for name, value in form.multi_items()
            if isinstance(value, str) and NUL in value
        ]
    raw = await request.body()
    # Valid JSON can only carry a NUL as this escape; without it there is nothing to find.
    if b"\\u0000" not in raw:
        return []
    try:
        parsed = json.loads(raw)
    except ValueError:
        return []  # not JSON: the route's own validation says so
    return list(_nul_locations(parsed, ("body",)))


async def refuse_nul(request: Request) -> None:
    """PostgreSQL text cannot hold a NUL character: refuse one in a path segment, a query
    value or any string of the body, naming each field, before the route runs. Declared once
    for the whole app."""
    found: list[tuple[str | int, ...]] = [
        ("path", name) for name, value in request.path_params.items() if NUL in str(value)
    ]
    found += [("query", name) for name, value in request.query_params.multi_items() if NUL in value]
    found += await _body_nuls(request)
    if found:
        raise RequestValidationError(
            [
                {"loc": location, "msg": "must not contain a NUL character", "type": "string_nul"}
                for location in found
            ]
        )
