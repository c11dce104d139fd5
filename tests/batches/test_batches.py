"""Batch files through signed requests: a file of mixed operations (duplicates, lines that do
not parse, lines already sent singly) gives exactly one effect and one result per line, again
when the same file is sent twice; gzip files; a store's key confines every line to its store."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from clearinghouse.batches.tables import batch_lines
from clearinghouse.batches.worker import process_batches
from clearinghouse.numbers import refund_points_share
from clearinghouse.points.tables import purchases, refunds
from partners.auth import KeyScope
from partners.client import PartnerClient
from tests.builders.calls import buy, enrol
from tests.builders.databases import World
from tests.builders.http import client_for
from tests.builders.partners import add_key, add_store, make_partner, set_offline_allowance
from tests.builders.points import available, wallet_of
from tests.cli_fixtures import Cli

NDJSON = "application/x-ndjson"


def jsonl(*lines: dict[str, Any] | str) -> bytes:
    return "".join(
        (line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines
    ).encode()


def upload(world: World, client: PartnerClient, content: bytes) -> httpx.Response:
    return world.http.send(client.build("POST", "/v1/batches", file=content, media_type=NDJSON))


def submit(world: World, client: PartnerClient, content: bytes) -> dict[str, Any]:
    response = upload(world, client, content)
    assert response.status_code == 202, response.text
    batch: dict[str, Any] = response.json()
    return batch


def results(client: PartnerClient, batch_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    query = "?limit=3"
    while True:
        page = client.get(f"/v1/batches/{batch_id}/results{query}")
        found += page["results"]
        if page["next"] is None:
            return found
        query = f"?limit=3&after={page['next']}"


# Every line of a test made at one instant: the same transaction sent twice is the same.
AT = (datetime.now(UTC) - timedelta(hours=2)).isoformat()


def purchase(member_id: str, txn: str, amount_fen: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "purchase",
        "partner_txn_id": txn,
        "member_id": member_id,
        "amount_fen": amount_fen,
        "occurred_at": AT,
        **extra,
    }


def purchase_count(world: World, partner_id: str) -> int:
    with world.sessions() as session:
        return session.execute(
            select(func.count()).where(purchases.c.partner_id == partner_id)
        ).scalar_one()


def test_a_mixed_file_gives_one_effect_and_one_result_per_line(world: World) -> None:
    chain = make_partner(world.sessions, kind="store_chain")
    client = client_for(chain, world.http)
    alice, bob = enrol(client), enrol(client)
    sent_singly = buy(client, alice, 10_000, txn="T-SINGLE", occurred_at=datetime.fromisoformat(AT))
    content = jsonl(
        purchase(alice, "T-1", 52_000),
        purchase(bob, "T-2", 30_000),
        purchase(alice, "T-1", 52_000),  # the same line twice in the file
        purchase(alice, "T-SINGLE", 10_000),  # already sent as a single call
        purchase(bob, "T-1", 99),  # the same transaction with other details
        "{not json",
        {"type": "purchase", "partner_txn_id": "T-3", "member_id": bob},  # fields missing
        {"type": "gift", "partner_txn_id": "T-4"},
        {"type": "refund", "partner_txn_id": "R-1", "purchase_txn_id": "T-2", "amount_fen": 10_000},
        {"type": "void", "partner_txn_id": "V-1", "voids": "T-1"},
        {"type": "void", "partner_txn_id": "V-2", "voids": "T-NOWHERE"},
        "",
    )
    batch = submit(world, client, content)
    assert (batch["state"], batch["lines"], batch["failed"], batch["pending"]) == (
        "received",
        11,
        3,
        8,
    )

    assert process_batches(world.sessions) == 8
    done = client.get(f"/v1/batches/{batch['batch_id']}")
    assert (done["state"], done["applied"], done["replayed"], done["failed"]) == (
        "done",
        4,
        2,
        5,
    )
    by_line = {r["line"]: r for r in results(client, batch["batch_id"])}
    assert sorted(by_line) == list(range(1, 12))
    first = by_line[1]
    assert (first["state"], first["status"], first["operation"]) == ("applied", 201, "purchase")
    earned = first["result"]["points"]
    assert by_line[3]["state"] == "replayed"
    assert by_line[3]["result"] == first["result"]
    assert by_line[4]["state"] == "replayed"
    assert by_line[4]["result"]["purchase_id"] == sent_singly["purchase_id"]
    assert (by_line[5]["status"], by_line[5]["result"]["code"]) == (409, "duplicate_transaction")
    assert by_line[6]["result"]["code"] == "validation_error"
    missing = {e["field"] for e in by_line[7]["result"]["errors"]}
    assert {"purchase.amount_fen", "purchase.occurred_at"} <= missing
    assert by_line[8]["status"] == 422
    bob_earned = by_line[2]["result"]["points"]
    clawed = by_line[9]["result"]["points"]
    assert clawed == refund_points_share(bob_earned, 10_000, 30_000)
    assert (by_line[10]["state"], by_line[10]["result"]["points"]) == ("applied", earned)
    assert (by_line[11]["status"], by_line[11]["result"]["code"]) == (404, "void_target_not_found")
    assert by_line[11]["result"]["instance"].endswith("#line-11")

    # A refund or a void goes with the member of what it names, and lines that share a member
    # or a transaction are one group, applied in file order by one lane: bob's T-1 (line 5)
    # joins alice's lines to bob's, so line 1 is always the T-1 applied.
    with world.sessions() as session:
        stored = {
            row.line_no: row
            for row in session.execute(
                select(batch_lines).where(batch_lines.c.batch_id == batch["batch_id"])
            )
        }
    assert (stored[9].member_id, stored[10].member_id, stored[11].member_id) == (bob, alice, None)
    assert len({stored[n].member_key for n in (1, 2, 3, 4, 5, 9, 10)}) == 1

    # Each effect once: T-SINGLE, T-1, T-2; T-1 voided, T-2 refunded by a third.
    assert purchase_count(world, chain.id) == 3
    assert available(world.sessions, alice) == sent_singly["points"]
    assert available(world.sessions, bob) == bob_earned - clawed

    # The same file again: nothing applied twice, every line answered as before.
    again = submit(world, client, content)
    process_batches(world.sessions)
    repeat = client.get(f"/v1/batches/{again['batch_id']}")
    assert (repeat["applied"], repeat["replayed"], repeat["failed"]) == (0, 6, 5)
    assert purchase_count(world, chain.id) == 3
    with world.sessions() as session:
        assert session.execute(select(func.count()).select_from(refunds)).scalar_one() == 2
    assert available(world.sessions, alice) == sent_singly["points"]
    assert available(world.sessions, bob) == bob_earned - clawed
    replayed = {r["line"]: r for r in results(client, again["batch_id"])}
    for line in (1, 2, 9, 10):
        assert replayed[line]["result"] == by_line[line]["result"]


def test_a_gzip_file_is_read_as_the_plain_one(world: World) -> None:
    shop = make_partner(world.sessions)
    client = client_for(shop, world.http)
    member = enrol(client)
    content = gzip.compress(jsonl(*(purchase(member, f"G-{n}", 1_000) for n in range(50))))
    batch = submit(world, client, content)
    assert batch["lines"] == 50
    process_batches(world.sessions)
    assert client.get(f"/v1/batches/{batch['batch_id']}")["applied"] == 50
    assert available(world.sessions, member) == sum(
        r["result"]["points"] for r in results(client, batch["batch_id"])
    )


def test_files_that_cannot_be_read_are_refused_whole(world: World) -> None:
    shop = make_partner(world.sessions)
    client = client_for(shop, world.http)
    for content, detail in (
        (b"\n\n", "no operation"),
        (gzip.compress(b"x")[:-4], "gzip"),
        (jsonl(*({"type": "void"} for _ in range(10_001))), "at most 10000"),
    ):
        response = upload(world, client, content)
        assert response.status_code == 422, response.text
        assert detail in response.json()["detail"]
    wrong_type = world.http.send(
        client.build("POST", "/v1/batches", file=jsonl({"type": "void"}), media_type="text/csv")
    )
    assert wrong_type.status_code == 415


def test_a_store_key_batch_acts_for_its_store_alone(world: World) -> None:
    chain = make_partner(world.sessions, kind="store_chain")
    other_store = add_store(world.sessions, chain.id)
    till = client_for(
        add_key(world.sessions, chain.id, scope=KeyScope(chain.store_id, "till-9")), world.http
    )
    everywhere = client_for(chain, world.http)
    member = enrol(everywhere)
    batch = submit(
        world,
        till,
        jsonl(purchase(member, "S-1", 5_000), purchase(member, "S-2", 5_000, store_id=other_store)),
    )
    process_batches(world.sessions)
    by_line = {r["line"]: r for r in results(till, batch["batch_id"])}
    assert by_line[1]["state"] == "applied"
    assert (by_line[2]["status"], by_line[2]["result"]["code"]) == (403, "key_scope")
    assert everywhere.get("/v1/purchases/S-1")["store_id"] == chain.store_id

    # The partner's own key sees every store's batch; another store's key sees none of them.
    assert everywhere.get(f"/v1/batches/{batch['batch_id']}")["applied"] == 1
    other_till = client_for(
        add_key(world.sessions, chain.id, scope=KeyScope(other_store)), world.http
    )
    response = world.http.send(other_till.build("GET", f"/v1/batches/{batch['batch_id']}"))
    assert response.status_code == 404
    assert other_till.get("/v1/batches") == []
    assert [b["batch_id"] for b in till.get("/v1/batches")] == [batch["batch_id"]]


def test_another_partner_s_batch_is_unknown(world: World) -> None:
    shop, other = make_partner(world.sessions), make_partner(world.sessions)
    client = client_for(shop, world.http)
    batch = submit(world, client, jsonl({"type": "void", "partner_txn_id": "V", "voids": "X"}))
    response = world.http.send(
        client_for(other, world.http).build("GET", f"/v1/batches/{batch['batch_id']}")
    )
    assert response.status_code == 404
    assert response.json()["code"] == "batch_not_found"


def test_offline_redemptions_overdraw_within_the_allowance_and_voids_give_back(
    world: World,
) -> None:
    chain = make_partner(world.sessions, kind="store_chain")
    set_offline_allowance(world.sessions, chain.store_id, 1_000)
    client = client_for(chain, world.http)
    member = enrol(client)
    earned = buy(client, member, 20_000, occurred_at=datetime.fromisoformat(AT))["points"]
    spend = earned + 300  # beyond the member's points, within the allowance
    redemption = {
        "type": "redemption",
        "partner_txn_id": "D-1",
        "member_id": member,
        "points": spend,
        "occurred_at": AT,
        "store_id": chain.store_id,
    }
    beyond = {**redemption, "partner_txn_id": "D-2", "points": 900}  # past the day's allowance
    batch = submit(world, client, jsonl(redemption, beyond, redemption))
    process_batches(world.sessions)
    by_line = {r["line"]: r for r in results(client, batch["batch_id"])}
    assert by_line[1]["state"] == "applied"
    assert (by_line[1]["result"]["points"], by_line[1]["result"]["debt_incurred"]) == (spend, 300)
    assert by_line[2]["status"] == 422
    assert by_line[3]["state"] == "replayed"
    assert by_line[3]["result"]["hold_id"] == by_line[1]["result"]["hold_id"]
    assert wallet_of(world.sessions, member) == (0, 0, 300)

    # Voiding it gives back what it took: the debt first, then points.
    void_file = jsonl({"type": "void", "partner_txn_id": "V-D1", "voids": "D-1"})
    void = submit(world, client, void_file)
    process_batches(world.sessions)
    (voided,) = results(client, void["batch_id"])
    assert (voided["state"], voided["result"]["points"]) == ("applied", spend)
    assert wallet_of(world.sessions, member) == (earned, 0, 0)
    # Sent again: the same answer, all the points, nothing given back twice.
    again = submit(world, client, void_file)
    process_batches(world.sessions)
    (replayed,) = results(client, again["batch_id"])
    assert (replayed["state"], replayed["result"]["points"]) == ("replayed", spend)
    assert wallet_of(world.sessions, member) == (earned, 0, 0)


def test_an_operator_submits_a_partner_s_file_and_follows_it(world: World, tmp_path: Path) -> None:
    chain = make_partner(world.sessions, kind="store_chain")
    client = client_for(chain, world.http)
    member = enrol(client)
    file = tmp_path / "day.jsonl.gz"
    file.write_bytes(
        gzip.compress(
            jsonl(
                purchase(member, "C-1", 8_000),
                purchase(member, "C-2", 4_000, store_id="nowhere"),
                "not json",
            )
        )
    )
    cli = Cli(world.url)
    store = chain.store_id
    submitted = cli.ok("batch", "submit", str(file), "--partner", chain.id, "--store", store)
    assert "3 lines, 0 applied, 0 replayed, 1 failed, 2 pending" in submitted
    assert submitted.rstrip().endswith("3 lines, 1 applied, 0 replayed, 2 failed, 0 pending")
    batch_id = submitted.split()[1]
    status = cli.ok("batch", "status", batch_id)
    assert "(done)" in status
    assert "line 2 (purchase C-2): 403 key_scope" in status
    assert "line 3 (? ): 422 validation_error: the line is not JSON" in status
    assert client.get("/v1/purchases/C-1")["store_id"] == chain.store_id
    assert "no batch" in cli.refused("batch", "status", "BNOSUCHBATCH0000")
