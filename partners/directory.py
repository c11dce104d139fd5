"""Partners and their stores: onboarding, status, and lookups scoped to one partner."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from clearinghouse import ledger
from clearinghouse.database import Tx
from clearinghouse.errors import AlreadyExists, InvalidRequest, NotFound
from clearinghouse.ledger.tables import assets
from clearinghouse.reference import Reference
from partners.auth import PARTNER_WIDE, KeyScope
from partners.tables import PARTNER_KINDS, SLUG_PATTERN, partners, stores

PartnerKind = Literal["online_merchant", "store_chain", "programme", "charity"]
Channel = Literal["online", "offline", "terminal"]
Status = Literal["active", "suspended"]

ID_PATTERN = SLUG_PATTERN
"""A partner's or store's id, as a route's path takes it."""
_SLUG = re.compile(SLUG_PATTERN)
_ASSET = re.compile(r"^[A-Z][A-Z0-9_]{1,15}$")

# Every partner has these point accounts from the start: points it issued (a negative balance,
# what it owes for), and points it honoured at redemption (what it is owed for).
PARTNER_ACCOUNTS = ("issued", "redeemed")


def headroom_account(partner_id: str) -> str:
    """CNY the partner may still issue (see partners.limits); never below zero."""
    return str(ledger.Address.partner(partner_id, "headroom"))


def exposure_account(partner_id: str) -> str:
    """CNY value of the partner's issuance not yet settled."""
    return str(ledger.Address.partner(partner_id, "exposure"))


def _opening_accounts(partner_id: str) -> list[ledger.AccountSpec]:
    return [
        *(ledger.AccountSpec(str(ledger.Address.partner(partner_id, k))) for k in PARTNER_ACCOUNTS),
        ledger.AccountSpec(headroom_account(partner_id), "CNY", non_negative=True),
        ledger.AccountSpec(exposure_account(partner_id), "CNY"),
    ]


class PartnerNotFound(NotFound):
    code = "partner_not_found"
    title = "Unknown partner"


class StoreNotFound(NotFound):
    code = "store_not_found"
    title = "Unknown store"


@dataclass(frozen=True)
class Partner:
    id: str
    name: str
    kind: str
    status: str
    created_at: datetime
    status_changed_at: datetime | None
    programme_asset: str | None
    expiring_notice_days: int
    """How many days ahead the partner hears of its members' points expiring."""
    legal_name: str
    """The name settlement reports and advices print."""
    bank_name: str | None
    bank_account: str | None
    """Where the partner's settlements are paid (its settlement advice prints them)."""


@dataclass(frozen=True)
class Store:
    id: str
    partner_id: str
    name: str
    channel: str
    city: str | None
    latitude: float | None
    longitude: float | None
    status: str
    offline_allowance: int
    """Points a member may redeem here in a business day while the till is offline, even
    beyond the member's available points; 0: none."""


def _partner(row: Any) -> Partner:
    return Partner(**row._asdict())


def _store(row: Any) -> Store:
    values = row._asdict()
    values.pop("created_at")
    return Store(**values)


def _check_slug(value: str, what: str) -> None:
    if not _SLUG.match(value):
        raise InvalidRequest(
            f"{what} {value!r} must be 2-40 characters of a-z, 0-9, '-' and '_', "
            "starting with a letter or digit"
        )


def programme_account(partner_id: str) -> str:
    """The programme's side of its own points in the ledger (points exchange)."""
    return str(ledger.Address.partner(partner_id, "programme"))


def exchange_account(asset: str) -> str:
    """The coalition's holding of a programme's points, taken in by exchanges."""
    return str(ledger.Address.coalition(f"exchange:{asset.lower()}"))


def _default_asset(partner_id: str) -> str:
    return ("P_" + re.sub(r"[^A-Z0-9]", "_", partner_id.upper()))[:16]


def create_partner(
    session: Session,
    partner_id: str,
    name: str,
    kind: PartnerKind,
    *,
    programme_asset: str | None = None,
    legal_name: str | None = None,
    bank_name: str | None = None,
    bank_account: str | None = None,
) -> Partner:
    """Register a partner and open its ledger accounts. A partner programme's own points
    become a ledger asset (`programme_asset`, derived from the id unless given). Its legal name
    is `name` unless given; its bank details may come later (`set_partner_details`)."""
    _check_slug(partner_id, "partner id")
    if kind not in PARTNER_KINDS:
        raise InvalidRequest(f"partner kind must be one of {', '.join(PARTNER_KINDS)}")
    if not name.strip():
        raise InvalidRequest("a partner needs a name")
    details = _details(
        legal_name=legal_name or name, bank_name=bank_name, bank_account=bank_account
    )
    asset = None
    if kind == "programme":
        asset = programme_asset or _default_asset(partner_id)
        if not _ASSET.match(asset):
            raise InvalidRequest(f"asset code {asset!r}: 2-16 of A-Z, 0-9, '_', from a letter")
        taken = session.execute(
            insert(assets)
            .values(code=asset, name=f"{name.strip()} points", unit="point")
            .on_conflict_do_nothing()
            .returning(assets.c.code)
        ).first()
        if taken is None:
            raise AlreadyExists(f"asset {asset} exists; give the programme another asset code")
    elif programme_asset is not None:
        raise InvalidRequest("only partner programmes have an asset of their own")
    row = session.execute(
        insert(partners)
        .values(id=partner_id, name=name.strip(), kind=kind, programme_asset=asset, **details)
        .on_conflict_do_nothing()
        .returning(*partners.c)
    ).first()
    if row is None:
        raise AlreadyExists(f"partner {partner_id} already exists")
    specs = _opening_accounts(partner_id)
    if asset is not None:
        specs += [
            ledger.AccountSpec(programme_account(partner_id), asset),
            ledger.AccountSpec(exchange_account(asset), asset),
        ]
    ledger.open_accounts(session, specs)
    return _partner(row)


@dataclass(frozen=True)
class Directory:
    """Every partner and store, as each process keeps them (clearinghouse.reference)."""

    partners: dict[str, Partner]
    stores: dict[str, Store]


def _load_directory(tx: Tx) -> Directory:
    partner_rows = tx.all("SELECT * FROM partners")
    store_rows = tx.all("SELECT * FROM stores ORDER BY id")
    return Directory(
        {row.id: _partner(row) for row in partner_rows},
        {row.id: _store(row) for row in store_rows},
    )


_directory: Reference[Directory] = Reference(("partners", "stores"), _load_directory)


def get_partner(db: Session | Tx, partner_id: str) -> Partner:
    found = _directory.get(Tx.of(db)).partners.get(partner_id)
    if found is None:
        raise PartnerNotFound(f"no partner {partner_id}")
    return found


def lock_partner(session: Session, partner_id: str) -> Partner:
    """The partner, its row locked until the transaction ends: changes to its keys, rates and
    limit take this lock, one at a time."""
    row = session.execute(
        select(*partners.c)
        .where(partners.c.id == partner_id)
        .with_for_update(key_share=True)  # FOR NO KEY UPDATE: foreign keys to it still check
    ).first()
    if row is None:
        raise PartnerNotFound(f"no partner {partner_id}")
    return _partner(row)


def list_partners(session: Session) -> list[Partner]:
    return [_partner(r) for r in session.execute(select(*partners.c).order_by(partners.c.id))]


def set_partner_status(session: Session, partner_id: str, status: Status) -> Partner:
    """Suspend or reactivate a partner. A suspended partner's requests are refused."""
    row = session.execute(
        update(partners)
        .where(partners.c.id == partner_id)
        .values(status=status, status_changed_at=func.now())
        .returning(*partners.c)
    ).first()
    if row is None:
        raise PartnerNotFound(f"no partner {partner_id}")
    return _partner(row)


DETAILS = ("legal_name", "bank_name", "bank_account")
"""A partner's details for settlement: its legal name and where it is paid."""
_DETAIL_LENGTH = 200


def _details(**given: str | None) -> dict[str, str]:
    """The details given (None: unchanged), stripped, each non-empty and at most 200
    characters."""
    details = {}
    for field, value in given.items():
        if value is None:
            continue
        if not value.strip() or len(value.strip()) > _DETAIL_LENGTH:
            raise InvalidRequest(f"{field} is 1 to {_DETAIL_LENGTH} characters")
        details[field] = value.strip()
    return details


def set_partner_details(
    session: Session,
    partner_id: str,
    *,
    legal_name: str | None = None,
    bank_name: str | None = None,
    bank_account: str | None = None,
) -> Partner:
    """Change the partner's legal name or bank details (those given; the rest stay)."""
    details = _details(legal_name=legal_name, bank_name=bank_name, bank_account=bank_account)
    if not details:
        raise InvalidRequest(f"give at least one of {', '.join(DETAILS)}")
    row = session.execute(
        update(partners).where(partners.c.id == partner_id).values(**details).returning(*partners.c)
    ).first()
    if row is None:
        raise PartnerNotFound(f"no partner {partner_id}")
    return _partner(row)


def set_expiring_notice_days(session: Session, partner_id: str, days: int) -> Partner:
    """How many days ahead (1 to 90) the partner hears of its members' points expiring."""
    if not 1 <= days <= 90:
        raise InvalidRequest("expiring_notice_days is from 1 to 90")
    row = session.execute(
        update(partners)
        .where(partners.c.id == partner_id)
        .values(expiring_notice_days=days)
        .returning(*partners.c)
    ).first()
    if row is None:
        raise PartnerNotFound(f"no partner {partner_id}")
    return _partner(row)


def add_store(
    session: Session,
    partner_id: str,
    store_id: str,
    *,
    name: str,
    channel: Channel,
    city: str | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
) -> Store:
    _check_slug(store_id, "store id")
    get_partner(session, partner_id)
    if channel not in ("online", "offline", "terminal"):
        raise InvalidRequest("store channel must be online, offline or terminal")
    if (latitude is None) != (longitude is None):
        raise InvalidRequest("give both latitude and longitude, or neither")
    if latitude is not None and not -90 <= latitude <= 90:
        raise InvalidRequest("latitude is between -90 and 90")
    if longitude is not None and not -180 <= longitude <= 180:
        raise InvalidRequest("longitude is between -180 and 180")
    row = session.execute(
        insert(stores)
        .values(
            id=store_id,
            partner_id=partner_id,
            name=name,
            channel=channel,
            city=city,
            latitude=latitude,
            longitude=longitude,
        )
        .on_conflict_do_nothing()
        .returning(*stores.c)
    ).first()
    if row is None:
        raise AlreadyExists(f"store {store_id} already exists")
    return _store(row)


MAX_OFFLINE_ALLOWANCE = 10**12


def set_offline_allowance(
    session: Session, store_id: str, points: int, *, partner_id: str | None = None
) -> Store:
    """Let a member redeem up to `points` a business day at the store while its till is offline
    (0: none). With `partner_id`, the store must be that partner's: another's is unknown."""
    if not 0 <= points <= MAX_OFFLINE_ALLOWANCE:
        raise InvalidRequest(f"an offline allowance is 0 to {MAX_OFFLINE_ALLOWANCE:,} points")
    query = update(stores).where(stores.c.id == store_id)
    if partner_id is not None:
        query = query.where(stores.c.partner_id == partner_id)
    row = session.execute(query.values(offline_allowance=points).returning(*stores.c)).first()
    if row is None:
        raise StoreNotFound(f"no store {store_id}")
    return _store(row)


def get_store(
    db: Session | Tx, partner_id: str, store_id: str, scope: KeyScope = PARTNER_WIDE
) -> Store:
    """A store of this partner; another partner's store is as unknown as a missing one, and so
    is a store the key's `scope` does not see."""
    found = _directory.get(Tx.of(db)).stores.get(store_id)
    if found is None or found.partner_id != partner_id or not scope.sees(store_id):
        raise StoreNotFound(f"no store {store_id}")
    return found


def store_or_refusal(
    db: Session | Tx, partner_id: str, store_id: str | None
) -> tuple[Store | None, StoreNotFound | None]:
    """The store named in a request (None if none is), or its refusal, for a caller that must
    first say what comes before it (an unknown member)."""
    if store_id is None:
        return None, None
    try:
        return get_store(db, partner_id, store_id), None
    except StoreNotFound as missing:
        return None, missing


def list_stores(db: Session | Tx, partner_id: str, scope: KeyScope = PARTNER_WIDE) -> list[Store]:
    """The partner's stores that the key's `scope` sees."""
    stores_by_id = _directory.get(Tx.of(db)).stores
    return [
        store
        for store in stores_by_id.values()
        if store.partner_id == partner_id and scope.sees(store.id)
    ]
