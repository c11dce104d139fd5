"""Tamper evidence, the point of sealing: someone with the keys to the database switches the
append-only triggers off and changes, deletes or back-dates journal entries. Verification names
the first bad block and entry, and `clearinghouse audit verify` exits 1 saying so; on honest
books it exits 0. (The materialised balances drift too when postings change behind the triggers'
back: `ledger check` reports that separately.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from clearinghouse import jobs, ledger
from clearinghouse.audit import sealing, verify
from clearinghouse.audit.canonical import encode, load_entries
from clearinghouse.audit.cli import audit_app
from clearinghouse.audit.verify import Problem
from tests.builders.audit import (
    SEALS,
    Posted,
    block_of,
    newest_sealed_at,
    recorded_earlier,
    transfers,
    triggers_off,
)
from tests.builders.databases import Books
from tests.cli_fixtures import run_cli

CHANGED = "entry changed after sealing"
MISSING = "sealed entry is missing"
ROOT = "Merkle root differs from its entries"
INSERTED = "recorded before the last seal but never sealed: inserted after the fact"
BACKDATED = "recorded long before the previous block was sealed: back-dated"


def _three_blocks(books: Books) -> list[list[Posted]]:
    """Three sealed blocks of three entries each."""
    blocks: list[list[Posted]] = []
    for number in (1, 2, 3):
        blocks.append(transfers(books.sessions, 3))
        (block,) = sealing.seal_all(books.sessions)
        assert (block.number, block.entry_count) == (number, 3)
    return blocks


def _problems(books: Books) -> list[Problem]:
    with books.sessions() as session:
        return verify.verify_database(session).problems


def _verify_cli(books: Books) -> tuple[int, str, str]:
    result = run_cli("audit", "verify", env={"DATABASE_URL": books.url})
    return result.exit_code, result.stdout, result.stderr


def _assert_cli_names(books: Books, first: Problem) -> str:
    code, _, err = _verify_cli(books)
    assert code == 1, err
    assert err.splitlines()[0] == f"FAILED: {first}"
    return err


def _shift_amounts(session: Session, entry_id: int, by: int) -> None:
    """Take `by` off both legs of a transfer: the entry still balances."""
    session.execute(
        text(
            "UPDATE postings SET amount = amount + CASE WHEN amount < 0 THEN :by ELSE -:by END"
            " WHERE entry_id = :id"
        ),
        {"id": entry_id, "by": by},
    )


def test_honest_books_verify(books: Books, no_seal_delay: None) -> None:
    _three_blocks(books)
    transfers(books.sessions, 1)  # recorded just now, not sealed yet: not a problem
    assert _problems(books) == []
    code, out, err = _verify_cli(books)
    assert code == 0, err
    assert "verified 3 blocks and 9 entries: intact" in out


def test_the_triggers_refuse_what_the_tests_below_do_behind_their_back(
    books: Books, no_seal_delay: None
) -> None:
    (posted,) = transfers(books.sessions, 1)
    for statement in (
        "UPDATE postings SET amount = amount WHERE entry_id = :id",
        "DELETE FROM postings WHERE entry_id = :id",
        "UPDATE journal_entries SET metadata = '{}' WHERE id = :id",
        "DELETE FROM journal_entries WHERE id = :id",
    ):
        with books.sessions() as session:
            with pytest.raises(DBAPIError) as refused:
                session.execute(text(statement), {"id": posted.id})
            assert getattr(refused.value.orig, "sqlstate", None) == "LD007"  # append-only


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE seal_items",
        "TRUNCATE seal_blocks CASCADE",
        "TRUNCATE seal_items, seal_blocks",
        "DELETE FROM seal_items",
        "UPDATE seal_blocks SET sealed_at = now()",
    ],
)
def test_the_seals_are_kept_like_the_journal(
    books: Books, no_seal_delay: None, statement: str
) -> None:
    transfers(books.sessions, 2)
    sealing.seal_all(books.sessions)
    with books.sessions() as session:
        with pytest.raises(DBAPIError) as refused:
            session.execute(text(statement))
        assert getattr(refused.value.orig, "sqlstate", None) == "LD007"  # append-only
    with books.sessions() as session:
        assert verify.unsealed_count(session) == 0


def test_a_changed_posting_names_its_block_and_entry(books: Books, no_seal_delay: None) -> None:
    blocks = _three_blocks(books)
    target, later = blocks[1][1], blocks[2][0]
    with triggers_off(books.sessions) as session:
        _shift_amounts(session, target.id, 10)
        _shift_amounts(session, later.id, 1)
    with books.sessions() as session:
        assert ledger.balance(session, target.destination, as_of=None) == target.amount
        assert sorted(p.amount for p in ledger.entry_postings(session, target.id)) == [
            -(target.amount - 10),
            target.amount - 10,
        ]
        drifted = {m.address for m in ledger.check_consistency(session)}
    assert {target.source, target.destination} <= drifted

    problems = _problems(books)
    assert problems[:2] == [Problem(2, target.id, CHANGED), Problem(2, None, ROOT)]
    assert Problem(3, later.id, CHANGED) in problems
    err = _assert_cli_names(books, Problem(2, target.id, CHANGED))
    assert f"also: block 3, entry {later.id}: {CHANGED}" in err


@pytest.mark.parametrize(
    "change",
    [
        'UPDATE journal_entries SET metadata = \'{"note": "later"}\' WHERE id = :id',
        "UPDATE journal_entries SET occurred_at = occurred_at - interval '1 day' WHERE id = :id",
        # With its postings, in one statement: their key to the entry includes the time.
        "WITH moved AS (UPDATE postings SET recorded_at = recorded_at + interval '1 second'"
        " WHERE entry_id = :id) UPDATE journal_entries"
        " SET recorded_at = recorded_at + interval '1 second' WHERE id = :id",
        "UPDATE journal_entries SET kind = 'refund' WHERE id = :id",
        "UPDATE postings SET account_id = (SELECT id FROM accounts"
        " WHERE address = 'coalition:breakage') WHERE entry_id = :id AND amount < 0",
    ],
    ids=["metadata", "occurred_at", "recorded_at", "kind", "account"],
)
def test_any_change_to_an_entry_is_caught(books: Books, no_seal_delay: None, change: str) -> None:
    blocks = _three_blocks(books)
    target = blocks[0][2]
    with triggers_off(books.sessions) as session:
        session.execute(text(change), {"id": target.id})
    assert _problems(books)[0] == Problem(1, target.id, CHANGED)


def test_an_entry_changed_with_its_seal_is_caught_by_the_root(
    books: Books, no_seal_delay: None
) -> None:
    blocks = _three_blocks(books)
    target = blocks[1][0]
    with triggers_off(books.sessions) as session:
        _shift_amounts(session, target.id, 5)
        session.execute(text("ALTER TABLE seal_items DISABLE TRIGGER USER"))
        (entry,) = load_entries(session, [target.id])
        leaf = sealing.leaf_hash(encode(entry))
        session.execute(
            text("UPDATE seal_items SET leaf_hash = :leaf WHERE entry_id = :id"),
            {"leaf": leaf, "id": target.id},
        )
        session.execute(text("ALTER TABLE seal_items ENABLE TRIGGER USER"))
    assert _problems(books) == [Problem(2, None, ROOT)]
    _assert_cli_names(books, Problem(2, None, ROOT))


def test_a_deleted_entry_names_its_block_and_entry(books: Books, no_seal_delay: None) -> None:
    blocks = _three_blocks(books)
    target = blocks[1][2]
    with triggers_off(books.sessions) as session:
        session.execute(text("DELETE FROM postings WHERE entry_id = :id"), {"id": target.id})
        session.execute(text("DELETE FROM journal_entries WHERE id = :id"), {"id": target.id})
    with books.sessions() as session:
        assert load_entries(session, [target.id]) == []
        assert ledger.check_consistency(session) != []
    assert _problems(books) == [Problem(2, target.id, MISSING)]
    _assert_cli_names(books, Problem(2, target.id, MISSING))


def test_a_back_dated_entry_is_caught_before_and_after_sealing(
    books: Books, no_seal_delay: None
) -> None:
    blocks = _three_blocks(books)
    honest = blocks[0][0]
    # Appending needs no trigger switched off: the balances follow the slipped-in postings, so
    # only the time it claims gives it away.
    with books.sessions() as session, session.begin():
        recorded = newest_sealed_at(session) - timedelta(hours=1)
        inserted: int = session.execute(
            text(
                "INSERT INTO journal_entries (kind, origin, idempotency_key, request_hash,"
                " occurred_at, recorded_at) VALUES ('accrual', 'test', 'slipped-in',"
                " CAST('x' AS bytea), :at, :at) RETURNING id"
            ),
            {"at": recorded},
        ).scalar_one()
        session.execute(
            text(
                "INSERT INTO postings (entry_id, account_id, asset, amount, recorded_at)"
                " SELECT :entry, id, 'PTS', CASE WHEN address = :source THEN -500 ELSE 500 END,"
                " :at FROM accounts WHERE address IN (:source, :destination)"
            ),
            {
                "entry": inserted,
                "at": recorded,
                "source": honest.source,
                "destination": honest.destination,
            },
        )
    with books.sessions() as session:
        assert ledger.balance(session, honest.destination, as_of=recorded) == 500

    assert _problems(books) == [Problem(None, inserted, INSERTED)]
    _assert_cli_names(books, Problem(None, inserted, INSERTED))

    # The sealer picks it up in a block of its own: still flagged, now by block.
    (block,) = sealing.seal_all(books.sessions)
    with books.sessions() as session:
        assert block_of(session, inserted) == block.number == 4
    assert _problems(books) == [Problem(4, inserted, BACKDATED)]
    _assert_cli_names(books, Problem(4, inserted, BACKDATED))


def test_a_digest_no_block_has_fails_verification(books: Books, no_seal_delay: None) -> None:
    _three_blocks(books)
    with books.sessions() as session:
        held = [b.block_hash for b in verify.sealed_blocks(session)]
        # Any digest along the chain is one it extends, in either case.
        for digest in (held[0], held[-1].upper()):
            assert verify.verify_database(session, digest).problems == []
        made_up = "00" * 32
        (problem,) = verify.verify_database(session, made_up).problems
    assert problem.message.startswith(f"no block has the digest {made_up}")
    result = run_cli("audit", "verify", "--digest", made_up, env={"DATABASE_URL": books.url})
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"FAILED: {problem}"


def test_a_malformed_digest_is_a_usage_error(books: Books) -> None:
    digest = "ab" * 32
    for malformed in ("not-hex", digest[:-1], digest + "0", f"{digest[:-1]}g"):
        with books.sessions() as session, pytest.raises(ValueError, match="64 hexadecimal"):
            verify.verify_database(session, malformed)
        for command in (("verify",), ("verify", "--export", "."), ("prove", "1")):
            result = CliRunner().invoke(audit_app, [*command, "--digest", malformed])
            assert result.exit_code == 2, result.output
            said = " ".join(result.output.replace("│", " ").split())
            assert "Invalid value for '--digest': a digest is a block hash of 64" in said


def test_truncated_seals_fail_verification(books: Books, no_seal_delay: None) -> None:
    posted = transfers(books.sessions, 30)
    ids = [p.id for p in posted]
    recorded_earlier(books.sessions, ids, "1 hour")
    sealing.seal_all(books.sessions)
    with triggers_off(books.sessions, SEALS) as session:
        session.execute(text("TRUNCATE seal_items, seal_blocks"))

    with books.sessions() as session:
        verdict = verify.verify_database(session)
    assert (verdict.blocks, verdict.entries, verdict.unsealed) == (0, 0, 30)
    assert verdict.oldest_unsealed is not None
    assert verdict.oldest_unsealed.id == ids[0]
    (problem,) = verdict.problems
    assert problem.entry_id == ids[0]
    assert problem.message.startswith("entries not sealed though recorded more than")
    assert problem.message.endswith(
        ": 30, this the oldest; sealing stopped, or the seals were removed"
    )
    code, out, err = _verify_cli(books)
    assert code == 1
    assert f"30 entries not sealed yet; the oldest, entry {ids[0]}, recorded at" in out
    assert err.splitlines()[0].startswith(f"FAILED: entry {ids[0]}: entries not sealed though")
    assert err.splitlines()[0].endswith(
        ": 30, this the oldest; sealing stopped, or the seals were removed"
    )


def test_entries_waiting_for_the_sealer_are_counted_and_fail_once_overdue(
    books: Books, no_seal_delay: None
) -> None:
    _three_blocks(books)
    waiting = transfers(books.sessions, 2)
    recorded = waiting[-1].recorded_at
    with books.sessions() as session:
        verdict = verify.verify_database(session, now=recorded + sealing.SEAL_INTERVAL)
        assert verdict.problems == []
        assert verdict.unsealed == 2
        assert verdict.oldest_unsealed is not None
        assert verdict.oldest_unsealed.id == waiting[0].id
        late = verify.verify_database(
            session, now=waiting[0].recorded_at + sealing.OVERDUE_AFTER + timedelta(microseconds=1)
        )
    # Only the first of the two is overdue at that instant.
    assert [(p.entry_id, p.message.split("; ")[0][-20:]) for p in late.problems] == [
        (waiting[0].id, ": 1, this the oldest")
    ]
    sealing.seal_all(books.sessions)
    with books.sessions() as session:
        sealed = verify.verify_database(session, now=recorded + timedelta(days=1))
    assert (sealed.problems, sealed.unsealed, sealed.oldest_unsealed) == ([], 0, None)


def test_sealing_stops_before_an_entry_changed_before_it_was_sealed(
    books: Books, no_seal_delay: None
) -> None:
    posted = transfers(books.sessions, 5)
    target = posted[2]
    with triggers_off(books.sessions) as session:
        _shift_amounts(session, target.id, 10)  # still balanced; the member's balance is not
    with pytest.raises(sealing.SealingHalted) as halted:
        sealing.seal_all(books.sessions)
    assert halted.value.entry_id == target.id
    assert str(halted.value) == (
        f"sealing stopped before entry {target.id}: account {target.destination} holds "
        f"{target.amount} but its postings sum to {target.amount - 10}"
    )
    # The entries before it are sealed, as they were written; nothing from it on.
    assert [(b.number, b.entry_count) for b in halted.value.sealed] == [(1, 2)]
    with pytest.raises(sealing.SealingHalted) as again:
        sealing.seal_all(books.sessions)
    assert (again.value.entry_id, again.value.sealed) == (target.id, [])
    with books.sessions() as session:
        assert verify.unsealed_count(session) == 3

    # The command stops there too: it says why, and exits with status 1.
    result = run_cli("audit", "seal", env={"DATABASE_URL": books.url})
    assert result.exit_code == 1
    assert f"error: sealing stopped before entry {target.id}: account" in result.stderr
    assert "run `clearinghouse ledger check`" in result.stderr


def test_sealing_stops_before_an_entry_that_no_longer_balances(
    books: Books, no_seal_delay: None
) -> None:
    posted = transfers(books.sessions, 2)
    with triggers_off(books.sessions) as session:
        session.execute(
            text("UPDATE postings SET amount = amount + 7 WHERE entry_id = :id AND amount > 0"),
            {"id": posted[0].id},
        )
    with pytest.raises(sealing.SealingHalted) as halted:
        sealing.seal_all(books.sessions)
    assert (halted.value.entry_id, halted.value.sealed) == (posted[0].id, [])
    assert halted.value.reason == "postings must sum to zero for every asset: PTS sums to 7"


def test_the_sealing_job_logs_an_error_each_time_it_stops(
    books: Books, no_seal_delay: None, caplog: pytest.LogCaptureFixture
) -> None:
    (posted,) = transfers(books.sessions, 1)
    with triggers_off(books.sessions) as session:
        _shift_amounts(session, posted.id, 1)
    (job,) = [replace(j, every_seconds=0.01) for j in jobs.JOBS if j.name == "seal"]

    async def run_for_a_moment() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(jobs._every(job, books.sessions), timeout=1.0)

    with caplog.at_level(logging.ERROR, logger=jobs.__name__):
        asyncio.run(run_for_a_moment())
    alarms = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(alarms) >= 2
    for alarm in alarms:
        assert alarm.exc_info is not None
        halted = alarm.exc_info[1]
        assert isinstance(halted, sealing.SealingHalted)
        assert halted.entry_id == posted.id
