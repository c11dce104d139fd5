"""Reading the books: balances now and as of an instant, the trial balance, account statements,
and the check that every materialised balance equals the sum of its postings."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Select,
    any_,
    bindparam,
    case,
    func,
    literal,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from clearinghouse.ledger.accounts import Address, get_account
from clearinghouse.ledger.errors import InvalidEntry
from clearinghouse.ledger.tables import (
    account_balances,
    accounts,
    archived_balances,
    journal_entries,
    journal_keys,
    journal_partitions,
    postings,
)


def archived_amount(account_id: Any) -> Any:
    """What the account's postings in archived months add up to (0 when none were archived)."""
    return func.coalesce(
        select(archived_balances.c.amount)
        .where(archived_balances.c.account_id == account_id)
        .scalar_subquery(),
        0,
    )


def _not_archived(session: Session, as_of: datetime) -> None:
    """Refuse an instant whose postings have left the database with an archived month."""
    until = session.execute(
        select(func.max(journal_partitions.c.ends_at)).where(
            journal_partitions.c.archived_at.is_not(None)
        )
    ).scalar_one()
    if until is not None and as_of < until:
        raise InvalidEntry(
            f"postings recorded before {until.isoformat()} are archived: "
            "read balances before then from the month's archive"
        )


def balance(session: Session, address: str | Address, as_of: datetime | None = None) -> int:
    """The account's balance now, or as recorded at `as_of` (postings recorded at or before it,
    with those of archived months, which must all be before it)."""
    account = get_account(session, address)
    if as_of is None:
        query = select(func.coalesce(func.sum(account_balances.c.balance), 0)).where(
            account_balances.c.account_id == account.id
        )
    else:
        _not_archived(session, as_of)
        query = select(
            archived_amount(account.id)
            + select(func.coalesce(func.sum(postings.c.amount), 0))
            .where(postings.c.account_id == account.id, postings.c.recorded_at <= as_of)
            .scalar_subquery()
        )
    return int(session.execute(query).scalar_one())


def _derived(where: Any = None) -> Select[tuple[int, int]]:
    """Each account's postings with what its archived months added (`where`: of the postings)."""
    moved = select(postings.c.account_id, postings.c.amount)
    if where is not None:
        moved = moved.where(where)
    kept = select(archived_balances.c.account_id, archived_balances.c.amount)
    both = union_all(moved, kept).subquery()
    return select(both.c.account_id, func.sum(both.c.amount).label("total")).group_by(
        both.c.account_id
    )


@dataclass(frozen=True)
class TrialBalanceLine:
    asset: str
    accounts: int
    debit: int
    credit: int

    @property
    def net(self) -> int:
        """Always zero in balanced books."""
        return self.debit - self.credit


def trial_balance(session: Session, as_of: datetime | None = None) -> list[TrialBalanceLine]:
    """Per asset: the sum of positive balances (debit) and of negative ones (credit)."""
    if as_of is None:
        per_account: Select[tuple[str, int, int]] = (
            select(
                accounts.c.asset,
                accounts.c.id,
                func.sum(account_balances.c.balance).label("balance"),
            )
            .join(account_balances, account_balances.c.account_id == accounts.c.id)
            .group_by(accounts.c.asset, accounts.c.id)
        )
    else:
        _not_archived(session, as_of)
        derived = _derived(postings.c.recorded_at <= as_of).subquery()
        per_account = select(accounts.c.asset, accounts.c.id, derived.c.total).join(
            derived, derived.c.account_id == accounts.c.id
        )
    sub = per_account.subquery()
    asset, bal = sub.c[0], sub.c[2]
    rows = session.execute(
        select(
            asset,
            func.count().filter(bal != 0),
            func.coalesce(func.sum(case((bal > 0, bal), else_=0)), 0),
            func.coalesce(func.sum(case((bal < 0, -bal), else_=0)), 0),
        )
        .group_by(asset)
        .order_by(asset)
    ).all()
    return [TrialBalanceLine(row[0], int(row[1]), int(row[2]), int(row[3])) for row in rows]


def balances_by_kind(session: Session, asset: str) -> dict[tuple[str, str], int]:
    """The balances of the asset's accounts, summed by owner type and kind: ("member", "held"),
    ("partner", "issued"), ("coalition", "breakage")..."""
    rows = session.execute(
        select(accounts.c.owner_type, accounts.c.kind, func.sum(account_balances.c.balance))
        .join(account_balances, account_balances.c.account_id == accounts.c.id)
        .where(accounts.c.asset == asset)
        .group_by(accounts.c.owner_type, accounts.c.kind)
    ).all()
    return {(owner_type, kind): int(total) for owner_type, kind, total in rows}


@dataclass(frozen=True)
class AccountBalanceLine:
    """One account of the trial balance: its balance, shown as a debit (positive) or a credit."""

    address: str
    owner_type: str
    kind: str
    asset: str
    balance: int

    @property
    def debit(self) -> int:
        return max(self.balance, 0)

    @property
    def credit(self) -> int:
        return max(-self.balance, 0)


def trial_balance_accounts(
    session: Session,
    as_of: datetime | None = None,
    *,
    after: str | None = None,
    limit: int = 100,
) -> list[AccountBalanceLine]:
    """The trial balance account by account: each account with a non-zero balance, now or as
    recorded at `as_of`, in address order, `limit` of them after the address `after` (a keyset:
    pages stay stable however many accounts there are). `trial_balance` gives the totals."""
    if as_of is None:
        summed: Select[tuple[int, int]] = select(
            account_balances.c.account_id.label("account_id"),
            func.sum(account_balances.c.balance).label("balance"),
        ).group_by(account_balances.c.account_id)
    else:
        _not_archived(session, as_of)
        summed = _derived(postings.c.recorded_at <= as_of)
    sub = summed.subquery()
    balance = sub.c[1].label("balance")
    query = (
        select(accounts.c.address, accounts.c.owner_type, accounts.c.kind, accounts.c.asset)
        .add_columns(balance)
        .join(sub, sub.c[0] == accounts.c.id)
        .where(sub.c[1] != 0)
        .order_by(accounts.c.address)
        .limit(limit)
    )
    if after is not None:
        query = query.where(accounts.c.address > after)
    return [
        AccountBalanceLine(row.address, row.owner_type, row.kind, row.asset, int(row.balance))
        for row in session.execute(query)
    ]


@dataclass(frozen=True)
class StatementLine:
    posting_id: int
    entry_id: int
    kind: str
    recorded_at: datetime
    occurred_at: datetime
    amount: int
    balance: int


@dataclass(frozen=True)
class StatementPage:
    address: str
    asset: str
    opening_balance: int
    lines: list[StatementLine]
    next_cursor: str | None


def _encode_cursor(recorded_at: datetime, posting_id: int) -> str:
    raw = f"{recorded_at.isoformat()}|{posting_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, posting_id = raw.split("|")
        recorded_at = datetime.fromisoformat(stamp)
        if recorded_at.tzinfo is None:
            raise ValueError("naive time")
        number = int(posting_id)
        if not 1 <= number <= 2**63 - 1:
            raise ValueError("posting id out of range")
        return recorded_at, number
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidEntry(f"malformed statement cursor {cursor!r}") from exc


def statement(
    session: Session, address: str | Address, *, limit: int = 100, cursor: str | None = None
) -> StatementPage:
    """The account's postings, oldest first, each with the balance after it; `next_cursor`
    fetches the page after this one."""
    if not 1 <= limit <= 1000:
        raise InvalidEntry("a statement page holds 1 to 1000 lines")
    account = get_account(session, address)
    position = tuple_(postings.c.recorded_at, postings.c.id)
    after = _decode_cursor(cursor) if cursor else None
    this_account = postings.c.account_id == account.id
    # The first page opens with what archived months left the account.
    opening_query = select(archived_amount(account.id))
    if after is not None:
        opening_query = select(
            archived_amount(account.id)
            + select(func.coalesce(func.sum(postings.c.amount), 0))
            .where(this_account, position <= tuple_(literal(after[0]), literal(after[1])))
            .scalar_subquery()
        )
    opening = int(session.execute(opening_query).scalar_one())
    # The page's postings first, in the order the account's index gives them (across the
    # month partitions) and cut at the page; then their entries, each by (id, recorded_at):
    # joined before the cut, the planner would join every posting of the account and sort.
    taken = select(postings.c.id, postings.c.entry_id, postings.c.recorded_at, postings.c.amount)
    if after is not None:
        taken = taken.where(position > tuple_(literal(after[0]), literal(after[1])))
    cut = (
        taken.where(this_account)
        .order_by(postings.c.recorded_at, postings.c.id)
        .limit(limit + 1)
        .subquery("cut")
    )
    entry = (
        select(journal_entries.c.kind, journal_entries.c.occurred_at)
        .where(
            journal_entries.c.id == cut.c.entry_id,
            journal_entries.c.recorded_at == cut.c.recorded_at,
        )
        .lateral("entry")
    )
    page = (
        select(
            cut.c.id,
            cut.c.entry_id,
            entry.c.kind,
            cut.c.recorded_at,
            entry.c.occurred_at,
            cut.c.amount,
        )
        .select_from(cut.join(entry, true()))
        .order_by(cut.c.recorded_at, cut.c.id)
    )
    rows = session.execute(page).all()
    lines: list[StatementLine] = []
    running = opening
    for row in rows[:limit]:
        running += row.amount
        lines.append(
            StatementLine(
                posting_id=row.id,
                entry_id=row.entry_id,
                kind=row.kind,
                recorded_at=row.recorded_at,
                occurred_at=row.occurred_at,
                amount=row.amount,
                balance=running,
            )
        )
    next_cursor = None
    if len(rows) > limit:
        next_cursor = _encode_cursor(lines[-1].recorded_at, lines[-1].posting_id)
    return StatementPage(account.address, account.asset, opening, lines, next_cursor)


@dataclass(frozen=True)
class BalanceMismatch:
    address: str
    materialised: int
    from_postings: int


def check_consistency(
    session: Session, account_ids: Collection[int] | None = None
) -> list[BalanceMismatch]:
    """Every account whose materialised balance differs from the sum of its postings (and of
    its archived months'); only among `account_ids` when given (each is summed through the
    postings' account index)."""
    kept_query = select(
        account_balances.c.account_id.label("account_id"),
        func.sum(account_balances.c.balance).label("total"),
    ).group_by(account_balances.c.account_id)
    derived_query = _derived()
    query = select(accounts.c.address)
    if account_ids is not None:
        wanted = bindparam("account_ids", sorted(account_ids), type_=ARRAY(BigInteger))
        kept_query = kept_query.where(account_balances.c.account_id == any_(wanted))
        derived_query = _derived(postings.c.account_id == any_(wanted))
        query = query.where(accounts.c.id == any_(wanted))
    kept, derived = kept_query.subquery(), derived_query.subquery()
    kept_total = func.coalesce(kept.c.total, 0)
    derived_total = func.coalesce(derived.c.total, 0)
    rows = session.execute(
        query.add_columns(kept_total, derived_total)
        .select_from(accounts)
        .outerjoin(kept, kept.c.account_id == accounts.c.id)
        .outerjoin(derived, derived.c.account_id == accounts.c.id)
        .where(kept_total != derived_total)
        .order_by(accounts.c.address)
    ).all()
    return [BalanceMismatch(row[0], int(row[1]), int(row[2])) for row in rows]


@dataclass(frozen=True)
class EntryPosting:
    address: str
    asset: str
    amount: int


def entry_postings(session: Session, entry_id: int) -> list[EntryPosting]:
    rows = session.execute(
        select(accounts.c.address, postings.c.asset, postings.c.amount)
        .join(accounts, accounts.c.id == postings.c.account_id)
        .where(postings.c.entry_id == entry_id)
        .order_by(postings.c.id)
    )
    return [EntryPosting(r.address, r.asset, r.amount) for r in rows]


def find_entry(session: Session, origin: str, idempotency_key: str) -> int | None:
    """The entry written under this origin and idempotency key, if any."""
    found: int | None = session.execute(
        select(journal_keys.c.entry_id).where(
            journal_keys.c.origin == origin,
            journal_keys.c.idempotency_key == idempotency_key,
        )
    ).scalar_one_or_none()
    return found
