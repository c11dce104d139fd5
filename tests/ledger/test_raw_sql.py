"""Attacks in raw SQL, past post(): the database itself must keep the books balanced, the journal
append-only and member balances at or above zero, and check_consistency() must notice a balance
that was changed behind the journal's back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from clearinghouse import ledger
from clearinghouse.database import libpq_url
from tests.builders import ledger as b


@dataclass(frozen=True)
class Books:
    member: str
    member_id: int
    partner: str
    partner_id: int
    entry_id: int
    posting_id: int


@pytest.fixture
def books(session: Session) -> Books:
    """A member holding 10 points issued by a partner, in one committed entry."""
    with session.begin():
        member, partner = b.member_account(session), b.partner_account(session)
        posted = b.post_transfer(session, partner, member, 10)
        member_id = ledger.get_account(session, member).id
        partner_id = ledger.get_account(session, partner).id
        posting_id = session.execute(
            text("SELECT min(id) FROM postings WHERE entry_id = :id"), {"id": posted.id}
        ).scalar_one()
    return Books(member, member_id, partner, partner_id, posted.id, posting_id)


@pytest.fixture
def raw(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain psycopg connection (the tests' user is a superuser), in a transaction."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        # TRUNCATE waits for every other transaction on the table; never wait forever.
        conn.execute("SET lock_timeout = '10s'")
        conn.commit()
        yield conn
        conn.rollback()


@contextmanager
def refused(sqlstate: str) -> Iterator[None]:
    with pytest.raises(psycopg.Error) as caught:
        yield
    assert caught.value.sqlstate == sqlstate, caught.value


def snapshot(conn: psycopg.Connection[Any], books: Books) -> dict[str, object]:
    """Everything an attack on the journal could change."""
    with conn.transaction():
        return {
            "entries": conn.execute("SELECT count(*) FROM journal_entries").fetchone(),
            "postings": conn.execute("SELECT count(*) FROM postings").fetchone(),
            "entry": conn.execute(
                "SELECT kind, origin, idempotency_key, recorded_at FROM journal_entries"
                " WHERE id = %s",
                (books.entry_id,),
            ).fetchone(),
            "legs": conn.execute(
                "SELECT id, account_id, asset, amount FROM postings WHERE entry_id = %s"
                " ORDER BY id",
                (books.entry_id,),
            ).fetchall(),
            "balances": conn.execute(
                "SELECT account_id, shard, balance FROM account_balances"
                " WHERE account_id IN (%s, %s) ORDER BY 1, 2",
                (books.member_id, books.partner_id),
            ).fetchall(),
        }


def insert_entry(conn: psycopg.Connection[Any], key: str) -> tuple[int, object]:
    row = conn.execute(
        "INSERT INTO journal_entries (kind, origin, idempotency_key, request_hash, occurred_at)"
        " VALUES ('raw', 'raw-sql', %s, '\\x00', now()) RETURNING id, recorded_at",
        (key,),
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def insert_postings(
    conn: psycopg.Connection[Any],
    entry: tuple[int, object],
    legs: list[tuple[int, str, int]],
) -> None:
    entry_id, recorded_at = entry
    for account_id, asset, amount in legs:
        conn.execute(
            "INSERT INTO postings (entry_id, account_id, asset, amount, recorded_at)"
            " VALUES (%s, %s, %s, %s, %s)",
            (entry_id, account_id, asset, amount, recorded_at),
        )


def test_unbalanced_entry_fails_at_commit_and_leaves_nothing(
    raw: psycopg.Connection[Any], books: Books
) -> None:
    before = snapshot(raw, books)
    key = b.key()
    entry = insert_entry(raw, key)
    insert_postings(raw, entry, [(books.partner_id, "PTS", -5), (books.member_id, "PTS", 4)])
    # The statements pass: the check is deferred to the end of the transaction.
    with refused("LD005"):
        raw.commit()
    assert snapshot(raw, books) == before
    assert raw.execute(
        "SELECT count(*) FROM journal_entries WHERE idempotency_key = %s", (key,)
    ).fetchone() == (0,)


def test_entry_unbalanced_in_one_asset_fails_even_if_the_other_balances(
    raw: psycopg.Connection[Any], books: Books, session: Session
) -> None:
    with session.begin():
        till = ledger.get_account(session, b.store_account(session, "CNY")).id
        payable = ledger.get_account(session, b.cny_account(session)).id
    before = snapshot(raw, books)
    entry = insert_entry(raw, b.key())
    legs = [
        (books.partner_id, "PTS", -3),
        (books.member_id, "PTS", 3),
        (payable, "CNY", -100),
        (till, "CNY", 99),
    ]
    insert_postings(raw, entry, legs)
    with refused("LD005"):
        raw.commit()
    assert snapshot(raw, books) == before


def test_entry_without_postings_fails_at_commit(raw: psycopg.Connection[Any], books: Books) -> None:
    before = snapshot(raw, books)
    insert_entry(raw, b.key())
    with refused("LD005"):
        raw.commit()
    assert snapshot(raw, books) == before


def call_ledger_post(
    conn: psycopg.Connection[Any], legs: list[tuple[int, str, int]]
) -> tuple[int, object]:
    """ledger_post called as any client may, with legs by account id."""
    addresses = [
        conn.execute("SELECT address FROM accounts WHERE id = %s", (account,)).fetchone()[0]  # type: ignore[index]
        for account, _, _ in legs
    ]
    row = conn.execute(
        "SELECT entry_id, recorded_at FROM ledger_post('raw', 'raw-sql', %s, '\\x01', now(),"
        " '{}', NULL, %s::text[], %s::text[], %s::bigint[])",
        (b.key(), addresses, [asset for _, asset, _ in legs], [amount for *_, amount in legs]),
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def recorded_at(conn: psycopg.Connection[Any], entry_id: int) -> object:
    row = conn.execute("SELECT recorded_at FROM journal_entries WHERE id = %s", (entry_id,))
    return row.fetchone()[0]  # type: ignore[index]


@pytest.mark.parametrize("entry", ["none", "another time"])
def test_postings_naming_no_entry_fail_at_commit(
    raw: psycopg.Connection[Any], books: Books, entry: str
) -> None:
    before = snapshot(raw, books)
    at = recorded_at(raw, books.entry_id)
    named = (books.entry_id + 10**9, at) if entry == "none" else (books.entry_id, "2020-01-01Z")
    insert_postings(raw, named, [(books.partner_id, "PTS", -1), (books.member_id, "PTS", 1)])
    with refused("LD005"):
        raw.commit()
    assert snapshot(raw, books) == before


def test_a_posting_added_to_a_committed_entry_fails_at_commit(
    raw: psycopg.Connection[Any], books: Books
) -> None:
    before = snapshot(raw, books)
    entry = (books.entry_id, recorded_at(raw, books.entry_id))
    insert_postings(raw, entry, [(books.member_id, "PTS", 1)])
    with refused("LD005"):
        raw.commit()
    assert snapshot(raw, books) == before


def test_ledger_post_checks_its_own_entry_and_leaves_the_rest_to_the_triggers(
    raw: psycopg.Connection[Any], books: Books
) -> None:
    before = snapshot(raw, books)
    with refused("LD005"):
        call_ledger_post(raw, [(books.partner_id, "PTS", -5), (books.member_id, "PTS", 4)])
    raw.rollback()
    with refused("LD005"):
        call_ledger_post(raw, [])
    raw.rollback()
    assert snapshot(raw, books) == before

    # ledger_post's entry is exempt from the deferred checks only while ledger_post writes it:
    # a posting added to it afterwards, in the same transaction, is checked at commit.
    entry = call_ledger_post(raw, [(books.partner_id, "PTS", -2), (books.member_id, "PTS", 2)])
    setting = raw.execute("SELECT current_setting('ledger.entry_in_writing', true)").fetchone()
    assert setting == ("",)
    insert_postings(raw, entry, [(books.member_id, "PTS", 1)])
    with refused("LD005"):
        raw.commit()
    assert snapshot(raw, books) == before

    call_ledger_post(raw, [(books.partner_id, "PTS", -2), (books.member_id, "PTS", 2)])
    raw.commit()
    assert snapshot(raw, books)["entries"] == (before["entries"][0] + 1,)  # type: ignore[index]


@pytest.mark.parametrize(
    ("statement", "sqlstates"),
    [
        ("UPDATE postings SET amount = amount + 1 WHERE id = %(posting)s", {"LD007"}),
        ("UPDATE postings SET account_id = %(partner)s WHERE id = %(posting)s", {"LD007"}),
        ("DELETE FROM postings WHERE id = %(posting)s", {"LD007"}),
        ("UPDATE journal_entries SET kind = 'forged' WHERE id = %(entry)s", {"LD007"}),
        ("DELETE FROM journal_entries WHERE id = %(entry)s", {"LD007"}),
        # CASCADE takes the tables that reference these along, so the trigger gets its say.
        ("TRUNCATE postings CASCADE", {"LD007"}),
        ("TRUNCATE journal_entries CASCADE", {"LD007"}),
        ("TRUNCATE postings, journal_entries CASCADE", {"LD007"}),
        # Without it, PostgreSQL may refuse first: other tables' foreign keys point at these.
        ("TRUNCATE postings", {"LD007", "0A000"}),
        ("TRUNCATE journal_entries", {"LD007", "0A000"}),
    ],
)
def test_journal_is_append_only(
    raw: psycopg.Connection[Any], books: Books, statement: str, sqlstates: set[str]
) -> None:
    before = snapshot(raw, books)
    params = {"posting": books.posting_id, "entry": books.entry_id, "partner": books.partner_id}
    with pytest.raises(psycopg.Error) as caught:
        raw.execute(statement, params)
    assert caught.value.sqlstate in sqlstates, caught.value
    raw.rollback()
    assert snapshot(raw, books) == before


def test_posting_in_another_asset_than_its_account_is_refused(
    raw: psycopg.Connection[Any], books: Books
) -> None:
    before = snapshot(raw, books)
    entry = insert_entry(raw, b.key())
    with refused("23503"):  # foreign key (account_id, asset) -> accounts (id, asset)
        insert_postings(raw, entry, [(books.partner_id, "CNY", -5), (books.member_id, "CNY", 5)])
    raw.rollback()
    assert snapshot(raw, books) == before


def test_member_balance_cannot_be_set_below_zero_directly(
    raw: psycopg.Connection[Any], books: Books
) -> None:
    before = snapshot(raw, books)
    with refused("23514"):  # check constraint account_balances_floor_check
        raw.execute(
            "UPDATE account_balances SET balance = -1 WHERE account_id = %s", (books.member_id,)
        )
    raw.rollback()
    assert snapshot(raw, books) == before


def test_a_balance_changed_behind_the_journal_is_reported(
    engine: Engine, session: Session, books: Books
) -> None:
    with engine.connect() as conn:
        conn.execute(
            text("UPDATE account_balances SET balance = balance + 7 WHERE account_id = :id"),
            {"id": books.member_id},
        )
        with Session(bind=conn) as tampered:
            mismatches = ledger.check_consistency(tampered)
            assert ledger.balance(tampered, books.member) == 17
        conn.rollback()
    assert mismatches == [ledger.BalanceMismatch(books.member, materialised=17, from_postings=10)]
    with session.begin():
        assert ledger.check_consistency(session) == []
        assert ledger.balance(session, books.member) == 10


def test_a_sharded_balance_changed_behind_the_journal_is_reported(
    engine: Engine, session: Session, books: Books
) -> None:
    with engine.connect() as conn:
        conn.execute(
            text(
                "UPDATE account_balances SET balance = balance - 3"
                " WHERE account_id = :id AND shard = 5"
            ),
            {"id": books.partner_id},
        )
        with Session(bind=conn) as tampered:
            mismatches = ledger.check_consistency(tampered)
        conn.rollback()
    assert mismatches == [
        ledger.BalanceMismatch(books.partner, materialised=-13, from_postings=-10)
    ]
    with session.begin():
        assert ledger.check_consistency(session) == []
