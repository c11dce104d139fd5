"""The clearing house's own people: staff of a role with a bearer token (finance, approver,
auditor, operator, ...), and people who sign in to the console with a password."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.users import signin
from clearinghouse.users.service import create_user
from tests.builders.ids import unique_id

PASSWORD = "correct horse battery staple"


def bearer(token: str) -> dict[str, str]:
    """The headers that carry a bearer token."""
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Staff:
    """A user of the clearing house with a bearer token."""

    id: str
    role: str
    headers: dict[str, str]


def staff(sessions: sessionmaker[Session], role: str) -> Staff:
    """A new user of the role with a token; committed."""
    user_id = unique_id("u")
    with sessions() as session, session.begin():
        _, token = create_user(session, user_id, role)
    return Staff(user_id, role, bearer(token))


@dataclass(frozen=True)
class Person:
    id: str
    role: str
    password: str = PASSWORD


def person(sessions: sessionmaker[Session], role: str) -> Person:
    """A committed user of the role who signs in with `PASSWORD`."""
    with sessions() as session, session.begin():
        user, _ = create_user(session, unique_id(role[:3]), role)
        signin.set_password(session, user.id, PASSWORD)
    return Person(user.id, role)
