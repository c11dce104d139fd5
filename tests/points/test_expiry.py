"""Expiry: lots expire at the end of the month 24 months after earning (Asia/Shanghai); the job
moves what is left to coalition:breakage, once; partners can list what expires soon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.points import lots
from clearinghouse.points.expiry import BREAKAGE, ExpiryRun, expire_lots
from partners.client import PartnerClient
from tests.builders.calls import buy, enrol, link
from tests.builders.databases import Isolated
from tests.builders.dates import SHANGHAI, earlier_month, end_of_month_after, instant
from tests.builders.ledger import balance
from tests.builders.points import wallet_of

FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


def _just_after_local_midnight(now: datetime) -> datetime:
    """00:30 in Shanghai (16:30 UTC the day before) on the 1st of this month when a partner may
    still report it, else yesterday: an instant whose UTC date is a day earlier."""
    local = now.astimezone(SHANGHAI)
    first = local.replace(day=1, hour=0, minute=30, second=0, microsecond=0)
    if first < local and now - first < timedelta(days=29):
        return first
    return (local - timedelta(days=1)).replace(hour=0, minute=30, second=0, microsecond=0)


def _check_books(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        assert lots.check_lots(session) == []
        assert ledger.check_consistency(session) == []


def test_expiry_for_is_the_end_of_the_month_24_months_later_in_shanghai() -> None:
    # 1 November 2026, 00:30 in Shanghai, still 31 October in UTC.
    earned = datetime(2026, 10, 31, 16, 30, tzinfo=UTC)
    expiry = lots.expiry_for(earned, 24, SHANGHAI)
    assert expiry == datetime(2028, 12, 1, tzinfo=SHANGHAI)
    assert expiry.astimezone(UTC) == datetime(2028, 11, 30, 16, 0, tzinfo=UTC)
    assert lots.expiry_for(datetime(2026, 12, 15, tzinfo=UTC), 24, SHANGHAI) == datetime(
        2029, 1, 1, tzinfo=SHANGHAI
    )


def test_a_purchase_lot_expires_at_the_end_of_the_month_24_months_after_it(
    client: PartnerClient,
) -> None:
    occurred = _just_after_local_midnight(datetime.now(UTC))
    assert occurred.astimezone(UTC).day != occurred.day
    accrual = buy(client, enrol(client), 10_000, occurred_at=occurred)
    expected = end_of_month_after(occurred, 24)
    assert instant(accrual["lot_expires_at"]) == expected
    assert expected.astimezone(SHANGHAI).day == 1
    assert expected.astimezone(SHANGHAI).time().isoformat() == "00:00:00"


def test_the_expiry_job_moves_what_is_left_to_breakage_once(
    sessions: sessionmaker[Session], client: PartnerClient
) -> None:
    member_id = enrol(client)
    buy(client, member_id, 52_000)
    client.post("/v1/redemptions", {"member_id": member_id, "points": 1_000})
    breakage = balance(sessions, BREAKAGE)

    first = expire_lots(sessions, now=FAR_FUTURE)
    assert first.points >= 540
    assert first.members >= 1
    assert balance(sessions, BREAKAGE) == breakage + first.points
    assert wallet_of(sessions, member_id) == (0, 0, 0)
    assert client.get(f"/v1/members/{member_id}/lots") == []

    assert expire_lots(sessions, now=FAR_FUTURE) == ExpiryRun(0, 0, 0)
    assert balance(sessions, BREAKAGE) == breakage + first.points
    _check_books(sessions)


def test_the_expiry_job_leaves_unexpired_lots_alone(
    sessions: sessionmaker[Session], client: PartnerClient
) -> None:
    member_id = enrol(client)
    buy(client, member_id, 52_000)
    expire_lots(sessions, now=datetime.now(UTC))
    assert wallet_of(sessions, member_id) == (1_540, 0, 0)


def test_held_points_expire_only_after_they_come_back(
    sessions: sessionmaker[Session], client: PartnerClient
) -> None:
    member_id = enrol(client)
    buy(client, member_id, 52_000)
    hold = client.post("/v1/holds", {"member_id": member_id, "points": 400})
    expire_lots(sessions, now=FAR_FUTURE)
    assert wallet_of(sessions, member_id) == (0, 400, 0)

    client.post(f"/v1/holds/{hold['hold_id']}/void", {})
    assert wallet_of(sessions, member_id) == (400, 0, 0)  # back into its expired lot
    _check_books(sessions)
    breakage = balance(sessions, BREAKAGE)
    second = expire_lots(sessions, now=FAR_FUTURE)
    assert second.points >= 400
    assert wallet_of(sessions, member_id) == (0, 0, 0)
    assert balance(sessions, BREAKAGE) == breakage + second.points
    _check_books(sessions)


def test_a_member_sees_the_points_expiring_within_n_days(client: PartnerClient) -> None:
    member_id = enrol(client)
    now = datetime.now(UTC)
    older = earlier_month(now)
    buy(client, member_id, 10_000, occurred_at=older)  # 600
    buy(client, member_id, 10_000, occurred_at=now)  # 100
    old_expiry, new_expiry = end_of_month_after(older, 24), end_of_month_after(now, 24)

    soon = client.get(f"/v1/members/{member_id}/expiring", {"days": 30})
    assert (soon["days"], soon["points"], soon["lots"]) == (30, 0, [])

    everything = client.get(f"/v1/members/{member_id}/expiring", {"days": 3_000})
    assert everything["points"] == 700
    assert [lot["points"] for lot in everything["lots"]] == [600, 100]

    days = (old_expiry - now).days + 1
    first_only = client.get(f"/v1/members/{member_id}/expiring", {"days": days})
    horizon = now + timedelta(days=days)
    expected = [(600, old_expiry)] + ([(100, new_expiry)] if new_expiry <= horizon else [])
    assert [(lot["points"], instant(lot["expires_at"])) for lot in first_only["lots"]] == expected
    if old_expiry != new_expiry:  # always, but on the 31st of a month
        assert first_only["points"] == 600


def test_expiring_members_lists_only_the_partners_own_members(
    client: PartnerClient, other_client: PartnerClient
) -> None:
    mine = enrol(client)
    buy(client, mine, 10_000)  # 600
    idle = enrol(client)  # linked, without points
    theirs = enrol(other_client)
    buy(other_client, theirs, 20_000)  # 700
    shared = enrol(other_client)
    buy(other_client, shared, 10_000)  # 600, earned at the other partner
    link(client, shared)

    listed = client.get("/v1/expiring-members", {"days": 3_000})
    assert sorted(row["member_id"] for row in listed) == sorted([mine, shared])
    assert idle not in [row["member_id"] for row in listed]
    assert {row["member_id"]: row["points"] for row in listed} == {mine: 600, shared: 600}
    assert all(row["customer_ref"] for row in listed)

    assert client.get("/v1/expiring-members", {"days": 30}) == []
    theirs_listed = other_client.get("/v1/expiring-members", {"days": 3_000})
    assert sorted(row["member_id"] for row in theirs_listed) == sorted([theirs, shared])


def test_points_that_come_back_to_an_expired_lot_twice_are_expired_each_time(
    isolated: Isolated,
) -> None:
    sessions, client = isolated.sessions, isolated.client
    # The same 400 points come back to the same expired lot twice: each time the next run
    # expires them (the job's key includes the lots' latest movement).
    member_id = enrol(client)
    buy(client, member_id, 52_000)  # one lot of 1,540
    first = client.post("/v1/holds", {"member_id": member_id, "points": 400})
    second = client.post("/v1/holds", {"member_id": member_id, "points": 400})
    day = FAR_FUTURE
    expire_lots(sessions, now=day)  # the 740 left
    for hold, still_held in ((first, 400), (second, 0)):
        client.post(f"/v1/holds/{hold['hold_id']}/void", {})
        assert wallet_of(sessions, member_id) == (400, still_held, 0)
        day += timedelta(days=1)
        breakage = balance(sessions, BREAKAGE)
        expire_lots(sessions, now=day)
        assert wallet_of(sessions, member_id) == (0, still_held, 0)
        assert balance(sessions, BREAKAGE) == breakage + 400
        _check_books(sessions)


def test_a_rerun_of_the_same_days_job_after_points_came_back_keeps_lots_and_books_agreed(
    isolated: Isolated,
) -> None:
    sessions, client = isolated.sessions, isolated.client
    # Re-running the same day's job after points came back expires them with an entry of its
    # own: lots and books stay agreed.
    member_id = enrol(client)
    buy(client, member_id, 52_000)
    first = client.post("/v1/holds", {"member_id": member_id, "points": 400})
    second = client.post("/v1/holds", {"member_id": member_id, "points": 400})
    expire_lots(sessions, now=FAR_FUTURE)
    client.post(f"/v1/holds/{first['hold_id']}/void", {})
    expire_lots(sessions, now=FAR_FUTURE)
    client.post(f"/v1/holds/{second['hold_id']}/void", {})
    expire_lots(sessions, now=FAR_FUTURE)
    _check_books(sessions)
    assert wallet_of(sessions, member_id) == (0, 0, 0)
