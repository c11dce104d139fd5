"""Imports every table module, so the metadata knows the whole schema."""

from clearinghouse import reference
from clearinghouse.api import tables as api_tables
from clearinghouse.audit import tables as audit_tables
from clearinghouse.batches import tables as batch_tables
from clearinghouse.fraud import tables as fraud_tables
from clearinghouse.ledger import tables as ledger_tables
from clearinghouse.members import tables as member_tables
from clearinghouse.points import tables as points_tables
from clearinghouse.rewards import campaign_tables
from clearinghouse.rewards import tables as reward_tables
from clearinghouse.rules import tables as rules_tables
from clearinghouse.users import tables as user_tables
from clearinghouse.webhooks import tables as webhook_tables
from partners import tables as partner_tables
from settlement import tables as settlement_tables

__all__ = [
    "api_tables",
    "audit_tables",
    "batch_tables",
    "campaign_tables",
    "fraud_tables",
    "ledger_tables",
    "member_tables",
    "partner_tables",
    "points_tables",
    "reference",
    "reward_tables",
    "rules_tables",
    "settlement_tables",
    "user_tables",
    "webhook_tables",
]
