"""Archiving a month of the journal: its audit export, verified on its own, then its partitions
detached (clearinghouse.ledger.partitions).

A month may leave the database once it is over, every entry of it is sealed, none of its
settleable entries waits for settlement or for a run's approval, and every earlier month has
left: months go oldest first, so the database always holds the journal from one instant on
(`partitions.archived_until`), which `audit verify` checks entry by entry while it checks the
archived months' entries by the leaf hashes their seals keep."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from clearinghouse import clock
from clearinghouse.audit.exports import MANIFEST_FILE
from clearinghouse.audit.verify import Problem, export_sealed, verify_export
from clearinghouse.errors import Conflict, NotFound
from clearinghouse.ledger import partitions
from clearinghouse.ledger.partitions import Partition


class ArchiveRefused(Conflict):
    """The month cannot leave the database (yet); the message says why."""


class ArchiveDamaged(Conflict):
    """The export written for the month did not verify; nothing was detached."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(
            "the month's export does not verify: " + "; ".join(str(p) for p in problems[:5])
        )
        self.problems = problems


@dataclass(frozen=True)
class Archived:
    partition: Partition
    dropped: bool


def refusal(session: Session, month: date) -> str | None:
    """Why `month` cannot be archived now, or None when it can."""
    row = session.execute(
        text("SELECT starts_at, ends_at, archived_at FROM journal_partitions WHERE month = :m"),
        {"m": month},
    ).one_or_none()
    if row is None:
        raise NotFound(f"the journal has no partition for {month:%Y-%m}")
    starts_at, ends_at, archived_at = row
    if archived_at is not None:
        return f"{month:%Y-%m} was archived at {archived_at:%Y-%m-%dT%H:%M:%SZ}"
    if ends_at > clock.now():
        return f"{month:%Y-%m} is not over"
    earlier = session.execute(
        text("SELECT min(month) FROM journal_partitions WHERE month < :m AND archived_at IS NULL"),
        {"m": month},
    ).scalar_one()
    if earlier is not None:
        return f"archive {earlier:%Y-%m} first: months leave the database oldest first"
    name = partitions.suffix(month)
    checks = (
        (
            "SELECT count(*) FROM journal_entries_default WHERE recorded_at < :end",
            "entries recorded before its end are in the default partition",
        ),
        (
            f"SELECT count(*) FROM journal_entries_{name} e"
            " WHERE NOT EXISTS (SELECT FROM seal_items s WHERE s.entry_id = e.id)",
            "of its entries are not sealed yet",
        ),
        (
            "SELECT count(*) FROM unsettled_entries"
            " WHERE recorded_at >= :start AND recorded_at < :end",
            "of its settleable entries are not settled yet",
        ),
        (
            "SELECT count(*) FROM settlement_runs r WHERE r.state = 'computed'"
            " AND EXISTS (SELECT FROM settlement_items i"
            f" JOIN journal_entries_{name} e ON e.id = i.entry_id WHERE i.run_id = r.id)",
            "settlement runs covering its entries await approval",
        ),
        (
            "SELECT count(*) FROM settlement_runs r WHERE r.late_arrivals IS NULL"
            " AND EXISTS (SELECT FROM settlement_items i"
            f" JOIN journal_entries_{name} e ON e.id = i.entry_id WHERE i.run_id = r.id)",
            "settlement runs covering its entries do not keep their late arrivals yet (the"
            " settle job gives them theirs)",
        ),
    )
    for sql, reason in checks:
        count: int = session.execute(text(sql), {"start": starts_at, "end": ends_at}).scalar_one()
        if count:
            return f"{count} {reason}"
    return None


def archive_month(session: Session, month: date, folder: Path, *, drop: bool = False) -> Archived:
    """Write `month`'s audit export into `folder` (new or empty), verify it alone, and detach
    the month's partitions; with `drop`, drop the detached tables too. `session` should be a
    REPEATABLE READ transaction, so that the export and the counts see one journal."""
    reason = refusal(session, month)
    if reason is not None:
        raise ArchiveRefused(f"{month:%Y-%m} cannot be archived: {reason}")
    starts_at, ends_at = session.execute(
        text("SELECT starts_at, ends_at FROM journal_partitions WHERE month = :m"), {"m": month}
    ).one()
    export_sealed(session, starts_at, ends_at, folder)
    problems = verify_export(folder).problems
    if problems:
        raise ArchiveDamaged(problems)
    partition = partitions.detach(session, month, folder, (folder / MANIFEST_FILE).read_bytes())
    if drop:
        partitions.drop_detached(session, month)
    return Archived(partition, drop)
