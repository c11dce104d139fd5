"""The settlement benchmark's day generator, at a small size: its day settles zero-sum and the
ledger and the lots check, so the figures in docs/benchmarks.md keep meaning something."""

from __future__ import annotations

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
        run = netting.settle(sessions, day.business_date)[-1]
        with sessions() as session:
            consistent = ledger.check_consistency(session)
            unbalanced = [line for line in ledger.trial_balance(session) if line.net != 0]
            lot_mismatches = lots.check_lots(session)
    finally:
        engine.dispose()
    assert run.entries == 2_000
    assert run.zero_sum
    assert {line.partner_id for line in run.lines} == set(day.merchants + day.programmes)
    assert consistent == []
    assert unbalanced == []
    assert lot_mismatches == []
