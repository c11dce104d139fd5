"""Referral bonus (seed 001): a partner registers that member A invited member B; when B
completes a first purchase anywhere in the coalition, A receives the configured bonus, once,
funded by the configured partner or the coalition."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from clearinghouse import clock, ledger
from clearinghouse.config import get_settings
from clearinghouse.database import Tx
from clearinghouse.errors import Conflict, InvalidRequest
from clearinghouse.fraud import service as fraud
from clearinghouse.members.service import linked_member
from clearinghouse.numbers import money
from clearinghouse.points import events, lots, wallet
from clearinghouse.points.operation import IssuanceLimitExceeded, within_issuance_limit
from clearinghouse.points.tables import purchases, referrals
from clearinghouse.rules.policy import RuleSet
from clearinghouse.settleable import Settleable
from partners import rates
from partners.limits import issuance_legs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Referral:
    inviter_member_id: str
    invitee_member_id: str
    registered_at: datetime
    bonus_entry_id: int | None


def register_referral(
    session: Session, partner_id: str, inviter_member_id: str, invitee_member_id: str
) -> Referral:
    linked_member(session, partner_id, inviter_member_id)
    linked_member(session, partner_id, invitee_member_id)
    if inviter_member_id == invitee_member_id:
        raise InvalidRequest("a member cannot invite themself")
    wallet.lock_member(session, invitee_member_id)
    bought = session.execute(
        select(func.count()).where(purchases.c.member_id == invitee_member_id)
    ).scalar_one()
    if bought:
        raise Conflict("the invitee has already made a purchase: only new members are referred")
    reverse = session.execute(
        select(referrals.c.invitee_member_id).where(
            referrals.c.invitee_member_id == inviter_member_id,
            referrals.c.inviter_member_id == invitee_member_id,
        )
    ).first()
    if reverse is not None:
        raise Conflict("the invitee invited the inviter: referrals cannot go both ways")
    row = session.execute(
        insert(referrals)
        .values(
            invitee_member_id=invitee_member_id,
            inviter_member_id=inviter_member_id,
            partner_id=partner_id,
        )
        .on_conflict_do_nothing()
        .returning(referrals)
    ).first()
    if row is None:
        existing = session.execute(
            select(referrals).where(referrals.c.invitee_member_id == invitee_member_id)
        ).one()
        if existing.inviter_member_id != inviter_member_id:
            raise Conflict("the invitee was already referred by another member")
        row = existing
    return Referral(
        row.inviter_member_id, row.invitee_member_id, row.registered_at, row.bonus_entry_id
    )


def pay_referral_bonus(session: Session, member_id: str, rules: RuleSet) -> int | None:
    """After `member_id`'s purchase: pay the inviter's bonus if this was the first purchase.
    Returns the bonus entry id when one was posted."""
    referral = session.execute(
        select(referrals)
        .where(referrals.c.invitee_member_id == member_id, referrals.c.bonus_entry_id.is_(None))
        .with_for_update(key_share=True)
    ).first()
    if referral is None:
        return None
    held_back = fraud.held_back_accruals()
    count = session.execute(
        select(func.count()).where(
            purchases.c.member_id == member_id,
            purchases.c.points > 0,
            purchases.c.entry_id.not_in(held_back),
        )
    ).scalar_one()
    bonus = rules.policy.referral_bonus_points
    if count != 1 or bonus == 0:
        return None
    inviter = wallet.lock_member(session, referral.inviter_member_id).id
    funder = rules.policy.referral_funder
    # The partner that issues the bonus, or None when the coalition does.
    issuer = None if funder == "coalition" else funder
    source = "coalition:bonus" if issuer is None else str(ledger.Address.partner(issuer, "issued"))
    now = clock.now()
    metadata: dict[str, object] = {
        "invitee": member_id,
        "inviter": inviter,
        "rules_version": rules.version,
    }
    legs = [
        ledger.Posting(source, -bonus),
        ledger.Posting(wallet.available_account(inviter), bonus),
    ]
    if issuer is not None:
        # A partner that pays for referrals issues the bonus: it is settled like an accrual, and
        # its issue value moves from the partner's headroom to its exposure, within its limit.
        value = money(rates.rates_at(session, issuer, now).issue_price * bonus)
        metadata |= Settleable(issuer, value).to_metadata()
        legs += [leg for leg in issuance_legs(issuer, value) if leg.amount]
    entry = ledger.Entry(
        kind="referral_bonus",
        origin="coalition",
        idempotency_key=f"referral:{member_id}",
        postings=legs,
        occurred_at=now,
        metadata=metadata,
    )
    tx = Tx.of(session)
    # The invitee's purchase stands whatever becomes of the bonus: a bonus beyond its funder's
    # limit is refused alone, back to this savepoint, and the referral stays unpaid.
    tx.execute("SAVEPOINT referral_bonus")
    try:
        with within_issuance_limit(issuer, f"the referral bonus of {bonus} points"):
            posted = ledger.post(tx, entry)
    except IssuanceLimitExceeded as refused:
        tx.execute("ROLLBACK TO SAVEPOINT referral_bonus")
        log.warning(
            "referral bonus refused",
            extra={"invitee": member_id, "inviter": inviter, "reason": refused.detail},
        )
        return None
    tx.execute("RELEASE SAVEPOINT referral_bonus")
    expires_at = lots.expiry_for(now, rules.policy.expiry_months, get_settings().zone)
    lots.create_lot(
        session,
        member_id=inviter,
        source="referral",
        issuer_partner_id=issuer,
        entry_id=posted.id,
        earned_at=now,
        expires_at=expires_at,
        amount=bonus,
    )
    session.execute(
        update(referrals)
        .where(referrals.c.invitee_member_id == member_id)
        .values(bonus_entry_id=posted.id)
    )
    events.earned(
        session,
        member_id=inviter,
        partner_id=issuer,
        reason="referral_bonus",
        points=bonus,
        debt_repaid=0,
        pending=False,
        entry_id=posted.id,
        lot_expires_at=expires_at,
        occurred_at=now,
    )
    return posted.id
