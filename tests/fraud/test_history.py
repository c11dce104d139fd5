"""What the risk rules read of the past: a store's last day comes from hourly running totals
and the purchases of one hour, and must equal the sum over the purchases themselves at any
instant, an hour's edge included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.database import Tx
from clearinghouse.fraud import service as fraud
from clearinghouse.fraud.rules import Gathering
from clearinghouse.ledger import Address
from clearinghouse.points.tables import purchases
from partners.client import PartnerClient
from tests.builders.calls import buy, enrol
from tests.builders.fraud import publish
from tests.builders.partners import ApiPartner

# Minutes before now: inside the last hour, around the day's edge, a few days back.
OFFSETS = [1, 7, 59, 61, 119, 23 * 60, 24 * 60 - 1, 24 * 60 + 1, 25 * 60, 3 * 24 * 60]


def _last_day(sessions: sessionmaker[Session], store_id: str, at: datetime) -> tuple[int, int]:
    """(what risk_history says, the sum over the purchases) of the store's day before `at`."""
    with sessions() as session:
        gathered = fraud.gather(
            Tx.of(session),
            Gathering(
                operation="accrual",
                member_id="M0000000000ZZ",
                account=str(Address.member("M0000000000ZZ")),
                store_id=store_id,
                at=at,
                burn_minutes=10,
                first_link=False,
                travel=False,
            ),
        )
        summed = session.execute(
            select(func.coalesce(func.sum(purchases.c.amount_fen), 0)).where(
                purchases.c.store_id == store_id, purchases.c.occurred_at > at - timedelta(days=1)
            )
        ).scalar_one()
    return gathered["store_last_day_fen"], int(summed)


def test_a_stores_last_day_from_running_totals_equals_the_sum_of_its_purchases(
    sessions: sessionmaker[Session], partner: ApiPartner, client: PartnerClient
) -> None:
    publish(sessions, partner.id, store_daily_accrual_fen_offline=10**12)
    member_id = enrol(client)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    for i, minutes in enumerate(OFFSETS):
        buy(
            client,
            member_id,
            1_000 + i,
            store_id=partner.store_id,
            occurred_at=now - timedelta(minutes=minutes),
        )

    @settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(back=st.integers(min_value=-120, max_value=3 * 24 * 60 + 120))
    def matches(back: int) -> None:
        said, summed = _last_day(sessions, partner.store_id, now - timedelta(minutes=back))
        assert said == summed

    matches()
    # The instants that sit on an edge: a purchase's own minute, an hour's start.
    for minutes in OFFSETS:
        for at in (now - timedelta(minutes=minutes) + timedelta(days=1), now):
            said, summed = _last_day(sessions, partner.store_id, at)
            assert said == summed
