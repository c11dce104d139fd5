"""Reconciliation at the size of a partner's day: a file of far more lines than one statement
could bind as parameters, and larger than a JSON body may be, is uploaded as the signed body
itself, loaded and matched in the database, its breaks found once each and read a page at a
time; a file wrong throughout names its first bad lines only. The finance list of settlement
dates is paged too."""

from __future__ import annotations

import io
from datetime import date
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from clearinghouse.api.guard import MAX_BODY_BYTES
from clearinghouse.errors import InvalidRequest
from partners.client import PartnerClient
from settlement import netting, reconciliation, runs
from settlement.tables import reconciliations, settlement_runs
from tests.builders.calls import buy, enrol
from tests.builders.databases import World
from tests.builders.dates import business_today
from tests.builders.http import assert_problem, assert_unauthorized

LINES = 70_000


def _get(http: TestClient, client: PartnerClient, path: str) -> Any:
    return http.send(client.build("GET", path))


def test_a_file_of_seventy_thousand_lines_is_reconciled_and_its_breaks_paged(
    world: World,
) -> None:
    shop = world.merchant()
    client = world.client(shop)
    member = enrol(client)
    seed = buy(client, member, 10_000, txn="SEED")
    # The day's purchases, written in SQL from the one bought through the API.
    with world.sessions.begin() as session:
        session.execute(
            text(
                "INSERT INTO purchases (partner_id, partner_txn_id, member_id, store_id,"
                " amount_fen, currency, occurred_at, points, entry_id, rules_version,"
                " rates_version, breakdown, issue_value_fen)"
                " SELECT partner_id, 'P-' || n, member_id, store_id, 100 + n % 1000, currency,"
                " occurred_at, points, entry_id, rules_version, rates_version, breakdown,"
                " issue_value_fen"
                " FROM purchases, generate_series(1, :lines) AS n"
                " WHERE partner_txn_id = 'SEED'"
            ),
            {"lines": LINES},
        )
    points = seed["points"]
    theirs = {f"P-{n}": (100 + n % 1000, points) for n in range(1, LINES + 1)}
    theirs["P-5"] = (999_999, points)  # amount differs
    theirs[f"P-{LINES}"] = (100 + LINES % 1000, points + 1)  # points differ
    del theirs["P-12345"]  # missing from their file
    theirs["GHOST-1"] = (1_200, 12)  # not ours
    rows = [f"{txn},purchase,{amount},{count}" for txn, (amount, count) in theirs.items()]
    content = "\n".join(["txn_id,type,amount_fen,points", *rows, ""]).encode()

    # Over the 1 MiB of a JSON body: the file is the body itself, spooled and hashed by the gate.
    assert len(content) > MAX_BODY_BYTES
    path = f"/v1/reconciliation-files/{business_today()}"
    uploaded = world.http.send(client.build("POST", path, file=content))
    assert uploaded.status_code == 201, uploaded.text
    result = uploaded.json()
    assert (result["lines"], result["matched"], result["breaks"]) == (LINES, LINES - 3, 5)
    assert _get(world.http, client, f"/v1/reconciliations/{result['id']}/file").content == content

    breaks, query = [], "?limit=2"
    while True:
        page = client.get(f"/v1/reconciliations/{result['id']}/breaks{query}")
        assert len(page["breaks"]) <= 2
        breaks += page["breaks"]
        if page["next"] is None:
            break
        query = f"?limit=2&after={page['next']}"
    # The seed purchase is ours alone: the file leaves it out too.
    assert [(b["break"], b["txn_id"], b["ours"], b["theirs"]) for b in breaks] == [
        ("missing_ours", "GHOST-1", None, [1_200, 12]),
        ("missing_theirs", "P-12345", [445, points], None),
        ("amount_differs", "P-5", [105, points], [999_999, points]),
        ("points_differ", f"P-{LINES}", [100, points], [100, points + 1]),
        ("missing_theirs", "SEED", [10_000, points], None),
    ]
    with world.sessions() as session:
        assert runs.open_breaks(session, business_today()) == 5


def test_an_uploaded_file_is_refused_unless_it_is_the_signed_body(world: World) -> None:
    shop = world.merchant()
    client = world.client(shop)
    path = f"/v1/reconciliation-files/{business_today()}"
    content = b"txn_id,type,amount_fen,points\nT-1,purchase,100,1\n"
    signed = client.build("POST", path, file=content)
    headers = {k: v for k, v in signed.headers.items() if k.lower() != "content-length"}
    tampered = httpx.Request("POST", signed.url, headers=headers, content=content + b"T-2,x,1,1\n")
    assert_unauthorized(world.http.send(tampered))
    as_json = client.build("POST", path, body={"csv": content.decode()})
    assert_problem(world.http.send(as_json), 415, "unsupported_media_type")
    bad = client.build("POST", path, file=b"txn_id,type,amount_fen,points\nT-1,gift,100,1\n")
    assert [
        e["line"] for e in assert_problem(world.http.send(bad), 422, "validation_error")["errors"]
    ] == [2]
    with world.sessions() as session:
        assert session.execute(select(func.count()).select_from(reconciliations)).scalar() == 0
    assert world.http.send(signed).status_code == 201


def test_a_file_wrong_throughout_names_its_first_hundred_bad_lines(world: World) -> None:
    shop = world.merchant()
    rows = [f"T-{n},gift,100,1" for n in range(500)] + ["T-1,purchase,100,1"] * 2
    content = "\n".join(["txn_id,type,amount_fen,points", *rows]).encode()
    with world.sessions.begin() as session, pytest.raises(InvalidRequest) as refused:
        reconciliation.reconcile(session, shop.id, business_today(), io.BytesIO(content))
    assert [e["line"] for e in refused.value.extensions["errors"]] == list(range(2, 2 + 100))


def test_settlement_dates_are_listed_a_page_at_a_time(world: World) -> None:
    days = [date(2026, 11, day) for day in (20, 21, 22, 23, 24)]
    with world.sessions.begin() as session:
        for day in days:
            session.execute(
                settlement_runs.insert().values(
                    business_date=day, attempt=1, cutoff=netting.cutoff(day), state="computed"
                )
            )
    _, token = world.finance()
    seen: list[str] = []
    query = "?limit=2"
    while True:
        page = world.http.get(f"/finance/settlements{query}", headers=token).json()
        assert len(page["settlements"]) <= 2
        seen += [s["business_date"] for s in page["settlements"]]
        if page["next"] is None:
            break
        query = f"?limit=2&before={page['next']}"
    assert seen == [day.isoformat() for day in reversed(days)]
