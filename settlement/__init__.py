"""Daily jobs: settlement and netting, expiry, reconciliation and reports."""
