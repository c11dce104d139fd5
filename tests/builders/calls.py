"""The partner's signed API calls, made with a PartnerClient (http.client_for): members enrolled
and linked, purchases reported (buy), holds placed and captured, one-step redemptions, purchase
refunds and programme exchanges. Each returns the answer's JSON; PartnerClient raises
ProblemError on a refusal (see http.refused). For the same steps through the domain services,
without HTTP, see points."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from partners.client import PartnerClient
from tests.builders.ids import unique_id


def link_body(customer_ref: str | None = None) -> dict[str, str]:
    return {"customer_ref": customer_ref or unique_id("c")}


def enrol(client: PartnerClient, *, birth_month: int | None = None) -> str:
    """A new coalition member linked to the client's partner; returns the member id."""
    body: dict[str, Any] = link_body()
    if birth_month is not None:
        body["birth_month"] = birth_month
    member_id: str = client.post("/v1/members", body)["member_id"]
    return member_id


def link(client: PartnerClient, member_id: str) -> None:
    """Link an existing member to the client's partner."""
    client.post("/v1/members", {**link_body(), "member_id": member_id})


def view(client: PartnerClient, member_id: str) -> dict[str, Any]:
    member: dict[str, Any] = client.get(f"/v1/members/{member_id}")
    return member


def purchase_body(
    member_id: str,
    amount_fen: int,
    *,
    occurred_at: datetime | None = None,
    txn: str | None = None,
    store_id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "partner_txn_id": txn or unique_id("txn"),
        "member_id": member_id,
        "amount_fen": amount_fen,
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
    }
    if store_id is not None:
        body["store_id"] = store_id
    return body


def buy(
    client: PartnerClient,
    member_id: str,
    amount_fen: int,
    *,
    store_id: str | None = None,
    occurred_at: datetime | None = None,
    txn: str | None = None,
) -> dict[str, Any]:
    """POST /v1/purchases (at `store_id` when given); returns the accrual."""
    body = purchase_body(member_id, amount_fen, store_id=store_id, occurred_at=occurred_at, txn=txn)
    accrual: dict[str, Any] = client.post("/v1/purchases", body)
    return accrual


def lines(accrual: dict[str, Any]) -> list[tuple[str, Decimal]]:
    """An accrual's breakdown as (rule, points) pairs."""
    return [(line["rule"], Decimal(line["points"])) for line in accrual["breakdown"]]


def member_with_points(client: PartnerClient, amount_fen: int = 52_000) -> tuple[str, int]:
    """A new member of the client's partner with the points of one online purchase (52,000 fen
    earn 1,540 points, first-purchase bonus included); (member id, points)."""
    member_id = enrol(client)
    return member_id, int(buy(client, member_id, amount_fen)["points"])


def hold(
    client: PartnerClient,
    member_id: str,
    points: int,
    *,
    store_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """POST /v1/holds (at `store_id` when given, with any other `fields` of the body)."""
    body: dict[str, Any] = {"member_id": member_id, "points": points, **fields}
    if store_id is not None:
        body["store_id"] = store_id
    placed: dict[str, Any] = client.post("/v1/holds", body)
    return placed


def capture(client: PartnerClient, hold_id: str) -> dict[str, Any]:
    captured: dict[str, Any] = client.post(f"/v1/holds/{hold_id}/capture", {})
    return captured


def redeem(
    client: PartnerClient, member_id: str, points: int, *, store_id: str | None = None
) -> dict[str, Any]:
    """POST /v1/redemptions: a hold captured at once."""
    body: dict[str, Any] = {"member_id": member_id, "points": points}
    if store_id is not None:
        body["store_id"] = store_id
    redeemed: dict[str, Any] = client.post("/v1/redemptions", body)
    return redeemed


def refund(
    client: PartnerClient, txn: str, amount_fen: int, refund_id: str | None = None
) -> dict[str, Any]:
    """POST /v1/purchases/{txn}/refunds, as `refund_id` (a fresh one unless given)."""
    refunded: dict[str, Any] = client.post(
        f"/v1/purchases/{txn}/refunds",
        {"refund_id": refund_id or unique_id("r"), "amount_fen": amount_fen},
    )
    return refunded


def exchange(client: PartnerClient, member_id: str, direction: str, points: int) -> dict[str, Any]:
    done: dict[str, Any] = client.post(
        "/v1/exchanges", {"member_id": member_id, "direction": direction, "points": points}
    )
    return done
