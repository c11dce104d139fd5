"""The double-entry ledger: accounts, journal entries with postings, balances and checks."""

from clearinghouse.ledger.accounts import (
    Account,
    AccountSpec,
    Address,
    get_account,
    open_account,
    open_accounts,
)
from clearinghouse.ledger.errors import (
    AppendOnly,
    AssetMismatch,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidEntry,
    LedgerError,
    UnbalancedEntry,
    UnknownAccount,
)
from clearinghouse.ledger.posting import Entry, PostedEntry, Posting, post, transfer
from clearinghouse.ledger.queries import (
    BalanceMismatch,
    StatementLine,
    StatementPage,
    TrialBalanceLine,
    balance,
    check_consistency,
    statement,
    trial_balance,
)

__all__ = [
    "Account",
    "AccountSpec",
    "Address",
    "AppendOnly",
    "AssetMismatch",
    "BalanceMismatch",
    "Entry",
    "IdempotencyConflict",
    "InsufficientFunds",
    "InvalidEntry",
    "LedgerError",
    "PostedEntry",
    "Posting",
    "StatementLine",
    "StatementPage",
    "TrialBalanceLine",
    "UnbalancedEntry",
    "UnknownAccount",
    "balance",
    "check_consistency",
    "get_account",
    "open_account",
    "open_accounts",
    "post",
    "statement",
    "transfer",
    "trial_balance",
]
