"""The settlement benchmark's day generator, at a small size: it writes the ledger with its
triggers off, so what they would have done is checked here (the entries balance, each posting
carries its entry's recorded_at, balance rows and balances equal the postings, the settlement
queue holds exactly the settleable entries and the seal queue every entry); and its day settles
zero-sum and the ledger and the lots check, so the figures in docs/benchmarks.md keep meaning
something."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from bench.settlement_bench import generate_day
from clearinghouse import ledger
from clearinghouse.database import make_engine, session_factory
from clearinghouse.points import lots
from settlement import netting
from tests.builders.settlement import settle_after_cutoff
from tests.conftest import Databases

# What the deferred triggers check at commit: every entry has postings, netting to zero per
# asset; and what ledger_post writes: each posting with its entry's recorded_at, the entries
# recorded in the order of their ids.
_ENTRY_FAULTS = """
SELECT (SELECT count(*) FROM journal_entries e
         WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.entry_id = e.id)),
       (SELECT count(*) FROM (SELECT 1 FROM postings GROUP BY entry_id, asset
                              HAVING sum(amount) <> 0) AS unbalanced),
       (SELECT count(*) FROM postings p JOIN journal_entries e ON e.id = p.entry_id
         WHERE p.recorded_at <> e.recorded_at),
       (SELECT count(*) FROM (SELECT recorded_at < lag(recorded_at) OVER (ORDER BY id) AS back
                                FROM journal_entries) AS ordered WHERE back)
"""

# What the accounts' trigger opens: one balance row a shard, with the account's floor.
_BALANCE_ROW_FAULTS = """
SELECT count(*) FROM accounts a
 WHERE (SELECT count(*) FROM account_balances b
         WHERE b.account_id = a.id AND b.non_negative = a.non_negative
           AND b.shard BETWEEN 0 AND a.shards - 1) <> a.shards
    OR EXISTS (SELECT 1 FROM account_balances b
                WHERE b.account_id = a.id AND NOT b.shard BETWEEN 0 AND a.shards - 1)
"""

# What settlement_enqueue adds, with the same test as its WHEN clause.
_SETTLEABLE = """
SELECT id, recorded_at FROM journal_entries
 WHERE kind = ANY(:kinds) AND metadata ? 'partner_id' AND metadata ? 'value_fen'
"""


def test_a_generated_day_settles_zero_sum_and_the_ledger_checks(databases: Databases) -> None:
    url = databases.create("ch_bench")
    day = generate_day(url, 2_000, 10)
    engine = make_engine(url, pool_size=1)
    try:
        sessions = session_factory(engine)
        with sessions() as session:
            entry_faults = tuple(session.execute(text(_ENTRY_FAULTS)).one())
            balance_row_faults = session.execute(text(_BALANCE_ROW_FAULTS)).scalar_one()
            generated_consistent = ledger.check_consistency(session)
            queued = {
                tuple(row)
                for row in session.execute(
                    text("SELECT entry_id, recorded_at FROM unsettled_entries")
                )
            }
            unsealed = set(session.execute(text("SELECT entry_id FROM seal_queue")).scalars())
            journal = set(session.execute(text("SELECT id FROM journal_entries")).scalars())
            settleable = {
                tuple(row)
                for row in session.execute(text(_SETTLEABLE), {"kinds": list(netting.CATEGORIES)})
            }
        # Through the next date too: a day generated across midnight is settled whole all the same.
        runs = settle_after_cutoff(sessions, day.business_date + timedelta(days=1))
        with sessions() as session:
            consistent = ledger.check_consistency(session)
            unbalanced = [line for line in ledger.trial_balance(session) if line.net != 0]
            lot_mismatches = lots.check_lots(session)
    finally:
        engine.dispose()
    # No entry without postings, none unbalanced, no posting off its entry's recorded_at, no
    # entry recorded before the one before it.
    assert entry_faults == (0, 0, 0, 0)
    assert balance_row_faults == 0
    assert generated_consistent == []
    assert len(settleable) == 2_000
    assert queued == settleable
    assert unsealed == journal  # nothing sealed yet: every entry awaits its seal
    assert sum(run.entries for run in runs) == 2_000
    assert all(run.zero_sum for run in runs)
    partners = {line.partner_id for run in runs for line in run.lines}
    assert partners == set(day.merchants + day.programmes)
    assert consistent == []
    assert unbalanced == []
    assert lot_mismatches == []
