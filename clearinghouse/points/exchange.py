"""Points exchange (异业 interoperability): a member converts a partner programme's own points
into coalition points and back, at the programme's effective-dated exchange rate (coalition
points per programme point), with the fee, minimum and maximum of the points policy.

In: the programme hands N of its points to the coalition (asset of the programme) and issues
floor(N x rate) coalition points, like an accrual (against its issuance limit, creating a lot);
the fee, rounded half-even, goes to `coalition:fees`, the rest to the member.
Out: the member gives M coalition points; the fee (half-even) goes to `coalition:fees`; the
programme honours the rest like a redemption, paying out K = floor(rest / rate) of its points;
the coalition points that do not make up a whole programme point go to `coalition:rounding`.
Each asset balances within the entry. Going in and out again never yields more than went in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from clearinghouse import clock, ledger, numbers
from clearinghouse.config import get_settings
from clearinghouse.database import Tx
from clearinghouse.errors import Conflict, InvalidRequest
from clearinghouse.fraud import service as fraud
from clearinghouse.ledger.tables import journal_entries
from clearinghouse.points import lots, operation, wallet
from clearinghouse.rules.policy import ExchangeTerms, PointsPolicy, rule_set_at
from clearinghouse.settleable import Settleable
from partners import directory, rates
from partners.limits import issuance_legs
from partners.rates import Rates

FEES = "coalition:fees"
ROUNDING = "coalition:rounding"

Direction = Literal["in", "out"]


@dataclass(frozen=True)
class Exchange:
    direction: Direction
    member_id: str
    programme_asset: str
    programme_points: int
    coalition_points: int
    fee_points: int
    rounding_points: int
    rate: Decimal
    rates_version: int
    entry_id: int


class ExchangeArchived(Conflict):
    """A repeated exchange whose first entry has left the database with its month."""

    code = "exchange_archived"
    title = "Exchange archived"


def exchange(
    db: Session | Tx,
    partner_id: str,
    member_id: str,
    direction: Direction,
    points: int,
    *,
    key: str,
) -> Exchange:
    """`points` are programme points going in, or coalition points going out. Three statements:
    the member's lock with what the risk rules read (operation_context), the entry, its lot."""
    tx = Tx.of(db)
    partner = directory.get_partner(tx, partner_id)
    if partner.programme_asset is None:
        raise InvalidRequest(f"partner {partner_id} is not a partner programme")
    return operation.run(
        tx,
        _ExchangeRequest(partner_id, partner.programme_asset, member_id, direction, points, key),
    )


@dataclass(frozen=True)
class _ExchangeRequest:
    """An exchange asked for, as `operation.run` takes it."""

    partner_id: str
    asset: str
    """The programme's points."""
    member_id: str
    direction: Direction
    points: int
    key: str
    now: datetime = field(default_factory=clock.now)

    @property
    def entry_key(self) -> str:
        return f"exchange:{self.key}"

    @property
    def attempt(self) -> fraud.Attempt:
        return fraud.Attempt(
            operation="exchange",
            partner_id=self.partner_id,
            member_id=self.member_id,
            occurred_at=self.now,
            points=self.points,
            direction=self.direction,
        )

    def lock(self, tx: Tx, screening: fraud.Screening) -> _ExchangeTerms:
        """The member locked (operation_context), then the terms the exchange must meet,
        retried or not."""
        locked = wallet.lock_for_operation(
            tx,
            self.partner_id,
            self.member_id,
            f"partner:{self.partner_id}",
            self.entry_key,
            screening.gathering(self.attempt, None),
        )
        policy = rule_set_at(tx, self.now).policy
        terms = policy.exchange_terms(self.partner_id)
        if not terms.min_points <= self.points <= terms.max_points:
            raise InvalidRequest(
                f"an exchange moves {terms.min_points} to {terms.max_points} points at a time"
            )
        partner_rates = rates.rates_at(tx, self.partner_id, self.now)
        rate = partner_rates.exchange_rate
        assert rate is not None  # a programme's rates always carry one
        return _ExchangeTerms(self, locked, policy, terms, partner_rates, rate)

    def replay(self, tx: Tx, terms: _ExchangeTerms) -> Exchange | None:
        if terms.locked.replay_entry_id is None:
            return None
        # A retry whose first answer was lost: the first exchange, whatever the clock says now.
        return _recorded(
            tx.session, terms.locked.replay_entry_id, self.direction, self.member_id, self.asset
        )

    def plan(self, tx: Tx, terms: _ExchangeTerms) -> _ExchangeTerms:
        return terms


@dataclass(frozen=True)
class _ExchangeTerms:
    """An exchange's terms, read under the member's lock: its plan, as they are all it needs.
    Under review an exchange still goes ahead; the case asks a person to look at the member."""

    request: _ExchangeRequest
    locked: wallet.Locked
    policy: PointsPolicy
    terms: ExchangeTerms
    rates: Rates
    rate: Decimal
    """The rates' exchange rate."""

    @property
    def attempt(self) -> fraud.Attempt:
        return self.request.attempt

    @property
    def history(self) -> fraud.History:
        return self.locked.history(None)

    def post(self, tx: Tx, decision: fraud.Decision) -> operation.Posted[Exchange]:
        request, partner_rates, rate = self.request, self.rates, self.rate
        partner_id, member_id, points = request.partner_id, request.member_id, request.points
        asset = request.asset
        member = wallet.available_account(member_id)
        programme = directory.programme_account(partner_id)
        held = directory.exchange_account(asset)
        if request.direction == "in":
            gross = numbers.exchange_in_points(points, rate)
            fee = numbers.exchange_fee(gross, self.terms.fee_percent)
            net = gross - fee
            if net <= 0:
                raise InvalidRequest("too few programme points to make one coalition point")
            value = numbers.fen_half_even(partner_rates.issue_price * gross)
            legs = [
                ledger.Posting(programme, -points, asset),
                ledger.Posting(held, points, asset),
                ledger.Posting(str(ledger.Address.partner(partner_id, "issued")), -gross),
                ledger.Posting(member, net),
                ledger.Posting(FEES, fee),
                *issuance_legs(partner_id, value),
            ]
            programme_points, coalition_points, rounding = points, net, 0
        else:
            fee = numbers.exchange_fee(points, self.terms.fee_percent)
            payout = numbers.exchange_out_payout(points - fee, rate)
            if payout <= 0:
                raise InvalidRequest("too few coalition points to make one programme point")
            used = numbers.exchange_out_points_used(payout, rate)
            rounding = points - fee - used
            legs = [
                ledger.Posting(member, -points),
                ledger.Posting(FEES, fee),
                ledger.Posting(str(ledger.Address.partner(partner_id, "redeemed")), used),
                ledger.Posting(ROUNDING, rounding),
                ledger.Posting(held, -payout, asset),
                ledger.Posting(programme, payout, asset),
            ]
            programme_points, coalition_points = payout, points
            value = numbers.fen_half_even(partner_rates.redemption_value * used)
        posted = ledger.post(
            tx,
            ledger.Entry(
                kind=f"exchange_{request.direction}",
                origin=f"partner:{partner_id}",
                idempotency_key=request.entry_key,
                postings=[leg for leg in legs if leg.amount],
                occurred_at=request.now,
                metadata={
                    **Settleable(partner_id, value).to_metadata(),
                    "member_id": member_id,
                    "rate": rate,
                    "rates_version": partner_rates.version,
                    "fee_percent": self.terms.fee_percent,
                },
            ),
        )
        if request.direction == "in":
            lots.create_lot(
                tx,
                member_id=member_id,
                source="exchange",
                issuer_partner_id=partner_id,
                entry_id=posted.id,
                earned_at=request.now,
                expires_at=lots.expiry_for(
                    request.now, self.policy.expiry_months, get_settings().zone
                ),
                amount=coalition_points,
            )
        else:
            lots.consume(tx, member_id, points, posted.id)
        answer = Exchange(
            direction=request.direction,
            member_id=member_id,
            programme_asset=asset,
            programme_points=programme_points,
            coalition_points=coalition_points,
            fee_points=fee,
            rounding_points=rounding,
            rate=rate,
            rates_version=partner_rates.version,
            entry_id=posted.id,
        )
        return operation.Posted(lambda _case_id: answer, entry_id=posted.id)


def _recorded(
    session: Session, entry_id: int, direction: Direction, member_id: str, asset: str
) -> Exchange:
    """An exchange as its entry recorded it."""
    legs = {p.address: p.amount for p in ledger.entry_postings(session, entry_id)}
    if not legs:
        # The key stays in journal_keys when its entry's month is archived.
        raise ExchangeArchived(
            f"the exchange made with this key (entry {entry_id}) is in a month archived out of"
            " the database: its record is in that month's archive",
            entry_id=entry_id,
        )
    metadata = session.execute(
        select(journal_entries.c.metadata).where(journal_entries.c.id == entry_id)
    ).scalar_one()
    member = abs(legs[wallet.available_account(member_id)])
    programme = abs(next(a for addr, a in legs.items() if addr.endswith(":programme")))
    return Exchange(
        direction=direction,
        member_id=member_id,
        programme_asset=asset,
        programme_points=programme,
        coalition_points=member,
        fee_points=legs.get(FEES, 0),
        rounding_points=legs.get(ROUNDING, 0),
        rate=Decimal(str(metadata["rate"])),
        rates_version=int(metadata["rates_version"]),
        entry_id=entry_id,
    )
