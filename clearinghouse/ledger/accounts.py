"""Accounts: who owns them, which asset they hold, and how their balance is kept.

An address names an account for people and code alike: `member:<id>:available`,
`partner:<id>:issued`, `store:<id>:till`, `coalition:breakage`, `coalition:rounding`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from clearinghouse.database import Tx
from clearinghouse.ledger.errors import AssetMismatch, InvalidEntry, UnknownAccount
from clearinghouse.ledger.tables import ADDRESS_PATTERN, accounts

OwnerType = Literal["member", "partner", "store", "coalition"]

# Partner and coalition accounts take part in most entries; their balance is spread over this many
# rows so that concurrent writers do not wait for each other (see docs/ledger.md).
HOT_ACCOUNT_SHARDS = 16

_ADDRESS = re.compile(ADDRESS_PATTERN)


@dataclass(frozen=True)
class Address:
    owner_type: OwnerType
    owner_id: str | None
    kind: str

    @classmethod
    def parse(cls, address: str) -> Address:
        if not _ADDRESS.match(address):
            raise InvalidEntry(f"malformed account address {address!r}")
        parts = address.split(":")
        if parts[0] == "coalition":
            return cls("coalition", None, ":".join(parts[1:]))
        owner_type: OwnerType = parts[0]  # type: ignore[assignment]  # the pattern admits no other
        return cls(owner_type, parts[1], ":".join(parts[2:]))

    @classmethod
    def member(cls, member_id: str | int, kind: str = "available") -> Address:
        return cls("member", str(member_id), kind)

    @classmethod
    def partner(cls, partner_id: str | int, kind: str) -> Address:
        return cls("partner", str(partner_id), kind)

    @classmethod
    def store(cls, store_id: str | int, kind: str) -> Address:
        return cls("store", str(store_id), kind)

    @classmethod
    def coalition(cls, kind: str) -> Address:
        return cls("coalition", None, kind)

    def __str__(self) -> str:
        if self.owner_id is None:
            return f"{self.owner_type}:{self.kind}"
        return f"{self.owner_type}:{self.owner_id}:{self.kind}"


@dataclass(frozen=True)
class Account:
    id: int
    address: str
    asset: str
    owner_type: str
    owner_id: str | None
    kind: str
    non_negative: bool
    shards: int


@dataclass(frozen=True)
class AccountSpec:
    """An account to open. Unless told otherwise, member accounts may not go below zero and
    partner and coalition accounts are sharded (with or without a floor)."""

    address: str
    asset: str = "PTS"
    non_negative: bool | None = None
    shards: int | None = None

    def values(self) -> dict[str, object]:
        parsed = Address.parse(self.address)
        non_negative = (
            parsed.owner_type == "member" if self.non_negative is None else self.non_negative
        )
        hot = parsed.owner_type in ("partner", "coalition")
        shards = self.shards if self.shards is not None else (HOT_ACCOUNT_SHARDS if hot else 1)
        return {
            "address": self.address,
            "asset": self.asset,
            "owner_type": parsed.owner_type,
            "owner_id": parsed.owner_id,
            "kind": parsed.kind,
            "non_negative": non_negative,
            "shards": shards,
        }


def _account(row: object) -> Account:
    m = row._mapping  # type: ignore[attr-defined]
    return Account(
        id=m["id"],
        address=m["address"],
        asset=m["asset"],
        owner_type=m["owner_type"],
        owner_id=m["owner_id"],
        kind=m["kind"],
        non_negative=m["non_negative"],
        shards=m["shards"],
    )


_COLUMNS = (
    accounts.c.id,
    accounts.c.address,
    accounts.c.asset,
    accounts.c.owner_type,
    accounts.c.owner_id,
    accounts.c.kind,
    accounts.c.non_negative,
    accounts.c.shards,
)


ACCOUNT_PARAMETERS = (
    "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::boolean[], %s::smallint[]"
)
"""Accounts to open, as ledger_open_accounts takes them (and link_member after its own)."""
OPEN_ACCOUNTS = "SELECT ledger_open_accounts(" + ACCOUNT_PARAMETERS + ")"
_OPENING_FIELDS = ("address", "asset", "owner_type", "owner_id", "kind", "non_negative", "shards")


def opening_arguments(specs: Iterable[AccountSpec]) -> tuple[list[object], ...]:
    """Accounts to open, as the SQL function ledger_open_accounts takes them (one array per
    column)."""
    rows = [spec.values() for spec in specs]
    return tuple([row[field] for row in rows] for field in _OPENING_FIELDS)


def open_accounts(session: Session | Tx, specs: Iterable[AccountSpec]) -> list[Account]:
    """Open the accounts that do not exist yet; return all of them, in the order given.

    Opening an existing address again is a no-op, unless it asks for another asset.
    """
    specs = list(specs)
    if not specs:
        return []
    Tx.of(session).execute(OPEN_ACCOUNTS, opening_arguments(specs))
    rows = (
        Tx.of(session)
        .session.execute(
            select(*_COLUMNS).where(accounts.c.address.in_([s.address for s in specs]))
        )
        .all()
    )
    by_address = {row.address: _account(row) for row in rows}
    for spec in specs:
        if by_address[spec.address].asset != spec.asset:
            raise AssetMismatch(
                f"{spec.address} already holds {by_address[spec.address].asset}, not {spec.asset}",
                accounts=[spec.address],
            )
    return [by_address[spec.address] for spec in specs]


def open_account(session: Session, address: str | Address, asset: str = "PTS") -> Account:
    return open_accounts(session, [AccountSpec(str(address), asset)])[0]


def get_account(session: Session, address: str | Address) -> Account:
    row = session.execute(select(*_COLUMNS).where(accounts.c.address == str(address))).first()
    if row is None:
        raise UnknownAccount(f"unknown account: {address}", accounts=[str(address)])
    return _account(row)
