"""Passwords, lock-out and console sessions, on the shared test database."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.errors import InvalidRequest
from clearinghouse.users import signin
from clearinghouse.users.service import User, create_user
from clearinghouse.users.tables import console_sessions, signin_attempts, users
from tests.builders.ids import unique_id
from tests.builders.users import PASSWORD
from tests.builders.users import person as console_person


def person(sessions: sessionmaker[Session], role: str = "finance") -> User:
    who = console_person(sessions, role)
    return User(who.id, who.role)


def attempt(sessions: sessionmaker[Session], login: str, password: str) -> User | Exception:
    """One sign-in in its own transaction, committed whatever happens, as the console does."""
    with sessions() as session, session.begin():
        try:
            return signin.sign_in(session, login, password, "127.0.0.1")
        except (signin.SignInFailed, signin.LockedOut) as exc:
            return exc


def test_passwords_are_kept_as_argon2id_hashes(sessions: sessionmaker[Session]) -> None:
    user = person(sessions)
    with sessions() as session:
        stored = session.execute(select(users.c.password_hash).where(users.c.id == user.id))
        hashed = stored.scalar_one()
    assert hashed.startswith("$argon2id$")
    assert PASSWORD not in hashed


def test_the_right_password_signs_in_and_the_attempt_is_recorded(
    sessions: sessionmaker[Session],
) -> None:
    user = person(sessions)
    assert attempt(sessions, user.id.upper(), PASSWORD) == user
    with sessions() as session:
        outcomes = session.execute(
            select(signin_attempts.c.outcome, signin_attempts.c.remote_addr).where(
                signin_attempts.c.login == user.id
            )
        ).all()
    assert [tuple(o) for o in outcomes] == [("signed_in", "127.0.0.1")]


def test_a_wrong_password_and_an_unknown_name_fail_alike(sessions: sessionmaker[Session]) -> None:
    user = person(sessions)
    wrong = attempt(sessions, user.id, PASSWORD + "!")
    unknown = attempt(sessions, unique_id("nobody"), PASSWORD)
    assert isinstance(wrong, signin.SignInFailed)
    assert isinstance(unknown, signin.SignInFailed)
    assert wrong.detail == unknown.detail


def test_a_user_without_a_password_cannot_sign_in(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, session.begin():
        user, _ = create_user(session, unique_id("t"), "auditor")
    assert isinstance(attempt(sessions, user.id, ""), signin.SignInFailed)
    assert isinstance(attempt(sessions, user.id, PASSWORD), signin.SignInFailed)


def test_short_passwords_are_refused(sessions: sessionmaker[Session]) -> None:
    user = person(sessions)
    with sessions() as session, pytest.raises(InvalidRequest, match="at least 12"):
        signin.set_password(session, user.id, "short")


def test_five_failures_lock_the_name_even_against_the_right_password(
    sessions: sessionmaker[Session],
) -> None:
    user = person(sessions)
    for _ in range(signin.MAX_FAILURES):
        assert isinstance(attempt(sessions, user.id, "wrong password!!"), signin.SignInFailed)
    locked = attempt(sessions, user.id, PASSWORD)
    assert isinstance(locked, signin.LockedOut)
    assert "retry_after" in locked.extensions

    with sessions() as session, session.begin():
        signin.unlock(session, user.id)
    assert attempt(sessions, user.id, PASSWORD) == user


def test_failures_older_than_the_window_or_before_a_success_do_not_count(
    sessions: sessionmaker[Session],
) -> None:
    user = person(sessions)
    for _ in range(signin.MAX_FAILURES - 1):
        attempt(sessions, user.id, "wrong password!!")
    assert attempt(sessions, user.id, PASSWORD) == user
    for _ in range(signin.MAX_FAILURES - 1):
        attempt(sessions, user.id, "wrong password!!")
    assert attempt(sessions, user.id, PASSWORD) == user

    for _ in range(signin.MAX_FAILURES):
        attempt(sessions, user.id, "wrong password!!")
    with sessions() as session, session.begin():
        session.execute(
            update(signin_attempts)
            .where(signin_attempts.c.login == user.id)
            .values(at=signin_attempts.c.at - signin.LOCKOUT)
        )
    assert attempt(sessions, user.id, PASSWORD) == user


def test_unknown_names_are_locked_out_too(sessions: sessionmaker[Session]) -> None:
    login = unique_id("ghost")
    for _ in range(signin.MAX_FAILURES):
        assert isinstance(attempt(sessions, login, PASSWORD), signin.SignInFailed)
    assert isinstance(attempt(sessions, login, PASSWORD), signin.LockedOut)


def test_parallel_guesses_cannot_exceed_the_limit(sessions: sessionmaker[Session]) -> None:
    """Twelve guesses at once, on twelve connections: five are judged, the rest meet the lock."""
    user = person(sessions)
    results: list[User | Exception] = []
    start = threading.Barrier(12)

    def guess() -> None:
        start.wait()
        results.append(attempt(sessions, user.id, "wrong password!!"))

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kinds = Counter(type(r).__name__ for r in results)
    assert kinds == {"SignInFailed": signin.MAX_FAILURES, "LockedOut": 12 - signin.MAX_FAILURES}


def test_a_disabled_user_cannot_sign_in_and_loses_open_sessions(
    sessions: sessionmaker[Session],
) -> None:
    user = person(sessions)
    with sessions() as session, session.begin():
        cookie, _ = signin.start_session(session, user)
        signin.disable(session, user.id)
    assert isinstance(attempt(sessions, user.id, PASSWORD), signin.SignInFailed)
    with sessions() as session, session.begin():
        assert signin.session_for(session, cookie) is None


def test_a_session_opens_by_its_cookie_and_ends_on_sign_out(
    sessions: sessionmaker[Session],
) -> None:
    user = person(sessions)
    with sessions() as session, session.begin():
        cookie, opened = signin.start_session(session, user)
    with sessions() as session, session.begin():
        found = signin.session_for(session, cookie)
        assert found is not None
        assert found.user == user
        assert found.csrf_token == opened.csrf_token
        stored = session.execute(
            select(console_sessions.c.id_digest).where(console_sessions.c.user_id == user.id)
        ).scalar_one()
        assert cookie.encode() not in stored
        assert signin.session_for(session, cookie + "x") is None
        signin.end_session(session, cookie)
    with sessions() as session, session.begin():
        assert signin.session_for(session, cookie) is None


def test_idle_and_old_sessions_end(sessions: sessionmaker[Session]) -> None:
    user = person(sessions)
    with sessions() as session, session.begin():
        idle, _ = signin.start_session(session, user)
        old, _ = signin.start_session(session, user)
        session.execute(
            text(
                "UPDATE console_sessions SET last_seen_at = now() - :idle WHERE id_digest = :digest"
            ),
            {"idle": signin.IDLE_TIMEOUT, "digest": signin._digest(idle)},
        )
        session.execute(
            text("UPDATE console_sessions SET expires_at = now() WHERE id_digest = :digest"),
            {"digest": signin._digest(old)},
        )
    with sessions() as session, session.begin():
        assert signin.session_for(session, idle) is None
        assert signin.session_for(session, old) is None


def test_a_new_password_ends_every_session(sessions: sessionmaker[Session]) -> None:
    user = person(sessions)
    with sessions() as session, session.begin():
        first, _ = signin.start_session(session, user)
        second, _ = signin.start_session(session, user)
        signin.set_password(session, user.id, "another long password")
    with sessions() as session, session.begin():
        assert signin.session_for(session, first) is None
        assert signin.session_for(session, second) is None
    assert isinstance(attempt(sessions, user.id, PASSWORD), signin.SignInFailed)
    assert attempt(sessions, user.id, "another long password") == user
