"""One coalition member id across partners; each partner links its own customer reference to
it and sees only the members linked to it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from clearinghouse import ledger
from clearinghouse.errors import Conflict, InvalidRequest, NotFound
from clearinghouse.members.tables import member_links, members

_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


class MemberNotFound(NotFound):
    code = "member_not_found"
    title = "Unknown member"


@dataclass(frozen=True)
class MemberLink:
    partner_id: str
    customer_ref: str
    member_id: str
    linked_at: datetime


def _link(row: Row[tuple[object, ...]]) -> MemberLink:
    return MemberLink(**row._asdict())


def available_account(member_id: str) -> str:
    return str(ledger.Address.member(member_id, "available"))


def held_account(member_id: str) -> str:
    """Points reserved by open redemption holds."""
    return str(ledger.Address.member(member_id, "held"))


def debt_account(member_id: str) -> str:
    """Points a member owes (a negative balance) after a refund of points already spent."""
    return str(ledger.Address.member(member_id, "debt"))


def pending_account(member_id: str) -> str:
    """Points earned but held back for a risk review: not spendable."""
    return str(ledger.Address.member(member_id, "pending"))


def member_accounts(member_id: str) -> list[ledger.AccountSpec]:
    return [
        ledger.AccountSpec(available_account(member_id)),
        ledger.AccountSpec(held_account(member_id)),
        ledger.AccountSpec(pending_account(member_id)),
        ledger.AccountSpec(debt_account(member_id), non_negative=False),
    ]


def new_member_id() -> str:
    return "M" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def create_member(session: Session, birth_month: int | None = None) -> str:
    """A new coalition member with its points account; returns the member id."""
    member_id = new_member_id()
    session.execute(members.insert().values(id=member_id, birth_month=birth_month))
    ledger.open_accounts(session, member_accounts(member_id))
    return member_id


def link_member(
    session: Session,
    partner_id: str,
    customer_ref: str,
    member_id: str | None = None,
    birth_month: int | None = None,
) -> tuple[MemberLink, bool]:
    """Link the partner's customer to a coalition member: the one given (a member who showed
    their coalition card), or a new one. Linking the same reference again returns the first
    link. Returns the link and whether it is new."""
    if not 1 <= len(customer_ref) <= 100:
        raise InvalidRequest("customer_ref has 1 to 100 characters")
    # Two requests linking the same reference at once must not both create a member.
    session.execute(
        select(func.pg_advisory_xact_lock(func.hashtext(f"{partner_id}:{customer_ref}")))
    )
    existing = session.execute(
        select(*member_links.c).where(
            member_links.c.partner_id == partner_id, member_links.c.customer_ref == customer_ref
        )
    ).first()
    if existing is not None:
        link = _link(existing)
        if member_id is not None and member_id != link.member_id:
            raise Conflict(f"customer {customer_ref} is already linked to another member")
        return link, False
    if member_id is None:
        member_id = create_member(session, birth_month)
    elif session.execute(select(members.c.id).where(members.c.id == member_id)).first() is None:
        raise MemberNotFound(f"no member {member_id}")
    row = session.execute(
        insert(member_links)
        .values(partner_id=partner_id, customer_ref=customer_ref, member_id=member_id)
        .on_conflict_do_nothing()
        .returning(*member_links.c)
    ).first()
    if row is None:
        raise Conflict(f"member {member_id} is already linked to another of your customers")
    if birth_month is not None:
        session.execute(
            update(members)
            .where(members.c.id == member_id, members.c.birth_month.is_(None))
            .values(birth_month=birth_month)
        )
    return _link(row), True


def linked_member(session: Session, partner_id: str, member_id: str) -> MemberLink:
    """The partner's link to the member; a member not linked to it is as unknown as a missing
    one."""
    row = session.execute(
        select(*member_links.c).where(
            member_links.c.partner_id == partner_id, member_links.c.member_id == member_id
        )
    ).first()
    if row is None:
        raise MemberNotFound(f"no member {member_id}")
    return _link(row)


def available_points(session: Session, member_id: str) -> int:
    return ledger.balance(session, available_account(member_id))
