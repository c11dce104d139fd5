"""A purchase reported late earns by the rules, the month's spend and the tier of when it
occurred, is settled in the run of the date it was recorded on (never the closed date it occurred
on), and that run's report lists it apart, as a late arrival, with the date it occurred on."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from clearinghouse.ledger.tables import journal_entries
from clearinghouse.numbers import yuan_text
from settlement import netting, schedule
from settlement.reports import CSV_LINE_COLUMNS, LATE_ARRIVAL_COLUMNS, with_yuan
from tests.builders.calls import buy, enrol, lines
from tests.builders.console import Console
from tests.builders.databases import World
from tests.builders.dates import SHANGHAI, earlier_month
from tests.builders.ids import unique_id
from tests.builders.settlement import run_entries, settle_after_cutoff
from tests.builders.users import person


def _entry_of(world: World, txn: str) -> int:
    with world.sessions() as session:
        entry_id: int = session.execute(
            journal_entries.select()
            .with_only_columns(journal_entries.c.id)
            .where(journal_entries.c.metadata["partner_txn_id"].astext == txn)
        ).scalar_one()
    return entry_id


def test_a_late_purchase_earns_by_its_month_and_tier_and_is_a_late_arrival_of_its_run(
    world: World,
) -> None:
    shop = world.merchant(issue_price="1.2")
    client = world.client(shop)
    member_id = enrol(client)
    now = datetime.now(UTC)
    # The last hour of last month (on the 31st, out of the 30 days' reach, 29 days ago).
    late_at = earlier_month(now)
    same_month = late_at.astimezone(SHANGHAI).month == now.astimezone(SHANGHAI).month
    first_txn, late_txn = unique_id("t"), unique_id("t")

    # Last month: 200 yuan, at the base rate (the 100-yuan bracket gives no more), and the
    # first purchase's bonus: 700 points, the member normal.
    first = buy(client, member_id, 20_000, occurred_at=late_at - timedelta(hours=1), txn=first_txn)
    assert first["points"] == 200 + 500
    # This month: 2,500 yuan at 2 a yuan; 5,700 qualifying points make the member silver.
    big = buy(client, member_id, 250_000)
    assert (big["points"], big["tier"]) == (5_000, "silver")

    # Reported now, a purchase of 150 yuan from the last hour of last month: that month's
    # spend, 350 yuan, reaches the 300-yuan bracket (1.5 a yuan), and the member was normal
    # then. By this month's spend and tier it would earn 150 x 2 x 1.25 = 375.
    late = buy(client, member_id, 15_000, occurred_at=late_at, txn=late_txn)
    if same_month:  # the 31st: last month is out of reach, and this month's spend counts
        assert lines(late)[:3] == [
            ("base", Decimal("150")),
            ("bracket", Decimal("150")),
            ("tier", Decimal("0")),
        ]
    else:
        assert lines(late)[:3] == [
            ("base", Decimal("150")),
            ("bracket", Decimal("75")),
            ("tier", Decimal("0")),
        ]
    late_points = 300 if same_month else 225
    assert late["points"] == late_points
    assert late["tier"] == "silver"  # the member's tier now, as recorded

    # The date it occurred on is over, and its run does not hold it: it was recorded later.
    late_date = netting.business_date_of(late_at)
    today = netting.business_date_of(now)
    [occurred_run] = schedule.settle(world.sessions, late_date)
    assert occurred_run.entries == 0
    # It is settled in the run of the date it arrived on, with the day's other purchases.
    run = settle_after_cutoff(world.sessions, today)[-1]
    assert run.business_date == today
    first_entry, late_entry = _entry_of(world, first_txn), _entry_of(world, late_txn)
    assert run_entries(world.sessions, run.id) == {
        first_entry,
        late_entry,
        _entry_of(world, big["partner_txn_id"]),
    }
    [line] = run.lines
    assert line.issued_points == 700 + 5_000 + late_points

    # The report lists the two purchases of last month apart, with the date each occurred on;
    # the totals count them once, in the partner's line.
    _, as_finance = world.finance()
    body = world.http.get(f"/finance/settlements/{today}", headers=as_finance).json()
    arrivals = body["late_arrivals"]
    assert [
        (a["entry_id"], a["partner_txn_id"], a["kind"], a["points"], a["value_fen"])
        for a in arrivals
    ] == [
        (first_entry, first_txn, "accrual", 700, 840),
        (late_entry, late_txn, "accrual", late_points, late_points * 12 // 10),
    ]
    assert {a["partner_id"] for a in arrivals} == {shop.id}
    assert [a["occurred_date"] for a in arrivals] == [
        netting.business_date_of(late_at - timedelta(hours=1)).isoformat(),
        late_date.isoformat(),
    ]
    assert all(
        netting.business_date_of(datetime.fromisoformat(a["recorded_at"])) == today
        for a in arrivals
    )
    assert body["totals"]["issued_points"] == line.issued_points

    # The CSV: the partners' table as before, then a blank line and the late arrivals' table.
    exported = world.http.get(f"/finance/settlements/{today}/report.csv", headers=as_finance)
    rows = list(csv.reader(io.StringIO(exported.text)))
    blank = rows.index([])
    lines_table, late_table = rows[:blank], rows[blank + 1 :]
    assert lines_table[0] == ["business_date", *with_yuan(CSV_LINE_COLUMNS)]
    assert [row[1] for row in lines_table[1:]] == [shop.id, "TOTAL", "COALITION_REVENUE"]
    assert late_table[0] == ["business_date", "section", *with_yuan(LATE_ARRIVAL_COLUMNS)]
    assert [row[:2] for row in late_table[1:]] == [[today.isoformat(), "LATE_ARRIVAL"]] * 2
    assert [row[3] for row in late_table[1:]] == [str(first_entry), str(late_entry)]
    assert late_table[2][2:-1] == [
        shop.id,
        str(late_entry),
        late_txn,
        "accrual",
        str(late_points),
        str(late_points * 12 // 10),
        yuan_text(late_points * 12 // 10),
        late_date.isoformat(),
    ]
    recorded = (late_table[2][-1], arrivals[1]["recorded_at"])
    assert len({datetime.fromisoformat(instant) for instant in recorded}) == 1

    # The console's page shows them under their own heading, with the date each occurred on.
    console = Console(world.http.app)  # type: ignore[arg-type]
    try:
        assert console.sign_in(person(world.sessions, "finance")).status_code == 303
        page = console.get(f"/console/settlements/{today}")
    finally:
        console.close()
    assert page.status_code == 200
    section = page.text.split("Late arrivals", 1)[1].split("</table>", 1)[0]
    assert "recorded on this date but occurred on an earlier one" in section
    assert [late_txn in section, late_date.isoformat() in section] == [True, True]
