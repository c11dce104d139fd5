"""Redemption: points as cash (100 points = 1 yuan, from 100 points), hold -> capture / void,
expired holds, one-step redemptions, and the lots points are taken from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import delete, text
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.api.tables import idempotency_records
from clearinghouse.points import holds, lots
from partners.client import PartnerClient
from tests.builders import calls
from tests.builders.calls import buy, enrol, member_with_points
from tests.builders.dates import earlier_month, end_of_month_after, instant
from tests.builders.http import assert_problem, client_for
from tests.builders.ids import unique_id
from tests.builders.ledger import balance
from tests.builders.partners import ApiPartner, make_partner
from tests.builders.points import redeemed_account, wallet_of


def test_a_hold_then_a_full_capture_pays_100_points_as_1_yuan(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    member_id, _ = member_with_points(client)  # 1,540 points
    hold = calls.hold(client, member_id, 100)
    assert (hold["state"], hold["points"], hold["value_fen"]) == ("held", 100, 100)
    assert wallet_of(sessions, member_id) == (1_440, 100, 0)
    assert balance(sessions, redeemed_account(partner.id)) == 0  # nothing owed before capture

    captured = client.post(f"/v1/holds/{hold['hold_id']}/capture", {})
    assert (captured["state"], captured["captured"], captured["value_fen"]) == (
        "captured",
        100,
        100,
    )
    assert captured["closed_at"] is not None
    assert wallet_of(sessions, member_id) == (1_440, 0, 0)
    assert balance(sessions, redeemed_account(partner.id)) == 100
    assert client.get(f"/v1/holds/{hold['hold_id']}") == captured


def test_a_partial_capture_gives_the_rest_back(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    member_id, _ = member_with_points(client)
    hold = calls.hold(client, member_id, 300)
    captured = client.post(f"/v1/holds/{hold['hold_id']}/capture", {"points": 120})
    assert (captured["state"], captured["points"], captured["captured"]) == ("captured", 300, 120)
    assert captured["value_fen"] == 120
    assert wallet_of(sessions, member_id) == (1_540 - 120, 0, 0)
    assert balance(sessions, redeemed_account(partner.id)) == 120
    assert sum(lot["points"] for lot in client.get(f"/v1/members/{member_id}/lots")) == 1_420


def test_a_capture_beyond_the_hold_is_422(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    member_id, _ = member_with_points(client)
    hold = calls.hold(client, member_id, 300)
    response = http.send(
        client.build("POST", f"/v1/holds/{hold['hold_id']}/capture", body={"points": 301})
    )
    assert_problem(response, 422, "validation_error")
    assert wallet_of(sessions, member_id) == (1_240, 300, 0)


def test_a_void_gives_everything_back_and_a_capture_after_it_is_409(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient, http: TestClient
) -> None:
    member_id, _ = member_with_points(client)
    hold = calls.hold(client, member_id, 300)
    voided = client.post(f"/v1/holds/{hold['hold_id']}/void", {})
    assert (voided["state"], voided["captured"], voided["value_fen"]) == ("voided", 0, 0)
    assert wallet_of(sessions, member_id) == (1_540, 0, 0)

    response = http.send(client.build("POST", f"/v1/holds/{hold['hold_id']}/capture", body={}))
    assert_problem(response, 409, "hold_closed")
    response = http.send(client.build("POST", f"/v1/holds/{hold['hold_id']}/void", body={}))
    assert_problem(response, 409, "hold_closed")
    assert wallet_of(sessions, member_id) == (1_540, 0, 0)
    assert balance(sessions, redeemed_account(partner.id)) == 0


def test_a_hold_below_100_points_is_422(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    member_id, _ = member_with_points(client)
    response = http.send(
        client.build("POST", "/v1/holds", body={"member_id": member_id, "points": 99})
    )
    problem = assert_problem(response, 422, "validation_error")
    assert "100 points" in problem["detail"]
    assert wallet_of(sessions, member_id) == (1_540, 0, 0)


def test_a_hold_beyond_the_available_points_is_422_and_counts_open_holds(
    sessions: sessionmaker[Session], client: PartnerClient, http: TestClient
) -> None:
    member_id, _ = member_with_points(client)
    response = http.send(
        client.build("POST", "/v1/holds", body={"member_id": member_id, "points": 1_541})
    )
    assert_problem(response, 422, "insufficient_balance")

    calls.hold(client, member_id, 1_000)
    response = http.send(
        client.build("POST", "/v1/holds", body={"member_id": member_id, "points": 541})
    )
    assert_problem(response, 422, "insufficient_balance")
    assert wallet_of(sessions, member_id) == (540, 1_000, 0)


def _expire(sessions: sessionmaker[Session], hold_id: str) -> None:
    # holds is a working table, not part of the append-only journal.
    with sessions() as session, session.begin():
        session.execute(
            text("UPDATE holds SET expires_at = now() - interval '1 minute' WHERE id = :id"),
            {"id": hold_id},
        )


def test_expired_holds_are_released_and_cannot_be_captured(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient, http: TestClient
) -> None:
    member_id, _ = member_with_points(client)
    hold = calls.hold(client, member_id, 400, expires_in_minutes=5)
    lasts = instant(hold["expires_at"]) - instant(hold["created_at"])
    assert abs(lasts - timedelta(minutes=5)) < timedelta(seconds=1)
    _expire(sessions, hold["hold_id"])

    # Past its expiry and not yet released: already closed to captures.
    capture = client.build("POST", f"/v1/holds/{hold['hold_id']}/capture", body={})
    assert_problem(http.send(capture), 409, "hold_closed")
    assert wallet_of(sessions, member_id) == (1_140, 400, 0)

    with sessions() as session, session.begin():
        assert holds.release_expired(session) >= 1
    with sessions() as session, session.begin():
        assert holds.release_expired(session) == 0  # each hold is released once

    released = client.get(f"/v1/holds/{hold['hold_id']}")
    assert (released["state"], released["captured"]) == ("expired", 0)
    assert wallet_of(sessions, member_id) == (1_540, 0, 0)
    with sessions() as session:
        assert lots.check_lots(session) == []
    capture = client.build("POST", f"/v1/holds/{hold['hold_id']}/capture", body={})
    assert_problem(http.send(capture), 409, "hold_closed")
    assert balance(sessions, redeemed_account(partner.id)) == 0


def test_a_one_step_redemption_captures_at_once(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    member_id, _ = member_with_points(client)
    redemption = client.post("/v1/redemptions", {"member_id": member_id, "points": 1_000})
    assert (redemption["state"], redemption["captured"]) == ("captured", 1_000)
    assert redemption["value_fen"] == 1_000
    assert wallet_of(sessions, member_id) == (540, 0, 0)
    assert balance(sessions, redeemed_account(partner.id)) == 1_000


def test_a_hold_retried_after_its_answer_was_lost_returns_the_first_hold(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient, http: TestClient
) -> None:
    # The answer is stored after the commit, so a crash in between leaves no record and the
    # retry runs place_hold again: it finds the first hold by its ledger key.
    member_id, _ = member_with_points(client)
    key = unique_id("k")
    body = {"member_id": member_id, "points": 100}
    first = http.send(client.build("POST", "/v1/holds", body=body, idempotency_key=key))
    assert first.status_code == 201, first.text
    with sessions() as session, session.begin():  # the answer was never stored
        session.execute(
            delete(idempotency_records).where(
                idempotency_records.c.partner_id == partner.id, idempotency_records.c.key == key
            )
        )
    again = http.send(client.build("POST", "/v1/holds", body=body, idempotency_key=key))
    assert again.status_code == 201, again.text
    assert again.json()["hold_id"] == first.json()["hold_id"]
    assert wallet_of(sessions, member_id) == (1_440, 100, 0)


def test_the_redemption_value_is_the_partners_rate(
    sessions: sessionmaker[Session], http: TestClient
) -> None:
    partner = make_partner(sessions, redemption_value="0.9")
    client = client_for(partner, http)
    member_id, _ = member_with_points(client)
    redemption = client.post("/v1/redemptions", {"member_id": member_id, "points": 1_001})
    assert redemption["value_fen"] == 901  # 900.9 fen, half-even


def test_points_are_spent_from_the_oldest_lots_first(client: PartnerClient) -> None:
    member_id = enrol(client)
    now = datetime.now(UTC)
    older = earlier_month(now)
    old = buy(client, member_id, 10_000, occurred_at=older)  # 100 + first purchase bonus 500
    new = buy(client, member_id, 10_000, occurred_at=now)  # 100
    assert (old["points"], new["points"]) == (600, 100)
    assert instant(old["lot_expires_at"]) == end_of_month_after(older, 24)
    assert instant(new["lot_expires_at"]) == end_of_month_after(now, 24)

    before = client.get(f"/v1/members/{member_id}/lots")
    assert [(lot["points"], instant(lot["expires_at"])) for lot in before] == [
        (600, end_of_month_after(older, 24)),
        (100, end_of_month_after(now, 24)),
    ]

    client.post("/v1/redemptions", {"member_id": member_id, "points": 650})
    after = client.get(f"/v1/members/{member_id}/lots")
    assert [(lot["points"], instant(lot["expires_at"])) for lot in after] == [
        (50, end_of_month_after(now, 24))
    ]
    assert instant(after[0]["earned_at"]) == now
