"""The fraud rules. Each looks at one attempted points movement and its recent history and says
allow, review or block, with its reason and the inputs it judged. Thresholds are data
(`Thresholds`): coalition defaults, overridden per partner, versioned, changed without a deploy.

The rules are pure functions: what they read of the past (`History`) is gathered beforehand in
one statement, by the SQL function `risk_history`, inside the operation's own statement where
the operation has one (the member's lock taken first, so concurrent requests see each other).

Each rule, its default and how to tune it: docs/fraud.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clearinghouse.ledger import Address
from partners.directory import Store

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
    offline_debt_points: Count = 2_000


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
    offline: bool = False
    """A redemption approved at a till while it was offline, within the store's offline
    allowance: the goods are gone, so it cannot be refused (a block is kept as a review)."""
    debt_after: int = 0
    """The member's points debt after the attempt (an offline redemption may overdraw)."""


@dataclass(frozen=True)
class Nearest:
    """The member's purchase nearest in time to the attempt at another store with a place."""

    occurred_at: datetime
    store_id: str
    latitude: float
    longitude: float


@dataclass(frozen=True)
class History:
    """What the rules know of an attempt's recent past. Only what its operation's rules read
    is gathered; the rest keeps its default."""

    store: Store | None = None
    holds_last_hour: int = 0
    points_held_last_day: int = 0
    recent_points_at_store: int | None = None
    """The most points one purchase earned at the store in the burn-after-earn window."""
    first_linked_at: datetime | None = None
    store_last_day_fen: int = 0
    store_recent_amounts: tuple[int, ...] = ()
    """The store's latest purchase amounts, newest first, at most 200."""
    nearest_other: Nearest | None = None
    exchanges_in_last_day: int = 0
    exchanges_out_last_day: int = 0

    @classmethod
    def of(cls, store: Store | None, gathered: Mapping[str, Any]) -> History:
        """From `risk_history`'s JSON object."""
        values = dict(gathered)
        if "first_linked_at" in values and values["first_linked_at"] is not None:
            values["first_linked_at"] = datetime.fromisoformat(values["first_linked_at"])
        if "store_recent_amounts" in values:
            values["store_recent_amounts"] = tuple(values["store_recent_amounts"])
        nearest = values.pop("nearest_other", None)
        if nearest is not None:
            nearest["occurred_at"] = datetime.fromisoformat(nearest["occurred_at"])
            values["nearest_other"] = Nearest(**nearest)
        return cls(store=store, **values)


GATHERING_PARAMETERS = "%s, %s, %s, %s, %s, %s, %s, %s"
"""A Gathering's parameters in a statement (risk_history's, in its order)."""


@dataclass(frozen=True)
class Gathering:
    """What `risk_history` is asked to gather for an attempt."""

    operation: Operation
    member_id: str
    account: str
    """The member's available points (an exchange's rules count the entries that moved them)."""
    store_id: str | None
    at: datetime
    burn_minutes: int
    first_link: bool
    """The first link's time is read only for a redemption large enough to need it."""
    travel: bool
    """The nearest purchase elsewhere is looked for only at a store with a place."""

    @classmethod
    def of(cls, attempt: Attempt, thresholds: Thresholds, store: Store | None) -> Gathering:
        return cls(
            operation=attempt.operation,
            member_id=attempt.member_id,
            account=str(Address.member(attempt.member_id)),
            store_id=attempt.store_id,
            at=attempt.occurred_at,
            burn_minutes=thresholds.burn_after_earn_minutes,
            first_link=attempt.points >= thresholds.new_member_redeem_points,
            travel=store is not None
            and store.latitude is not None
            and attempt.operation in ("accrual", "hold", "redemption"),
        )

    def params(self) -> tuple[object, ...]:
        return (
            self.operation,
            self.member_id,
            self.account,
            self.store_id,
            self.at,
            self.burn_minutes,
            self.first_link,
            self.travel,
        )


@dataclass(frozen=True)
class Verdict:
    rule: str
    action: Action
    reason: str
    inputs: dict[str, Any] = field(default_factory=dict)


Rule = Callable[[Attempt, Thresholds, History], Verdict | None]


def velocity(a: Attempt, t: Thresholds, h: History) -> Verdict | None:
    if a.operation not in ("hold", "redemption"):
        return None
    hour, day = h.holds_last_hour, h.points_held_last_day
    inputs = {"redemptions_last_hour": hour, "points_last_day": day + a.points}
    if hour + 1 > t.redemptions_per_hour:
        return Verdict("velocity", t.velocity_action, f"{hour + 1} redemptions in an hour", inputs)
    if day + a.points > t.points_per_day:
        return Verdict("velocity", t.velocity_action, "too many points redeemed in a day", inputs)
    return None


def amount_cap(a: Attempt, t: Thresholds, h: History) -> Verdict | None:
    if a.operation != "accrual":
        return None
    store = h.store
    offline = store is not None and store.channel != "online"
    cap = t.max_accrual_fen_offline if offline else t.max_accrual_fen_online
    inputs: dict[str, Any] = {"amount_fen": a.amount_fen, "cap_fen": cap, "offline": offline}
    if a.amount_fen > cap:
        return Verdict("amount_cap", t.amount_cap_action, "purchase above the cap", inputs)
    if store is not None:
        today = h.store_last_day_fen
        daily = t.store_daily_accrual_fen_offline if offline else t.store_daily_accrual_fen_online
        inputs |= {"store_last_day_fen": today, "store_daily_cap_fen": daily}
        if today + a.amount_fen > daily:
            return Verdict("amount_cap", t.amount_cap_action, "store's daily cap reached", inputs)
    return None


def burn_after_earn(a: Attempt, t: Thresholds, h: History) -> Verdict | None:
    if a.operation not in ("hold", "redemption") or a.store_id is None:
        return None
    recent = h.recent_points_at_store
    if recent is not None and recent >= t.burn_after_earn_min_points:
        return Verdict(
            "burn_after_earn",
            t.burn_after_earn_action,
            f"redeeming at the store where {recent} points were just earned",
            {"recent_accrual_points": recent, "minutes": t.burn_after_earn_minutes},
        )
    return None


def refund_after_redeem(a: Attempt, t: Thresholds, h: History) -> Verdict | None:
    if a.operation == "refund" and a.points_already_spent:
        return Verdict(
            "refund_after_redeem",
            t.refund_after_redeem_action,
            "the purchase's points were already spent",
            {"points": a.points},
        )
    return None


def store_outlier(a: Attempt, t: Thresholds, h: History) -> Verdict | None:
    if a.operation != "accrual" or a.store_id is None:
        return None
    history = list(h.store_recent_amounts)
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


def new_member_high_value(a: Attempt, t: Thresholds, h: History) -> Verdict | None:
    if a.operation not in ("hold", "redemption") or a.points < t.new_member_redeem_points:
        return None
    first_link = h.first_linked_at
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


def impossible_travel(a: Attempt, t: Thresholds, h: History) -> Verdict | None:
    if a.operation not in ("accrual", "hold", "redemption"):
        return None
    store, last = h.store, h.nearest_other
    if store is None or store.latitude is None or store.longitude is None or last is None:
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
                "other_store_id": last.store_id,
            },
        )
    return None


def exchange_laundering(a: Attempt, t: Thresholds, h: History) -> Verdict | None:
    if a.operation != "exchange":
        return None
    ins = h.exchanges_in_last_day + (a.direction == "in")
    outs = h.exchanges_out_last_day + (a.direction == "out")
    if min(ins, outs) >= t.exchange_round_trips_per_day:
        return Verdict(
            "exchange_laundering",
            t.exchange_laundering_action,
            "points exchanged in and out again and again",
            {"in_last_day": ins, "out_last_day": outs},
        )
    return None


def offline_debt(a: Attempt, t: Thresholds, h: History) -> Verdict | None:
    """Never a refusal: the redemption happened at the till already. The review asks a person
    to look at a member who now owes this much."""
    if a.offline and a.debt_after > t.offline_debt_points:
        return Verdict(
            "offline_debt",
            "review",
            f"an offline redemption left the member owing {a.debt_after} points",
            {"debt_points": a.debt_after, "threshold_points": t.offline_debt_points},
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
    offline_debt,
)
