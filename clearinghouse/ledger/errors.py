"""What can go wrong when writing to the ledger, and how database errors map onto it."""

from __future__ import annotations

from psycopg import Error as PsycopgError
from sqlalchemy.exc import DBAPIError

from clearinghouse.errors import Conflict, DomainError, NotFound


class LedgerError(DomainError):
    code = "ledger_error"
    status = 422
    title = "Ledger refused the entry"


class UnbalancedEntry(LedgerError):
    code = "unbalanced_entry"
    title = "Postings do not balance"


class InvalidEntry(LedgerError):
    code = "invalid_entry"
    title = "Malformed journal entry"


class InsufficientFunds(LedgerError):
    code = "insufficient_balance"
    title = "Insufficient balance"

    def __init__(self, account: str) -> None:
        super().__init__(f"the balance of {account} is too low for this entry", account=account)
        self.account = account


class UnknownAccount(NotFound):
    code = "unknown_account"
    title = "Unknown account"


class AssetMismatch(LedgerError):
    code = "asset_mismatch"
    title = "Posting asset differs from its account's"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"
    status = 409
    title = "Idempotency key reused with different content"

    def __init__(self, detail: str, first_entry_id: int) -> None:
        super().__init__(detail, first_entry_id=first_entry_id)
        self.first_entry_id = first_entry_id


class AppendOnly(LedgerError):
    code = "append_only"
    title = "The journal is append-only"


def translate(exc: DBAPIError | PsycopgError) -> LedgerError | NotFound | Conflict | None:
    """The domain error behind a database error raised by the ledger's SQL, if it is one."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if not isinstance(orig, PsycopgError) or orig.sqlstate is None:
        return None
    message = orig.diag.message_primary or str(orig)
    detail = orig.diag.message_detail or ""
    match orig.sqlstate:
        case "LD001":
            return InsufficientFunds(detail)
        case "LD002":
            return UnknownAccount(message, accounts=detail.split(", "))
        case "LD003":
            return AssetMismatch(message, accounts=detail.split(", "))
        case "LD004":
            return IdempotencyConflict(message, first_entry_id=int(detail))
        case "LD005":
            return UnbalancedEntry(message)
        case "LD007":
            return AppendOnly(message)
    return None
