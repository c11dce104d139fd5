"""The auditor's routes: bearer token of the auditor role, every filter of the journal, cursor
pages with no gap and no repeat, an entry with what it reverses and what reverses it, balances
and the trial balance as of an instant, statements, the digest and inclusion proofs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.app import create_app
from clearinghouse.audit import sealing
from clearinghouse.ledger.tables import journal_entries
from clearinghouse.points.tables import purchases, refunds
from tests.builders import ledger as b
from tests.builders.audit import transfers
from tests.builders.calls import enrol, purchase_body
from tests.builders.databases import Books, own_books
from tests.builders.http import assert_problem, client_for, own_client
from tests.builders.ids import unique_id
from tests.builders.partners import ApiPartner, make_partner
from tests.builders.users import bearer, staff
from tests.conftest import Databases

Json = dict[str, Any]


@dataclass(frozen=True)
class Stamped:
    id: int
    recorded_at: datetime


@dataclass(frozen=True)
class World:
    """One database with a purchase and its refund through the signed API, and ledger entries
    on a member, a partner and a store, none of them sealed."""

    books: Books
    http: TestClient
    auditor: dict[str, str]
    finance: dict[str, str]
    shop: ApiPartner
    shopper: str
    onboarding: list[int]
    """The entries the shop's onboarding wrote (its issuance limit)."""
    purchase: int
    refund: int
    member: str
    partner: str
    store: str
    accrual: Stamped
    spend: Stamped
    reversal: Stamped
    tagged: Stamped
    top_ups: list[Stamped]

    def get(self, path: str, **params: Any) -> Json:
        response = self.http.get(path, params=params, headers=self.auditor)
        assert response.status_code == 200, response.text
        body: Json = response.json()
        return body

    def entry_ids(self, **params: Any) -> list[int]:
        """Every page of /audit/entries with these filters, followed to the end."""
        ids: list[int] = []
        after: int | None = None
        while True:
            page = self.get("/audit/entries", **params, **({"after": after} if after else {}))
            ids += [entry["id"] for entry in page["entries"]]
            after = page["next"]
            if after is None:
                return ids


def _post(sessions: sessionmaker[Session], entry: ledger.Entry) -> Stamped:
    with sessions() as session, session.begin():
        posted = ledger.post(session, entry)
    return Stamped(posted.id, posted.recorded_at)


def _owner(address: str) -> str:
    owner = ledger.Address.parse(address).owner_id
    assert owner is not None
    return owner


@pytest.fixture(scope="module")
def world(databases: Databases) -> Iterator[World]:
    with own_books(databases) as books:
        sessions = books.sessions
        http = own_client(create_app(sessions))
        shop = make_partner(sessions)
        with sessions() as session:
            onboarding = list(session.execute(select(journal_entries.c.id)).scalars())
        client = client_for(shop, http)
        shopper = enrol(client)
        txn = unique_id("txn")
        client.post(
            "/v1/purchases", purchase_body(shopper, 52_000, txn=txn, store_id=shop.store_id)
        )
        client.post(f"/v1/purchases/{txn}/refunds", {"refund_id": "r-1", "amount_fen": 10_000})
        with sessions() as session:
            purchase = session.execute(
                select(purchases.c.id, purchases.c.entry_id).where(
                    purchases.c.partner_id == shop.id, purchases.c.partner_txn_id == txn
                )
            ).one()
            refund = session.execute(
                select(refunds.c.entry_id).where(refunds.c.purchase_id == purchase.id)
            ).scalar_one()

        with sessions() as session, session.begin():
            member, partner = b.member_account(session), b.partner_account(session)
            store = b.store_account(session)
            other_partner, other_member = b.partner_account(session), b.member_account(session)
        accrual = _post(
            sessions,
            ledger.transfer(
                kind="accrual",
                origin="test",
                idempotency_key=b.key(),
                source=partner,
                destination=member,
                amount=100,
                occurred_at=b.now(),
            ),
        )
        spend = _post(sessions, b.entry((member, -30), (store, 30), kind="spend"))
        reversal = _post(
            sessions,
            ledger.Entry(
                kind="reversal",
                origin="test",
                idempotency_key=b.key(),
                postings=(ledger.Posting(store, -30), ledger.Posting(member, 30)),
                occurred_at=b.now(),
                reverses=spend.id,
            ),
        )
        tagged = _post(
            sessions,
            ledger.transfer(
                kind="adjustment",
                origin="test",
                idempotency_key=b.key(),
                source=other_partner,
                destination=other_member,
                amount=5,
                occurred_at=b.now(),
                metadata={"partner_id": "meta-partner", "store_id": "meta-store"},
            ),
        )
        top_ups = [
            _post(
                sessions,
                ledger.transfer(
                    kind="accrual",
                    origin="test",
                    idempotency_key=b.key(),
                    source=partner,
                    destination=member,
                    amount=1,
                    occurred_at=b.now(),
                ),
            )
            for _ in range(5)
        ]
        try:
            yield World(
                books=books,
                http=http,
                auditor=staff(sessions, "auditor").headers,
                finance=staff(sessions, "finance").headers,
                shop=shop,
                shopper=shopper,
                onboarding=onboarding,
                purchase=purchase.entry_id,
                refund=refund,
                member=member,
                partner=partner,
                store=store,
                accrual=accrual,
                spend=spend,
                reversal=reversal,
                tagged=tagged,
                top_ups=top_ups,
            )
        finally:
            http.close()


ROUTES = [
    "/audit/entries",
    "/audit/entries/1",
    "/audit/accounts/coalition:breakage/balance",
    "/audit/trial-balance",
    "/audit/accounts/coalition:breakage/statement",
    "/audit/digest",
    "/audit/proofs/1",
    "/audit/export?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
]


@pytest.mark.parametrize("path", ROUTES)
def test_every_audit_route_wants_an_auditor(world: World, path: str) -> None:
    assert_problem(world.http.get(path), 401, "not_signed_in")
    assert_problem(world.http.get(path, headers=bearer("cht_not-a-token")), 401, "not_signed_in")
    assert_problem(world.http.get(path, headers={"Authorization": "Basic x"}), 401, "not_signed_in")
    assert_problem(world.http.get(path, headers=world.finance), 403, "forbidden")


def test_entries_by_each_filter(world: World) -> None:
    on_member = [world.accrual.id, world.spend.id, world.reversal.id]
    on_member += [t.id for t in world.top_ups]
    assert world.entry_ids(account=world.member) == on_member
    assert world.entry_ids(member=_owner(world.member)) == on_member
    assert world.entry_ids(member=world.shopper) == [world.purchase, world.refund]
    assert world.entry_ids(partner=_owner(world.partner)) == [
        world.accrual.id,
        *[t.id for t in world.top_ups],
    ]
    assert world.entry_ids(partner=world.shop.id) == [
        *world.onboarding,
        world.purchase,
        world.refund,
    ]
    assert world.entry_ids(partner="meta-partner") == [world.tagged.id]  # by its metadata
    assert world.entry_ids(store=_owner(world.store)) == [world.spend.id, world.reversal.id]
    assert world.entry_ids(store="meta-store") == [world.tagged.id]
    assert world.purchase in world.entry_ids(store=world.shop.store_id)
    assert world.entry_ids(kind="reversal") == [world.reversal.id]
    assert world.entry_ids(kind="refund") == [world.refund]
    assert world.entry_ids(
        recorded_from=world.spend.recorded_at.isoformat(),
        recorded_to=world.tagged.recorded_at.isoformat(),
    ) == [world.spend.id, world.reversal.id]
    assert world.entry_ids(account=world.member, kind="accrual", limit=2) == [
        world.accrual.id,
        *[t.id for t in world.top_ups],
    ]
    assert world.entry_ids(account="member:nobody:available") == []
    naive = world.http.get(
        "/audit/entries", params={"recorded_from": "2026-01-01T00:00:00"}, headers=world.auditor
    )
    assert_problem(naive, 422, "validation_error")


def test_the_store_filter_shows_the_refunds_of_the_stores_purchases(world: World) -> None:
    assert world.entry_ids(store=world.shop.store_id) == [world.purchase, world.refund]


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 11, 12, 13, 1000])
def test_pages_of_entries_have_no_gap_and_no_repeat(world: World, limit: int) -> None:
    with world.books.sessions() as session:
        every = list(
            session.execute(select(journal_entries.c.id).order_by(journal_entries.c.id)).scalars()
        )
    assert len(every) >= 11
    pages: list[list[int]] = []
    after: int | None = None
    while True:
        page = world.get("/audit/entries", limit=limit, **({"after": after} if after else {}))
        pages.append([entry["id"] for entry in page["entries"]])
        assert len(pages[-1]) <= limit
        after = page["next"]
        if after is None:
            break
        assert after == pages[-1][-1]
    assert [i for page in pages for i in page] == every
    assert all(len(page) == limit for page in pages[:-1])
    assert len(pages) == max(1, -(-len(every) // limit))


def test_one_entry_with_its_postings_and_reversals(world: World) -> None:
    spend = world.get(f"/audit/entries/{world.spend.id}")
    assert spend["kind"] == "spend"
    assert sorted(map(tuple, spend["postings"])) == sorted(
        [(world.member, "PTS", -30), (world.store, "PTS", 30)]
    )
    assert (spend["reverses_id"], spend["reversed_by"]) == (None, [world.reversal.id])
    assert spend["sealed_in_block"] is None
    assert spend["recorded_at"] == world.spend.recorded_at.astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )

    reversal = world.get(f"/audit/entries/{world.reversal.id}")
    assert (reversal["reverses_id"], reversal["reversed_by"]) == (world.spend.id, [])

    purchase = world.get(f"/audit/entries/{world.purchase}")
    refund = world.get(f"/audit/entries/{world.refund}")
    assert purchase["kind"] == "accrual"
    assert purchase["metadata"]["store_id"] == world.shop.store_id
    assert (purchase["reverses_id"], purchase["reversed_by"]) == (None, [world.refund])
    assert (refund["kind"], refund["reverses_id"], refund["reversed_by"]) == (
        "refund",
        world.purchase,
        [],
    )
    for entry in (purchase, refund):
        totals: dict[str, int] = {}
        for _, asset, amount in entry["postings"]:
            totals[asset] = totals.get(asset, 0) + amount
        assert set(totals.values()) == {0}

    missing = world.http.get("/audit/entries/999999", headers=world.auditor)
    assert_problem(missing, 404, "entry_not_found")


def test_balance_now_and_as_of_an_instant(world: World) -> None:
    path = f"/audit/accounts/{world.member}/balance"
    assert world.get(path)["balance"] == 105
    for stamped, expected in ((world.accrual, 100), (world.spend, 70), (world.reversal, 100)):
        answer = world.get(path, as_of=stamped.recorded_at.isoformat())
        assert (answer["address"], answer["asset"], answer["balance"]) == (
            world.member,
            "PTS",
            expected,
        )
    assert world.get(path, as_of="2000-01-01T00:00:00+08:00")["balance"] == 0
    naive = world.http.get(path, params={"as_of": "2026-01-01T00:00:00"}, headers=world.auditor)
    assert_problem(naive, 422, "validation_error")
    unknown = world.http.get(
        "/audit/accounts/member:nobody:available/balance", headers=world.auditor
    )
    assert unknown.status_code == 404, unknown.text


def _trial_balance(world: World, **params: Any) -> tuple[list[Json], list[Json]]:
    """Every account line of /audit/trial-balance, page after page, and the totals of the
    first page."""
    first = world.get("/audit/trial-balance", **params)
    lines, after = list(first["accounts"]), first["next"]
    while after is not None:
        page = world.get("/audit/trial-balance", **params, after=after)
        assert page["totals"] is None  # on the first page only
        lines += page["accounts"]
        after = page["next"]
    totals: list[Json] = first["totals"]
    return lines, totals


def test_trial_balance_lists_every_account_and_nets_to_zero_per_asset(world: World) -> None:
    now, totals = _trial_balance(world)
    assert {line["asset"] for line in totals} == {"PTS", "CNY"}
    with world.books.sessions() as session:
        for line in now:
            assert line["balance"] == ledger.balance(session, line["address"]) != 0
            assert line["debit"] - line["credit"] == line["balance"]
            assert 0 in (line["debit"], line["credit"])
            parsed = ledger.Address.parse(line["address"])
            assert (line["owner_type"], line["kind"]) == (parsed.owner_type, parsed.kind)
    assert [line["address"] for line in now] == sorted(line["address"] for line in now)
    assert {world.member, world.partner} <= {line["address"] for line in now}
    for total in totals:
        mine = [line for line in now if line["asset"] == total["asset"]]
        assert sum(line["debit"] for line in mine) == total["debit"] > 0
        assert sum(line["credit"] for line in mine) == total["credit"] == total["debit"]
        assert total["accounts"] == len(mine)
        assert total["net"] == 0
    # A page at a time, without gap or repeat.
    assert _trial_balance(world, limit=2)[0] == now

    at_spend, at_spend_totals = _trial_balance(world, as_of=world.spend.recorded_at.isoformat())
    with world.books.sessions() as session:
        for line in at_spend:
            assert line["balance"] == ledger.balance(
                session, line["address"], world.spend.recorded_at
            )
    pts = next(t for t in at_spend_totals if t["asset"] == "PTS")
    assert pts["debit"] < next(t for t in totals if t["asset"] == "PTS")["debit"]
    assert _trial_balance(world, as_of="2000-01-01T00:00:00Z") == ([], [])


def test_statement_pages_carry_the_running_balance(world: World) -> None:
    path = f"/audit/accounts/{world.member}/statement"
    pages: list[Json] = []
    cursor: str | None = None
    while True:
        page = world.get(path, limit=3, **({"cursor": cursor} if cursor else {}))
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(page["lines"]) for page in pages] == [3, 3, 2]
    lines = [line for page in pages for line in page["lines"]]
    assert [line["entry_id"] for line in lines] == [
        world.accrual.id,
        world.spend.id,
        world.reversal.id,
        *[t.id for t in world.top_ups],
    ]
    assert [line["amount"] for line in lines] == [100, -30, 30, 1, 1, 1, 1, 1]
    assert [line["balance"] for line in lines] == [100, 70, 100, 101, 102, 103, 104, 105]
    assert [page["opening_balance"] for page in pages] == [0, 100, 103]
    whole = world.get(path, limit=1000)
    assert whole["lines"] == lines
    assert whole["next_cursor"] is None


def test_digest_and_proofs(books: Books, no_seal_delay: None) -> None:
    http = own_client(create_app(books.sessions))
    auditor = staff(books.sessions, "auditor").headers
    try:
        assert http.get("/audit/digest", headers=auditor).json() == {"block": None}
        first = transfers(books.sessions, 5)
        sealing.seal_all(books.sessions)
        second = transfers(books.sessions, 1)
        sealing.seal_all(books.sessions)
        (unsealed,) = transfers(books.sessions, 1)

        with books.sessions() as session:
            newest = sealing.newest_block(session)
        assert newest is not None
        digest = http.get("/audit/digest", headers=auditor).json()["block"]
        assert digest == newest.as_json()
        assert (digest["number"], digest["entry_count"]) == (2, 1)

        for posted, block in ((first[2], 1), (first[4], 1), (second[0], 2)):
            response = http.get(f"/audit/proofs/{posted.id}", headers=auditor)
            assert response.status_code == 200, response.text
            proof = response.json()
            assert proof["entry"]["id"] == posted.id
            assert proof["block"]["number"] == block
            assert proof["newest_digest"] == digest["block_hash"]
            assert sealing.check_proof(proof, digest["block_hash"]) == []
            entry = http.get(f"/audit/entries/{posted.id}", headers=auditor).json()
            assert entry["sealed_in_block"] == block

        not_yet = http.get(f"/audit/proofs/{unsealed.id}", headers=auditor)
        assert "not sealed" in assert_problem(not_yet, 404, "entry_not_found")["detail"]
        assert_problem(http.get("/audit/proofs/999999", headers=auditor), 404, "entry_not_found")
    finally:
        http.close()
