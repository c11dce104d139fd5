"""The points lifecycle: accrual, lots and expiry, redemption holds, refunds, tiers, exchange
and referrals. Every movement is a balanced ledger entry."""
