"""The fraud rules. Each looks at one attempted points movement and its recent history and says
allow, review or block, with its reason and the inputs it judged. Thresholds are data
(`Thresholds`): coalition defaults, overridden per partner, versioned, changed without a deploy.

Each rule, its default and how to tune it: docs/fraud.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clearinghouse.ledger.tables import journal_entries
from clearinghouse.members.tables import member_links
from clearinghouse.points.tables import holds, purchases
from partners.tables import stores

Action = Literal["allow", "review", "block"]
Operation = Literal["accrual", "hold", "redemption", "refund", "exchange"]
SEVERITY: dict[Action, int] = {"allow": 0, "review": 1, "block": 2}

Count = Annotated[int, Field(ge=0)]


class Thresholds(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    redemptions_per_hour: Count = 5
    points_per_day: Count = 20_000
    velocity_action: Action = "review"
    max_accrual_fen_online: Count = 5_000_000
    max_accrual_fen_offline: Count = 1_000_000
    store_daily_accrual_fen_online: Count = 50_000_000
    store_daily_accrual_fen_offline: Count = 10_000_000
    amount_cap_action: Action = "block"
    burn_after_earn_minutes: Count = 10
    burn_after_earn_min_points: Count = 1_000
    burn_after_earn_action: Action = "review"
    refund_after_redeem_action: Action = "review"
    store_outlier_mads: Annotated[float, Field(gt=0)] = 10.0
    store_outlier_history: Annotated[int, Field(ge=5)] = 20
    store_outlier_action: Action = "review"
    new_member_hours: Count = 24
    new_member_redeem_points: Count = 5_000
    new_member_action: Action = "review"
    max_speed_kmh: Annotated[float, Field(gt=0)] = 800.0
    impossible_travel_action: Action = "review"
    exchange_round_trips_per_day: Annotated[int, Field(ge=1)] = 3
    exchange_laundering_action: Action = "review"


@dataclass(frozen=True)
class Attempt:
    operation: Operation
    partner_id: str
    member_id: str
    occurred_at: datetime
    points: int = 0
    amount_fen: int = 0
    store_id: str | None = None
    points_already_spent: bool = False
    direction: str | None = None


@dataclass(frozen=True)
class Verdict:
    rule: str
    action: Action
    reason: str
    inputs: dict[str, Any] = field(default_factory=dict)


Rule = Callable[[Session, Attempt, Thresholds], Verdict | None]


def _store(session: Session, store_id: str | None) -> Any:
    if store_id is None:
        return None
    return session.execute(select(stores).where(stores.c.id == store_id)).first()


def velocity(session: Session, a: Attempt, t: Thresholds) -> Verdict | None:
    if a.operation not in ("hold", "redemption"):
        return None
    hour = session.execute(
        select(func.count()).where(
            holds.c.member_id == a.member_id,
            holds.c.created_at > a.occurred_at - timedelta(hours=1),
        )
    ).scalar_one()
    day = session.execute(
        select(func.coalesce(func.sum(holds.c.amount), 0)).where(
            holds.c.member_id == a.member_id,
            holds.c.created_at > a.occurred_at - timedelta(days=1),
        )
    ).scalar_one()
    inputs = {"redemptions_last_hour": hour, "points_last_day": int(day) + a.points}
    if hour + 1 > t.redemptions_per_hour:
        return Verdict("velocity", t.velocity_action, f"{hour + 1} redemptions in an hour", inputs)
    if int(day) + a.points > t.points_per_day:
        return Verdict("velocity", t.velocity_action, "too many points redeemed in a day", inputs)
    return None


def amount_cap(session: Session, a: Attempt, t: Thresholds) -> Verdict | None:
    if a.operation != "accrual":
        return None
    store = _store(session, a.store_id)
    offline = store is not None and store.channel != "online"
    cap = t.max_accrual_fen_offline if offline else t.max_accrual_fen_online
    inputs: dict[str, Any] = {"amount_fen": a.amount_fen, "cap_fen": cap, "offline": offline}
    if a.amount_fen > cap:
        return Verdict("amount_cap", t.amount_cap_action, "purchase above the cap", inputs)
    if store is not None:
        day_start = a.occurred_at - timedelta(days=1)
        today = session.execute(
            select(func.coalesce(func.sum(purchases.c.amount_fen), 0)).where(
                purchases.c.store_id == store.id, purchases.c.occurred_at > day_start
            )
        ).scalar_one()
        daily = t.store_daily_accrual_fen_offline if offline else t.store_daily_accrual_fen_online
        inputs |= {"store_last_day_fen": int(today), "store_daily_cap_fen": daily}
        if int(today) + a.amount_fen > daily:
            return Verdict("amount_cap", t.amount_cap_action, "store's daily cap reached", inputs)
    return None


def burn_after_earn(session: Session, a: Attempt, t: Thresholds) -> Verdict | None:
    if a.operation not in ("hold", "redemption") or a.store_id is None:
        return None
    recent = session.execute(
        select(func.max(purchases.c.points)).where(
            purchases.c.member_id == a.member_id,
            purchases.c.store_id == a.store_id,
            purchases.c.occurred_at > a.occurred_at - timedelta(minutes=t.burn_after_earn_minutes),
        )
    ).scalar_one()
    if recent is not None and recent >= t.burn_after_earn_min_points:
        return Verdict(
            "burn_after_earn",
            t.burn_after_earn_action,
            f"redeeming at the store where {recent} points were just earned",
            {"recent_accrual_points": recent, "minutes": t.burn_after_earn_minutes},
        )
    return None


def refund_after_redeem(session: Session, a: Attempt, t: Thresholds) -> Verdict | None:
    if a.operation == "refund" and a.points_already_spent:
        return Verdict(
            "refund_after_redeem",
            t.refund_after_redeem_action,
            "the purchase's points were already spent",
            {"points": a.points},
        )
    return None


def store_outlier(session: Session, a: Attempt, t: Thresholds) -> Verdict | None:
    if a.operation != "accrual" or a.store_id is None:
        return None
    history = list(
        session.execute(
            select(purchases.c.amount_fen)
            .where(purchases.c.store_id == a.store_id)
            .order_by(purchases.c.id.desc())
            .limit(200)
        ).scalars()
    )
    if len(history) < t.store_outlier_history:
        return None
    middle = median(history)
    deviations = [abs(x - middle) for x in history]
    mad = median(deviations) or sum(deviations) / len(deviations) or 1
    limit = middle + t.store_outlier_mads * mad
    if a.amount_fen > limit:
        return Verdict(
            "store_outlier",
            t.store_outlier_action,
            "far above this store's usual amounts",
            {"amount_fen": a.amount_fen, "median_fen": middle, "mad_fen": mad, "limit": limit},
        )
    return None


def new_member_high_value(session: Session, a: Attempt, t: Thresholds) -> Verdict | None:
    if a.operation not in ("hold", "redemption") or a.points < t.new_member_redeem_points:
        return None
    first_link = session.execute(
        select(func.min(member_links.c.linked_at)).where(member_links.c.member_id == a.member_id)
    ).scalar_one()
    if first_link is not None and a.occurred_at - first_link < timedelta(hours=t.new_member_hours):
        return Verdict(
            "new_member_high_value",
            t.new_member_action,
            "a member linked less than a day ago redeeming a large amount",
            {"linked_at": first_link.isoformat(), "points": a.points},
        )
    return None


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def impossible_travel(session: Session, a: Attempt, t: Thresholds) -> Verdict | None:
    if a.operation not in ("accrual", "hold", "redemption"):
        return None
    store = _store(session, a.store_id)
    if store is None or store.latitude is None:
        return None
    last = session.execute(
        select(purchases.c.occurred_at, stores.c.id, stores.c.latitude, stores.c.longitude)
        .join(stores, stores.c.id == purchases.c.store_id)
        .where(
            purchases.c.member_id == a.member_id,
            stores.c.latitude.is_not(None),
            stores.c.id != store.id,
        )
        .order_by(func.abs(func.extract("epoch", purchases.c.occurred_at - a.occurred_at)))
        .limit(1)
    ).first()
    if last is None:
        return None
    distance = _km(last.latitude, last.longitude, store.latitude, store.longitude)
    hours = abs((a.occurred_at - last.occurred_at).total_seconds()) / 3600
    speed = distance / max(hours, 1 / 3600)
    if distance > 50 and speed > t.max_speed_kmh:
        return Verdict(
            "impossible_travel",
            t.impossible_travel_action,
            f"{distance:.0f} km from the member's nearest purchase in {hours * 60:.0f} minutes",
            {
                "km": round(distance, 1),
                "hours": round(hours, 3),
                "kmh": round(speed),
                "other_store_id": last.id,
            },
        )
    return None


def exchange_laundering(session: Session, a: Attempt, t: Thresholds) -> Verdict | None:
    if a.operation != "exchange":
        return None
    counts: dict[str, int] = dict(
        session.execute(
            select(journal_entries.c.kind, func.count())
            .where(
                journal_entries.c.kind.in_(("exchange_in", "exchange_out")),
                journal_entries.c.metadata["member_id"].astext == a.member_id,
                journal_entries.c.recorded_at > a.occurred_at - timedelta(days=1),
            )
            .group_by(journal_entries.c.kind)
        ).all()
    )
    ins = counts.get("exchange_in", 0) + (a.direction == "in")
    outs = counts.get("exchange_out", 0) + (a.direction == "out")
    if min(ins, outs) >= t.exchange_round_trips_per_day:
        return Verdict(
            "exchange_laundering",
            t.exchange_laundering_action,
            "points exchanged in and out again and again",
            {"in_last_day": ins, "out_last_day": outs},
        )
    return None


RULES: tuple[Rule, ...] = (
    velocity,
    amount_cap,
    burn_after_earn,
    refund_after_redeem,
    store_outlier,
    new_member_high_value,
    impossible_travel,
    exchange_laundering,
)
