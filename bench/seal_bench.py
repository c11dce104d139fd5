"""Sealing throughput: how many committed entries a second the sealer turns into blocks, to
compare with the ledger's write rate (bench.ledger_bench).

    .venv/bin/python -m bench.seal_bench [--entries N] [--database-url URL]

On a fresh database (embedded unless --database-url or DATABASE_URL) it writes N two-posting
entries through `ledger_post` in one statement, then times `seal_all` sealing them and
`verify_database` checking them.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from datetime import timedelta

import psycopg

from bench.common import bench_server, scratch_database
from clearinghouse import ledger, migrate
from clearinghouse.audit import sealing, verify
from clearinghouse.database import libpq_url, make_engine, session_factory


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    configured = args.database_url or os.environ.get("DATABASE_URL")
    with bench_server(configured) as server, scratch_database(server) as url:
        migrate.upgrade(url)
        engine = make_engine(url, pool_size=2)
        sessions = session_factory(engine)
        with sessions() as session, session.begin():
            ledger.open_accounts(
                session,
                [
                    ledger.AccountSpec("partner:bench:issued"),
                    ledger.AccountSpec("member:m1:available"),
                ],
            )
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            started = time.perf_counter()
            conn.execute(
                """
                SELECT ledger_post('accrual', 'bench', 'k' || i, sha256(i::text::bytea),
                                   now(), '{}'::jsonb, NULL,
                                   ARRAY['partner:bench:issued', 'member:m1:available'],
                                   ARRAY['PTS', 'PTS'], ARRAY[-1, 1]::bigint[])
                  FROM generate_series(1, %s) AS i
                """,
                (args.entries,),
            )
            written = time.perf_counter() - started
        sealing.SEAL_DELAY = timedelta(0)  # everything above is committed
        started = time.perf_counter()
        blocks = sealing.seal_all(sessions)
        sealed = time.perf_counter() - started
        started = time.perf_counter()
        with sessions() as session:
            verdict = verify.verify_database(session)
        verified = time.perf_counter() - started
        engine.dispose()
    print(f"wrote {args.entries:,} entries in {written:.1f} s (one statement)")
    print(
        f"sealed them into {len(blocks)} blocks in {sealed:.1f} s: "
        f"{args.entries / sealed:,.0f} entries/s"
    )
    print(
        f"verified {verdict.entries:,} entries in {verified:.1f} s: "
        f"{verdict.entries / verified:,.0f} entries/s; problems: {len(verdict.problems)}"
    )
    return 0 if not verdict.problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
