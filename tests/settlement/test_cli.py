"""`clearinghouse user create`, `clearinghouse settle` and `clearinghouse settlement ...`, run as
an operator would, on a throwaway database of the test's own (in this process:
tests/cli_fixtures.py)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path

from typer.testing import Result

from clearinghouse.numbers import yuan_text
from clearinghouse.points import holds
from clearinghouse.users import signin
from clearinghouse.users.service import user_by_token
from settlement.reports import CSV_LINE_COLUMNS, with_yuan
from tests.builders.databases import World
from tests.builders.dates import business_today
from tests.builders.points import accrue, new_member
from tests.builders.settlement import a_day_of_traffic, after_cutoff
from tests.cli_fixtures import run_cli


def run(world: World, *args: str, stdin: str = "") -> Result:
    return run_cli(*args, env={"DATABASE_URL": world.url}, input=stdin)


def test_create_a_user_settle_a_date_and_export_its_report(world: World, tmp_path: Path) -> None:
    traffic = a_day_of_traffic(world)
    day = business_today().isoformat()

    created = run(
        world,
        "user",
        "create",
        "fin1",
        "--role",
        "finance",
        "--password-stdin",
        stdin="correct horse battery\n",
    )
    assert created.exit_code == 0, created.stderr
    assert "user fin1 (finance), signs in with a password" in created.stdout
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("cht_")
    with world.sessions() as session, session.begin():
        assert user_by_token(session, token).id == "fin1"
        assert signin.sign_in(session, "fin1", "correct horse battery", None).id == "fin1"

    with after_cutoff(business_today()):
        settled = run(world, "settle", "--date", day)
    assert settled.exit_code == 0, settled.stderr
    out = settled.stdout
    assert f"settlement {day} (attempt 1): computed, 2 entries" in out
    payer_row = next(line for line in out.splitlines() if traffic.payer.id in line)
    receiver_row = next(line for line in out.splitlines() if traffic.receiver.id in line)
    assert payer_row.split()[-1] == f"{traffic.issued_fen / 100:,.2f}"
    assert receiver_row.split()[-1] == f"{-traffic.redeemed_fen / 100:,.2f}"
    keeps = (traffic.issued_fen - traffic.redeemed_fen) / 100
    keeps_row = next(line for line in out.splitlines() if "coalition keeps" in line)
    assert keeps_row.split()[-1] == f"{keeps:,.2f}"
    assert "cancel to the fen" in out

    report = tmp_path / "report.csv"
    shown = run(world, "settlement", "show", day, "--csv", str(report))
    assert shown.exit_code == 0, shown.stderr
    assert f"wrote {report}" in shown.stdout
    rows = list(csv.reader(io.StringIO(report.read_text())))
    assert rows[0] == ["business_date", *with_yuan(CSV_LINE_COLUMNS)]
    assert [row[1] for row in rows[1:]] == [
        *sorted([traffic.payer.id, traffic.receiver.id]),
        "TOTAL",
        "COALITION_REVENUE",
    ]
    assert int(rows[-1][-2]) == traffic.issued_fen - traffic.redeemed_fen
    assert rows[-1][-1] == yuan_text(traffic.issued_fen - traffic.redeemed_fen)

    approved = run(world, "settlement", "approve", day, "--token", token)
    assert approved.exit_code == 0, approved.stderr
    assert f"fin1 approved; settlement {day} is computed" in approved.stdout


def test_the_liability_command_prints_the_lines_and_their_reconciliation(world: World) -> None:
    partner = world.merchant()
    member = new_member(world.sessions, [partner.id])
    earned = accrue(world.sessions, partner.id, member, 30_000).points
    with world.sessions() as session, session.begin():
        holds.place_hold(session, partner.id, member, 120, key=str(uuid.uuid4()))

    printed = run(world, "settlement", "liability")
    assert printed.exit_code == 0, printed.stderr
    report = json.loads(printed.stdout)
    assert (report["available_points"], report["held_points"]) == (earned - 120, 120)
    assert report["total_points"] == earned == report["issued_points"]
    assert (report["redeemed_points"], report["expired_points"]) == (0, 0)
