"""Settlement at coalition scale: a business day of N settleable entries, then settle, the CSV
report, a partner file's reconciliation, sealing, a day's audit export and its verify, the
liability history over 365 days and `ledger check`, each timed on its own.

    .venv/bin/python -m bench.settlement_bench [--entries N] [--partners 50]
        [--steps settle,report,...] [--database-url URL]

On a fresh database (embedded unless --database-url or DATABASE_URL) `generate_day` writes the
day in a handful of set-based statements, the rows `ledger_post` would write with no per-row
function call or trigger, then the balances and the settlement queue from them: per member, in
groups of 20 entries, 12 accruals (each with its purchase and lot), 2 purchase refunds, 3
redemptions (hold then capture), 1 redemption refund and 2 exchanges (in and out) at partner
programmes; lots move as the points code moves them, so the settlement's self-check and `ledger
check` pass. Every step then runs in a process of its own (the CLI where it has the command), so
its peak RSS is its own. A failing step is reported with its error. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import psycopg
from sqlalchemy import func, select

from bench.common import (
    background_load,
    bench_server,
    postmaster_pid,
    print_table,
    scratch_database,
    server_facts,
)
from clearinghouse import migrate
from clearinghouse.config import get_settings
from clearinghouse.database import libpq_url, make_engine, session_factory
from clearinghouse.points import lots
from partners import directory, limits
from partners.tables import partner_rates
from settlement.netting import CATEGORIES

GROUP = 20  # entries per member, in the order below; each refers only to earlier ones
ACCRUALS = 12  # slots 0-11; slots 12-13 refund accruals 1-2, 14-16 redeem from lots 3-5,
# 17 refunds part of redemption 14, 18 is an exchange in, 19 an exchange out from lot 6.
PROGRAMME_SHARE = 10  # one partner in ten is a programme (exchanges), the rest merchants
FEE_PERCENT = 2
LIMIT_FEN = 10**14
CONNECT_TIMEOUT = 10  # seconds; the server is local
# Plan rows a statement writes: each commits, so no transaction holds more than a batch of the
# day, and a batch's sorts and joins stay in the generator's work_mem.
BATCH = 50_000
STEP_TIMEOUT = 1800.0  # seconds; a step past this is killed and reported failed
BREAK_EVERY = 500  # the partner's file: one line in BREAK_EVERY differs, is missing or extra
STEPS = ("settle", "report", "reconcile", "seal", "export", "verify", "liability", "check")


@dataclass(frozen=True)
class Day:
    business_date: date
    entries: int  # settleable
    ledger_entries: int  # with the holds
    members: int
    merchants: list[str]
    programmes: list[str]
    setup_seconds: float  # the partners, through the domain services
    seconds: float  # the day's entries, members, lots and the rest, set-based

    @property
    def rate(self) -> float:
        return self.entries / self.seconds


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=CONNECT_TIMEOUT)


def _partners(url: str, count: int) -> tuple[list[str], list[str]]:
    """`count` partners with rates (version 1, from yesterday) and a limit no day reaches; one
    in PROGRAMME_SHARE is a programme with its own points. A few calls each: not per entry."""
    programmes = [f"bp-{i:03}" for i in range(max(1, count // PROGRAMME_SHARE))]
    merchants = [f"bm-{i:03}" for i in range(count - len(programmes))]
    engine = make_engine(url, pool_size=1)
    try:
        with session_factory(engine)() as session, session.begin():
            started = session.execute(select(func.now())).scalar_one() - timedelta(days=1)
            for partner_id in merchants + programmes:
                kind: directory.PartnerKind = (
                    "programme" if partner_id in programmes else "online_merchant"
                )
                directory.create_partner(session, partner_id, partner_id, kind)
                session.execute(
                    partner_rates.insert().values(
                        partner_id=partner_id,
                        version=1,
                        effective_from=started,
                        earn_rate=Decimal(1),
                        issue_price=Decimal(1),
                        redemption_value=Decimal(1),
                        exchange_rate=Decimal(1) if kind == "programme" else None,
                    )
                )
                limits.set_issuance_limit(session, partner_id, LIMIT_FEN)
    finally:
        engine.dispose()
    return merchants, programmes


# The plan of the day: one row per settleable entry i, in member group g = i / GROUP at slot
# s = i % GROUP, with the partner, the member and the points its kind needs. Half the purchases
# and redemptions are at the first merchant, the coalition's anchor (a supermarket chain, say),
# the rest spread over the others; its file is the one reconciled. `pts(g, s)` is
# the points of accrual s of group g, so a later slot can find what its lot holds.
_PLAN = (
    f"""
CREATE TEMPORARY TABLE plan AS
SELECT i, g, s,
       'M' || lpad(g::text, 12, '0') AS member,
       'b' || i AS txn,
       CASE WHEN s %% 2 = 0 THEN ms[1] ELSE ms[1 + (g * 7 + s * 13) %% cardinality(ms)] END
           AS merchant,
       CASE WHEN g %% 2 = 0 THEN ms[1] ELSE ms[1 + (g * 11 + s * 3) %% cardinality(ms)] END
           AS shop,
       ps[1 + g %% cardinality(ps)] AS programme,
       %(start)s::timestamptz + (%(now)s::timestamptz - %(start)s::timestamptz) * i / %(n)s
           AS occurred_at
  FROM generate_series(0, %(n)s - 1) AS i,
       LATERAL (SELECT i / {GROUP} AS g, i %% {GROUP} AS s) AS slot,
       LATERAL (SELECT %(merchants)s::text[] AS ms, %(programmes)s::text[] AS ps) AS names
""",
    """
CREATE FUNCTION pg_temp.pts(g integer, s integer) RETURNS bigint IMMUTABLE LANGUAGE sql
    AS $$ SELECT 200 + (g * 37 + s * 101) %% 800 $$
""",
    """
CREATE FUNCTION pg_temp.amount(g integer, s integer) RETURNS bigint IMMUTABLE LANGUAGE sql
    AS $$ SELECT pg_temp.pts(g, s) * 100 + (g + s) %% 100 $$
""",
    "CREATE INDEX ON plan (i)",
    "CREATE INDEX ON plan (g, s)",
    "ANALYZE plan",
)

# The members and their accounts, each with its balance rows as the accounts' trigger opens them
# (it does not fire on the generator's connection).
_MEMBERS = (
    "INSERT INTO members (id) SELECT DISTINCT member FROM plan",
    """
WITH opened AS (
    INSERT INTO accounts (address, asset, owner_type, owner_id, kind, non_negative, shards)
    SELECT 'member:' || member || ':' || kind, 'PTS', 'member', member, kind, kind <> 'debt', 1
      FROM (SELECT DISTINCT member FROM plan) AS m,
           unnest(ARRAY['available', 'held', 'pending', 'debt']) AS kind
    RETURNING id, non_negative, shards
)
INSERT INTO account_balances (account_id, shard, non_negative)
SELECT id, s, non_negative FROM opened, generate_series(0, shards - 1) AS s
""",
    "ANALYZE members, accounts",  # the postings below find their accounts by address
)


def _posting(source: str, then: str) -> str:
    """One statement writing, for every row `source` selects, what `ledger_post` writes, and
    then what `then` writes from them.

    `source` gives each row its entry in e_* columns (e_part orders a row's entries: a hold
    before its capture). The journal entries go in in plan order, so ids and recorded_at (the
    column's default, clock_timestamp()) increase together, and are read back by their unique
    (origin, idempotency key); their postings follow with each entry's recorded_at, in the
    order ledger_post gives them (by account, credits first). `then` reads the rows with their
    entry_id and recorded_at as `posted`: further common table expressions (from a comma)
    and the last statement."""
    return f"""
WITH source AS ({source}
), entries AS (
    INSERT INTO journal_entries
        (kind, origin, idempotency_key, request_hash, occurred_at, metadata, reverses_id)
    SELECT e_kind, e_origin, e_key, e_hash, e_occurred, e_metadata, e_reverses
      FROM source ORDER BY i, e_part
    RETURNING id, recorded_at, origin, idempotency_key
), posted AS (
    SELECT source.*, entries.id AS entry_id, entries.recorded_at
      FROM source
      JOIN entries ON entries.origin = source.e_origin AND entries.idempotency_key = source.e_key
), booked AS (
    INSERT INTO postings (entry_id, account_id, asset, amount, recorded_at)
    SELECT posted.entry_id, a.id, l.asset, l.amount, posted.recorded_at
      FROM posted
     CROSS JOIN LATERAL unnest(posted.e_addresses, posted.e_assets, posted.e_amounts)
           AS l(address, asset, amount)
      LEFT JOIN accounts a ON a.address = l.address AND a.asset = l.asset
     ORDER BY posted.entry_id, a.id, l.amount DESC
){then}
"""


# Accruals as accrual.accrue writes them: points from the merchant's issuance account to the
# member, their issue value from headroom to exposure; the purchase; the lot.
_ACCRUALS = _posting(
    f"""
    SELECT p.*, x.points, x.amount_fen, 0 AS e_part, 'accrual' AS e_kind,
           'partner:' || p.merchant AS e_origin, 'purchase:' || p.txn AS e_key,
           sha256(convert_to(p.txn, 'UTF8')) AS e_hash, p.occurred_at AS e_occurred,
           jsonb_build_object('partner_id', p.merchant, 'value_fen', x.points,
               'partner_txn_id', p.txn, 'member_id', p.member, 'store_id', NULL,
               'amount_fen', x.amount_fen, 'rules_version', 1,
               'rates_version', 1, 'earn_rate', '1', 'issue_price', '1') AS e_metadata,
           NULL::bigint AS e_reverses,
           ARRAY['partner:' || p.merchant || ':issued', 'member:' || p.member || ':available',
                 'partner:' || p.merchant || ':headroom',
                 'partner:' || p.merchant || ':exposure'] AS e_addresses,
           ARRAY['PTS', 'PTS', 'CNY', 'CNY'] AS e_assets,
           ARRAY[-x.points, x.points, -x.points, x.points]::bigint[] AS e_amounts
      FROM plan p,
           LATERAL (SELECT pg_temp.pts(p.g, p.s) AS points,
                           pg_temp.amount(p.g, p.s) AS amount_fen) AS x
     WHERE p.s < {ACCRUALS} AND p.i >= %(lo)s AND p.i < %(hi)s""",
    """, purchased AS (
    INSERT INTO purchases (partner_id, partner_txn_id, member_id, amount_fen, currency,
                           occurred_at, points, entry_id, rules_version, rates_version,
                           breakdown, issue_value_fen)
    SELECT merchant, txn, member, amount_fen, 'CNY', occurred_at, points, entry_id, 1, 1,
           '[]', points
      FROM posted
)
INSERT INTO point_lots (member_id, source, issuer_partner_id, entry_id, earned_at, expires_at,
                        amount, remaining)
SELECT member, 'purchase', merchant, entry_id, occurred_at, %(expires)s, points, points
  FROM posted""",
)

# The lot of accrual `slot` of the row's group, by its purchase.
_LOT_OF = """
JOIN purchases pu ON pu.partner_id = a.merchant AND pu.partner_txn_id = a.txn
JOIN point_lots l ON l.entry_id = pu.entry_id
"""

# Purchase refunds (slots 12-13) of a quarter of accruals 1-2, as refunds.refund_purchase.
_REFUNDS = _posting(
    """
    SELECT r.*, 0 AS e_part, 'refund' AS e_kind, 'partner:' || r.merchant_of AS e_origin,
           'refund:' || r.a_txn || ':r1' AS e_key, sha256(convert_to(r.txn, 'UTF8')) AS e_hash,
           r.occurred_at AS e_occurred,
           jsonb_build_object('partner_id', r.merchant_of, 'value_fen', r.points,
               'partner_txn_id', r.a_txn, 'amount_fen', r.refund_fen) AS e_metadata,
           r.purchase_entry AS e_reverses,
           ARRAY['partner:' || r.merchant_of || ':issued',
                 'member:' || r.member || ':available',
                 'partner:' || r.merchant_of || ':exposure',
                 'partner:' || r.merchant_of || ':headroom'] AS e_addresses,
           ARRAY['PTS', 'PTS', 'CNY', 'CNY'] AS e_assets,
           ARRAY[r.points, -r.points, -r.points, r.points]::bigint[] AS e_amounts
      FROM (
        SELECT p.*, pu.id AS purchase_id, pu.entry_id AS purchase_entry, l.id AS lot_id,
               a.merchant AS merchant_of, a.txn AS a_txn, pu.amount_fen / 4 AS refund_fen,
               pu.points * (pu.amount_fen / 4) / pu.amount_fen AS points
          FROM plan p JOIN plan a ON a.g = p.g AND a.s = p.s - 11
"""
    + _LOT_OF
    + """
         WHERE p.s IN (12, 13) AND p.i >= %(lo)s AND p.i < %(hi)s
      ) AS r""",
    """, refunded AS (
    INSERT INTO refunds (purchase_id, partner_refund_id, amount_fen, points, from_available,
                         to_debt, value_fen, entry_id)
    SELECT purchase_id, 'r1', refund_fen, points, points, 0, points, entry_id FROM posted
), updated AS (
    UPDATE purchases pu
       SET refunded_fen = posted.refund_fen, refunded_points = posted.points,
           refunded_value_fen = posted.points
      FROM posted WHERE pu.id = posted.purchase_id
)
INSERT INTO lot_movements (lot_id, entry_id, amount)
SELECT lot_id, entry_id, -points FROM posted""",
)

# Redemptions (slots 14-16) of half of lots 3-5 at another merchant: the hold (e_part 0) takes
# the points from the lot into the held account, the capture (e_part 1) pays them to the
# merchant (holds._close).
_REDEMPTIONS = _posting(
    """
    WITH r AS (
        SELECT p.*, l.id AS lot_id, l.amount / 2 AS points,
               'H' || lpad(p.i::text, 15, '0') AS hold_id
          FROM plan p JOIN plan a ON a.g = p.g AND a.s = p.s - 11
"""
    + _LOT_OF
    + """
         WHERE p.s IN (14, 15, 16) AND p.i >= %(lo)s AND p.i < %(hi)s
    )
    SELECT r.*, 0 AS e_part, 'hold' AS e_kind, 'partner:' || r.shop AS e_origin,
           'hold:' || r.hold_id AS e_key, sha256(convert_to(r.hold_id, 'UTF8')) AS e_hash,
           r.occurred_at AS e_occurred,
           jsonb_build_object('member_id', r.member, 'store_id', NULL, 'partner_ref', NULL)
               AS e_metadata,
           NULL::bigint AS e_reverses,
           ARRAY['member:' || r.member || ':available', 'member:' || r.member || ':held']
               AS e_addresses,
           ARRAY['PTS', 'PTS'] AS e_assets,
           ARRAY[-r.points, r.points]::bigint[] AS e_amounts
      FROM r
    UNION ALL
    SELECT r.*, 1, 'capture', 'partner:' || r.shop, 'close:' || r.hold_id,
           sha256(convert_to(r.hold_id || ':close', 'UTF8')), r.occurred_at,
           jsonb_build_object('partner_id', r.shop, 'value_fen', r.points, 'hold_id', r.hold_id,
               'member_id', r.member, 'captured', r.points),
           NULL,
           ARRAY['member:' || r.member || ':held', 'partner:' || r.shop || ':redeemed'],
           ARRAY['PTS', 'PTS'],
           ARRAY[-r.points, r.points]::bigint[]
      FROM r""",
    """, recorded AS (
    INSERT INTO holds (id, partner_id, member_id, amount, captured, state, value_fen,
                       rates_version, expires_at, hold_entry_id, close_entry_id, created_at,
                       closed_at)
    SELECT hold_id, shop, member, points, points, 'captured', points, 1,
           closed + interval '15 minutes', hold_entry, close_entry, closed, closed
      FROM (SELECT hold_id, shop, member, points,
                   min(entry_id) FILTER (WHERE e_part = 0) AS hold_entry,
                   min(entry_id) FILTER (WHERE e_part = 1) AS close_entry,
                   min(recorded_at) FILTER (WHERE e_part = 1) AS closed
              FROM posted GROUP BY hold_id, shop, member, points) AS pair
)
INSERT INTO lot_movements (lot_id, entry_id, amount)
SELECT lot_id, entry_id, -points FROM posted WHERE e_part = 0""",
)

# Redemption refunds (slot 17): half of redemption 14 back to the merchant's customer and lot.
_REDEMPTION_REFUNDS = _posting(
    """
    SELECT r.*, 0 AS e_part, 'redemption_refund' AS e_kind, 'partner:' || r.shop_of AS e_origin,
           'redemption-refund:' || r.hold_id || ':1' AS e_key,
           sha256(convert_to(r.txn, 'UTF8')) AS e_hash, r.occurred_at AS e_occurred,
           jsonb_build_object('partner_id', r.shop_of, 'value_fen', r.points,
               'hold_id', r.hold_id) AS e_metadata,
           r.close_entry_id AS e_reverses,
           ARRAY['partner:' || r.shop_of || ':redeemed', 'member:' || r.member || ':available']
               AS e_addresses,
           ARRAY['PTS', 'PTS'] AS e_assets,
           ARRAY[-r.points, r.points]::bigint[] AS e_amounts
      FROM (
        SELECT p.*, h.id AS hold_id, h.partner_id AS shop_of, h.close_entry_id,
               h.captured / 2 AS points, m.lot_id
          FROM plan p
          JOIN holds h ON h.id = 'H' || lpad((p.i - 3)::text, 15, '0')
          JOIN lot_movements m ON m.entry_id = h.hold_entry_id
         WHERE p.s = 17 AND p.i >= %(lo)s AND p.i < %(hi)s
      ) AS r""",
    """, updated AS (
    UPDATE holds h SET refunded = posted.points FROM posted WHERE h.id = posted.hold_id
)
INSERT INTO lot_movements (lot_id, entry_id, amount)
SELECT lot_id, entry_id, points FROM posted""",
)

# Exchanges in (slot 18): a programme's points become coalition points in a new lot, less the
# fee (exchange.exchange, rate 1).
_EXCHANGES_IN = _posting(
    f"""
    SELECT r.*, 0 AS e_part, 'exchange_in' AS e_kind, 'partner:' || r.programme AS e_origin,
           'exchange:' || r.txn AS e_key, sha256(convert_to(r.txn, 'UTF8')) AS e_hash,
           r.occurred_at AS e_occurred,
           jsonb_build_object('partner_id', r.programme, 'value_fen', r.gross,
               'member_id', r.member, 'rate', '1', 'rates_version', 1,
               'fee_percent', {FEE_PERCENT}) AS e_metadata,
           NULL::bigint AS e_reverses,
           ARRAY['partner:' || r.programme || ':programme',
                 'coalition:exchange:' || lower(r.asset),
                 'partner:' || r.programme || ':issued', 'member:' || r.member || ':available',
                 'coalition:fees', 'partner:' || r.programme || ':headroom',
                 'partner:' || r.programme || ':exposure'] AS e_addresses,
           ARRAY[r.asset, r.asset, 'PTS', 'PTS', 'PTS', 'CNY', 'CNY'] AS e_assets,
           ARRAY[-r.gross, r.gross, -r.gross, r.gross - r.fee, r.fee, -r.gross, r.gross]::bigint[]
               AS e_amounts
      FROM (
        SELECT p.*, pa.programme_asset AS asset, f.gross, f.gross * {FEE_PERCENT} / 100 AS fee
          FROM plan p JOIN partners pa ON pa.id = p.programme,
               LATERAL (SELECT 100 + (p.g * 13) %% 400 AS gross) AS f
         WHERE p.s = 18 AND p.i >= %(lo)s AND p.i < %(hi)s
      ) AS r""",
    """
INSERT INTO point_lots (member_id, source, issuer_partner_id, entry_id, earned_at, expires_at,
                        amount, remaining)
SELECT member, 'exchange', programme, entry_id, occurred_at, %(expires)s, gross - fee, gross - fee
  FROM posted""",
)

# Exchanges out (slot 19): a third of lot 6 becomes the programme's points, less the fee.
_EXCHANGES_OUT = _posting(
    f"""
    SELECT r.*, 0 AS e_part, 'exchange_out' AS e_kind, 'partner:' || r.programme AS e_origin,
           'exchange:' || r.txn AS e_key, sha256(convert_to(r.txn, 'UTF8')) AS e_hash,
           r.occurred_at AS e_occurred,
           jsonb_build_object('partner_id', r.programme, 'value_fen', r.points - r.fee,
               'member_id', r.member, 'rate', '1', 'rates_version', 1,
               'fee_percent', {FEE_PERCENT}) AS e_metadata,
           NULL::bigint AS e_reverses,
           ARRAY['member:' || r.member || ':available', 'coalition:fees',
                 'partner:' || r.programme || ':redeemed',
                 'coalition:exchange:' || lower(r.asset),
                 'partner:' || r.programme || ':programme'] AS e_addresses,
           ARRAY['PTS', 'PTS', 'PTS', r.asset, r.asset] AS e_assets,
           ARRAY[-r.points, r.fee, r.points - r.fee, -(r.points - r.fee), r.points - r.fee]
               ::bigint[] AS e_amounts
      FROM (
        SELECT p.*, pa.programme_asset AS asset, l.id AS lot_id, l.amount / 3 AS points,
               l.amount / 3 * {FEE_PERCENT} / 100 AS fee
          FROM plan p JOIN partners pa ON pa.id = p.programme
          JOIN plan a ON a.g = p.g AND a.s = 6
"""
    + _LOT_OF
    + """
         WHERE p.s = 19 AND p.i >= %(lo)s AND p.i < %(hi)s
      ) AS r""",
    """
INSERT INTO lot_movements (lot_id, entry_id, amount)
SELECT lot_id, entry_id, -points FROM posted""",
)

# After the entries, set-based, what the ledger's triggers do per row on other connections.
_AFTER = (
    # The balances: each account's postings summed, spread over its shards as a debit of a
    # sharded floor leaves them (the remainder one unit a shard from shard 0); a floor's shards
    # cannot go below zero (the check constraint).
    """
WITH totals AS (
    SELECT account_id, sum(amount) AS total FROM postings GROUP BY account_id
), spread AS (
    SELECT t.account_id, t.total, a.shards, floor(t.total / a.shards)::bigint AS share
      FROM totals t JOIN accounts a ON a.id = t.account_id
)
UPDATE account_balances b
   SET balance = s.share + (b.shard < s.total - s.share * s.shards)::int
  FROM spread s
 WHERE b.account_id = s.account_id
   AND b.balance <> s.share + (b.shard < s.total - s.share * s.shards)::int
""",
    # The settlement queue: the day's settleable entries, as settlement_enqueue adds them.
    """
INSERT INTO unsettled_entries (entry_id, recorded_at)
SELECT id, recorded_at FROM journal_entries
 WHERE id > %(first)s AND kind = ANY(%(kinds)s)
   AND metadata ? 'partner_id' AND metadata ? 'value_fen'
""",
    # The seal queue: every entry of the day, as seal_enqueue adds each statement's.
    "INSERT INTO seal_queue (entry_id) SELECT id FROM journal_entries WHERE id > %(first)s",
)

# What each lot holds now: its amount and its movements, as lots_move keeps it.
_REMAINING = """
UPDATE point_lots l SET remaining = l.amount + m.moved
  FROM (SELECT lot_id, sum(amount) AS moved FROM lot_movements GROUP BY lot_id) AS m
 WHERE m.lot_id = l.id
"""


def generate_day(url: str, entries: int, partner_count: int) -> Day:
    """Write today's business day (coalition time) of `entries` settleable entries across
    `partner_count` partners, in set-based statements; nothing is per entry in Python, and
    nothing per entry in the database either: no function call, no trigger."""
    if entries < GROUP or partner_count < 2:
        raise ValueError(f"at least {GROUP} entries and 2 partners")
    started = time.perf_counter()
    merchants, programmes = _partners(url, partner_count)
    setup_seconds = time.perf_counter() - started
    zone = get_settings().zone
    now = datetime.now(UTC)
    business_date = now.astimezone(zone).date()
    day_start = datetime.combine(business_date, datetime.min.time(), zone)
    months = 24  # the policy's default expiry: every lot of the day expires at one instant
    params: dict[str, Any] = {
        "merchants": merchants,
        "programmes": programmes,
        "start": day_start,
        "now": now,
        "n": entries,
        "expires": lots.expiry_for(day_start, months, zone),
        "kinds": list(CATEGORIES),
    }
    with _connect(url) as conn:
        started = time.perf_counter()
        # No trigger fires on this connection (a superuser's): not the balances' per posting,
        # not the checks at commit, not the settlement and seal queues', not the foreign keys'. The
        # statements write only rows that pass them (a posting whose account is not found has
        # no account_id, which NOT NULL refuses); _AFTER does their work once for the day, and
        # the bench's `ledger check` step checks the balances it leaves.
        conn.execute(b"SET session_replication_role = replica")
        conn.execute(b"SET work_mem = '256MB'")  # a batch's sorts and joins in memory
        conn.execute(b"SET jit = off")  # compiling each batch's statement costs more than it saves
        first = conn.execute(b"SELECT coalesce(max(id), 0) FROM journal_entries").fetchone()
        assert first is not None
        params["first"] = first[0]
        for statement in (*_PLAN, *_MEMBERS):
            # One statement a call: psycopg sends parameters with one statement only.
            conn.execute(statement.encode(), params)
        for statement in (
            _ACCRUALS,
            # Autovacuum may be off: the joins below need the new rows' statistics.
            "ANALYZE purchases, point_lots",
            _REFUNDS,
            _REDEMPTIONS,
            "ANALYZE holds, lot_movements",
            _REDEMPTION_REFUNDS,
            _EXCHANGES_IN,
            _EXCHANGES_OUT,
        ):
            batches = range(0, entries, BATCH) if "%(lo)s" in statement else [0]
            for lo in batches:
                conn.execute(statement.encode(), {**params, "lo": lo, "hi": lo + BATCH})
        for statement in (*_AFTER, _REMAINING):
            conn.execute(statement.encode(), params)
        conn.execute(b"SET session_replication_role = origin")
        conn.execute(b"ANALYZE")  # the steps plan with the day's statistics
        seconds = time.perf_counter() - started
        holds = conn.execute("SELECT count(*) FROM holds").fetchone()
        members = conn.execute("SELECT count(*) FROM members").fetchone()
    assert holds is not None
    assert members is not None
    return Day(
        business_date,
        entries,
        entries + cast(int, holds[0]),
        cast(int, members[0]),
        merchants,
        programmes,
        setup_seconds,
        seconds,
    )


# --- a year of liability history ---------------------------------------------------------------

# The 364 closed days before the day, as the snapshot job would have taken them: per issuer, a
# liability growing through the year. Only the day itself is computed from the lots.
_SNAPSHOTS = (
    """
INSERT INTO liability_snapshots (business_date, as_of, taken_at)
SELECT %(day)s::date - k, (%(day)s::date - k + 1)::timestamp AT TIME ZONE %(zone)s, now()
  FROM generate_series(1, 364) AS k
""",
    """
INSERT INTO liability_snapshot_issuers (business_date, issuer_partner_id, points)
SELECT %(day)s::date - k, p.id, (365 - k) * 10000 + length(p.id)
  FROM generate_series(1, 364) AS k, partners p
""",
)


def year_of_history(url: str, day: date) -> bool:
    """Write the snapshots of the year before `day`, if the schema keeps snapshots."""
    with _connect(url) as conn:
        found = conn.execute("SELECT to_regclass('liability_snapshots')").fetchone()
        if found is None or found[0] is None:
            return False
        params = {"day": day, "zone": str(get_settings().zone)}
        with conn.transaction():
            for statement in _SNAPSHOTS:
                conn.execute(statement.encode(), params)
    return True


# --- the partner's file -------------------------------------------------------------------------

# The partner's own lines for the day (purchases, refunds, redemptions), as it would send them,
# with one line in BREAK_EVERY changed: an amount off by a fen, a line the partner lacks, or one
# we lack.
_PARTNER_FILE = """
COPY (
    WITH ours AS (
        SELECT partner_txn_id AS txn_id, 'purchase' AS type, amount_fen, points
          FROM purchases WHERE partner_id = %(partner)s
        UNION ALL
        SELECT pu.partner_txn_id || '/' || r.partner_refund_id, 'refund', r.amount_fen, r.points
          FROM refunds r JOIN purchases pu ON pu.id = r.purchase_id
         WHERE pu.partner_id = %(partner)s
        UNION ALL
        SELECT coalesce(partner_ref, id), 'redemption', value_fen, captured
          FROM holds WHERE partner_id = %(partner)s AND state = 'captured'
    ), numbered AS (
        SELECT ours.*, row_number() OVER (ORDER BY type, txn_id) %% %(every)s AS n FROM ours
    )
    SELECT txn_id, type, amount_fen + (n = 1)::int AS amount_fen, points
      FROM numbered WHERE n <> 2
    UNION ALL
    SELECT 'x' || txn_id, type, amount_fen, points FROM numbered WHERE n = 3
) TO STDOUT WITH (FORMAT csv, HEADER)
"""


def partner_file(url: str, partner_id: str, path: Path) -> int:
    """Write the partner's file of the day to `path`; its number of lines."""
    with _connect(url) as conn, path.open("wb") as out:
        cursor = conn.cursor()
        with cursor.copy(
            _PARTNER_FILE.encode(), {"partner": partner_id, "every": BREAK_EVERY}
        ) as copy:
            for block in copy:
                out.write(block)
    with path.open("rb") as lines:
        return sum(1 for _ in lines) - 1


# --- the steps, each in a process of its own ----------------------------------------------------


@dataclass(frozen=True)
class Context:
    url: str
    day: date
    workdir: Path
    partner: str  # whose file is reconciled


def _sessions(context: Context) -> Any:
    return session_factory(make_engine(context.url, pool_size=1))


def _settle(context: Context) -> tuple[int, str]:
    """What `clearinghouse settle --date DAY` does. The generated day is today, recorded by the
    database's clock, and a date is settled only once it is over: the step settles it as the
    server's job would just after its midnight, by a clock standing at its cut-off."""
    from clearinghouse import clock
    from settlement import netting, schedule

    with clock.use(clock.Manual(netting.cutoff(context.day))):
        run = schedule.settle(_sessions(context), context.day)[-1]
    return run.entries, f"{len(run.lines)} partner lines"


def _report(context: Context) -> tuple[int, str]:
    from settlement import reports, runs

    with _sessions(context)() as session:
        run = runs.load_run(session, context.day)
        text = reports.settlement_csv(reports.report_of(session, run))
    (context.workdir / "settlement.csv").write_text(text)
    return run.entries, f"{len(run.lines)} partner lines, {len(text):,} bytes"


def _reconcile(context: Context) -> tuple[int, str]:
    from settlement import reconciliation

    with (
        (context.workdir / "partner.csv").open("rb") as upload,
        _sessions(context)() as session,
        session.begin(),
    ):
        done = reconciliation.reconcile(session, context.partner, context.day, upload)
    return done.lines, f"{done.matched:,} matched, {done.break_count} breaks"


def _seal(context: Context) -> tuple[int, str]:
    from clearinghouse.audit import sealing

    # Everything was committed before this process started: nothing to wait for.
    blocks = sealing.seal_all(_sessions(context), delay=timedelta(0))
    return sum(b.entry_count for b in blocks), f"{len(blocks)} blocks"


def _liability(context: Context) -> tuple[int, str]:
    from settlement import liability

    with _sessions(context)() as session:
        history = liability.liability_history(session, days=365)
    return len(history), f"{len(history)} days"


# Steps run by functions in a child process: (items, note). The others run the CLI.
_FUNCTIONS: dict[str, Callable[[Context], tuple[int, str]]] = {
    "settle": _settle,
    "report": _report,
    "reconcile": _reconcile,
    "seal": _seal,
    "liability": _liability,
}


def _cli(step: str, context: Context) -> list[str] | None:
    """The CLI command of a step, or None if a function runs it."""
    zone = get_settings().zone
    start = datetime.combine(context.day, datetime.min.time(), zone)
    export = context.workdir / "export"
    commands = {
        "export": [
            "audit",
            "export",
            "--from",
            start.isoformat(),
            "--to",
            (start + timedelta(days=1)).isoformat(),
            "--out",
            str(export),
        ],
        "verify": ["audit", "verify", "--export", str(export)],
        "check": ["ledger", "check"],
    }
    command = commands.get(step)
    return (
        None if command is None else [str(Path(sys.executable).parent / "clearinghouse"), *command]
    )


@dataclass(frozen=True)
class StepResult:
    step: str
    items: int
    seconds: float
    peak_rss_mb: float
    error: str | None
    note: str

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds else math.nan


def _spawn(
    command: list[str], env: dict[str, str], logs: Path
) -> tuple[int, float, float, str, str]:
    """Run `command`, killed past STEP_TIMEOUT: exit code, wall seconds, peak RSS in MB (the
    child's own, from wait4), stdout and stderr."""
    out_path, err_path = logs.with_suffix(".out"), logs.with_suffix(".err")
    started = time.perf_counter()
    with out_path.open("w") as out, err_path.open("w") as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env)
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - started > STEP_TIMEOUT:
            child.kill()
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return (
        child.returncode,
        seconds,
        usage.ru_maxrss / 1024,  # Linux gives KiB
        out_path.read_text(),
        err_path.read_text(),
    )


# The line of a traceback that names the exception, e.g. "psycopg.OperationalError: ...".
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failed|NotFound|Exit)\b.*")


def _last_line(text: str) -> str:
    """The last line naming an exception, with the next one if the message goes on there."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "no output"
    named = [i for i, line in enumerate(lines) if _EXCEPTION.match(line)]
    at = named[-1] if named else len(lines) - 1
    message = lines[at]
    if message.endswith(":") and at + 1 < len(lines):
        message += " " + lines[at + 1]
    return message[:300]


# What the CLI steps print: the items they did, so the rate is of the real work.
_CLI_ITEMS = {
    "export": re.compile(r"exported (\d+) entries"),
    "verify": re.compile(r"verified \d+ blocks and (\d+) entries"),
}


def run_step(step: str, context: Context, day: Day) -> StepResult:
    env = {**os.environ, "DATABASE_URL": context.url}
    logs = context.workdir / step
    command = _cli(step, context)
    if command is None:
        command = [
            sys.executable,
            "-m",
            "bench.settlement_bench",
            "--run-step",
            step,
            "--database-url",
            context.url,
            "--date",
            context.day.isoformat(),
            "--workdir",
            str(context.workdir),
            "--partner",
            context.partner,
        ]
    code, seconds, rss, out, err = _spawn(command, env, logs)
    if code != 0:
        return StepResult(step, 0, seconds, rss, _last_line(err or out), "")
    if step in _FUNCTIONS:
        done = json.loads(_last_line(out))
        return StepResult(step, done["items"], done["seconds"], rss, None, done["note"])
    pattern = _CLI_ITEMS.get(step)
    match = pattern.search(out) if pattern else None
    items = int(match.group(1)) if match else day.ledger_entries
    # The export prints its folder, gone after the run; the others a verdict.
    return StepResult(step, items, seconds, rss, None, "" if step == "export" else _last_line(out))


def _child(args: argparse.Namespace) -> int:
    """One function step, in this fresh process; prints its items, seconds and a note."""
    context = Context(
        args.database_url, date.fromisoformat(args.date), Path(args.workdir), args.partner
    )
    started = time.perf_counter()
    try:
        items, note = _FUNCTIONS[args.run_step](context)
    except Exception:
        traceback.print_exc()
        return 1
    seconds = time.perf_counter() - started
    print(json.dumps({"items": items, "seconds": seconds, "note": note}))
    return 0


# --- the floor and the report -------------------------------------------------------------------

# What netting in SQL cannot beat: the day's entries and their partners' point postings read
# once and summed per partner and kind, nothing written.
_FLOOR = """
SELECT e.metadata ->> 'partner_id', e.kind, count(*),
       sum((e.metadata ->> 'value_fen')::bigint), sum(abs(p.amount))
  FROM journal_entries e
  JOIN postings p ON p.entry_id = e.id
  JOIN accounts a ON a.id = p.account_id
 WHERE e.kind = ANY(%(kinds)s) AND a.owner_type = 'partner' AND a.kind IN ('issued', 'redeemed')
 GROUP BY 1, 2
"""


def floor_seconds(url: str) -> float:
    with _connect(url) as conn:
        started = time.perf_counter()
        conn.execute(_FLOOR.encode(), {"kinds": list(CATEGORIES)}).fetchall()
        return time.perf_counter() - started


# The issue's aims, as rates so that any N is judged: (step, entries a second at least, MB at
# most, seconds at most).
AIMS: dict[str, tuple[float | None, float | None, float | None]] = {
    "settle": (1_000_000 / 60, 300, None),
    "report": (1_000_000 / 60, None, None),
    "reconcile": (1_000_000 / 60, None, None),
    "export": (1_000_000 / 60, None, None),
    "liability": (None, None, 1.0),
}


# Below this many items a process's start dominates the rate: no rate aim is judged.
AIM_FROM = 100_000


def _aim(result: StepResult) -> str:
    aim = AIMS.get(result.step)
    if aim is None:
        return ""
    if result.error is not None:
        return "MISSED (failed)"
    rate, megabytes, seconds = aim
    missed = []
    unjudged = rate is not None and result.items < AIM_FROM
    if rate is not None and not unjudged and result.rate < rate:
        missed.append(f"< {rate:,.0f}/s")
    if megabytes is not None and result.peak_rss_mb > megabytes:
        missed.append(f"> {megabytes} MB")
    if seconds is not None and result.seconds > seconds:
        missed.append(f"> {seconds} s")
    if missed:
        return "MISSED (" + ", ".join(missed) + ")"
    return f"rate not judged (< {AIM_FROM:,} items)" if unjudged else "met"


def print_report(
    args: argparse.Namespace,
    facts: dict[str, str],
    load: float,
    day: Day,
    floor: float,
    file_lines: int,
    snapshots: bool,
    results: Sequence[StepResult],
) -> None:
    print(f"## Settlement at scale: {day.entries:,} entries, {args.partners} partners\n")
    print(
        f"PostgreSQL {facts.get('server_version')}, fsync {facts.get('fsync')}, "
        f"synchronous_commit {facts.get('synchronous_commit')}, "
        f"autovacuum {facts.get('autovacuum')}; {os.cpu_count()} cores, "
        f"{load:.0%} busy with other work before the run.\n"
    )
    print(
        f"Generated {day.entries:,} settleable entries ({day.ledger_entries:,} ledger entries "
        f"with the holds) for {day.members:,} members in {day.seconds:.1f} s: "
        f"{day.rate:,.0f} entries/s, after {day.setup_seconds:.1f} s for the partners. "
        f"The reconciled partner's file: {file_lines:,} lines. "
        f"Floor (the day's entries and partner postings summed by one query): {floor:.1f} s, "
        f"{day.entries / floor:,.0f} entries/s. "
        + (
            "The liability history reads 364 daily snapshots written for the year before the day."
            if snapshots
            else "No liability snapshots in this schema: the history is computed from the lots."
        )
        + "\n"
    )
    print_table(
        ["step", "items", "seconds", "items/s", "peak RSS (MB)", "aim", "result"],
        [
            [
                r.step,
                f"{r.items:,}",
                f"{r.seconds:.2f}",
                f"{r.rate:,.0f}" if r.error is None else "-",
                f"{r.peak_rss_mb:,.0f}",
                _aim(r),
                r.note if r.error is None else f"FAILED: {r.error}",
            ]
            for r in results
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--partners", type=int, default=50)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}"
    )
    # One step in a process of its own, started by the bench itself.
    for hidden in ("--run-step", "--date", "--workdir", "--partner"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_step:
        return _child(args)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps: {', '.join(sorted(unknown))}")
    configured = args.database_url or os.environ.get("DATABASE_URL")
    with (
        bench_server(configured, prefix="settlement-bench-") as server,
        scratch_database(server, prefix="settlement_bench") as url,
        tempfile.TemporaryDirectory(prefix="settlement-bench-") as workdir,
    ):
        migrate.upgrade(url)
        facts = server_facts(url)
        load = background_load(postmaster_pid(url))
        day = generate_day(url, args.entries, args.partners)
        floor = floor_seconds(url)
        context = Context(url, day.business_date, Path(workdir), day.merchants[0])
        file_lines = partner_file(url, context.partner, context.workdir / "partner.csv")
        snapshots = "liability" in steps and year_of_history(url, day.business_date)
        results = []
        for step in steps:
            results.append(run_step(step, context, day))
            print(f"{step}: {results[-1].seconds:.1f} s", file=sys.stderr, flush=True)
    print_report(args, facts, load, day, floor, file_lines, snapshots, results)
    return 0 if all(r.error is None for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
