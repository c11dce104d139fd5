"""The versioned rule sets: the earning rules (clearinghouse.rules.earning) and the lifecycle
policy below, published together, effective-dated, never edited."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clearinghouse.database import Tx
from clearinghouse.errors import InvalidRequest, NotFound
from clearinghouse.reference import Reference
from clearinghouse.rules.earning import EarningRules
from clearinghouse.rules.tables import rule_sets

Points = Annotated[int, Field(ge=0, le=10**12)]


class ExchangeTerms(BaseModel):
    """Limits and fee of a partner programme's points exchange, per conversion."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    fee_percent: Annotated[Decimal, Field(ge=0, le=50)] = Decimal("0")
    min_points: Annotated[int, Field(ge=1)] = 100
    max_points: Annotated[int, Field(ge=1)] = 1_000_000


class PointsPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    expiry_months: Annotated[int, Field(ge=1, le=120)] = 24
    """Lots expire at the end of the month this many months after the month of earning."""
    hold_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] = 15
    min_redeem_points: Points = 100
    max_backdate_days: Annotated[int, Field(ge=0, le=366)] = 30
    """How late a partner may report a purchase (an offline store's till roll)."""
    tier_window_days: Annotated[int, Field(ge=1, le=3660)] = 365
    referral_bonus_points: Points = 500
    referral_funder: str = "coalition"
    """"coalition", or the id of the partner that pays for referral bonuses."""
    exchange: dict[str, ExchangeTerms] = Field(default_factory=dict)
    default_exchange: ExchangeTerms = ExchangeTerms()

    def exchange_terms(self, partner_id: str) -> ExchangeTerms:
        return self.exchange.get(partner_id, self.default_exchange)


@dataclass(frozen=True)
class RuleSet:
    version: int
    effective_from: datetime
    earning: EarningRules
    policy: PointsPolicy


class NoRuleSet(NotFound):
    code = "rules_not_found"
    title = "No rule set in effect"


def _load_rule_sets(tx: Tx) -> list[RuleSet]:
    return [
        RuleSet(
            version=row.version,
            effective_from=row.effective_from,
            earning=EarningRules.model_validate(row.earning),
            policy=PointsPolicy.model_validate(row.policy),
        )
        for row in tx.all("SELECT * FROM rule_sets ORDER BY effective_from")
    ]


_rule_sets: Reference[list[RuleSet]] = Reference(("rule_sets",), _load_rule_sets)


def rule_set_at(db: Session | Tx, at: datetime) -> RuleSet:
    """The version in effect at `at`: the latest that took effect by then."""
    versions = _rule_sets.get(Tx.of(db))
    index = bisect_right(versions, at, key=lambda rule_set: rule_set.effective_from)
    if index == 0:
        raise NoRuleSet(f"no rule set is in effect at {at.isoformat()}")
    return versions[index - 1]


def publish(
    session: Session,
    earning: dict[str, Any],
    policy: dict[str, Any],
    effective_from: datetime | None = None,
) -> RuleSet:
    """Add the next version, effective from now (by default) or later. The documents are
    validated whole."""
    now = session.execute(select(func.now())).scalar_one()
    effective_from = effective_from or now
    if effective_from.tzinfo is None or effective_from < now:
        raise InvalidRequest("a rule set takes effect now or later, at an instant with its offset")
    session.execute(select(func.pg_advisory_xact_lock(func.hashtext("rule_sets"))))
    latest = session.execute(
        select(func.max(rule_sets.c.version), func.max(rule_sets.c.effective_from))
    ).one()
    if latest[1] is not None and effective_from <= latest[1]:
        raise InvalidRequest("a new rule set must take effect after the latest one")
    version = (latest[0] or 0) + 1
    try:
        rules = EarningRules.model_validate(
            {**earning, "version": version, "effective_from": effective_from}
        )
        points_policy = PointsPolicy.model_validate(policy)
    except ValidationError as exc:
        raise InvalidRequest(f"invalid rule set: {exc}") from exc
    session.execute(
        rule_sets.insert().values(
            version=version,
            effective_from=effective_from,
            earning=rules.model_dump(mode="json"),
            policy=points_policy.model_dump(mode="json"),
        )
    )
    return RuleSet(version, effective_from, rules, points_policy)
