"""A member's points wallet: the lock that orders a member's writes, the accounts, and tiers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clearinghouse.members.service import (
    MemberNotFound,
    available_account,
    debt_account,
    held_account,
    member_accounts,
    pending_account,
)
from clearinghouse.members.tables import members
from clearinghouse.points.policy import RuleSet
from clearinghouse.points.tables import purchases, tier_changes
from clearinghouse.rules.tiers import TierStatus, tier_for


@dataclass(frozen=True)
class MemberRow:
    id: str
    birth_month: int | None


def lock_member(session: Session, member_id: str) -> MemberRow:
    """Every write to a member's points takes this lock first, so that a member's lots, holds
    and balance rows are always locked in the same order."""
    row = session.execute(
        select(members.c.id, members.c.birth_month)
        .where(members.c.id == member_id)
        .with_for_update(key_share=True)  # FOR NO KEY UPDATE: foreign keys to it still check
    ).first()
    if row is None:
        raise MemberNotFound(f"no member {member_id}")
    return MemberRow(row.id, row.birth_month)


def current_tier(session: Session, member_id: str) -> str:
    latest = session.execute(
        select(tier_changes.c.to_tier)
        .where(tier_changes.c.member_id == member_id)
        .order_by(tier_changes.c.changed_at.desc(), tier_changes.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return latest or "normal"


def qualifying_points(session: Session, member_id: str, at: datetime, window_days: int) -> int:
    """Points earned coalition-wide in the window before `at`, net of refunds."""
    total = session.execute(
        select(func.coalesce(func.sum(purchases.c.points - purchases.c.refunded_points), 0)).where(
            purchases.c.member_id == member_id,
            purchases.c.occurred_at > at - timedelta(days=window_days),
            purchases.c.occurred_at <= at,
        )
    ).scalar_one()
    return int(total)


def tier_status(session: Session, member_id: str, at: datetime, rules: RuleSet) -> TierStatus:
    points = qualifying_points(session, member_id, at, rules.policy.tier_window_days)
    return tier_for(points, rules.earning)


def update_tier(session: Session, member_id: str, at: datetime, rules: RuleSet) -> TierStatus:
    """Record a tier change when the member's qualifying points moved it."""
    status = tier_status(session, member_id, at, rules)
    before = current_tier(session, member_id)
    if status.tier != before:
        session.execute(
            tier_changes.insert().values(
                member_id=member_id,
                from_tier=before,
                to_tier=status.tier,
                qualifying_points=status.qualifying_points,
                rules_version=rules.version,
            )
        )
    return status


__all__ = [
    "MemberRow",
    "available_account",
    "current_tier",
    "debt_account",
    "held_account",
    "lock_member",
    "member_accounts",
    "pending_account",
    "qualifying_points",
    "tier_status",
    "update_tier",
]
