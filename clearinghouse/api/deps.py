"""Dependencies the finance, audit, operator and console routes declare: one unit of work per
request, and the person calling. (Partner routes answer through clearinghouse.api.gate.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import text
from sqlalchemy.orm import Session

from clearinghouse.users.service import NotSignedIn, User, require_role

READ_ONLY_ROLE = "clearinghouse_readonly"


def _write_session(request: Request) -> Iterator[Session]:
    """Committed when the route returns, rolled back when it raises; before the answer is sent."""
    with request.app.state.sessions() as session, session.begin():
        yield session


def _read_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session, session.begin():
        session.execute(text("SET TRANSACTION READ ONLY"))
        yield session


WriteSession = Annotated[Session, Depends(_write_session, scope="function")]
ReadSession = Annotated[Session, Depends(_read_session, scope="function")]


def _bearer(request: Request) -> User:
    """The person behind the bearer token, found by the gate before the body was read
    (clearinghouse.api.gate)."""
    user = getattr(request.state, "staff_user", None)
    if not isinstance(user, User):
        raise NotSignedIn("send Authorization: Bearer <API token>")
    return user


def _finance_user(request: Request) -> User:
    """The person behind the bearer token; finance and approver roles only."""
    user = _bearer(request)
    require_role(user, "finance", "approver")
    return user


FinanceUser = Annotated[User, Depends(_finance_user)]


def _auditor(request: Request) -> User:
    """The auditor behind the bearer token."""
    user = _bearer(request)
    require_role(user, "auditor")
    return user


def _audit_session(request: Request) -> Iterator[Session]:
    """A transaction under the read-only database role: whatever a route does, PostgreSQL
    itself refuses any write."""
    with request.app.state.sessions() as session, session.begin():
        # One snapshot for the whole request, so that exports and reports agree with themselves.
        session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        session.execute(text(f"SET LOCAL ROLE {READ_ONLY_ROLE}"))
        yield session


Auditor = Annotated[User, Depends(_auditor)]
AuditSession = Annotated[Session, Depends(_audit_session, scope="function")]


def _operator(request: Request) -> User:
    user = _bearer(request)
    require_role(user, "operator")
    return user


Operator = Annotated[User, Depends(_operator)]
