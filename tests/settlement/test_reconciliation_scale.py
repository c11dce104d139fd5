"""Reconciliation at the size of a partner's day: a file of far more lines than one statement
could bind as parameters is loaded and matched in the database, its breaks found once each and
read a page at a time; a file wrong throughout names its first bad lines only."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import text

from clearinghouse.errors import InvalidRequest
from settlement import netting, reconciliation
from settlement.tables import settlement_runs
from tests.points.builders import buy, enrol
from tests.settlement.builders import World, business_today

LINES = 70_000


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

    with world.sessions.begin() as session:
        result = reconciliation.reconcile(session, shop.id, business_today(), content)
    assert (result.lines, result.matched, result.break_count) == (LINES, LINES - 3, 5)

    with world.sessions() as session:
        pages, after = [], None
        while True:
            page, after = reconciliation.breaks(session, result.id, after, 1)
            pages.append(page)
            if after is None:
                break
        # The seed purchase is ours alone: the file leaves it out too.
        assert [(b["break"], b["txn_id"], b["ours"], b["theirs"]) for [b] in pages] == [
            ("missing_ours", "GHOST-1", None, [1_200, 12]),
            ("missing_theirs", "P-12345", [445, points], None),
            ("amount_differs", "P-5", [105, points], [999_999, points]),
            ("points_differ", f"P-{LINES}", [100, points], [100, points + 1]),
            ("missing_theirs", "SEED", [10_000, points], None),
        ]
        assert netting.open_breaks(session, business_today()) == 5


def test_a_file_wrong_throughout_names_its_first_hundred_bad_lines(world: World) -> None:
    shop = world.merchant()
    rows = [f"T-{n},gift,100,1" for n in range(500)] + ["T-1,purchase,100,1"] * 2
    content = "\n".join(["txn_id,type,amount_fen,points", *rows]).encode()
    with world.sessions.begin() as session, pytest.raises(InvalidRequest) as refused:
        reconciliation.reconcile(session, shop.id, business_today(), content)
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
