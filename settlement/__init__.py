"""Daily settlement: netting, its schedule and approval, reconciliation, the liability and reports;
docs/settlement.md lists the modules."""
