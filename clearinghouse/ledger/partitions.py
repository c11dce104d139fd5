"""The journal's month partitions: made ahead of time, listed, and archived.

`journal_entries` and `postings` are partitioned by UTC month of `recorded_at` (migration
0030). The `partitions` job makes the partitions of the current month and the next
`MONTHS_AHEAD`, so that no entry ever waits for one. A month long over, every entry of it
sealed and settled, can leave the database: `archive` writes the month's audit export (entries,
postings, the beancount file and the seals, with their manifest), verifies that folder on its
own, then detaches the month's two partitions (and, asked to, drops them). What stays in the
database about an archived month is its row in `journal_partitions` (the folder and the digest
of its manifest), the seals (every block and leaf hash) and the entries' keys, so that the chain
still verifies and a replay still answers with the entry it made.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from clearinghouse import clock
from clearinghouse.errors import NotFound

MONTHS_AHEAD = 3
"""Months made beyond the current one: a quarter of missed jobs before an entry has none."""

LOCK_TIMEOUT = "5s"
"""How long making or detaching a partition waits for the journal's lock before giving up
(and trying again at the next run) rather than queue every write behind it."""


@dataclass(frozen=True)
class Partition:
    month: date
    starts_at: datetime
    ends_at: datetime
    archived_at: datetime | None
    archive_folder: str | None
    archive_digest: str | None
    entries: int | None
    """Counted when archived; the planner's estimate otherwise."""
    postings: int | None
    size_bytes: int | None
    """Both tables with their indexes, while attached."""


@dataclass(frozen=True)
class Partitions:
    months: list[Partition]
    default_entries: int
    """Entries in the default partition: none while the months are made ahead."""


def suffix(month: date) -> str:
    """The partitions' name suffix: `y2026m12`."""
    return f"y{month.year:04d}m{month.month:02d}"


def add_ahead(session: Session, months: int = MONTHS_AHEAD) -> int:
    """Make the current month's partitions and the next `months`' (those missing); returns how
    many months were made. Months are the database clock's, which stamps `recorded_at`."""
    session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    made: int = session.execute(
        text("SELECT ledger_add_partitions(now(), now() + make_interval(months => :months))"),
        {"months": months},
    ).scalar_one()
    return made


def list_partitions(session: Session) -> Partitions:
    rows = session.execute(
        text(
            "SELECT p.month, p.starts_at, p.ends_at, p.archived_at, p.archive_folder,"
            " p.archive_digest,"
            " coalesce(p.entries, greatest(je.reltuples, 0)::bigint) AS entries,"
            " coalesce(p.postings, greatest(po.reltuples, 0)::bigint) AS postings,"
            " pg_total_relation_size(je.oid) + pg_total_relation_size(po.oid) AS size_bytes"
            " FROM journal_partitions p"
            " LEFT JOIN pg_class je ON je.relname = 'journal_entries_' || to_char(p.month,"
            ' \'"y"YYYY"m"MM\') AND je.relispartition'
            " LEFT JOIN pg_class po ON po.relname = 'postings_' || to_char(p.month,"
            ' \'"y"YYYY"m"MM\') AND po.relispartition'
            " ORDER BY p.month"
        )
    ).all()
    default_entries: int = session.execute(
        text("SELECT count(*) FROM journal_entries_default")
    ).scalar_one()
    return Partitions([Partition(*row) for row in rows], default_entries)


def archived_until(session: Session) -> datetime | None:
    """The end of the last archived month: entries recorded before it are in the archive."""
    until: datetime | None = session.execute(
        text("SELECT max(ends_at) FROM journal_partitions WHERE archived_at IS NOT NULL")
    ).scalar_one()
    return until


_closed_counts: dict[tuple[str, int], Counter[str]] = {}
"""Entries by kind of each month over and still attached, by (database, partition's oid): a
month over takes no more entries, so it is counted once per process."""


def _counted(session: Session, table: str, where: str = "", **bound: object) -> Counter[str]:
    rows = session.execute(
        text(f"SELECT kind, count(*) FROM {table} {where} GROUP BY kind"), bound
    ).all()
    return Counter({str(kind): int(count) for kind, count in rows})


def entries_by_kind(session: Session) -> Counter[str]:
    """Every entry the journal has taken, by kind, archived months included, reading entries
    only of the months not over (and the default partition's before them): what the metrics
    count, without counting the whole journal at every scrape."""
    totals: Counter[str] = Counter()
    for (kinds,) in session.execute(
        text("SELECT entry_kinds FROM journal_partitions WHERE archived_at IS NOT NULL")
    ):
        totals.update(kinds)
    database: str = session.execute(text("SELECT current_database()")).scalar_one()
    closed = session.execute(
        text(
            "SELECT p.month, c.oid FROM journal_partitions p"
            " JOIN pg_class c ON c.relname = 'journal_entries_' || to_char(p.month,"
            ' \'"y"YYYY"m"MM\') AND c.relispartition'
            " WHERE p.archived_at IS NULL AND p.ends_at <= now()"
        )
    ).all()
    open_from: datetime | None = session.execute(
        text("SELECT max(ends_at) FROM journal_partitions WHERE ends_at <= now()")
    ).scalar_one()
    for month, oid in closed:
        key = (database, int(oid))
        if key not in _closed_counts:
            _closed_counts[key] = _counted(session, f"journal_entries_{suffix(month)}")
        totals.update(_closed_counts[key])
    if open_from is None:
        totals.update(_counted(session, "journal_entries"))
    else:
        totals.update(_counted(session, "journal_entries", "WHERE recorded_at >= :t", t=open_from))
        totals.update(
            _counted(session, "journal_entries_default", "WHERE recorded_at < :t", t=open_from)
        )
    return totals


def detach(session: Session, month: date, folder: Path, manifest: bytes) -> Partition:
    """Detach `month`'s partitions (postings first, then the entries), and record the month as
    archived in `folder`, with the SHA-256 of its `manifest`; with the entries and postings
    counted before, and what its postings add to each account kept in `archived_balances`.
    What was detached stays as two tables of their own, read-only, for the operator to move to
    cheaper storage or drop (`drop_detached`)."""
    name = suffix(month)
    session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    kinds = _counted(session, f"journal_entries_{name}")
    postings: int = session.execute(text(f"SELECT count(*) FROM postings_{name}")).scalar_one()
    session.execute(
        text(
            "INSERT INTO archived_balances (account_id, amount)"
            f" SELECT account_id, sum(amount)::bigint FROM postings_{name} GROUP BY account_id"
            " ON CONFLICT (account_id)"
            " DO UPDATE SET amount = archived_balances.amount + EXCLUDED.amount"
        )
    )
    session.execute(
        text(
            f"ALTER TABLE postings DETACH PARTITION postings_{name};"
            f" ALTER TABLE journal_entries DETACH PARTITION journal_entries_{name};"
            f" CREATE TRIGGER journal_entries_{name}_append_only BEFORE UPDATE OR DELETE"
            f" ON journal_entries_{name} FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();"
            f" CREATE TRIGGER postings_{name}_append_only BEFORE UPDATE OR DELETE"
            f" ON postings_{name} FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();"
        )
    )
    row = session.execute(
        text(
            "UPDATE journal_partitions SET archived_at = :now, archive_folder = :folder,"
            " archive_digest = :digest, entries = :entries, postings = :postings,"
            " entry_kinds = :kinds"
            " WHERE month = :month AND archived_at IS NULL"
            " RETURNING month, starts_at, ends_at, archived_at, archive_folder, archive_digest,"
            " entries, postings"
        ),
        {
            "now": clock.now(),
            "folder": str(folder),
            "digest": hashlib.sha256(manifest).hexdigest(),
            "entries": kinds.total(),
            "postings": postings,
            "kinds": json.dumps(kinds),
            "month": month,
        },
    ).one()
    return Partition(**row._mapping, size_bytes=None)


def drop_detached(session: Session, month: date) -> None:
    """Drop an archived month's detached tables (its archive folder holds what they held)."""
    archived = session.execute(
        text("SELECT archived_at FROM journal_partitions WHERE month = :month"), {"month": month}
    ).scalar_one_or_none()
    if archived is None:
        raise NotFound(f"{month:%Y-%m} is not archived")
    name = suffix(month)
    session.execute(
        text(f"DROP TABLE IF EXISTS postings_{name}; DROP TABLE IF EXISTS journal_entries_{name}")
    )
