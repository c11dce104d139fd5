"""The units of work the finance, audit, operator and console routes declare: one transaction
per request. (The person calling: clearinghouse.users.deps; partner routes answer through
partners.gate.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import text
from sqlalchemy.orm import Session

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


def _audit_session(request: Request) -> Iterator[Session]:
    """A transaction under the read-only database role: whatever a route does, PostgreSQL
    itself refuses any write."""
    with request.app.state.sessions() as session, session.begin():
        # One snapshot for the whole request, so that exports and reports agree with themselves.
        session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        session.execute(text(f"SET LOCAL ROLE {READ_ONLY_ROLE}"))
        yield session


AuditSession = Annotated[Session, Depends(_audit_session, scope="function")]
