"""One coalition member id across partners; each partner links its own customer reference to
it and sees only the members linked to it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Subquery, select
from sqlalchemy.orm import Session

from clearinghouse import ledger
from clearinghouse.database import Tx
from clearinghouse.errors import Conflict, InvalidRequest, NotFound
from clearinghouse.ids import new_id
from clearinghouse.members.tables import member_links, members


class MemberNotFound(NotFound):
    code = "member_not_found"
    title = "Unknown member"


@dataclass(frozen=True)
class MemberLink:
    partner_id: str
    customer_ref: str
    member_id: str
    linked_at: datetime


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


def partner_links(partner_id: str) -> Subquery:
    """The members linked to the partner (member_id, customer_ref), for another domain's
    query to join."""
    return (
        select(member_links.c.member_id, member_links.c.customer_ref)
        .where(member_links.c.partner_id == partner_id)
        .subquery("partner_links")
    )


def new_member_id() -> str:
    return new_id("M", 12)


def create_member(session: Session, birth_month: int | None = None) -> str:
    """A new coalition member with its points account; returns the member id."""
    member_id = new_member_id()
    session.execute(members.insert().values(id=member_id, birth_month=birth_month))
    ledger.open_accounts(session, member_accounts(member_id))
    return member_id


_LINK = "SELECT * FROM link_member(%s, %s, %s, %s::smallint, %s, " + ledger.ACCOUNT_PARAMETERS + ")"


def link_member(
    db: Session | Tx,
    partner_id: str,
    customer_ref: str,
    member_id: str | None = None,
    birth_month: int | None = None,
) -> tuple[MemberLink, bool]:
    """Link the partner's customer to a coalition member: the one given (a member who showed
    their coalition card), or a new one. Linking the same reference again returns the first
    link. Returns the link and whether it is new. One statement (the SQL function link_member),
    which takes the customer's reference one request at a time."""
    if not 1 <= len(customer_ref) <= 100:
        raise InvalidRequest("customer_ref has 1 to 100 characters")
    new_id = new_member_id() if member_id is None else None
    accounts = ledger.opening_arguments(member_accounts(new_id) if new_id else [])
    row = Tx.of(db).one(
        _LINK, (partner_id, customer_ref, member_id, birth_month, new_id, *accounts)
    )
    match row.outcome:
        case "linked_elsewhere":
            raise Conflict(f"customer {customer_ref} is already linked to another member")
        case "unknown_member":
            raise MemberNotFound(f"no member {member_id}")
        case "member_taken":
            raise Conflict(f"member {member_id} is already linked to another of your customers")
    link = MemberLink(partner_id, row.customer_ref, row.member_id, row.linked_at)
    return link, row.outcome == "linked"


def linked_member(db: Session | Tx, partner_id: str, member_id: str) -> MemberLink:
    """The partner's link to the member; a member not linked to it is as unknown as a missing
    one."""
    row = Tx.of(db).first(
        "SELECT partner_id, customer_ref, member_id, linked_at FROM member_links"
        " WHERE partner_id = %s AND member_id = %s",
        (partner_id, member_id),
    )
    if row is None:
        raise MemberNotFound(f"no member {member_id}")
    return MemberLink(**row._asdict())


@dataclass(frozen=True)
class MemberView:
    """What a partner sees of a linked member's points."""

    customer_ref: str
    available: int
    held: int
    debt: int
    """Owed points, as a positive number."""
    qualifying_points: int
    """Points earned coalition-wide over the tier window, net of refunds."""


def member_view(
    db: Session | Tx, partner_id: str, member_id: str, window_start: datetime, at: datetime
) -> MemberView:
    """A linked member's balances and qualifying points over (window_start, at], read in one
    statement."""
    available, held, debt = (
        available_account(member_id),
        held_account(member_id),
        debt_account(member_id),
    )
    row = Tx.of(db).first(
        """
        SELECT l.customer_ref,
               coalesce(sum(b.balance) FILTER (WHERE a.address = %(available)s), 0) AS available,
               coalesce(sum(b.balance) FILTER (WHERE a.address = %(held)s), 0) AS held,
               coalesce(sum(b.balance) FILTER (WHERE a.address = %(debt)s), 0) AS debt,
               (SELECT coalesce(sum(p.points - p.refunded_points), 0) FROM purchases p
                 WHERE p.member_id = l.member_id
                   AND p.occurred_at > %(start)s AND p.occurred_at <= %(at)s) AS qualifying
          FROM member_links l
          JOIN accounts a ON a.address IN (%(available)s, %(held)s, %(debt)s)
          JOIN account_balances b ON b.account_id = a.id
         WHERE l.partner_id = %(partner)s AND l.member_id = %(member)s
         GROUP BY l.customer_ref, l.member_id
        """,
        {
            "available": available,
            "held": held,
            "debt": debt,
            "start": window_start,
            "at": at,
            "partner": partner_id,
            "member": member_id,
        },
    )
    if row is None:
        raise MemberNotFound(f"no member {member_id}")
    return MemberView(
        row.customer_ref, int(row.available), int(row.held), -int(row.debt), int(row.qualifying)
    )
