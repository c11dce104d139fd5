"""A partner sees and touches only its own purchases, holds and linked members."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from partners.client import PartnerClient
from tests.builders.calls import buy, enrol
from tests.builders.http import assert_problem
from tests.builders.ids import unique_id
from tests.builders.points import wallet_of


def test_another_partner_cannot_read_or_refund_a_purchase(
    client: PartnerClient, other_client: PartnerClient, http: TestClient
) -> None:
    member_id = enrol(client)
    txn = buy(client, member_id, 52_000)["partner_txn_id"]

    assert_problem(
        http.send(other_client.build("GET", f"/v1/purchases/{txn}")), 404, "purchase_not_found"
    )
    refund = other_client.build(
        "POST", f"/v1/purchases/{txn}/refunds", body={"refund_id": "r1", "amount_fen": 100}
    )
    assert_problem(http.send(refund), 404, "purchase_not_found")
    assert client.get(f"/v1/purchases/{txn}")["refunded_fen"] == 0


def test_another_partner_cannot_read_capture_void_or_refund_a_hold(
    sessions: sessionmaker[Session],
    client: PartnerClient,
    other_client: PartnerClient,
    http: TestClient,
) -> None:
    member_id = enrol(client)
    buy(client, member_id, 52_000)
    hold_id = client.post("/v1/holds", {"member_id": member_id, "points": 300})["hold_id"]

    assert_problem(
        http.send(other_client.build("GET", f"/v1/holds/{hold_id}")), 404, "hold_not_found"
    )
    for action, body in (("capture", {}), ("void", {}), ("refunds", {"points": 100})):
        request = other_client.build("POST", f"/v1/holds/{hold_id}/{action}", body=body)
        assert_problem(http.send(request), 404, "hold_not_found")
    assert client.get(f"/v1/holds/{hold_id}")["state"] == "held"
    assert wallet_of(sessions, member_id) == (1_240, 300, 0)

    assert client.post(f"/v1/holds/{hold_id}/capture", {})["state"] == "captured"
    assert_problem(
        http.send(other_client.build("GET", f"/v1/holds/{hold_id}")), 404, "hold_not_found"
    )


def test_another_partner_cannot_spend_or_read_an_unlinked_members_points(
    sessions: sessionmaker[Session],
    client: PartnerClient,
    other_client: PartnerClient,
    http: TestClient,
) -> None:
    member_id = enrol(client)
    buy(client, member_id, 52_000)
    for method, path, body in (
        ("POST", "/v1/holds", {"member_id": member_id, "points": 100}),
        ("POST", "/v1/redemptions", {"member_id": member_id, "points": 100}),
        ("GET", f"/v1/members/{member_id}", None),
        ("GET", f"/v1/members/{member_id}/lots", None),
        ("GET", f"/v1/members/{member_id}/expiring", None),
    ):
        request = other_client.build(method, path, body=body, idempotency_key=unique_id("k"))
        assert_problem(http.send(request), 404, "member_not_found")
    assert wallet_of(sessions, member_id) == (1_540, 0, 0)
