"""`clearinghouse reward ...`: an operator manages any supplier's rewards, as suppliers do through
the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.builders.ids import unique_id
from tests.cli_fixtures import Cli


def test_an_operator_adds_prices_stocks_and_withdraws_a_reward(
    cli: Cli, partner: Any, tmp_path: Path
) -> None:
    options = ["--title-zh", "电影票", "--title-en", "Cinema ticket", "--unit-value-fen", "3000"]
    added = cli.ok("reward", "add", partner.id, "--kind", "coupon", "--points", "4000", *options)
    reward_id = added.split()[0]
    assert "active coupon of" in added
    assert "4,000 points, pays 3,000 fen a unit, 0 left" in added
    codes = tmp_path / "codes.txt"
    codes.write_text("\n".join(unique_id("c") for _ in range(4)) + "\n")
    assert "4 left" in cli.ok("reward", "codes", reward_id, str(codes))
    assert "already uploaded" in cli.refused("reward", "codes", reward_id, str(codes))
    assert f"{reward_id}: 4,500 points from" in cli.ok("reward", "price", reward_id, "4500")
    assert "coupon's stock is its codes" in cli.refused("reward", "stock", reward_id, "--add", "1")
    assert f"{reward_id} withdrawn" in cli.ok("reward", "withdraw", reward_id)
    assert reward_id in cli.ok("reward", "list", "--supplier", partner.id)


def test_a_reward_of_an_unknown_supplier_is_refused(cli: Cli) -> None:
    refusal = cli.refused(
        "reward", "add", "no-such-partner", "--kind", "goods", "--points", "10",
        "--title-zh", "杯子", "--title-en", "Mug", "--unit-value-fen", "500",
    )  # fmt: skip
    assert "no partner no-such-partner" in refusal
