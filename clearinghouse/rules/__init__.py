"""Earning rules and tiers: pure functions over a versioned rules document."""

from clearinghouse.rules.earning import (
    Accrual,
    BreakdownLine,
    EarningRules,
    EarningRulesError,
    MemberContext,
    MonthlyBracket,
    PartnerCaps,
    Promotion,
    Purchase,
    TierName,
    TierRule,
    compute_accrual,
)
from clearinghouse.rules.tiers import TierStatus, tier_for

__all__ = [
    "Accrual",
    "BreakdownLine",
    "EarningRules",
    "EarningRulesError",
    "MemberContext",
    "MonthlyBracket",
    "PartnerCaps",
    "Promotion",
    "Purchase",
    "TierName",
    "TierRule",
    "TierStatus",
    "compute_accrual",
    "tier_for",
]
