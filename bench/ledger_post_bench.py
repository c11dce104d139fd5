"""What the database spends writing one entry through `ledger_post`, schema revision against
schema revision, in one sitting.

    .venv/bin/python -m bench.ledger_post_bench [--revisions A,B,...] [--rounds N]
        [--entries N] [--clients N] [--floored-headroom] [--database-url URL]

One database per revision (migrated to it by this checkout's migrations), each with 3,000
member accounts and a partner's accounts. Every entry is accrual-shaped: four postings, points
from the partner's issuance account to a member, and value from the partner's headroom to its
exposure (both sharded; the headroom funded in one entry, and without a floor unless
--floored-headroom). For each round and revision, in turn, three writers each write --entries:
- loop: a procedure calling `ledger_post` and committing after each entry, so nothing but the
  function, its triggers and the commit (the CPU of its backend, from /proc);
- client: one connection calling it, each entry a statement committed on its own (the CPU of
  its backend, from /proc);
- pgbench: --clients connections at once (entries/s, and the CPU of the whole server per entry).
`synchronous_commit` is off for the first two. Without --database-url or DATABASE_URL it starts an
embedded PostgreSQL in a temporary folder. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import psycopg
from sqlalchemy.orm import Session

from bench.common import (
    PgBench,
    bench_server,
    find_pgbench,
    postmaster_pid,
    print_table,
    scratch_database,
    server_facts,
)
from clearinghouse import migrate
from clearinghouse.database import libpq_url, make_engine
from clearinghouse.ledger.accounts import AccountSpec, open_accounts

MEMBERS = 3_000
WARMUP = 200
TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_REVISIONS = "0029_partner_details,0031_member_purchases_index,head"

HEADROOM_FEN = 10**15


def accounts(floored_headroom: bool) -> list[AccountSpec]:
    """The partner's accounts; with `floored_headroom`, its headroom has a floor, as a real
    partner's does, and the coalition's credit lines to fund it."""
    return [
        AccountSpec("partner:bench:issued"),
        AccountSpec("partner:bench:exposure", "CNY"),
        AccountSpec("partner:bench:headroom", "CNY", non_negative=floored_headroom),
        AccountSpec("coalition:credit_lines", "CNY"),
    ]


# The entry, given a member's number (:m) and a key (:k); pgbench reads `:name` as a variable
# even in a string literal, hence the addresses' pieces joined with ':'.
ENTRY = """ledger_post(
    p_kind => 'accrual', p_origin => 'bench', p_idempotency_key => {key},
    p_request_hash => '\\x00'::bytea, p_occurred_at => now(), p_metadata => '{{}}',
    p_reverses => NULL,
    p_addresses => ARRAY['partner' || ':' || 'bench' || ':' || 'issued',
                         'member' || ':' || {member} || ':' || 'available',
                         'partner' || ':' || 'bench' || ':' || 'headroom',
                         'partner' || ':' || 'bench' || ':' || 'exposure'],
    p_assets => ARRAY['PTS', 'PTS', 'CNY', 'CNY'],
    p_amounts => ARRAY[-100, 100, -2, 2]::bigint[])"""
LOOP = f"""
CREATE PROCEDURE bench_entries(p_tag text, p_n int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..p_n LOOP
        PERFORM {ENTRY.format(key="p_tag || i", member=f"(i % {MEMBERS})")};
        COMMIT;
    END LOOP;
END
$$;
"""
CLIENT = f"SELECT entry_id FROM {ENTRY.format(key='%s', member='%s')}"
PGBENCH = f"""\\set m random(0, {MEMBERS - 1})
BEGIN;
SELECT p.entry_id FROM (SELECT gen_random_uuid()::text AS k) AS g,
    {ENTRY.format(key="g.k", member=":m")} AS p;
COMMIT;
"""


def prepare(url: str, revision: str, floored_headroom: bool) -> None:
    """The schema at `revision`, the accounts (the headroom funded in one entry, as an issuance
    limit is set) and the loop's procedure."""
    migrate.upgrade(url, revision)
    engine = make_engine(url, pool_size=1)
    with Session(engine) as session, session.begin():
        members = [AccountSpec(f"member:{i}:available") for i in range(MEMBERS)]
        open_accounts(session, [*members, *accounts(floored_headroom)])
    engine.dispose()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(LOOP)
        conn.execute(
            "SELECT ledger_post('issuance_limit', 'bench', 'limit', '\\x00'::bytea, now(), '{}',"
            " NULL, ARRAY['coalition:credit_lines', 'partner:bench:headroom'],"
            " ARRAY['CNY', 'CNY'], ARRAY[%s, %s]::bigint[])",
            (-HEADROOM_FEN, HEADROOM_FEN),
        )


def backend_cpu(conn: psycopg.Connection[tuple[int]]) -> float:
    """CPU seconds the connection's backend has used."""
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    fields = Path(f"/proc/{row[0]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def loop(url: str, tag: str, entries: int) -> float:
    """µs of backend CPU per entry, written by the procedure."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("CALL bench_entries(%s, %s)", (f"{tag}-loop-warm-", WARMUP))
        start = backend_cpu(conn)
        conn.execute("CALL bench_entries(%s, %s)", (f"{tag}-loop-", entries))
        return (backend_cpu(conn) - start) / entries * 1e6


def client(url: str, tag: str, entries: int) -> float:
    """µs of backend CPU per entry, each sent by the client."""
    with psycopg.connect(libpq_url(url), autocommit=True, prepare_threshold=0) as conn:
        conn.execute("SET synchronous_commit = off")
        for i in range(WARMUP):
            conn.execute(CLIENT, (f"{tag}-client-warm-{i}", i % MEMBERS))
        start = backend_cpu(conn)
        for i in range(entries):
            conn.execute(CLIENT, (f"{tag}-client-{i}", i % MEMBERS))
        return (backend_cpu(conn) - start) / entries * 1e6


def pgbench(url: str, entries: int, clients: int) -> tuple[float, float]:
    """Entries/s and µs of the server's CPU per entry, with `clients` connections at once."""
    with tempfile.TemporaryDirectory(prefix="ledger-post-bench-") as workdir:
        major = int(server_facts(url)["server_version"].split(".")[0])
        bench = PgBench(find_pgbench(major), url, postmaster_pid(url), Path(workdir))
        measured = bench.measure(PGBENCH, "entries", clients, transactions=entries // clients)
    return measured.entries / measured.seconds, measured.cpu.server / measured.entries * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--revisions", default=DEFAULT_REVISIONS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--entries", type=int, default=3_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--floored-headroom",
        action="store_true",
        help="give the headroom a floor, as a real partner's (its debits then look for a shard"
        " that can pay)",
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args(argv)
    revisions = args.revisions.split(",")
    with bench_server(args.database_url) as server, ExitStack() as stack:
        urls = {}
        for revision in revisions:
            urls[revision] = stack.enter_context(scratch_database(server, "ledger_post_bench"))
            prepare(urls[revision], revision, args.floored_headroom)
        rows = []
        for round_ in range(1, args.rounds + 1):
            for revision in revisions:
                url, tag = urls[revision], f"r{round_}"
                rate, shared = pgbench(url, args.entries, args.clients)
                rows.append(
                    [
                        round_,
                        revision,
                        f"{loop(url, tag, args.entries):,.0f}",
                        f"{client(url, tag, args.entries):,.0f}",
                        f"{rate:,.0f}",
                        f"{shared:,.0f}",
                    ]
                )
                print(" | ".join(map(str, rows[-1])), flush=True)
    print()
    print_table(
        [
            "round",
            "revision",
            "loop: µs CPU/entry",
            "client: µs CPU/entry",
            f"pgbench ×{args.clients}: entries/s",
            f"pgbench ×{args.clients}: server µs CPU/entry",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
