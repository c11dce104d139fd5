"""The journal's month partitions: made ahead, guarded like the journal, and a month archived out
of the database once it is over, sealed and settled, with the chain still verifying."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock, ledger, migrate
from clearinghouse.app import create_app
from clearinghouse.audit import archive, sealing, verify
from clearinghouse.audit.exports import (
    Manifest,
    RangeArchived,
    address_to_account,
    asset_to_commodity,
)
from clearinghouse.ledger import partitions
from clearinghouse.users.service import User
from settlement import approval, reports, runs
from tests.builders.audit import transfers
from tests.builders.databases import Books
from tests.builders.dates import business_today
from tests.builders.http import assert_problem, own_client
from tests.builders.ledger import member_account, partner_account
from tests.builders.partners import make_partner
from tests.builders.points import accrue, new_member
from tests.builders.settlement import settle_after_cutoff
from tests.builders.users import person, staff
from tests.cli_fixtures import run_cli


def _month_now(session: Session) -> date:
    now: datetime = session.execute(text("SELECT now()")).scalar_one()
    return now.astimezone(UTC).date().replace(day=1)


def _next(month: date, by: int = 1) -> date:
    index = month.year * 12 + month.month - 1 + by
    return date(index // 12, index % 12 + 1, 1)


def _attached(session: Session, table: str) -> list[str]:
    return list(
        session.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = CAST(:t AS regclass) ORDER BY c.relname"
            ),
            {"t": table},
        ).scalars()
    )


def _raw_entry(session: Session, at: datetime, key: str, destination: str | None = None) -> int:
    """A balanced transfer of 5 points written as raw rows, recorded at `at`, to `destination`
    (a new member's account by default)."""
    source, destination = partner_account(session), destination or member_account(session)
    entry_id: int = session.execute(
        text(
            "INSERT INTO journal_entries (kind, origin, idempotency_key, request_hash,"
            " occurred_at, recorded_at) VALUES ('accrual', 'test', :key, CAST('x' AS bytea),"
            " :at, :at) RETURNING id"
        ),
        {"key": key, "at": at},
    ).scalar_one()
    session.execute(
        text(
            "INSERT INTO postings (entry_id, account_id, asset, amount, recorded_at)"
            " SELECT :entry, id, 'PTS', CASE WHEN address = :source THEN -5 ELSE 5 END, :at"
            " FROM accounts WHERE address IN (:source, :destination)"
        ),
        {"entry": entry_id, "at": at, "source": source, "destination": destination},
    )
    return entry_id


def test_months_are_made_ahead_once_and_entries_go_to_their_month(books: Books) -> None:
    posted = transfers(books.sessions, 2)
    with books.sessions() as session, session.begin():
        month = _month_now(session)
        names = [f"journal_entries_{partitions.suffix(_next(month, i))}" for i in range(4)]
        assert _attached(session, "journal_entries") == sorted([*names, "journal_entries_default"])
        assert partitions.add_ahead(session) == 0
        assert partitions.add_ahead(session, months=5) == 2
        assert len(partitions.list_partitions(session).months) == 6
        homes = session.execute(
            text(
                "SELECT DISTINCT tableoid::regclass::text FROM journal_entries WHERE id = ANY(:ids)"
                " UNION SELECT DISTINCT tableoid::regclass::text FROM postings"
                " WHERE entry_id = ANY(:ids)"
            ),
            {"ids": [p.id for p in posted]},
        ).scalars()
        suffix = partitions.suffix(month)
        assert sorted(homes) == [f"journal_entries_{suffix}", f"postings_{suffix}"]


def test_an_entry_before_every_month_lands_in_the_default_partition(books: Books) -> None:
    with books.sessions() as session, session.begin():
        first = partitions.list_partitions(session).months[0].starts_at
        _raw_entry(session, first - timedelta(days=40), "early")
    with books.sessions() as session:
        assert partitions.list_partitions(session).default_entries == 1


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE {entries}",
        "TRUNCATE {postings}",
        "UPDATE {entries} SET kind = 'refund'",
        "DELETE FROM {postings}",
        "TRUNCATE postings_default, journal_entries_default",
    ],
)
def test_a_month_partition_is_append_only_like_the_journal(books: Books, statement: str) -> None:
    transfers(books.sessions, 1)
    with books.sessions() as session, session.begin():
        suffix = partitions.suffix(_month_now(session))
    sql = statement.format(entries=f"journal_entries_{suffix}", postings=f"postings_{suffix}")
    with books.sessions() as session, session.begin(), pytest.raises(DBAPIError) as refused:
        session.execute(text(sql))
    assert "append-only" in str(refused.value)
    with books.sessions() as session:
        assert session.execute(text("SELECT count(*) FROM postings")).scalar() == 2


def test_an_entry_key_is_unique_across_months(books: Books) -> None:
    with books.sessions() as session, session.begin():
        first = partitions.list_partitions(session).months[0].starts_at
        _raw_entry(session, first + timedelta(days=1), "once")
    with (
        books.sessions() as session,
        session.begin(),
        pytest.raises(IntegrityError, match="journal_keys_pkey"),
    ):
        _raw_entry(session, first + timedelta(days=40), "once")


def _after_month(sessions: sessionmaker[Session], month: date) -> datetime:
    """An instant in the month after `month`: the clock to archive it by."""
    with sessions() as session:
        ends_at: datetime = session.execute(
            text("SELECT ends_at FROM journal_partitions WHERE month = :m"), {"m": month}
        ).scalar_one()
    return ends_at + timedelta(days=1)


def _archive(books: Books, month: date, folder: Path, *, drop: bool = False) -> archive.Archived:
    with books.sessions() as session, session.begin():
        session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        return archive.archive_month(session, month, folder, drop=drop)


def test_a_month_is_archived_once_over_sealed_and_the_chain_still_verifies(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    with books.sessions() as session, session.begin():
        member = member_account(session)
        kept = ledger.transfer(
            kind="accrual",
            origin="test",
            idempotency_key="kept",
            source=partner_account(session),
            destination=member,
            amount=7,
            occurred_at=clock.now(),
        )
        first = ledger.post(session, kept)
    transfers(books.sessions, 2)
    with books.sessions() as session:
        month = _month_now(session)
        balances = ledger.trial_balance(session)
        posted_balances = ledger.trial_balance(session, as_of=clock.now())

    with pytest.raises(archive.ArchiveRefused, match="is not over"):
        _archive(books, month, tmp_path / "early")
    with clock.use(clock.Manual(_after_month(books.sessions, month))):
        with pytest.raises(archive.ArchiveRefused, match="3 of its entries are not sealed"):
            _archive(books, month, tmp_path / "unsealed")
        sealing.seal_all(books.sessions)
        with (
            clock.use(clock.Manual(_after_month(books.sessions, _next(month)))),
            pytest.raises(archive.ArchiveRefused, match=f"archive {month:%Y-%m} first"),
        ):
            _archive(books, _next(month), tmp_path / "out-of-order")

        done = _archive(books, month, tmp_path / "archive")

        assert (done.partition.entries, done.partition.postings) == (3, 6)
        assert verify.verify_export(tmp_path / "archive").problems == []
        with books.sessions() as session:
            assert f"journal_entries_{partitions.suffix(month)}" not in _attached(
                session, "journal_entries"
            )
            assert session.execute(text("SELECT count(*) FROM journal_entries")).scalar() == 0
            assert partitions.archived_until(session) == done.partition.ends_at
            # The books are the same, and every sealed block still checks.
            assert ledger.trial_balance(session) == balances
            assert ledger.trial_balance(session, as_of=clock.now()) == posted_balances
            assert ledger.check_consistency(session) == []
            # The metrics' count of entries by kind goes on counting the archived month.
            assert partitions.entries_by_kind(session) == {"accrual": 3}
            assert ledger.balance(session, member, as_of=clock.now()) == 7
            with pytest.raises(ledger.InvalidEntry, match="are archived"):
                ledger.balance(session, member, as_of=done.partition.starts_at)
            # The statement opens with what the archived month left the account.
            page = ledger.statement(session, member)
            assert (page.opening_balance, page.lines) == (7, [])
            assert verify.verify_database(session).problems == []
            # The detached rows stay read-only until dropped.
            with pytest.raises(DBAPIError, match="append-only"):
                session.execute(text(f"DELETE FROM journal_entries_{partitions.suffix(month)}"))
        with pytest.raises(archive.ArchiveRefused, match="was archived"):
            _archive(books, month, tmp_path / "again")

    # An export of a range that starts in the archived month is refused before anything is
    # written (the month's export is the archive's); one from the month's end on is made, its
    # opening balances counting what the archived month left the accounts.
    starts, ends = done.partition.starts_at, done.partition.ends_at
    with books.sessions() as session, session.begin():
        _raw_entry(session, ends + timedelta(hours=1), "next month", destination=member)
    with books.sessions() as session, session.begin():
        with pytest.raises(
            RangeArchived, match=re.escape(f"before {ends.isoformat()} are archived")
        ):
            verify.export_sealed(session, starts, ends, tmp_path / "in-archive")
        assert not (tmp_path / "in-archive").exists()
        made = verify.export_sealed(session, ends, ends + timedelta(days=1), tmp_path / "after")
        assert isinstance(made, Manifest)
        assert made.counts.entries == 1
    beancount = (tmp_path / "after" / "journal.beancount").read_text()
    name, points = address_to_account(member), asset_to_commodity("PTS")
    assert f"  {name}  7 {points}\n" in beancount  # the opening balance
    assert f" balance {name}  12 {points}\n" in beancount  # the closing one
    with own_client(create_app(books.sessions)) as http:
        answer = http.get(
            "/audit/export",
            params={"from": starts.isoformat(), "to": ends.isoformat()},
            headers=staff(books.sessions, "auditor").headers,
        )
    assert_problem(answer, 409, "range_archived")
    assert answer.json()["archived_until"] == ends.isoformat()

    # A replay of an archived entry still answers with the entry it made.
    with books.sessions() as session, session.begin():
        replay = ledger.post(session, kept)
    assert (replay.id, replay.replayed) == (first.id, True)


def test_a_month_with_entries_in_the_default_partition_before_its_end_stays(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    with books.sessions() as session, session.begin():
        month = _month_now(session)
        first = partitions.list_partitions(session).months[0].starts_at
        _raw_entry(session, first - timedelta(days=3), "stray")
    sealing.seal_all(books.sessions)
    with (
        clock.use(clock.Manual(_after_month(books.sessions, month))),
        pytest.raises(archive.ArchiveRefused, match="1 entries recorded before its end"),
    ):
        _archive(books, month, tmp_path / "archive")


def test_an_archived_month_can_drop_its_tables(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    transfers(books.sessions, 1)
    sealing.seal_all(books.sessions)
    with books.sessions() as session:
        month = _month_now(session)
    with clock.use(clock.Manual(_after_month(books.sessions, month))):
        _archive(books, month, tmp_path / "archive", drop=True)
    with books.sessions() as session:
        assert (
            session.execute(
                text("SELECT to_regclass(:t)"),
                {"t": f"journal_entries_{partitions.suffix(month)}"},
            ).scalar()
            is None
        )
        (row,) = partitions.list_partitions(session).months[:1]
        assert (row.month, row.entries, row.archive_folder) == (
            month,
            1,
            str(tmp_path / "archive"),
        )


def test_the_commands_list_make_and_archive_months(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    transfers(books.sessions, 2)
    env = {"DATABASE_URL": books.url}
    with books.sessions() as session, session.begin():
        month = _month_now(session)
        # An attached month's rows are the planner's estimate, as of the last ANALYZE.
        session.execute(text("ANALYZE journal_entries, postings"))

    made = run_cli("ledger", "partitions", "--add", env=env)
    assert made.exit_code == 0, made.stderr
    lines = made.stdout.splitlines()
    assert lines[0] == "made 0 months"
    assert lines[2].split()[:4] == [f"{month:%Y-%m}", "attached", "2", "4"]
    assert lines[-1] == "default partition: 0 entries"

    bad = run_cli("audit", "archive", "2026-13", "--out", str(tmp_path / "x"), env=env)
    assert bad.exit_code == 2
    assert "is not a month such as 2026-10" in bad.stderr
    early = run_cli("audit", "archive", f"{month:%Y-%m}", "--out", str(tmp_path / "x"), env=env)
    assert early.exit_code == 1
    assert early.stderr.strip() == (
        f"error: {month:%Y-%m} cannot be archived: {month:%Y-%m} is not over"
    )

    sealing.seal_all(books.sessions)
    with clock.use(clock.Manual(_after_month(books.sessions, month))):
        done = run_cli(
            "audit", "archive", f"{month:%Y-%m}", "--out", str(tmp_path / "a"), "--drop", env=env
        )
    assert done.exit_code == 0, done.stderr
    assert done.stdout.startswith(f"archived {month:%Y-%m}: 2 entries, 4 postings in ")
    assert done.stdout.rstrip().endswith("the tables were dropped")
    listed = run_cli("ledger", "partitions", env=env).stdout.splitlines()
    assert listed[1].split()[:4] == [f"{month:%Y-%m}", "archived", "2", "4"]
    assert listed[1].endswith(str(tmp_path / "a"))

    ends = _after_month(books.sessions, month) - timedelta(days=1)
    refused = run_cli(
        "audit",
        "export",
        "--from",
        (ends - timedelta(days=1)).isoformat(),
        "--to",
        ends.isoformat(),
        "--out",
        str(tmp_path / "e"),
        env=env,
    )
    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"error: entries recorded before {ends.isoformat()} are")


def test_a_settled_days_report_is_the_same_once_its_month_is_archived(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    """A run's report reads what it needs from its own rows: the coalition's leg of its entry,
    its lines, its late arrivals and its partners, not the entries that left with the month."""
    shop = make_partner(books.sessions)
    member_id = new_member(books.sessions, [shop.id])
    accrue(books.sessions, shop.id, member_id, 52_000)
    # Reported today, occurred two days ago: a late arrival of today's run.
    accrue(books.sessions, shop.id, member_id, 10_000, clock.now() - timedelta(days=2))
    day = business_today()
    [run] = settle_after_cutoff(books.sessions, day)
    for _ in range(2):
        with books.sessions() as session, session.begin():
            approval.approve(session, day, User(person(books.sessions, "finance").id, "finance"))
    sealing.seal_all(books.sessions)
    with books.sessions() as session:
        month = _month_now(session)
        report = reports.report_of(session, runs.load_run(session, day))
        clearing = session.execute(
            text("SELECT clearing_fen FROM settlement_runs WHERE id = :id"), {"id": run.id}
        ).scalar_one()
    assert clearing == -run.partners_net_fen != 0
    assert report["zero_sum"]
    [late] = report["late_arrivals"]
    assert late["occurred_date"] == (day - timedelta(days=2)).isoformat()
    # The migration that made clearing_fen fills it from the runs' entries; late arrivals are
    # kept by the settle job for runs computed before they were, and a month whose runs lack
    # them does not leave.
    command.downgrade(migrate.alembic_config(books.url), "0034_purchase_debt_repaid")
    migrate.upgrade(books.url)
    with books.sessions() as session:
        assert reports.report_of(session, runs.load_run(session, day)) == report
    with (
        clock.use(clock.Manual(_after_month(books.sessions, month))),
        pytest.raises(archive.ArchiveRefused, match="do not keep their late arrivals yet"),
    ):
        _archive(books, month, tmp_path / "early")
    with books.sessions() as session, session.begin():
        assert reports.keep_missing_late_arrivals(session) == 1
        assert reports.keep_missing_late_arrivals(session) == 0

    with clock.use(clock.Manual(_after_month(books.sessions, month))):
        _archive(books, month, tmp_path / "archive")
    with books.sessions() as session:
        assert reports.report_of(session, runs.load_run(session, day)) == report
