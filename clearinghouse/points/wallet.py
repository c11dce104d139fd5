"""A member's points wallet: the lock that orders a member's writes, the accounts, the tier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from clearinghouse.database import Tx
from clearinghouse.fraud.rules import GATHERING_PARAMETERS, Gathering, History
from clearinghouse.members.service import (
    MemberNotFound,
    MemberRow,
    available_account,
    debt_account,
    held_account,
    lock_member,
    member_accounts,
    pending_account,
)
from clearinghouse.points.tables import tier_changes
from partners.directory import Store


@dataclass(frozen=True)
class Locked:
    """A member locked for an operation the partner asked for."""

    replay_entry_id: int | None
    """The entry an earlier attempt with the same key wrote, if one did."""
    risk: dict[str, Any] | None
    """The risk rules' inputs (none on a replay)."""

    def history(self, store: Store | None) -> History:
        """What the risk rules know of the attempt's past, as the lock gathered it."""
        assert self.risk is not None  # gathered: this is no replay
        return History.of(store, self.risk)


_OPERATION_CONTEXT = "SELECT * FROM operation_context(%s, %s, %s, %s, " + GATHERING_PARAMETERS + ")"


def lock_for_operation(
    tx: Tx, partner_id: str, member_id: str, origin: str, entry_key: str, gathering: Gathering
) -> Locked:
    """In one statement: check the partner may see the member (else MemberNotFound), take the
    member's lock, look for the entry of an earlier attempt and read the risk rules' inputs."""
    row = tx.one(
        _OPERATION_CONTEXT, (partner_id, member_id, origin, entry_key, *gathering.params())
    )
    if not row.linked:
        raise MemberNotFound(f"no member {member_id}")
    return Locked(row.replay_entry_id, row.risk)


def current_tier(session: Session, member_id: str) -> str:
    latest = session.execute(
        select(tier_changes.c.to_tier)
        .where(tier_changes.c.member_id == member_id)
        .order_by(tier_changes.c.changed_at.desc(), tier_changes.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return latest or "normal"


__all__ = [
    "MemberRow",
    "available_account",
    "current_tier",
    "debt_account",
    "held_account",
    "Locked",
    "lock_for_operation",
    "lock_member",
    "member_accounts",
    "pending_account",
]
