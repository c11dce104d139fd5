"""The digest a partner or an auditor keeps, end to end: someone with the keys to the database
switches the protection off, rewrites a posting (and the balances with it, so that `ledger
check` is satisfied), and seals the whole journal again. The new chain is consistent in itself;
the digest held from before is what catches it, from the database and from an export, and the
proof of the entry against that digest fails."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from clearinghouse import ledger
from clearinghouse.app import create_app
from clearinghouse.audit import sealing, verify
from tests.builders.audit import JOURNAL, SEALS, transfers, triggers_off
from tests.builders.databases import Books
from tests.builders.users import staff
from tests.cli_fixtures import run_cli


def _digest_and_proof(books: Books, entry_id: int) -> tuple[str, dict[str, Any]]:
    """What the holder keeps: the digest (GET /audit/digest, the `ledger_digest` of a
    partner's statement) and the entry's proof (GET /audit/proofs/ID)."""
    http = TestClient(create_app(books.sessions), raise_server_exceptions=False)
    auditor = staff(books.sessions, "auditor").headers
    try:
        digest = http.get("/audit/digest", headers=auditor).json()["block"]["block_hash"]
        proof = http.get(f"/audit/proofs/{entry_id}", headers=auditor)
        assert proof.status_code == 200, proof.text
    finally:
        http.close()
    return digest, proof.json()


def test_a_resealed_journal_fails_against_the_digest_held_from_before(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    posted = transfers(books.sessions, 4)
    sealing.seal_all(books.sessions)
    target = posted[1]
    held, kept_proof = _digest_and_proof(books, target.id)
    assert sealing.check_proof(kept_proof, held) == []

    with triggers_off(books.sessions, JOURNAL + SEALS) as session:
        # Rewriting history: the seals go, the whole journal is handed to the sealer again...
        session.execute(text("TRUNCATE seal_items, seal_blocks"))
        session.execute(text("INSERT INTO seal_queue (entry_id) SELECT id FROM journal_entries"))
        for sign in (1, -1):
            session.execute(
                text(
                    "UPDATE postings SET amount = amount + :by WHERE entry_id = :id"
                    " AND sign(amount) = :sign"
                ),
                {"by": 50 * sign, "id": target.id, "sign": sign},
            )
        session.execute(
            text(
                "UPDATE account_balances b SET balance = (SELECT sum(p.amount) FROM postings p"
                " WHERE p.account_id = b.account_id) WHERE b.shard = 0 AND b.account_id IN"
                " (SELECT account_id FROM postings WHERE entry_id = :id)"
            ),
            {"id": target.id},
        )
        session.execute(
            text(
                "UPDATE account_balances SET balance = 0 WHERE shard > 0 AND account_id IN"
                " (SELECT account_id FROM postings WHERE entry_id = :id)"
            ),
            {"id": target.id},
        )
    (resealed,) = sealing.seal_all(books.sessions)
    with books.sessions() as session:
        assert ledger.check_consistency(session) == []
        assert sorted(p.amount for p in ledger.entry_postings(session, target.id)) == [
            -(target.amount + 50),
            target.amount + 50,
        ]
        # Consistent in itself: without a digest held from before, nothing shows.
        assert verify.verify_database(session).problems == []
        (problem,) = verify.verify_database(session, held).problems
    assert problem.message.startswith(f"no block has the digest {held}")
    env = {"DATABASE_URL": books.url}

    result = run_cli("audit", "verify", "--digest", held, env=env)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"FAILED: {problem}"

    out = tmp_path / "export"
    start = posted[0].recorded_at - timedelta(seconds=1)
    end = posted[-1].recorded_at + timedelta(seconds=1)
    exported = run_cli(
        "audit",
        "export",
        *("--from", start.isoformat(), "--to", end.isoformat(), "--out", str(out)),
        env=env,
    )
    assert exported.exit_code == 0, exported.stderr
    assert verify.verify_export(out).problems == []
    result = run_cli("audit", "verify", "--export", str(out), "--digest", held, env=env)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"FAILED: {problem}"

    # The entry's proof from the database now leads to the new digest, not to the one held.
    new_digest, new_proof = _digest_and_proof(books, target.id)
    assert new_digest == resealed.block_hash.hex() != held
    assert sealing.check_proof(new_proof, new_digest) == []
    assert sealing.check_proof(new_proof, held) == ["the chain does not lead to the digest given"]
    result = run_cli("audit", "prove", str(target.id), "--digest", held, env=env)
    assert result.exit_code == 1
    assert "FAILED: the chain does not lead to the digest given" in result.stderr
    # The proof kept from before still proves what was shown then: the amounts have changed.
    kept = tmp_path / "kept-proof.json"
    kept.write_text(json.dumps(kept_proof))
    result = run_cli(
        "audit", "prove", str(target.id), "--digest", held, "--proof", str(kept), env={}
    )
    assert result.exit_code == 0, result.stderr
    assert kept_proof["entry"]["postings"] != new_proof["entry"]["postings"]
