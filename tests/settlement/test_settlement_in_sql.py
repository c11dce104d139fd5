"""Settlement at a day's scale: a day of more than 65,535 settleable entries (more than one
statement can carry bind parameters), generated in SQL through `ledger_post`, settles in one run
that is zero-sum and equal to the line-by-line computation over the same entries, done here
entry by entry in Python."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

import psycopg

from clearinghouse import ledger
from clearinghouse.database import libpq_url
from clearinghouse.ledger.tables import journal_entries
from clearinghouse.users.service import User
from partners import directory, limits
from partners.directory import exposure_account, headroom_account
from settlement import approval, netting, runs
from settlement.tables import settlement_items, settlement_runs
from tests.builders.databases import World
from tests.builders.dates import business_today
from tests.builders.ids import unique_id
from tests.builders.settlement import count, settle_after_cutoff

ENTRIES = 70_500
PARTNERS = 20
LIMIT_FEN = 10**12
BATCH = 500

# Every settleable kind, in turn; each entry moves the points between the partner's account
# and coalition:bonus (no member, so no lots are involved) and, on the issuing side, its issue
# value between the partner's headroom and exposure, as the points code does.
KINDS = (
    "accrual",
    "accrual",
    "accrual",
    "accrual",
    "referral_bonus",
    "refund",
    "fraud_reversal",
    "capture",
    "redemption_refund",
    "exchange_in",
    "exchange_out",
    "reward_order",
    "reward_order_return",
    "engagement",
)

_DAY = """
WITH plan AS (
    SELECT i, ps[1 + i %% cardinality(ps)] AS partner, ks[1 + i %% cardinality(ks)] AS kind,
           100 + (i * 37) %% 900 AS points
      FROM generate_series(%(lo)s, %(hi)s - 1) AS i,
           LATERAL (SELECT %(partners)s::text[] AS ps, %(kinds)s::text[] AS ks) AS names
), shaped AS (
    SELECT plan.*, 'partner:' || partner AS p,
           CASE WHEN kind IN ('capture', 'redemption_refund', 'exchange_out', 'reward_order',
                              'reward_order_return')
                THEN points * 9 / 10 ELSE points * 12 / 10 END AS value,
           CASE WHEN kind IN ('accrual', 'referral_bonus', 'exchange_in', 'refund',
                              'fraud_reversal', 'engagement') THEN 'issued'
                ELSE 'redeemed' END AS side,
           CASE WHEN kind IN ('refund', 'fraud_reversal', 'redemption_refund',
                              'reward_order_return') THEN -1
                ELSE 1 END AS sign
      FROM plan
)
SELECT count(*)
  FROM shaped,
       ledger_post(kind, p, 'generated:' || i, '\\x00'::bytea, now(),
           jsonb_build_object('partner_id', partner, 'value_fen', value),
           NULL,
           CASE side WHEN 'issued'
               THEN ARRAY[p || ':issued', 'coalition:bonus', p || ':headroom', p || ':exposure']
               ELSE ARRAY[p || ':redeemed', 'coalition:bonus'] END,
           CASE side WHEN 'issued' THEN ARRAY['PTS', 'PTS', 'CNY', 'CNY']
               ELSE ARRAY['PTS', 'PTS'] END,
           CASE side WHEN 'issued'
               THEN ARRAY[-sign * points, sign * points, -sign * value, sign * value]
               ELSE ARRAY[sign * points, -sign * points] END) AS e
"""

# Entries of settleable kinds that are not settleable: a coalition-funded bonus names no
# partner, and an entry without a recorded value is not the partner's to settle.
_NOT_SETTLEABLE = """
SELECT count(*)
  FROM generate_series(1, 50) AS i,
       ledger_post('referral_bonus', 'coalition', 'generated-bonus:' || i, '\\x00'::bytea, now(),
           jsonb_build_object('value_fen', 10),
           NULL, ARRAY['coalition:bonus', 'coalition:rounding'], ARRAY['PTS', 'PTS'],
           ARRAY[-10::bigint, 10::bigint]) AS e
"""


def generate_day(world: World, entries: int) -> list[str]:
    """`entries` settleable entries today, across PARTNERS partners, in a few set-based
    statements (nothing per entry in Python); returns the partners."""
    partners = [unique_id("s") for _ in range(PARTNERS)]
    with world.sessions() as session, session.begin():
        for partner_id in partners:
            directory.create_partner(session, partner_id, partner_id, "online_merchant")
            limits.set_issuance_limit(session, partner_id, LIMIT_FEN)
    with psycopg.connect(libpq_url(world.url), autocommit=True) as conn:
        written = 0
        for lo in range(0, entries, BATCH):
            row = conn.execute(
                _DAY.encode(),
                {
                    "lo": lo,
                    "hi": min(lo + BATCH, entries),
                    "partners": partners,
                    "kinds": list(KINDS),
                },
            ).fetchone()
            assert row is not None
            written += row[0]
        conn.execute(_NOT_SETTLEABLE.encode())
        conn.execute("ANALYZE")
    assert written == entries
    return partners


def line_by_line(world: World) -> dict[str, runs.Line]:
    """The lines computed the plain way: every settleable entry read with its postings, one at
    a time, its value and points added to its partner's line."""
    lines: dict[str, runs.Line] = {}
    with psycopg.connect(libpq_url(world.url)) as conn:
        postings: dict[int, dict[str, int]] = defaultdict(dict)
        for entry_id, address, amount in conn.execute(
            "SELECT p.entry_id, a.address, p.amount FROM postings p"
            " JOIN accounts a ON a.id = p.account_id"
        ):
            postings[entry_id][address] = postings[entry_id].get(address, 0) + amount
        for entry_id, kind, metadata in conn.execute(
            "SELECT id, kind, metadata FROM journal_entries ORDER BY id"
        ):
            if kind not in netting.CATEGORIES or not {"partner_id", "value_fen"} <= metadata.keys():
                continue
            partner_id = metadata["partner_id"]
            category = netting.CATEGORIES[kind][0]
            issuing = category in ("issued", "reversed", "exchange_in")
            points_account = "issued" if issuing else "redeemed"
            points = abs(postings[entry_id].get(f"partner:{partner_id}:{points_account}", 0))
            line = lines.setdefault(partner_id, runs.Line(partner_id))
            line.add(category, points, int(metadata["value_fen"]))
    return lines


def test_a_day_of_more_than_65535_entries_settles_zero_sum_as_computed_line_by_line(
    world: World,
) -> None:
    partners = generate_day(world, ENTRIES)
    expected = line_by_line(world)
    assert set(expected) == set(partners)
    assert set(KINDS) == set(netting.CATEGORIES)

    [run] = settle_after_cutoff(world.sessions, business_today())

    assert (run.attempt, run.state, run.entries) == (1, "computed", ENTRIES)
    assert run.lines == sorted(expected.values(), key=lambda line: line.partner_id)
    assert run.zero_sum
    assert run.partners_net_fen == sum(line.net_fen for line in expected.values())
    assert count(world.sessions, settlement_items) == ENTRIES
    with world.sessions() as session:
        # The settled issue value went back from exposure to headroom, the nets to payables.
        for partner_id in partners:
            assert ledger.balance(session, exposure_account(partner_id)) == 0
            payable = ledger.balance(session, f"partner:{partner_id}:payable")
            assert payable == expected[partner_id].net_fen
        assert ledger.check_consistency(session) == []

    # Rejected and computed anew: the same lines, attempt 2, and the limit is not freed twice.
    headroom = _balances(world, [headroom_account(p) for p in partners])
    user_id, _headers = world.finance()
    with world.sessions() as session, session.begin():
        approval.reject(session, business_today(), User(user_id, "finance"), "recount")
    [again] = settle_after_cutoff(world.sessions, business_today())
    assert (again.attempt, again.entries) == (2, ENTRIES)
    assert again.lines == run.lines
    assert again.zero_sum
    assert _balances(world, [headroom_account(p) for p in partners]) == headroom
    assert count(world.sessions, settlement_runs) == 2

    # Nothing is left for the next date.
    [tomorrow] = settle_after_cutoff(world.sessions, business_today() + timedelta(days=1))
    assert (tomorrow.entries, tomorrow.lines) == (0, [])
    assert count(world.sessions, journal_entries, journal_entries.c.kind == "settlement") == 2


def _balances(world: World, addresses: list[str]) -> list[int]:
    with world.sessions() as session:
        return [ledger.balance(session, address) for address in addresses]
