"""Exchanges repeated with their key: the first exchange again, or, once its entry's month has
been archived (the key stays, the entry leaves), a clear refusal rather than a wrong answer."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.ledger.tables import journal_entries
from clearinghouse.points import exchange
from tests.builders.partners import make_programme
from tests.builders.points import new_member


def _exchange(
    sessions: sessionmaker[Session], partner_id: str, member_id: str, key: str
) -> exchange.Exchange:
    with sessions() as session, session.begin():
        return exchange.exchange(session, partner_id, member_id, "in", 1_000, key=key)


def test_a_repeated_key_answers_with_the_first_exchange_or_refuses_once_archived(
    sessions: sessionmaker[Session],
) -> None:
    programme = make_programme(sessions, exchange_rate="0.5")
    member_id = new_member(sessions, [programme.id])
    key = str(uuid.uuid4())
    first = _exchange(sessions, programme.id, member_id, key)
    assert _exchange(sessions, programme.id, member_id, key) == first

    # What archiving the entry's month leaves: the key naming an entry no longer in the journal.
    archived_key = str(uuid.uuid4())
    with sessions() as session, session.begin():
        gone = session.execute(select(func.max(journal_entries.c.id))).scalar_one() + 1_000_000
        session.execute(
            text(
                "INSERT INTO journal_keys"
                " (origin, idempotency_key, entry_id, recorded_at, request_hash)"
                " VALUES (:origin, :key, :entry, now() - interval '60 days', CAST('x' AS bytea))"
            ),
            {"origin": f"partner:{programme.id}", "key": f"exchange:{archived_key}", "entry": gone},
        )
    with pytest.raises(exchange.ExchangeArchived, match=f"entry {gone}"):
        _exchange(sessions, programme.id, member_id, archived_key)
