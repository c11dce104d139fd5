"""Computing a day's run: for a business date in the coalition's time zone, every settleable
entry recorded before that date's cut-off and not yet settled is valued at the amount recorded
on the entry itself, netted per partner into one amount payable to (positive) or receivable from
(negative) the clearing house, and posted as one CNY ledger entry; then the self-check.

Set-based: the entries awaiting settlement are kept by the database itself (`unsettled_entries`,
filled by a trigger as entries are written); a run takes its day's out of it and records them as
its items in one statement, computes its lines in another (the day's entries joined with their
partner postings, grouped by partner and category) and checks them in a third, written
differently. Nothing of the day is listed in Python, so the job's memory does not grow with it.

`compute` settles one date within the caller's transaction and keeps nothing if its self-check
fails; which dates are computed, in what order, under the lock, is `settlement.schedule`'s."""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, text, update
from sqlalchemy.orm import Session

from clearinghouse import clock, ledger
from clearinghouse.config import get_settings
from clearinghouse.errors import DomainError
from clearinghouse.points import lots
from clearinghouse.settleable import PARTNER_KEY, VALUE_KEY
from partners.limits import issuance_legs
from settlement import categories
from settlement.events import announce
from settlement.runs import CLEARING, Line, Run, lines_of, record_event, run_of
from settlement.tables import settlement_runs

log = logging.getLogger(__name__)

# Each settleable kind's category and the sign of its value in the partner's net, as read by the
# tests and the benchmark: derived from the one definition in `settlement.categories`.
CATEGORIES: dict[str, tuple[str, int]] = {
    kind: (category.name, category.sign) for kind, category in categories.BY_KIND.items()
}


class SelfCheckFailed(DomainError):
    code = "self_check_failed"
    status = 500
    title = "Ledger self-check failed"


def cutoff(business_date: date) -> datetime:
    """The end of the business date in the coalition's time zone."""
    return datetime.combine(business_date + timedelta(days=1), time(0), get_settings().zone)


def business_date_of(instant: datetime) -> date:
    return instant.astimezone(get_settings().zone).date()


# The line columns, as the statements list them: by name, and each beside its name.
_COLUMNS = ", ".join(categories.LINE_COLUMNS)
_COLUMNS_NAMED = ", ".join(f"('{column}', l.{column})" for column in categories.LINE_COLUMNS)

# Each line column as the sum of its category's points or value.
_SUMS = ",\n           ".join(
    f"coalesce(sum({measure}) FILTER (WHERE category = '{category.name}'), 0)"
    f" AS {category.column(measure)}"
    for category in categories.CATEGORIES
    for measure in categories.MEASURES
)

# The kinds a run settles, as a table of the statement: each kind's category, the partner
# account whose posting gives its points, and the sign of its value in the partner's net. And
# the partners' own accounts that a run reads, found by address (a few per partner).
_KINDS_AND_ACCOUNTS = """
kinds (kind, category, points_account, sign) AS (
    SELECT * FROM unnest(CAST(:kinds AS text[]), CAST(:categories AS text[]),
                         CAST(:points_accounts AS text[]), CAST(:signs AS integer[]))
),
partner_accounts (id, partner_id, name) AS (
    SELECT a.id, p.id, n.name
      FROM partners AS p
     CROSS JOIN unnest(ARRAY['issued', 'redeemed', 'exposure']) AS n (name)
      JOIN accounts AS a ON a.address = 'partner:' || p.id || ':' || n.name
)"""


def _kinds() -> dict[str, Any]:
    settled = categories.BY_KIND.items()
    return {
        "kinds": [kind for kind, _category in settled],
        "categories": [category.name for _kind, category in settled],
        "points_accounts": [category.points_account for _kind, category in settled],
        "signs": [category.sign for _kind, category in settled],
    }


# The entries a run covers, for the length of its transaction: read by the statements that
# compute and check its lines, with statistics of their own (the run's items are too new for
# the planner to know how many they are). Those statements also bound the journal and its
# postings by the first and last of these entries (`:first`, `:last`), so that the planner
# reads the day's range of them by index rather than the whole journal: a day's entries are
# about one range of ids.
_SETTLING = """
CREATE TEMPORARY TABLE settling (
    entry_id bigint NOT NULL,
    freed boolean NOT NULL
) ON COMMIT DROP
"""

# Take the run's entries out of those awaiting settlement, record them as its items and keep
# them for the run, in one statement (one snapshot: an entry committed meanwhile stays for the
# next run): those recorded before its cut-off (and at or after the floor), but for any that a
# rejected run of another date gave back, and those a rejected run of its own date gave back.
_TAKE = """
WITH taken AS (
    DELETE FROM unsettled_entries
     WHERE (held_for IS NULL AND recorded_at < :cutoff {floor}) OR held_for = :business_date
 RETURNING entry_id, held_for IS NOT NULL AS freed
), items AS (
    INSERT INTO settlement_items (entry_id, run_id) SELECT entry_id, :run FROM taken
)
INSERT INTO settling (entry_id, freed) SELECT entry_id, freed FROM taken
"""

# The run's lines: each entry's value (from its metadata) and its points (its posting to the
# partner's issued or redeemed account, by category), summed by partner and category, written
# as the run's lines; and by partner the issue value to give back from exposure to headroom (the
# entries' exposure postings, but for entries freed by an earlier, rejected run).
_LINES = f"""
WITH {_KINDS_AND_ACCOUNTS},
covered AS (
    SELECT e.id, e.metadata ->> '{PARTNER_KEY}' AS partner_id, k.category, k.points_account,
           k.sign, CAST(e.metadata ->> '{VALUE_KEY}' AS bigint) AS value_fen, s.freed
      FROM settling AS s
      JOIN journal_entries AS e ON e.id = s.entry_id AND e.id BETWEEN :first AND :last
      JOIN kinds AS k ON k.kind = e.kind
),
amounts AS (
    SELECT partner_id, category, sign, value_fen AS fen, 0 AS points, 0 AS restored
      FROM covered
    UNION ALL
    SELECT c.partner_id, c.category, c.sign, 0,
           CASE WHEN a.name = c.points_account THEN abs(p.amount) ELSE 0 END,
           CASE WHEN a.name = 'exposure' AND NOT c.freed THEN p.amount ELSE 0 END
      FROM covered AS c
      JOIN postings AS p ON p.entry_id = c.id AND p.entry_id BETWEEN :first AND :last
      JOIN partner_accounts AS a ON a.id = p.account_id AND a.partner_id = c.partner_id
     WHERE a.name IN (c.points_account, 'exposure')
),
lines AS (
    SELECT partner_id,
           {_SUMS},
           sum(sign * fen) AS net_fen,
           sum(restored) AS restored
      FROM amounts
     GROUP BY partner_id
),
written AS (
    INSERT INTO settlement_lines (run_id, partner_id, {_COLUMNS}, net_fen)
    SELECT :run, partner_id, {_COLUMNS}, net_fen FROM lines
)
SELECT partner_id, restored FROM lines ORDER BY partner_id
"""

# The self-check's recount of a run, written otherwise: one sum per partner and line column,
# values and points counted apart, against the stored lines turned into the same shape; and the
# entries that name no partner or carry no value. Returns how many sums differ.
_RECOUNT = f"""
WITH {_KINDS_AND_ACCOUNTS},
entries AS (
    SELECT e.id, e.metadata ->> '{PARTNER_KEY}' AS partner_id,
           e.metadata ->> '{VALUE_KEY}' AS value, k.category, k.points_account
      FROM settling AS s
      JOIN journal_entries AS e ON e.id = s.entry_id AND e.id BETWEEN :first AND :last
      JOIN kinds AS k ON k.kind = e.kind
),
recounted (partner_id, line_column, amount) AS (
    SELECT partner_id, category || '_fen', sum(CAST(value AS bigint))
      FROM entries
     GROUP BY partner_id, category
    UNION ALL
    SELECT e.partner_id, e.category || '_points', sum(abs(p.amount))
      FROM entries AS e
      JOIN postings AS p ON p.entry_id = e.id AND p.entry_id BETWEEN :first AND :last
      JOIN partner_accounts AS a ON a.id = p.account_id
     WHERE a.partner_id = e.partner_id AND a.name = e.points_account
     GROUP BY e.partner_id, e.category
),
stored (partner_id, line_column, amount) AS (
    SELECT l.partner_id, u.line_column, u.amount
      FROM settlement_lines AS l
     CROSS JOIN LATERAL (VALUES {_COLUMNS_NAMED})
           AS u (line_column, amount)
     WHERE l.run_id = :run
),
differing AS (
    (SELECT * FROM recounted WHERE amount <> 0 EXCEPT SELECT * FROM stored WHERE amount <> 0)
    UNION ALL
    (SELECT * FROM stored WHERE amount <> 0 EXCEPT SELECT * FROM recounted WHERE amount <> 0)
),
partners_differing AS (
    (SELECT partner_id FROM recounted EXCEPT SELECT partner_id FROM stored)
    UNION ALL
    (SELECT partner_id FROM stored EXCEPT SELECT partner_id FROM recounted)
)
SELECT (SELECT count(*) FROM entries WHERE partner_id IS NULL OR value IS NULL) AS unvalued,
       (SELECT count(*) FROM differing) + (SELECT count(*) FROM partners_differing) AS differing,
       (SELECT count(*) FROM settling) AS settling,
       (SELECT count(*) FROM settlement_items WHERE run_id = :run) AS items
"""


def _settling_range(session: Session) -> dict[str, int | None]:
    first, last = session.execute(text("SELECT min(entry_id), max(entry_id) FROM settling")).one()
    return {"first": first, "last": last}


def compute(session: Session, business_date: date, floor: datetime | None) -> Run:
    """Compute the run of `business_date` in the caller's transaction, which holds the
    settlement lock: its entries are those awaiting settlement recorded before its cut-off (and
    at or after `floor`, the cut-off of an earlier date whose run failed or was rejected, whose
    entries wait for it), but for those that a rejected run of another date gave back; and
    those that a rejected run of this date gave back, whenever they were recorded."""
    cut = cutoff(business_date)
    attempt = (
        1
        + session.execute(
            select(func.count()).where(settlement_runs.c.business_date == business_date)
        ).scalar_one()
    )
    run_id = session.execute(
        settlement_runs.insert()
        .values(
            business_date=business_date,
            attempt=attempt,
            cutoff=cut,
            state="computed",
            computed_at=clock.now(),
        )
        .returning(settlement_runs.c.id)
    ).scalar_one()
    params: dict[str, Any] = {
        "run": run_id,
        "cutoff": cut,
        "floor": floor,
        "business_date": business_date,
    }
    take = _TAKE.format(floor="" if floor is None else "AND recorded_at >= :floor")
    session.execute(text(_SETTLING))
    taken = session.execute(text(take), params)
    entries = cast(CursorResult[Any], taken).rowcount
    session.execute(text("ANALYZE settling"))
    restored = {
        partner_id: int(value)
        for partner_id, value in session.execute(
            text(_LINES), {**params, **_settling_range(session), **_kinds()}
        )
    }
    lines = lines_of(session, run_id)
    entry_id = _post(session, business_date, attempt, lines, restored)
    posted = [] if entry_id is None else ledger.entry_postings(session, entry_id)
    session.execute(
        update(settlement_runs)
        .where(settlement_runs.c.id == run_id)
        .values(
            entry_id=entry_id,
            entries=entries,
            clearing_fen=sum(p.amount for p in posted if p.address == CLEARING),
        )
    )
    record_event(session, run_id, None, "computed", None, f"{entries} entries")
    run = run_of(
        session,
        session.execute(select(settlement_runs).where(settlement_runs.c.id == run_id)).one(),
    )
    self_check(session, run)
    announce(session, run, "settlement.computed")
    log.info(
        "settlement of %s computed (attempt %d): %d entries, %d partners",
        business_date.isoformat(),
        attempt,
        entries,
        len(lines),
    )
    return run


def _post(
    session: Session,
    business_date: date,
    attempt: int,
    lines: list[Line],
    restored: dict[str, int],
) -> int | None:
    """One CNY entry: each partner's net to its payable account against the clearing account,
    and the settled issue value back from exposure to headroom."""
    legs: list[ledger.Posting] = []
    for line in lines:
        payable = str(ledger.Address.partner(line.partner_id, "payable"))
        ledger.open_accounts(session, [ledger.AccountSpec(payable, "CNY", shards=1)])
        legs += [
            ledger.Posting(payable, line.net_fen, "CNY"),
            ledger.Posting(CLEARING, -line.net_fen, "CNY"),
        ]
    for partner_id, value in restored.items():
        legs += issuance_legs(partner_id, -value)
    legs = [leg for leg in legs if leg.amount]
    if not legs:
        return None
    posted = ledger.post(
        session,
        ledger.Entry(
            kind="settlement",
            origin="job:settlement",
            idempotency_key=f"{business_date.isoformat()}:{attempt}",
            postings=legs,
            occurred_at=cutoff(business_date),
            metadata={"business_date": business_date.isoformat(), "attempt": attempt},
        ),
    )
    return posted.id


def self_check(session: Session, run: Run) -> None:
    """Balances equal postings, lots equal balances, and the run's lines equal the entries it
    covers (recounted in the database, otherwise than they were computed); raises (so nothing
    of the run is kept) otherwise. Within the run's transaction (it reads `settling`)."""
    problems: list[str] = []
    mismatches = ledger.check_consistency(session)
    if mismatches:
        problems.append(f"{len(mismatches)} balances differ from their postings")
    lot_mismatches = lots.check_lots(session)
    if lot_mismatches:
        problems.append(f"{len(lot_mismatches)} members' lots differ from their balance")
    recount = session.execute(
        text(_RECOUNT), {"run": run.id, **_settling_range(session), **_kinds()}
    ).one()
    if not recount.items == recount.settling == run.entries:
        problems.append(f"the run covers {recount.items} entries, not {run.entries}")
    if recount.unvalued:
        problems.append(f"{recount.unvalued} of the run's entries name no partner or no value")
    if recount.differing:
        problems.append("the run's lines differ from the entries it covers")
    if not run.zero_sum:
        problems.append("partner nets and the coalition's posted revenue do not cancel")
    if problems:
        raise SelfCheckFailed("; ".join(problems))
