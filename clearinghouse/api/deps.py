"""The units of work the finance, audit, operator and console routes declare: one transaction
per request; the auditors' and finance's reports on the replica when there is one fresh enough
(docs/operations.md). (The person calling: clearinghouse.users.deps; partner routes answer
through partners.gate.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Response
from sqlalchemy import text
from sqlalchemy.orm import Session

from clearinghouse.database import Freshness, Replica, read_transaction

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


def _replica(request: Request) -> Replica | None:
    """The replica the app reads reports from (DATABASE_REPLICA_URL), if it has one."""
    replica: Replica | None = getattr(request.app.state, "replica", None)
    return replica


def freshness_headers(session: Session) -> dict[str, str]:
    """What a report's answer says of its data: `Data-Source` (replica or primary) and
    `Data-As-Of`, the instant through which it saw the primary's commits. For a route that
    returns its own Response (the others get them from their session's dependency)."""
    freshness: Freshness = session.info["freshness"]
    return {
        "Data-Source": freshness.source,
        "Data-As-Of": freshness.as_of.isoformat(),
    }


def _shown(session: Session, freshness: Freshness, response: Response) -> Session:
    session.info["freshness"] = freshness
    response.headers.update(freshness_headers(session))
    return session


def _report_session(request: Request, response: Response) -> Iterator[Session]:
    """Finance's reports: a read-only transaction on the replica while it is no more than its
    bound behind, on the primary otherwise."""
    with read_transaction(request.app.state.sessions, _replica(request)) as (session, freshness):
        yield _shown(session, freshness, response)


ReportSession = Annotated[Session, Depends(_report_session, scope="function")]


def _audit_session(request: Request, response: Response) -> Iterator[Session]:
    """A report's transaction under the read-only database role: whatever a route does,
    PostgreSQL itself refuses any write. One snapshot for the whole request (repeatable read),
    so that exports and reports agree with themselves."""
    with read_transaction(
        request.app.state.sessions, _replica(request), isolation="REPEATABLE READ"
    ) as (session, freshness):
        session.execute(text(f"SET LOCAL ROLE {READ_ONLY_ROLE}"))
        yield _shown(session, freshness, response)


AuditSession = Annotated[Session, Depends(_audit_session, scope="function")]
