"""Typed domain errors. Each kind has a stable code and HTTP status, so one handler can render
any of them as RFC 9457 problem+json."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from clearinghouse.database import Tx

PROBLEM_BASE = "https://clearinghouse.example/problems/"


class DomainError(Exception):
    code: ClassVar[str] = "domain_error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Request refused"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions
        self.headers: dict[str, str] = {}
        """HTTP headers the answer carries (Retry-After, say)."""

    @classmethod
    def type_uri(cls) -> str:
        return PROBLEM_BASE + cls.code.replace("_", "-")

    def keep(self, tx: Tx) -> None:
        """Write what must stand although the request is refused and its work rolled back (a
        blocked attempt's risk case), in the transaction that records the refusal."""


class NotFound(DomainError):
    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(DomainError):
    code = "conflict"
    status = 409
    title = "Conflict"


class InvalidRequest(DomainError):
    code = "validation_error"
    status = 422
    title = "Invalid request"


class AlreadyExists(Conflict):
    code = "already_exists"
    title = "Already exists"
