"""The settlement benchmark's day generator, at a small size: its day settles zero-sum and the
ledger and the lots check, so the figures in docs/benchmarks.md keep meaning something."""

from __future__ import annotations

from datetime import timedelta

from bench.settlement_bench import generate_day
from clearinghouse import ledger
from clearinghouse.database import make_engine, session_factory
from clearinghouse.points import lots
from settlement import netting
from tests.conftest import Databases


def test_a_generated_day_settles_zero_sum_and_the_ledger_checks(databases: Databases) -> None:
    url = databases.create("ch_bench")
    day = generate_day(url, 2_000, 10)
    engine = make_engine(url, pool_size=1)
    try:
        sessions = session_factory(engine)
        # Through the next date too: a day generated across midnight is settled whole all the same.
        runs = netting.settle(sessions, day.business_date + timedelta(days=1))
        with sessions() as session:
            consistent = ledger.check_consistency(session)
            unbalanced = [line for line in ledger.trial_balance(session) if line.net != 0]
            lot_mismatches = lots.check_lots(session)
    finally:
        engine.dispose()
    assert sum(run.entries for run in runs) == 2_000
    assert all(run.zero_sum for run in runs)
    partners = {line.partner_id for run in runs for line in run.lines}
    assert partners == set(day.merchants + day.programmes)
    assert consistent == []
    assert unbalanced == []
    assert lot_mismatches == []
