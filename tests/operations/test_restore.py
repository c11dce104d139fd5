"""docs/operations.md, "Backups and point-in-time restore", done on a cluster of the test's own:
WAL archiving on, a base backup, entries written and sealed, the digest and the time noted, more
written; a restore to that time into a scratch cluster has the earlier entries and not the later
ones, and `clearinghouse audit verify --digest` passes there."""

from __future__ import annotations

from datetime import timedelta

from clearinghouse import migrate
from clearinghouse.audit import sealing
from clearinghouse.database import make_engine, session_factory
from tests.builders.audit import transfers
from tests.builders.clusters import own_clusters, wait_for
from tests.cli_fixtures import run_cli


def test_a_restore_to_a_point_in_time_has_the_journal_of_that_time_and_verifies() -> None:
    with own_clusters() as clusters:
        archive = clusters.folder("archive")
        primary = clusters.primary(
            archive_mode="on", archive_command=f"test ! -f {archive}/%f && cp %p {archive}/%f"
        )
        migrate.upgrade(primary.url())
        base = clusters.base_backup(primary, "base")

        engine = make_engine(primary.url(), pool_size=1)
        try:
            sessions = session_factory(engine)
            kept = transfers(sessions, 3)
            digest = sealing.seal_all(sessions, timedelta(0))[-1].block_hash.hex()
            target = primary.scalar("SELECT clock_timestamp()::text")
            lost = transfers(sessions, 2)
            later_digest = sealing.seal_all(sessions, timedelta(0))[-1].block_hash.hex()
        finally:
            engine.dispose()
        # The WAL segment being written goes to the archive too.
        segment = primary.scalar("SELECT pg_walfile_name(pg_switch_wal())")
        wait_for(
            "the archive to take the last segment",
            lambda: primary.scalar(
                "SELECT last_archived_wal >= %s FROM pg_stat_archiver", (segment,)
            ),
        )

        scratch = clusters.restore(
            base,
            "scratch",
            restore_command=f"cp {archive}/%f %p",
            recovery_target_time=target,
            recovery_target_action="promote",
            archive_mode="off",
        )
        wait_for("the restore to finish", lambda: not scratch.scalar("SELECT pg_is_in_recovery()"))

        entry_ids = set(scratch.scalar("SELECT array_agg(id) FROM journal_entries"))
        assert {p.id for p in kept} <= entry_ids
        assert not {p.id for p in lost} & entry_ids

        env = {"DATABASE_URL": scratch.url()}
        verified = run_cli("audit", "verify", "--digest", digest, env=env)
        assert verified.exit_code == 0, verified.output
        assert "intact" in verified.output
        # The digest of what came after is nowhere in the restored journal.
        assert run_cli("audit", "verify", "--digest", later_digest, env=env).exit_code == 1
