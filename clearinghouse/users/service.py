"""Creating users and recognising them by their API token."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from clearinghouse.errors import AlreadyExists, DomainError, InvalidRequest
from clearinghouse.users.tables import ROLES, users


class NotSignedIn(DomainError):
    code = "not_signed_in"
    status = 401
    title = "Not signed in"


class Forbidden(DomainError):
    code = "forbidden"
    status = 403
    title = "Not allowed for this role"


@dataclass(frozen=True)
class User:
    id: str
    role: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def create_user(session: Session, user_id: str, role: str) -> tuple[User, str]:
    """The new user and its API token, which is shown once and kept only as a digest."""
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
    token = "cht_" + secrets.token_urlsafe(32)
    created = session.execute(
        insert(users)
        .values(id=user_id, role=role, token_digest=_digest(token))
        .on_conflict_do_nothing()
        .returning(users.c.id)
    ).first()
    if created is None:
        raise AlreadyExists(f"user {user_id} already exists")
    return User(user_id, role), token


def user_by_token(session: Session, token: str) -> User:
    row = session.execute(
        select(users.c.id, users.c.role).where(
            users.c.token_digest == _digest(token), users.c.disabled_at.is_(None)
        )
    ).first()
    if row is None:
        raise NotSignedIn("a valid API token is required")
    return User(row.id, row.role)


def require_role(user: User, *roles: str) -> None:
    if user.role not in roles:
        raise Forbidden(f"this needs the role {' or '.join(roles)}")
