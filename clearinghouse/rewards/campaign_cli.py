"""`clearinghouse campaign ...`: an operator starts campaigns of engagement points, the
coalition's or a partner's, and lists them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from clearinghouse.cli_support import fail, points, transaction

if TYPE_CHECKING:
    from clearinghouse.rewards.campaigns import Campaign

campaign_app = typer.Typer(no_args_is_help=True)


def _print(campaign: Campaign) -> None:
    funder = campaign.funder_partner_id or "the coalition"
    typer.echo(
        f"{campaign.id} {campaign.name!r} of {funder}: {points(campaign.remaining_points)} of"
        f" {points(campaign.budget_points)} points left, at most"
        f" {points(campaign.per_member_cap)} a member ({points(campaign.daily_cap)} a day),"
        f" {campaign.starts_at.isoformat()} to {campaign.ends_at.isoformat()}"
    )


def _instant(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise fail(f"{text!r} is not an ISO 8601 instant") from exc


@campaign_app.command("list")
def list_campaigns(
    funder: Annotated[
        str | None, typer.Option(help="A partner's campaigns and the coalition's alone.")
    ] = None,
) -> None:
    """The campaigns, newest first."""
    from clearinghouse.rewards import campaigns

    with transaction() as session:
        for campaign in campaigns.campaigns_for(session, funder):
            _print(campaign)


@campaign_app.command("add")
def add(
    name: str,
    budget: Annotated[int, typer.Option(help="The budget, in points.")],
    per_member_cap: Annotated[int, typer.Option(help="Points a member may get in all.")],
    daily_cap: Annotated[int, typer.Option(help="Points a member may get in a business day.")],
    ends: Annotated[str, typer.Option(help="ISO 8601 instant with offset it ends at.")],
    starts: Annotated[
        str | None, typer.Option(help="ISO 8601 instant with offset; now by default.")
    ] = None,
    funder: Annotated[
        str | None, typer.Option(help="The partner that funds it; the coalition if left out.")
    ] = None,
) -> None:
    """Start a campaign of engagement points."""
    from clearinghouse import clock
    from clearinghouse.rewards import campaigns

    spec = campaigns.CampaignSpec(
        name,
        budget,
        per_member_cap,
        daily_cap,
        clock.now() if starts is None else _instant(starts),
        _instant(ends),
    )
    with transaction() as session:
        _print(campaigns.create_campaign(session, funder, spec))
