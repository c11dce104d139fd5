"""`/metrics`: the Prometheus exposition, to an operator's token alone and outside the
OpenAPI document. What each process records is in clearinghouse.api.metrics; what the
database knows (ledger entries, points per partner, open holds, seal lag, settlement, fraud
cases, reconciliation breaks) is read here at scrape time, in one read-only transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.orm import Session

from clearinghouse.api import metrics
from clearinghouse.api.deps import ReadSession
from clearinghouse.ledger import partitions
from clearinghouse.users.deps import Operator
from settlement import netting

router = APIRouter(include_in_schema=False)

_PARTNER_POINTS = """
SELECT a.owner_id, a.kind, abs(sum(b.balance))
  FROM accounts a JOIN account_balances b ON b.account_id = a.id
 WHERE a.owner_type = 'partner' AND a.kind IN ('issued', 'redeemed') AND a.asset = 'PTS'
 GROUP BY a.owner_id, a.kind
"""
_OPEN_HOLDS = "SELECT count(*) FROM holds WHERE state = 'held'"
# The seal queue holds entry ids in the order they were recorded: the first is the oldest.
_SEAL_LAG = """
SELECT extract(epoch FROM clock_timestamp() - j.recorded_at)
  FROM seal_queue q JOIN journal_entries j ON j.id = q.entry_id
 ORDER BY q.entry_id LIMIT 1
"""
_RUNS = """
SELECT state, count(*), extract(epoch FROM max(business_date)::timestamp)
  FROM settlement_runs GROUP BY state
"""
_OLDEST_UNSETTLED = "SELECT min(recorded_at) FROM unsettled_entries"
_CASES = "SELECT state, count(*) FROM fraud_cases GROUP BY state"
_BREAKS = "SELECT sum(break_count) FROM reconciliations WHERE resolved_at IS NULL"


class DatabaseSeries(Collector):
    """The series read from the database when scraped."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def _rows(self, statement: str) -> list[Any]:
        return list(self.session.execute(text(statement)))

    def _value(self, statement: str) -> float:
        return float(self.session.execute(text(statement)).scalar() or 0)

    def collect(self) -> Iterator[Metric]:
        entries = CounterMetricFamily(
            "clearinghouse_ledger_entries",
            "Journal entries written, by kind (archived months included)",
            labels=["kind"],
        )
        for kind, count in sorted(partitions.entries_by_kind(self.session).items()):
            entries.add_metric([kind], float(count))
        yield entries

        points = GaugeMetricFamily(
            "clearinghouse_partner_points",
            "Points a partner has issued or redeemed, net, from its ledger accounts",
            labels=["partner", "direction"],
        )
        for partner, direction, total in self._rows(_PARTNER_POINTS):
            points.add_metric([str(partner), str(direction)], float(total))
        yield points

        yield GaugeMetricFamily(
            "clearinghouse_open_holds",
            "Holds not yet captured, voided or expired",
            value=self._value(_OPEN_HOLDS),
        )

        yield GaugeMetricFamily(
            "clearinghouse_seal_lag_seconds",
            "Age of the oldest entry not yet sealed (0 when all are)",
            value=self._value(_SEAL_LAG),
        )

        runs = GaugeMetricFamily(
            "clearinghouse_settlement_runs", "Settlement runs, by state", labels=["state"]
        )
        latest = GaugeMetricFamily(
            "clearinghouse_settlement_latest_business_date_timestamp_seconds",
            "The latest business date with a run in the state (midnight UTC)",
            labels=["state"],
        )
        for state, count, date_seconds in self._rows(_RUNS):
            runs.add_metric([str(state)], float(count))
            latest.add_metric([str(state)], float(date_seconds))
        yield runs
        yield latest

        oldest = self.session.execute(text(_OLDEST_UNSETTLED)).scalar()
        unsettled = GaugeMetricFamily(
            "clearinghouse_settlement_oldest_unsettled_cutoff_timestamp_seconds",
            "The cut-off of the oldest business day with entries no run covers (absent when none)",
        )
        if oldest is not None:
            cut = netting.cutoff(netting.business_date_of(oldest))
            unsettled.add_metric([], cut.timestamp())
        yield unsettled

        cases = GaugeMetricFamily(
            "clearinghouse_fraud_cases",
            "Risk cases by state: open ones wait for a decision, the others are decided",
            labels=["state"],
        )
        for state, count in self._rows(_CASES):
            cases.add_metric([str(state)], float(count))
        yield cases

        yield GaugeMetricFamily(
            "clearinghouse_reconciliation_breaks_open",
            "Breaks of partners' reconciliations not yet resolved",
            value=self._value(_BREAKS),
        )


@router.get("/metrics")
def scrape(session: ReadSession, _: Operator) -> Response:
    return Response(metrics.exposition(DatabaseSeries(session)), media_type=metrics.CONTENT_TYPE)
