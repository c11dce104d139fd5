"""People sign in to the console with a password: argon2 hashes, lock-out after repeated
failures, and sessions kept by the digest of their cookie, each with its own CSRF token."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import DateTime, func, literal, select, text, update
from sqlalchemy.orm import Session

from clearinghouse.errors import DomainError, InvalidRequest, NotFound
from clearinghouse.users.service import User
from clearinghouse.users.tables import console_sessions, signin_attempts, users

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
IDLE_TIMEOUT = timedelta(minutes=30)
SESSION_LIFETIME = timedelta(hours=12)
# last_seen_at is written at most this often, not on every page.
TOUCH_EVERY = timedelta(minutes=1)

NEVER = literal("-infinity").cast(DateTime(timezone=True))

_hasher = PasswordHasher()
# Verified against when the name is unknown, so that a wrong name costs as long as a wrong
# password and timing does not tell which names exist.
_DECOY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class SignInFailed(DomainError):
    code = "sign_in_failed"
    status = 401
    title = "Sign-in failed"


class LockedOut(DomainError):
    code = "locked_out"
    status = 429
    title = "Too many failed sign-ins"


class UserNotFound(NotFound):
    code = "user_not_found"
    title = "No such user"


@dataclass(frozen=True)
class ConsoleSession:
    user: User
    csrf_token: str
    expires_at: datetime


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequest(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidRequest(f"a password may have at most {MAX_PASSWORD_LENGTH} characters")


def set_password(session: Session, user_id: str, password: str) -> None:
    """Set (or replace) a user's password; every console session of the user ends."""
    check_password_rules(password)
    _change_user(
        session, user_id, password_hash=_hasher.hash(password), password_changed_at=func.now()
    )


def _change_user(session: Session, user_id: str, **values: Any) -> None:
    """Change what decides who may sign in: every open session of the user ends with it."""
    changed = session.execute(
        update(users).where(users.c.id == user_id).values(**values).returning(users.c.id)
    ).first()
    if changed is None:
        raise UserNotFound(f"user {user_id} does not exist")
    end_sessions_of(session, user_id)


def _record(session: Session, login: str, outcome: str, remote_addr: str | None) -> None:
    session.execute(
        signin_attempts.insert().values(
            login=login,
            succeeded=outcome == "signed_in",
            outcome=outcome,
            remote_addr=remote_addr,
        )
    )
    log.info("sign_in", extra={"login": login, "outcome": outcome, "remote_addr": remote_addr})


def locked_until(session: Session, login: str) -> datetime | None:
    """When the name's lock-out ends, if it is locked out now: `MAX_FAILURES` failed attempts
    within `LOCKOUT`, counted since the last success or unlock."""
    since = select(func.max(signin_attempts.c.at)).where(
        signin_attempts.c.login == login,
        signin_attempts.c.outcome.in_(("signed_in", "unlocked")),
    )
    failures = (
        session.execute(
            select(signin_attempts.c.at)
            .where(
                signin_attempts.c.login == login,
                signin_attempts.c.outcome.in_(("wrong_password", "unknown_user")),
                signin_attempts.c.at > func.now() - LOCKOUT,
                signin_attempts.c.at > func.coalesce(since.scalar_subquery(), NEVER),
            )
            .order_by(signin_attempts.c.at.desc())
            .limit(MAX_FAILURES)
        )
        .scalars()
        .all()
    )
    if len(failures) < MAX_FAILURES:
        return None
    oldest: datetime = failures[-1]
    return oldest + LOCKOUT


def sign_in(session: Session, login: str, password: str, remote_addr: str | None) -> User:
    """The user whose name and password these are. Failures say nothing about which of the two
    was wrong. The caller commits whatever happens: the attempt must be recorded either way."""
    login = login.strip().lower()
    # One attempt per name at a time, so that parallel guesses cannot slip past the count.
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('signin:' || :login))"), {"login": login}
    )
    until = locked_until(session, login)
    if until is not None:
        _record(session, login, "locked", remote_addr)
        raise LockedOut(
            "too many failed sign-ins; try again later or ask an operator to unlock the name",
            retry_after=until.isoformat(),
        )
    row = session.execute(
        select(users.c.id, users.c.role, users.c.password_hash, users.c.disabled_at).where(
            users.c.id == login
        )
    ).first()
    stored = row.password_hash if row is not None and row.password_hash else _DECOY_HASH
    try:
        _hasher.verify(stored, password)
        matched = row is not None and row.password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        matched = False
    if row is None:
        outcome = "unknown_user"
    elif not matched:
        outcome = "no_password" if row.password_hash is None else "wrong_password"
    elif row.disabled_at is not None:
        outcome = "disabled"
    else:
        outcome = "signed_in"
    _record(session, login, outcome, remote_addr)
    if outcome != "signed_in":
        raise SignInFailed("the name or the password is wrong")
    assert row is not None
    if _hasher.check_needs_rehash(row.password_hash):
        session.execute(
            update(users).where(users.c.id == row.id).values(password_hash=_hasher.hash(password))
        )
    return User(row.id, row.role)


def unlock(session: Session, login: str) -> None:
    """Lift a lock-out now; the failures before it no longer count."""
    _record(session, login.strip().lower(), "unlocked", None)


def start_session(session: Session, user: User) -> tuple[str, ConsoleSession]:
    """A new console session: the cookie value (shown to the browser only) and the session."""
    cookie = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    expires_at = session.execute(
        console_sessions.insert()
        .values(
            id_digest=_digest(cookie),
            user_id=user.id,
            csrf_token=csrf_token,
            expires_at=func.now() + SESSION_LIFETIME,
        )
        .returning(console_sessions.c.expires_at)
    ).scalar_one()
    return cookie, ConsoleSession(user, csrf_token, expires_at)


def session_for(session: Session, cookie: str) -> ConsoleSession | None:
    """The live session the cookie opens, if any: not ended, not past its lifetime, not idle
    too long, and its user not disabled. Seeing it counts as activity."""
    row = session.execute(
        select(
            console_sessions.c.id_digest,
            console_sessions.c.csrf_token,
            console_sessions.c.expires_at,
            console_sessions.c.last_seen_at,
            users.c.id,
            users.c.role,
            func.now().label("now"),
        )
        .join(users, users.c.id == console_sessions.c.user_id)
        .where(
            console_sessions.c.id_digest == _digest(cookie),
            console_sessions.c.ended_at.is_(None),
            console_sessions.c.expires_at > func.now(),
            console_sessions.c.last_seen_at > func.now() - IDLE_TIMEOUT,
            users.c.disabled_at.is_(None),
        )
    ).first()
    if row is None:
        return None
    if row.now - row.last_seen_at > TOUCH_EVERY:
        session.execute(
            update(console_sessions)
            .where(console_sessions.c.id_digest == row.id_digest)
            .values(last_seen_at=func.now())
        )
    return ConsoleSession(User(row.id, row.role), row.csrf_token, row.expires_at)


def end_session(session: Session, cookie: str) -> None:
    session.execute(
        update(console_sessions)
        .where(
            console_sessions.c.id_digest == _digest(cookie), console_sessions.c.ended_at.is_(None)
        )
        .values(ended_at=func.now())
    )


def end_sessions_of(session: Session, user_id: str) -> int:
    """End every open console session of the user; how many there were."""
    return len(
        session.execute(
            update(console_sessions)
            .where(console_sessions.c.user_id == user_id, console_sessions.c.ended_at.is_(None))
            .values(ended_at=func.now())
            .returning(console_sessions.c.id_digest)
        ).all()
    )


def disable(session: Session, user_id: str) -> None:
    """The user can no longer sign in or use the API token; open sessions end."""
    _change_user(session, user_id, disabled_at=func.coalesce(users.c.disabled_at, func.now()))
