"""Sealing: committed entries go into a chain of blocks, each once, however many sealers run;
the Merkle tree is RFC 6962's; an inclusion proof holds against the digest it was made for and
fails against any other digest or after any change; the `prove` command checks one offline."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from clearinghouse.app import create_app
from clearinghouse.audit import sealing, verify
from clearinghouse.audit.canonical import encode, load_entries
from clearinghouse.audit.tables import seal_items, seal_queue
from clearinghouse.ledger.tables import journal_entries
from tests.builders.audit import recorded_earlier, transfers
from tests.builders.databases import Books
from tests.builders.http import own_client
from tests.builders.users import staff
from tests.cli_fixtures import run_cli


def _chain(books: Books) -> list[verify.SealedBlock]:
    with books.sessions() as session:
        return list(verify.sealed_blocks(session))


def _assert_sound(books: Books, entry_ids: list[int]) -> None:
    """Every entry sealed exactly once, blocks numbered 1..n, each hash recomputed."""
    blocks = _chain(books)
    assert [b.number for b in blocks] == list(range(1, len(blocks) + 1))
    sealed = [entry_id for block in blocks for entry_id, _, _ in block.items]
    assert sorted(sealed) == sorted(entry_ids)
    assert len(set(sealed)) == len(sealed)
    previous = sealing.GENESIS.hex()
    with books.sessions() as session:
        for block in blocks:
            assert block.previous_hash == previous
            assert block.entry_count == len(block.items)
            entries = load_entries(session, [e for e, _, _ in block.items])
            leaves = [sealing.leaf_hash(encode(entry)) for entry in entries]
            assert [leaf.hex() for leaf in leaves] == [h for _, h, _ in block.items]
            root = sealing.merkle_root(leaves)
            assert root.hex() == block.merkle_root
            assert (
                sealing.block_hash(block.number, len(leaves), bytes.fromhex(previous), root).hex()
                == block.block_hash
            )
            previous = block.block_hash
        assert verify.verify_database(session).problems == []


def test_seal_all_seals_every_committed_entry_once(
    books: Books, no_seal_delay: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sealing, "MAX_BLOCK_ENTRIES", 3)
    first = transfers(books.sessions, 7)
    blocks = sealing.seal_all(books.sessions)
    assert [(b.number, b.entry_count) for b in blocks] == [(1, 3), (2, 3), (3, 1)]
    assert blocks[0].previous_hash == sealing.GENESIS
    assert sealing.seal_all(books.sessions) == []

    second = transfers(books.sessions, 2)
    assert [(b.number, b.entry_count) for b in sealing.seal_all(books.sessions)] == [(4, 2)]
    assert sealing.seal_all(books.sessions) == []
    _assert_sound(books, [p.id for p in first + second])
    with books.sessions() as session:
        assert verify.unsealed_count(session) == 0
        newest = sealing.newest_block(session)
    assert newest is not None
    assert newest.number == 4


def _queued(books: Books) -> list[int]:
    with books.sessions() as session:
        return list(
            session.execute(select(seal_queue.c.entry_id).order_by(seal_queue.c.entry_id)).scalars()
        )


def test_every_entry_written_waits_in_the_queue_until_sealed(
    books: Books, no_seal_delay: None
) -> None:
    posted = transfers(books.sessions, 2)
    with books.sessions() as session, session.begin():
        # Two entries in one statement: the trigger queues a statement's rows together.
        bulk = list(
            session.execute(
                text(
                    "INSERT INTO journal_entries (kind, origin, idempotency_key, request_hash,"
                    " occurred_at) SELECT 'accrual', 'test', 'bulk-' || n, CAST('x' AS bytea),"
                    " now() FROM generate_series(1, 2) AS n RETURNING id"
                )
            ).scalars()
        )
        session.execute(
            text(
                "INSERT INTO postings (entry_id, account_id, asset, amount, recorded_at)"
                " SELECT e.id, a.id, 'PTS', CASE WHEN a.address = :source THEN -1 ELSE 1 END,"
                " e.recorded_at FROM journal_entries e, accounts a"
                " WHERE e.id = ANY(:ids) AND a.address IN (:source, :destination)"
            ),
            {"ids": bulk, "source": posted[0].source, "destination": posted[0].destination},
        )
    written = sorted([p.id for p in posted] + bulk)
    assert _queued(books) == written
    sealing.seal_all(books.sessions)
    assert _queued(books) == []
    _assert_sound(books, written)


def test_sealing_waits_until_entries_are_old_enough(books: Books) -> None:
    assert timedelta(seconds=1) < sealing.SEAL_DELAY <= timedelta(seconds=2)
    (posted,) = transfers(books.sessions, 1)
    with books.sessions() as session:
        age = session.execute(
            select(func.clock_timestamp() - journal_entries.c.recorded_at).where(
                journal_entries.c.id == posted.id
            )
        ).scalar_one()
    # An hour more than its age: too young, whatever the time between the two statements.
    assert sealing.seal_all(books.sessions, delay=age + timedelta(hours=1)) == []
    with books.sessions() as session:
        assert verify.unsealed_count(session) == 1
    # Its age as measured, which can only have grown since: old enough.
    blocks = sealing.seal_all(books.sessions, delay=age)
    assert [(b.number, b.entry_count) for b in blocks] == [(1, 1)]
    _assert_sound(books, [posted.id])


def _seal_at_once(books: Books, sealers: int) -> list[sealing.Block]:
    """`sealers` threads start seal_all at the same moment; the blocks they made, together."""
    start = threading.Barrier(sealers)
    results: list[list[sealing.Block]] = []
    errors: list[Exception] = []

    def seal() -> None:
        start.wait(timeout=10)
        try:
            results.append(sealing.seal_all(books.sessions))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=seal) for _ in range(sealers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) == sealers
    return [block for result in results for block in result]


def test_two_sealers_at_once_make_one_consistent_chain(
    books: Books, no_seal_delay: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sealing, "MAX_BLOCK_ENTRIES", 4)
    posted: list[int] = []
    made: list[sealing.Block] = []
    for _ in range(3):
        posted += [p.id for p in transfers(books.sessions, 10)]
        made += _seal_at_once(books, 2)
    assert sorted(b.number for b in made) == list(range(1, len(made) + 1))
    assert sum(b.entry_count for b in made) == len(posted) == 30
    _assert_sound(books, posted)


def _rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH from RFC 6962 section 2.1, written out independently: split at the largest power of
    two below n."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _rfc6962_root(leaves[:k]) + _rfc6962_root(leaves[k:])).digest()


def test_the_merkle_tree_is_rfc_6962s_and_every_path_leads_to_the_root() -> None:
    rng = random.Random(6962)
    assert sealing.merkle_root([]) == hashlib.sha256(b"").digest()
    for size in range(1, 40):
        leaves = [sealing.leaf_hash(rng.randbytes(20)) for _ in range(size)]
        root = sealing.merkle_root(leaves)
        assert root == _rfc6962_root(leaves)
        for index, leaf in enumerate(leaves):
            path = sealing.merkle_path(leaves, index)
            assert sealing.root_from_path(leaf, path) == root
            if size > 1:
                other = leaves[(index + 1) % size]
                assert sealing.root_from_path(other, path) != root


def test_every_sealed_entry_has_a_proof_to_the_newest_digest(
    books: Books, no_seal_delay: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    posted: list[int] = []
    for size in (5, 1, 7, 2):
        monkeypatch.setattr(sealing, "MAX_BLOCK_ENTRIES", size)
        posted += [p.id for p in transfers(books.sessions, size)]
        sealing.seal_all(books.sessions)
    with books.sessions() as session:
        newest = sealing.newest_block(session)
        assert newest is not None
        for entry_id in posted:
            proof = sealing.prove(session, entry_id)
            assert proof is not None
            assert sealing.check_proof(proof.as_json(), newest.block_hash.hex()) == []
            assert sealing.check_proof(proof.as_json(), newest.block_hash.hex().upper()) == []


def _fetch_proof(books: Books, entry_id: int) -> tuple[dict[str, Any], str]:
    """The proof of one entry from GET /audit/proofs, and the digest from GET /audit/digest."""
    http = own_client(create_app(books.sessions))
    auditor = staff(books.sessions, "auditor").headers
    try:
        response = http.get(f"/audit/proofs/{entry_id}", headers=auditor)
        assert response.status_code == 200, response.text
        digest = http.get("/audit/digest", headers=auditor).json()["block"]["block_hash"]
    finally:
        http.close()
    proof: dict[str, Any] = response.json()
    return proof, digest


def _changed(proof: dict[str, Any], change: str) -> dict[str, Any]:
    changed = copy.deepcopy(proof)
    entry = changed["entry"]
    match change:
        case "amount":
            entry["postings"][0][2] -= 1
            entry["postings"][1][2] += 1
        case "account":
            entry["postings"][1][0] = "member:someone-else:available"
        case "metadata":
            entry["metadata"]["note"] = "added later"
        case "recorded_at":
            entry["recorded_at"] = "2020-01-01T00:00:00.000000Z"
        case "kind":
            entry["kind"] = "refund"
        case "reverses":
            entry["reverses_id"] = 1
        case "path":
            changed["path"][0]["hash"] = "00" * 32
        case "side":
            changed["path"][0]["side"] = "L" if changed["path"][0]["side"] == "R" else "R"
        case "later_root":
            changed["later_blocks"][0]["merkle_root"] = "11" * 32
        case "block_count":
            changed["block"]["entry_count"] += 1
    return changed


CHANGES = [
    "amount",
    "account",
    "metadata",
    "recorded_at",
    "kind",
    "reverses",
    "path",
    "side",
    "later_root",
    "block_count",
]


def test_a_proof_holds_for_its_digest_and_nothing_else(
    books: Books, no_seal_delay: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sealing, "MAX_BLOCK_ENTRIES", 4)
    posted = transfers(books.sessions, 10)  # blocks of 4, 4 and 2
    sealing.seal_all(books.sessions)
    target = posted[5]  # second in block 2
    proof, digest = _fetch_proof(books, target.id)
    assert proof["block"]["number"] == 2
    assert len(proof["later_blocks"]) == 1
    assert sealing.check_proof(proof, digest) == []

    blocks = _chain(books)
    # Digests that do not cover the entry: made up, or of the block before its own.
    for other in ("00" * 32, blocks[0].block_hash):
        assert sealing.check_proof(proof, other) == ["the chain does not lead to the digest given"]
    # What is no block hash at all is not a digest that failed to match, but a mistake.
    for malformed in ("not hex", digest[:-2], digest + "00", "", f"{digest[:-1]}g"):
        with pytest.raises(ValueError, match="64 hexadecimal digits"):
            sealing.check_proof(proof, malformed)
    for change in CHANGES:
        assert sealing.check_proof(_changed(proof, change), digest) != [], change
    assert any(
        "does not lead to the root of block 2" in p
        for p in sealing.check_proof(_changed(proof, "amount"), digest)
    )


def test_a_proof_holds_for_an_earlier_digest_that_covers_the_entry(
    books: Books, no_seal_delay: None
) -> None:
    (posted,) = transfers(books.sessions, 1)
    (held,) = sealing.seal_all(books.sessions)  # the digest a partner was given that day
    transfers(books.sessions, 1)
    sealing.seal_all(books.sessions)
    proof, newest = _fetch_proof(books, posted.id)
    assert newest != held.block_hash.hex()
    assert sealing.check_proof(proof, held.block_hash.hex()) == []


def test_the_prove_command_checks_a_proof_offline(
    books: Books, no_seal_delay: None, tmp_path: Path
) -> None:
    posted = transfers(books.sessions, 3)
    sealing.seal_all(books.sessions)
    target = posted[1]
    proof, digest = _fetch_proof(books, target.id)
    good = tmp_path / "proof.json"
    good.write_text(json.dumps(proof))
    bad = tmp_path / "changed.json"
    bad.write_text(json.dumps(_changed(proof, "amount")))
    env = {"DATABASE_URL": books.url}

    def prove(*args: str) -> tuple[int, str, str]:
        result = run_cli("audit", "prove", *args, env=env)
        return result.exit_code, result.stdout, result.stderr

    code, out, err = prove(str(target.id), "--digest", digest, "--proof", str(good))
    assert code == 0, err
    assert f"entry {target.id} is included in the journal sealed by {digest}" in out

    code, out, err = prove(str(target.id), "--digest", "ab" * 32, "--proof", str(good))
    assert code == 1
    assert "FAILED: the chain does not lead to the digest given" in err

    code, out, err = prove(str(target.id), "--digest", digest, "--proof", str(bad))
    assert code == 1
    assert f"FAILED: entry {target.id} does not lead to the root of block 1" in err

    code, out, err = prove(str(posted[0].id), "--digest", digest, "--proof", str(good))
    assert code == 1
    assert f"the proof is for entry {target.id}, not {posted[0].id}" in err

    # Without --proof, the proof comes from the database.
    code, out, err = prove(str(target.id), "--digest", digest)
    assert code == 0, err


def test_sealing_a_backlog_of_old_entries_verifies_clean(
    books: Books, no_seal_delay: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    posted = transfers(books.sessions, 5)
    # The journal predates sealing: its entries were recorded two hours ago, none sealed yet.
    recorded_earlier(books.sessions, [p.id for p in posted], "2 hours")
    monkeypatch.setattr(sealing, "MAX_BLOCK_ENTRIES", 2)
    assert len(sealing.seal_all(books.sessions)) == 3
    with books.sessions() as session:
        assert session.execute(select(func.count()).select_from(seal_items)).scalar_one() == 5
        assert [str(p) for p in verify.verify_database(session).problems] == []
