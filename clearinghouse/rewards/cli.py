"""`clearinghouse reward ...`: an operator manages the catalogue, as suppliers do through
/v1/rewards."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clearinghouse.cli_support import transaction

if TYPE_CHECKING:
    from clearinghouse.rewards.service import Reward

reward_app = typer.Typer(no_args_is_help=True)


def _print(reward: Reward) -> None:
    stock = "unlimited" if reward.stock_left is None else f"{reward.stock_left:,} left"
    price = "no price yet" if reward.points is None else f"{reward.points:,} points"
    typer.echo(
        f"{reward.id} {reward.status} {reward.kind} of {reward.supplier_id}: {reward.title_en}"
        f" / {reward.title_zh}, {price}, pays {reward.unit_value_fen:,} fen a unit, {stock}"
    )


@reward_app.command("list")
def list_rewards(
    supplier: Annotated[str | None, typer.Option(help="One supplier's alone.")] = None,
) -> None:
    """The catalogue's rewards, newest first."""
    from clearinghouse.rewards import service

    with transaction() as session:
        for reward in service.supplied_by(session, supplier):
            _print(reward)


@reward_app.command("add")
def add(
    supplier: str,
    kind: Annotated[str, typer.Option(help="coupon, voucher, goods, membership or charity.")],
    title_zh: Annotated[str, typer.Option(help="The title in Chinese.")],
    title_en: Annotated[str, typer.Option(help="The title in English.")],
    points: Annotated[int, typer.Option(help="The price of a unit, in points.")],
    unit_value_fen: Annotated[int, typer.Option(help="What the supplier is paid a unit, in fen.")],
    stock: Annotated[int | None, typer.Option(help="Units; unlimited if left out.")] = None,
) -> None:
    """Add a reward supplied by a partner."""
    from clearinghouse.rewards import service

    spec = service.RewardSpec(kind, title_zh, title_en, unit_value_fen, points, stock=stock)
    with transaction() as session:
        _print(service.create_reward(session, supplier, spec))


@reward_app.command("price")
def price(reward_id: str, points: int) -> None:
    """A new price in points, in effect now."""
    from clearinghouse.rewards import service

    with transaction() as session:
        set_to = service.set_price(session, None, reward_id, points)
    typer.echo(f"{reward_id}: {set_to.points:,} points from {set_to.effective_from.isoformat()}")


@reward_app.command("stock")
def stock(
    reward_id: str,
    add: Annotated[int, typer.Option(help="Units to add (negative: to take away).")],
) -> None:
    """Add units to a reward's stock, or take some away."""
    from clearinghouse.rewards import service

    with transaction() as session:
        _print(service.add_stock(session, None, reward_id, add))


@reward_app.command("codes")
def codes(
    reward_id: str,
    file: Annotated[Path, typer.Argument(help="One coupon code a line.", exists=True)],
) -> None:
    """Add a file of coupon codes to a coupon's pool."""
    from clearinghouse.rewards import service

    lines = [line for line in file.read_text().splitlines() if line.strip()]
    with transaction() as session:
        _print(service.upload_codes(session, None, reward_id, lines))


@reward_app.command("withdraw")
def withdraw(reward_id: str) -> None:
    """Take a reward out of the catalogue."""
    from clearinghouse.rewards import service

    with transaction() as session:
        _print(service.withdraw(session, None, reward_id))
