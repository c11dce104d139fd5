"""docs/audit.md tells an auditor how to check an inclusion proof with nothing but hashlib: its
program is run here, on its own worked example, and every value the page quotes is recomputed
with hashlib, so that the page cannot fall behind the code (the seals' own functions must agree
with it too)."""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clearinghouse.audit import sealing
from clearinghouse.audit.canonical import EntryRecord, encode

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGE = (DOCS / "audit.md").read_text(encoding="utf-8")
EXAMPLE = DOCS / "audit-proof-example.json"


def _fenced(language: str, first_line: str) -> str:
    """The body of the page's one fenced block in `language` that starts with `first_line`."""
    blocks = re.findall(rf"```{language}\n(.*?)```", PAGE, flags=re.DOTALL)
    (found,) = [block for block in blocks if block.startswith(first_line)]
    return str(found)


PROGRAM = _fenced("python", "import hashlib\n")


# The worked example's values as the page lists them: (name, value), in order.
def _listed(line: str) -> tuple[str, str]:
    name, value = re.split(r" {2,}", line, maxsplit=1)
    return name, value


LISTED = [_listed(line) for line in _fenced("text", "entry bytes").splitlines()]
QUOTED = dict(LISTED)


def _program() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "audit_md"}
    exec(compile(PROGRAM, "docs/audit.md", "exec"), namespace)
    return namespace


def _proof() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    return loaded


def test_the_program_needs_only_the_standard_hashlib_and_json() -> None:
    imported = {
        alias.name
        for node in ast.walk(ast.parse(PROGRAM))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported == {"hashlib", "json", "sys"}  # sys only to read its arguments
    assert not any(isinstance(node, ast.ImportFrom) for node in ast.walk(ast.parse(PROGRAM)))


def test_every_value_the_page_quotes_is_recomputed_with_hashlib() -> None:
    proof = _proof()
    entry = json.dumps(
        proof["entry"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    assert QUOTED["entry bytes"].encode() == entry
    assert f"(one line, {len(entry)} bytes)" in PAGE
    node = hashlib.sha256(b"\x00" + entry).digest()
    assert QUOTED["leaf"] == node.hex()
    climbed = []
    for step in proof["path"]:
        sibling = bytes.fromhex(step["hash"])
        pair = sibling + node if step["side"] == "L" else node + sibling
        node = hashlib.sha256(b"\x01" + pair).digest()
        climbed.append((f"after {step['side']}", node.hex()))
    assert [item for item in LISTED if item[0].startswith("after ")] == climbed
    block = proof["block"]
    assert QUOTED["merkle root"] == node.hex() == block["merkle_root"]
    header = (
        b"block"
        + block["number"].to_bytes(8, "big")
        + block["entry_count"].to_bytes(8, "big")
        + bytes.fromhex(block["previous_hash"])
        + node
    )
    assert len(header) == 85
    assert QUOTED["header 1"] == header.hex()
    first = hashlib.sha256(header).digest()
    assert QUOTED["block 1"] == first.hex() == block["block_hash"]
    (later,) = proof["later_blocks"]
    second = hashlib.sha256(
        b"block"
        + later["number"].to_bytes(8, "big")
        + later["entry_count"].to_bytes(8, "big")
        + first
        + bytes.fromhex(later["merkle_root"])
    ).digest()
    assert QUOTED["block 2"] == second.hex() == proof["newest_digest"]


def test_the_pages_program_proves_the_example_against_either_digest() -> None:
    check = _program()["check"]
    proof = _proof()
    assert check(proof, QUOTED["block 1"])
    assert check(proof, QUOTED["block 2"].upper())
    assert not check(proof, "00" * 32)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: p["entry"]["postings"][3].__setitem__(2, 1541),
        lambda p: p["entry"].__setitem__("recorded_at", "2026-12-01T18:36:55.054796Z"),
        lambda p: p["entry"]["metadata"].__setitem__("note", "added"),
        lambda p: p["path"][0].__setitem__("side", "L"),
        lambda p: p["later_blocks"][0].__setitem__("entry_count", 2),
    ],
)
def test_the_pages_program_refuses_a_changed_proof(tamper: Any) -> None:
    check = _program()["check"]
    proof = copy.deepcopy(_proof())
    tamper(proof)
    assert not check(proof, QUOTED["block 2"])
    assert sealing.check_proof(proof, QUOTED["block 2"]) != []


def test_the_page_agrees_with_the_seals_own_code() -> None:
    proof = _proof()
    assert encode(EntryRecord.from_json(proof["entry"])) == QUOTED["entry bytes"].encode()
    assert sealing.check_proof(proof, QUOTED["block 1"]) == []
    assert sealing.check_proof(proof, QUOTED["block 2"]) == []


def test_the_program_runs_on_its_own_outside_the_project(tmp_path: Path) -> None:
    script = tmp_path / "check_proof.py"
    script.write_text(PROGRAM, encoding="utf-8")

    def run(digest: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-I", str(script), str(EXAMPLE), digest],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
            timeout=60,
        )

    proven = run(QUOTED["block 2"])
    assert (proven.returncode, proven.stdout) == (0, "proven\n")
    refused = run("ab" * 32)
    assert (refused.returncode, refused.stdout) == (1, "NOT proven\n")
