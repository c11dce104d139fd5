"""Engagement points: a partner (or the coalition) awards points that no purchase earned — a
sign-in, a survey, a review, a campaign bonus — from a campaign's budget.

A campaign has a budget in points, a period it runs, a cap on what one member may get from it
in all and in one business day (the coalition's time zone). Each award posts an `engagement`
entry with its reason: from `coalition:bonus` for a coalition campaign, or, for a partner's, from
the partner's `issued` account with the points' issue value against its issuance limit, settled
as the partner's issuance like an accrual. The member gets a lot, expiring as points earned now.

An award takes the member's lock first (the caps and the sign-in rule are counted under it),
then its points from the budget by one checked UPDATE of the campaign's row, so parallel awards
never spend more than the budget. A partner awards from its own campaigns and from the
coalition's, never from another partner's (as unknown as a missing one)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from clearinghouse import clock, ledger
from clearinghouse.config import get_settings
from clearinghouse.database import Tx
from clearinghouse.errors import Conflict, InvalidRequest, NotFound
from clearinghouse.ids import new_id
from clearinghouse.members.service import linked_member
from clearinghouse.numbers import fen_half_even
from clearinghouse.points import events, lots, wallet
from clearinghouse.points.operation import within_issuance_limit
from clearinghouse.rewards.campaign_tables import AWARD_REASONS
from clearinghouse.rules.policy import rule_set_at
from clearinghouse.settleable import Settleable
from partners import rates
from partners.directory import get_partner
from partners.limits import issuance_legs


class CampaignNotFound(NotFound):
    code = "campaign_not_found"
    title = "Unknown campaign"


class CampaignNotRunning(Conflict):
    code = "campaign_not_running"
    title = "The campaign is not running"


class BudgetSpent(Conflict):
    code = "campaign_budget_spent"
    title = "The campaign's budget is spent"


class CapReached(Conflict):
    code = "campaign_cap_reached"
    title = "The member's cap for the campaign is reached"


class AlreadySignedIn(Conflict):
    code = "already_signed_in"
    title = "The member signed in today already"


@dataclass(frozen=True)
class CampaignSpec:
    """What a funder says of a new campaign."""

    name: str
    budget_points: int
    per_member_cap: int
    daily_cap: int
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class Campaign:
    id: str
    funder_partner_id: str | None
    """None: the coalition funds it."""
    name: str
    budget_points: int
    remaining_points: int
    per_member_cap: int
    daily_cap: int
    starts_at: datetime
    ends_at: datetime
    created_at: datetime

    def running_at(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at


@dataclass(frozen=True)
class AwardRequest:
    """What a partner asks to award; `reference` is its own id of the award."""

    campaign_id: str
    member_id: str
    points: int
    reason: str
    reference: str


@dataclass(frozen=True)
class Award:
    id: int
    campaign_id: str
    funder_partner_id: str | None
    partner_id: str
    member_id: str
    points: int
    reason: str
    reference: str
    entry_id: int
    business_date: date
    created_at: datetime
    lot_expires_at: datetime


Built = TypeVar("Built", Campaign, Award)


def _built(cls: type[Built], row: Any) -> Built:
    values = row._asdict()
    return cls(**{f.name: values[f.name] for f in fields(cls)})


def create_campaign(
    db: Session | Tx, funder_partner_id: str | None, spec: CampaignSpec
) -> Campaign:
    """A new campaign funded by the partner (by the coalition for None), its budget whole."""
    tx = Tx.of(db)
    if funder_partner_id is not None:
        get_partner(tx, funder_partner_id)
    name = spec.name.strip()
    if not name:
        raise InvalidRequest("a campaign has a name")
    if min(spec.budget_points, spec.per_member_cap, spec.daily_cap) <= 0:
        raise InvalidRequest("the budget and the caps are at least 1 point")
    if spec.starts_at.tzinfo is None or spec.ends_at.tzinfo is None:
        raise InvalidRequest("starts_at and ends_at carry a time zone offset")
    if spec.ends_at <= max(spec.starts_at, clock.now()):
        raise InvalidRequest("ends_at must be after starts_at and in the future")
    row = tx.one(
        "INSERT INTO campaigns (id, funder_partner_id, name, budget_points, remaining_points,"
        " per_member_cap, daily_cap, starts_at, ends_at, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
        (
            new_id("C", 12),
            funder_partner_id,
            name,
            spec.budget_points,
            spec.budget_points,
            spec.per_member_cap,
            spec.daily_cap,
            spec.starts_at,
            spec.ends_at,
            clock.now(),
        ),
    )
    return _built(Campaign, row)


_VISIBLE = (
    "(%(partner)s::text IS NULL OR c.funder_partner_id IS NULL"
    " OR c.funder_partner_id = %(partner)s)"
)


def get_campaign(db: Session | Tx, campaign_id: str, partner_id: str | None = None) -> Campaign:
    """The campaign, as the partner sees it: its own or the coalition's (any, for None)."""
    row = Tx.of(db).first(
        "SELECT * FROM campaigns c WHERE c.id = %(id)s AND " + _VISIBLE,
        {"id": campaign_id, "partner": partner_id},
    )
    if row is None:
        raise CampaignNotFound(f"no campaign {campaign_id}")
    return _built(Campaign, row)


def campaigns_for(db: Session | Tx, partner_id: str | None) -> list[Campaign]:
    """The campaigns the partner may award from (every campaign, for None), newest first."""
    rows = Tx.of(db).all(
        "SELECT * FROM campaigns c WHERE " + _VISIBLE + " ORDER BY c.created_at DESC, c.id",
        {"partner": partner_id},
    )
    return [_built(Campaign, row) for row in rows]


_AWARD = (
    "SELECT a.*, c.funder_partner_id, l.expires_at AS lot_expires_at FROM campaign_awards a"
    " JOIN campaigns c ON c.id = a.campaign_id JOIN point_lots l ON l.entry_id = a.entry_id"
    " WHERE a.campaign_id = %s AND a.partner_id = %s AND a.reference = %s"
)


def _earlier(tx: Tx, partner_id: str, request: AwardRequest) -> Award | None:
    """The award made before with the request's reference: the answer again, if it asked for
    the same."""
    row = tx.first(_AWARD, (request.campaign_id, partner_id, request.reference))
    if row is None:
        return None
    earlier = _built(Award, row)
    asked = (request.member_id, request.points, request.reason)
    if (earlier.member_id, earlier.points, earlier.reason) != asked:
        raise Conflict(f"reference {request.reference} was used for an award of other details")
    return earlier


def _within_caps(tx: Tx, campaign: Campaign, request: AwardRequest, on: date) -> None:
    """Under the member's lock: a sign-in once a business day, and the member's awards from
    the campaign, this one included, within its caps."""
    given = tx.one(
        "SELECT coalesce(sum(points), 0) AS total,"
        " coalesce(sum(points) FILTER (WHERE business_date = %s), 0) AS today,"
        " count(*) FILTER (WHERE business_date = %s AND reason = 'sign_in') AS signed_in"
        " FROM campaign_awards WHERE campaign_id = %s AND member_id = %s",
        (on, on, campaign.id, request.member_id),
    )
    if request.reason == "sign_in" and given.signed_in:
        raise AlreadySignedIn(
            f"member {request.member_id} signed in for campaign {campaign.id} on {on} already"
        )
    if given.today + request.points > campaign.daily_cap:
        raise CapReached(f"a member gets at most {campaign.daily_cap} points a day from it")
    if given.total + request.points > campaign.per_member_cap:
        raise CapReached(f"a member gets at most {campaign.per_member_cap} points from it")


def award(db: Session | Tx, partner_id: str, request: AwardRequest) -> Award:
    """Award engagement points from a campaign to a member linked to the partner. The same
    reference again answers the first award; with other details it is refused."""
    tx = Tx.of(db)
    if request.reason not in AWARD_REASONS:
        raise InvalidRequest(f"reason is one of {', '.join(AWARD_REASONS)}")
    if request.points <= 0:
        raise InvalidRequest("an award is at least 1 point")
    earlier = _earlier(tx, partner_id, request)
    if earlier is not None:
        return earlier
    campaign = get_campaign(tx, request.campaign_id, partner_id)
    linked_member(tx, partner_id, request.member_id)
    now = clock.now()
    if not campaign.running_at(now):
        raise CampaignNotRunning(
            f"campaign {campaign.id} runs from {campaign.starts_at.isoformat()}"
            f" until {campaign.ends_at.isoformat()}"
        )
    wallet.lock_member(tx.session, request.member_id)
    # Under the member's lock: an award of the same reference that committed meanwhile.
    earlier = _earlier(tx, partner_id, request)
    if earlier is not None:
        return earlier
    zone = get_settings().zone
    on = clock.today(zone)
    _within_caps(tx, campaign, request, on)
    taken = tx.first(
        "UPDATE campaigns SET remaining_points = remaining_points - %s"
        " WHERE id = %s AND remaining_points >= %s RETURNING remaining_points",
        (request.points, campaign.id, request.points),
    )
    if taken is None:
        raise BudgetSpent(f"campaign {campaign.id} has fewer than {request.points} points left")
    entry_id = _post(tx, partner_id, campaign, request, now)
    expires_at = lots.expiry_for(now, rule_set_at(tx, now).policy.expiry_months, zone)
    funder = campaign.funder_partner_id
    lots.create_lot(
        tx,
        member_id=request.member_id,
        source="engagement",
        issuer_partner_id=funder,
        entry_id=entry_id,
        earned_at=now,
        expires_at=expires_at,
        amount=request.points,
    )
    tx.execute(
        "INSERT INTO campaign_awards (campaign_id, partner_id, member_id, points, reason,"
        " reference, entry_id, business_date, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            campaign.id,
            partner_id,
            request.member_id,
            request.points,
            request.reason,
            request.reference,
            entry_id,
            on,
            now,
        ),
    )
    events.earned(
        tx,
        member_id=request.member_id,
        partner_id=funder,
        reason="engagement",
        points=request.points,
        debt_repaid=0,
        pending=False,
        entry_id=entry_id,
        lot_expires_at=expires_at,
        occurred_at=now,
    )
    awarded = _earlier(tx, partner_id, request)
    assert awarded is not None  # written above
    return awarded


def _post(tx: Tx, partner_id: str, campaign: Campaign, request: AwardRequest, now: datetime) -> int:
    """The award's `engagement` entry: from the coalition's bonus account, or issued by the
    funding partner at its issue price, against its issuance limit."""
    funder = campaign.funder_partner_id
    metadata: dict[str, object] = {
        "reason": request.reason,
        "campaign_id": campaign.id,
        "member_id": request.member_id,
        "awarded_by": partner_id,
        "reference": request.reference,
    }
    source = "coalition:bonus"
    legs: list[ledger.Posting] = []
    if funder is not None:
        source = str(ledger.Address.partner(funder, "issued"))
        issue_price = rates.rates_at(tx, funder, now).issue_price
        value = fen_half_even(issue_price * request.points)
        metadata |= Settleable(funder, value).to_metadata()
        if value:
            legs = issuance_legs(funder, value)
    entry = ledger.Entry(
        kind="engagement",
        origin=f"partner:{partner_id}",
        idempotency_key=f"campaign:{campaign.id}:{partner_id}:{request.reference}",
        postings=[
            ledger.Posting(source, -request.points),
            ledger.Posting(wallet.available_account(request.member_id), request.points),
            *legs,
        ],
        occurred_at=now,
        metadata=metadata,
    )
    with within_issuance_limit(funder, f"the award of {request.points} points"):
        return ledger.post(tx, entry).id
