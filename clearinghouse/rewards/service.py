"""The rewards catalogue: partners supply rewards (coupons with codes, vouchers, goods,
memberships, charity donations), each priced in points by effective-dated versions and paid to
its supplier at a unit value in fen; any partner's front end browses them for its members.

A supplier changes only its own rewards (another's is as unknown as a missing one); an operator
(`supplier_id` None) may change any. Stock moves by deltas, one statement each, under the table's
check that keeps it at or above zero, so no change can oversell what orders are taking."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from clearinghouse import clock
from clearinghouse.database import Tx
from clearinghouse.errors import Conflict, InvalidRequest, NotFound
from clearinghouse.ids import new_id
from clearinghouse.rewards.tables import REWARD_KINDS
from partners.directory import get_partner

MAX_CODES_PER_UPLOAD = 10_000
MAX_STOCK_CHANGE = 10**9
"""The most units one stock change adds or takes away."""
CODE_LENGTH = 64


class RewardNotFound(NotFound):
    code = "reward_not_found"
    title = "Unknown reward"


class StockExhausted(Conflict):
    code = "stock_exhausted"
    title = "Not enough stock"


class DuplicateCodes(Conflict):
    code = "duplicate_codes"
    title = "Codes already in the pool"


@dataclass(frozen=True)
class RewardSpec:
    """What a supplier says of a new reward."""

    kind: str
    title_zh: str
    title_en: str
    unit_value_fen: int
    points: int
    description_zh: str = ""
    description_en: str = ""
    stock: int | None = None
    per_member_daily_limit: int | None = None
    per_member_limit: int | None = None
    tiers: Sequence[str] | None = None
    channels: Sequence[str] | None = None
    cities: Sequence[str] | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True)
class Reward:
    id: str
    supplier_id: str
    kind: str
    title_zh: str
    title_en: str
    description_zh: str
    description_en: str
    unit_value_fen: int
    stock_left: int | None
    per_member_daily_limit: int | None
    per_member_limit: int | None
    tiers: list[str] | None
    channels: list[str] | None
    cities: list[str] | None
    valid_from: datetime
    valid_until: datetime | None
    status: str
    created_at: datetime
    points: int | None
    """The price in points in effect now (none before the first version takes effect)."""
    price_version: int | None

    def available_at(self, at: datetime) -> bool:
        """Orderable at `at`: active, within its validity, priced and in stock."""
        return (
            self.status == "active"
            and self.valid_from <= at
            and (self.valid_until is None or at < self.valid_until)
            and self.points is not None
            and (self.stock_left is None or self.stock_left > 0)
        )


@dataclass(frozen=True)
class Price:
    version: int
    points: int
    effective_from: datetime


_REWARD = (
    "SELECT r.*, p.points, p.version AS price_version FROM rewards r"
    " LEFT JOIN LATERAL (SELECT points, version FROM reward_prices"
    " WHERE reward_id = r.id AND effective_from <= %(at)s"
    " ORDER BY version DESC LIMIT 1) p ON true"
)


def _reward(row: Any) -> Reward:
    values = row._asdict()
    return Reward(**{f.name: values[f.name] for f in fields(Reward)})


def get_reward(db: Session | Tx, reward_id: str, supplier_id: str | None = None) -> Reward:
    """The reward, priced as of now; with `supplier_id`, only that supplier's."""
    row = Tx.of(db).first(
        _REWARD
        + " WHERE r.id = %(id)s AND (%(supplier)s::text IS NULL OR r.supplier_id = %(supplier)s)",
        {"at": clock.now(), "id": reward_id, "supplier": supplier_id},
    )
    if row is None:
        raise RewardNotFound(f"no reward {reward_id}")
    return _reward(row)


def _check(spec: RewardSpec, now: datetime) -> None:
    if spec.kind not in REWARD_KINDS:
        raise InvalidRequest(f"kind is one of {', '.join(REWARD_KINDS)}")
    if not spec.title_zh.strip() or not spec.title_en.strip():
        raise InvalidRequest("a reward has a title in Chinese (title_zh) and in English (title_en)")
    if spec.points <= 0:
        raise InvalidRequest("a reward costs at least 1 point")
    if spec.unit_value_fen < 0:
        raise InvalidRequest("unit_value_fen may not be negative")
    if spec.stock is not None and spec.stock < 0:
        raise InvalidRequest("stock may not be negative (leave it out for unlimited stock)")
    if spec.kind == "coupon" and spec.stock is not None:
        raise InvalidRequest("a coupon's stock is its codes: upload them")
    for name in ("per_member_daily_limit", "per_member_limit"):
        limit = getattr(spec, name)
        if limit is not None and limit <= 0:
            raise InvalidRequest(f"{name} is at least 1 (leave it out for no limit)")
    valid_from = spec.valid_from or now
    if spec.valid_until is not None and spec.valid_until <= max(valid_from, now):
        raise InvalidRequest("valid_until must be after valid_from and in the future")


def create_reward(db: Session | Tx, supplier_id: str, spec: RewardSpec) -> Reward:
    """A new active reward of the supplier, with its first price in effect from `valid_from`."""
    tx = Tx.of(db)
    supplier = get_partner(tx, supplier_id)
    now = clock.now()
    _check(spec, now)
    if (spec.kind == "charity") != (supplier.kind == "charity"):
        raise InvalidRequest("a charity supplies donations (kind charity), and only a charity")
    reward_id = new_id("R", 12)
    valid_from = spec.valid_from or now
    tx.execute(
        "INSERT INTO rewards (id, supplier_id, kind, title_zh, title_en, description_zh,"
        " description_en, unit_value_fen, stock_left, per_member_daily_limit, per_member_limit,"
        " tiers, channels, cities, valid_from, valid_until, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            reward_id,
            supplier_id,
            spec.kind,
            spec.title_zh.strip(),
            spec.title_en.strip(),
            spec.description_zh,
            spec.description_en,
            spec.unit_value_fen,
            0 if spec.kind == "coupon" else spec.stock,
            spec.per_member_daily_limit,
            spec.per_member_limit,
            _listed(spec.tiers),
            _listed(spec.channels),
            _listed(spec.cities),
            valid_from,
            spec.valid_until,
            now,
        ),
    )
    tx.execute(
        "INSERT INTO reward_prices (reward_id, version, points, effective_from, created_at)"
        " VALUES (%s, 1, %s, %s, %s)",
        (reward_id, spec.points, min(valid_from, now), now),
    )
    return get_reward(tx, reward_id)


def _listed(values: Sequence[str] | None) -> list[str] | None:
    return None if values is None else sorted({v.strip() for v in values if v.strip()})


UPDATABLE = (
    "title_zh",
    "title_en",
    "description_zh",
    "description_en",
    "unit_value_fen",
    "per_member_daily_limit",
    "per_member_limit",
    "tiers",
    "channels",
    "cities",
    "valid_until",
)


def update_reward(
    db: Session | Tx, supplier_id: str | None, reward_id: str, changes: dict[str, Any]
) -> Reward:
    """Change what the supplier says of its reward (the fields in UPDATABLE; a None eligibility
    list or limit removes it). Orders already placed keep the value they were placed at."""
    tx = Tx.of(db)
    current = get_reward(tx, reward_id, supplier_id)
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise InvalidRequest(f"cannot change {', '.join(unknown)}")
    merged = {f: getattr(current, f) for f in UPDATABLE} | changes
    _check(
        RewardSpec(
            kind=current.kind,
            title_zh=merged["title_zh"],
            title_en=merged["title_en"],
            unit_value_fen=merged["unit_value_fen"],
            points=current.points or 1,
            per_member_daily_limit=merged["per_member_daily_limit"],
            per_member_limit=merged["per_member_limit"],
            valid_from=current.valid_from,
            valid_until=merged["valid_until"],
        ),
        clock.now(),
    )
    for name in ("tiers", "channels", "cities"):
        merged[name] = _listed(merged[name])
    tx.execute(
        "UPDATE rewards SET title_zh = %(title_zh)s, title_en = %(title_en)s,"
        " description_zh = %(description_zh)s, description_en = %(description_en)s,"
        " unit_value_fen = %(unit_value_fen)s,"
        " per_member_daily_limit = %(per_member_daily_limit)s,"
        " per_member_limit = %(per_member_limit)s, tiers = %(tiers)s, channels = %(channels)s,"
        " cities = %(cities)s, valid_until = %(valid_until)s WHERE id = %(id)s",
        {**merged, "id": reward_id},
    )
    return get_reward(tx, reward_id)


def set_price(
    db: Session | Tx,
    supplier_id: str | None,
    reward_id: str,
    points: int,
    effective_from: datetime | None = None,
) -> Price:
    """A new price version, in effect from `effective_from` (now by default; never in the past,
    so no order is ever priced again)."""
    tx = Tx.of(db)
    get_reward(tx, reward_id, supplier_id)
    now = clock.now()
    if points <= 0:
        raise InvalidRequest("a reward costs at least 1 point")
    starts = effective_from or now
    if starts < now:
        raise InvalidRequest("a price takes effect now or later, never in the past")
    # The reward's row lock puts versions in order.
    tx.execute("SELECT 1 FROM rewards WHERE id = %s FOR NO KEY UPDATE", (reward_id,))
    latest = tx.one(
        "SELECT max(version) AS version, max(effective_from) AS effective_from"
        " FROM reward_prices WHERE reward_id = %s",
        (reward_id,),
    )
    if starts < latest.effective_from:
        raise Conflict(
            f"a later price takes effect at {latest.effective_from.isoformat()}: "
            "a new one starts after it"
        )
    version = latest.version + 1
    tx.execute(
        "INSERT INTO reward_prices (reward_id, version, points, effective_from, created_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (reward_id, version, points, starts, now),
    )
    return Price(version, points, starts)


def prices(db: Session | Tx, reward_id: str) -> list[Price]:
    rows = Tx.of(db).all(
        "SELECT version, points, effective_from FROM reward_prices WHERE reward_id = %s"
        " ORDER BY version",
        (reward_id,),
    )
    return [Price(row.version, row.points, row.effective_from) for row in rows]


def add_stock(db: Session | Tx, supplier_id: str | None, reward_id: str, units: int) -> Reward:
    """Add units to a limited stock (or take them away, never below zero). A coupon's stock
    moves only with its codes; an unlimited stock has no count to move."""
    tx = Tx.of(db)
    reward = get_reward(tx, reward_id, supplier_id)
    if not -MAX_STOCK_CHANGE <= units <= MAX_STOCK_CHANGE:
        raise InvalidRequest(f"a stock change is at most {MAX_STOCK_CHANGE:,} units")
    if reward.kind == "coupon":
        raise InvalidRequest("a coupon's stock is its codes: upload more")
    if reward.stock_left is None:
        raise InvalidRequest(f"reward {reward_id} has unlimited stock")
    moved = tx.first(
        "UPDATE rewards SET stock_left = stock_left + %s WHERE id = %s AND stock_left + %s >= 0"
        " RETURNING stock_left",
        (units, reward_id, units),
    )
    if moved is None:
        raise StockExhausted(f"reward {reward_id} has fewer than {-units} units left to take away")
    return get_reward(tx, reward_id)


def upload_codes(
    db: Session | Tx, supplier_id: str | None, reward_id: str, codes: Sequence[str]
) -> Reward:
    """Add coupon codes to the reward's pool, each one unit of stock. A code already in the
    pool (or twice in the upload) refuses the whole upload: each code is issued once only."""
    tx = Tx.of(db)
    reward = get_reward(tx, reward_id, supplier_id)
    if reward.kind != "coupon":
        raise InvalidRequest("only coupons have codes")
    cleaned = [code.strip() for code in codes]
    if not cleaned or len(cleaned) > MAX_CODES_PER_UPLOAD:
        raise InvalidRequest(f"upload 1 to {MAX_CODES_PER_UPLOAD:,} codes at a time")
    if any(not code or len(code) > CODE_LENGTH for code in cleaned):
        raise InvalidRequest(f"a code has 1 to {CODE_LENGTH} characters")
    twice = sorted({code for code in cleaned if cleaned.count(code) > 1})
    if twice:
        raise DuplicateCodes(f"codes given twice: {', '.join(twice[:10])}")
    # The reward's row lock keeps two uploads of one pool apart.
    tx.execute("SELECT 1 FROM rewards WHERE id = %s FOR NO KEY UPDATE", (reward_id,))
    known = tx.all(
        "SELECT code FROM reward_codes WHERE reward_id = %s AND code = ANY(%s) ORDER BY code",
        (reward_id, cleaned),
    )
    if known:
        shown = ", ".join(row.code for row in known[:10])
        raise DuplicateCodes(f"codes already uploaded: {shown}")
    tx.execute(
        "INSERT INTO reward_codes (reward_id, code, uploaded_at)"
        " SELECT %s, code, %s FROM unnest(%s::text[]) AS code",
        (reward_id, clock.now(), cleaned),
    )
    tx.execute(
        "UPDATE rewards SET stock_left = stock_left + %s WHERE id = %s", (len(cleaned), reward_id)
    )
    return get_reward(tx, reward_id)


def withdraw(db: Session | Tx, supplier_id: str | None, reward_id: str) -> Reward:
    """Take the reward out of the catalogue: it can no longer be ordered (orders placed keep
    their course). Safe to repeat."""
    tx = Tx.of(db)
    get_reward(tx, reward_id, supplier_id)
    tx.execute("UPDATE rewards SET status = 'withdrawn' WHERE id = %s", (reward_id,))
    return get_reward(tx, reward_id)


def supplied_by(db: Session | Tx, supplier_id: str | None) -> list[Reward]:
    """The supplier's rewards (every reward for None), newest first."""
    rows = Tx.of(db).all(
        _REWARD + " WHERE %(supplier)s::text IS NULL OR r.supplier_id = %(supplier)s"
        " ORDER BY r.created_at DESC, r.id",
        {"at": clock.now(), "supplier": supplier_id},
    )
    return [_reward(row) for row in rows]


@dataclass(frozen=True)
class Browse:
    """What a front end asks of the catalogue. Each filter left out lets everything through.
    `tier`, `channel` and `city` keep the rewards open to them; `max_points` those affordable."""

    kind: str | None = None
    supplier_id: str | None = None
    city: str | None = None
    channel: str | None = None
    tier: str | None = None
    max_points: int | None = None
    limit: int = 50


def browse(db: Session | Tx, query: Browse) -> list[Reward]:
    """The rewards a member may order now, cheapest first."""
    rows = Tx.of(db).all(
        _REWARD + " WHERE r.status = 'active' AND r.valid_from <= %(at)s"
        " AND (r.valid_until IS NULL OR r.valid_until > %(at)s)"
        " AND (r.stock_left IS NULL OR r.stock_left > 0) AND p.points IS NOT NULL"
        " AND (%(kind)s::text IS NULL OR r.kind = %(kind)s)"
        " AND (%(supplier)s::text IS NULL OR r.supplier_id = %(supplier)s)"
        " AND (%(city)s::text IS NULL OR r.cities IS NULL OR %(city)s = ANY(r.cities))"
        " AND (%(channel)s::text IS NULL OR r.channels IS NULL OR %(channel)s = ANY(r.channels))"
        " AND (%(tier)s::text IS NULL OR r.tiers IS NULL OR %(tier)s = ANY(r.tiers))"
        " AND (%(max_points)s::bigint IS NULL OR p.points <= %(max_points)s)"
        " ORDER BY p.points, r.id LIMIT %(limit)s",
        {
            "at": clock.now(),
            "kind": query.kind,
            "supplier": query.supplier_id,
            "city": query.city,
            "channel": query.channel,
            "tier": query.tier,
            "max_points": query.max_points,
            "limit": query.limit,
        },
    )
    return [_reward(row) for row in rows]
