"""Daily settlement: for a business date in the coalition's time zone, every settleable entry
recorded before that date's cut-off and not yet settled is valued at the amount recorded on the
entry itself, netted per partner into one amount payable to (positive) or receivable from
(negative) the clearing house, and posted as CNY ledger entries.

Exactly once: runs are serialised by an advisory lock; a date has at most one live run (a
unique index is the run key); re-running a settled date returns it unchanged; missed dates are
settled in order first; each date is computed in one transaction, so a failure leaves nothing.
An entry recorded after its date was settled falls into the next open date.

Set-based: the entries awaiting settlement are kept by the database itself (`unsettled_entries`,
filled by a trigger as entries are written); a run takes its day's out of it and records them as
its items in one statement, computes its lines in another (the day's entries joined with their
partner postings, grouped by partner and category) and checks them in a third, written
differently. Nothing of the day is listed in Python, so the job's memory does not grow with it.

A date whose run fails is recorded as a failed try (`settlement_failures`), logged with its error,
and tried again with back-off; the dates after it are settled all the same, without its
entries, which wait for it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, exists, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock, ledger
from clearinghouse.config import get_settings
from clearinghouse.errors import Conflict, DomainError, NotFound
from clearinghouse.points import lots
from clearinghouse.settleable import PARTNER_KEY, VALUE_KEY
from clearinghouse.users.service import User, require_role
from partners.directory import exposure_account, headroom_account
from settlement import categories
from settlement.tables import (
    reconciliations,
    settlement_approvals,
    settlement_events,
    settlement_failures,
    settlement_lines,
    settlement_runs,
    unsettled_entries,
)

log = logging.getLogger(__name__)

CLEARING = "coalition:clearing"
BANK = "coalition:bank"
APPROVERS_NEEDED = 2

# Each settleable kind's category and the sign of its value in the partner's net, as read by the
# tests and the benchmark: derived from the one definition in `settlement.categories`.
CATEGORIES: dict[str, tuple[str, int]] = {
    kind: (category.name, category.sign) for kind, category in categories.BY_KIND.items()
}


class SettlementNotFound(NotFound):
    code = "settlement_not_found"
    title = "No settlement for that date"


class FourEyes(Conflict):
    code = "four_eyes"
    title = "A second, different person must approve"


class WrongState(Conflict):
    code = "settlement_state"
    title = "Not allowed in the settlement's state"


class SelfCheckFailed(DomainError):
    code = "self_check_failed"
    status = 500
    title = "Ledger self-check failed"


@dataclass
class Line:
    """A partner's side of a run: points and fen by category, a pair of fields for each of
    `settlement.categories.CATEGORIES` in its order (a test holds them to it)."""

    partner_id: str
    issued_points: int = 0
    issued_fen: int = 0
    reversed_points: int = 0
    reversed_fen: int = 0
    redeemed_points: int = 0
    redeemed_fen: int = 0
    redemption_refunded_points: int = 0
    redemption_refunded_fen: int = 0
    exchange_in_points: int = 0
    exchange_in_fen: int = 0
    exchange_out_points: int = 0
    exchange_out_fen: int = 0

    @property
    def net_fen(self) -> int:
        return sum(
            category.sign * int(getattr(self, category.fen_column))
            for category in categories.CATEGORIES
        )

    def add(self, category: str, points: int, fen: int) -> None:
        setattr(self, f"{category}_points", getattr(self, f"{category}_points") + points)
        setattr(self, f"{category}_fen", getattr(self, f"{category}_fen") + fen)


@dataclass
class Run:
    id: int
    business_date: date
    attempt: int
    cutoff: datetime
    state: str
    bank_reference: str | None
    entries: int
    lines: list[Line] = field(default_factory=list)

    @property
    def partners_net_fen(self) -> int:
        return sum(line.net_fen for line in self.lines)

    @property
    def partners_pay_fen(self) -> int:
        """What the partners with a positive net pay the coalition."""
        return sum(max(line.net_fen, 0) for line in self.lines)

    @property
    def partners_receive_fen(self) -> int:
        """What the coalition pays the partners with a negative net."""
        return sum(-min(line.net_fen, 0) for line in self.lines)

    clearing_fen: int = 0
    """The coalition's leg of the posted settlement entry (what it receives, negated)."""

    @property
    def coalition_fen(self) -> int:
        """The coalition's revenue for the day (spread, fees): what it keeps, as posted."""
        return -self.clearing_fen

    @property
    def zero_sum(self) -> bool:
        """The partners' nets and the coalition's revenue, as posted, cancel to the fen."""
        return self.partners_net_fen - self.coalition_fen == 0


def cutoff(business_date: date) -> datetime:
    """The end of the business date in the coalition's time zone."""
    return datetime.combine(business_date + timedelta(days=1), time(0), get_settings().zone)


def business_date_of(instant: datetime) -> date:
    return instant.astimezone(get_settings().zone).date()


# The settlement job's back-off: a date whose run failed is tried again after BACKOFF_BASE,
# then after twice as long at each failure, at most BACKOFF_MAX apart.
BACKOFF_BASE = timedelta(minutes=5)
BACKOFF_MAX = timedelta(hours=4)
ERROR_LENGTH = 2_000  # characters of a failure's error kept and shown

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
# next run).
_TAKE = """
WITH taken AS (
    DELETE FROM unsettled_entries
     WHERE recorded_at < :cutoff {floor}
 RETURNING entry_id, freed
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


def _lock(session: Session) -> None:
    session.execute(select(func.pg_advisory_xact_lock(func.hashtext("settlement"))))


def _live(session: Session, business_date: date) -> Any:
    return session.execute(
        select(settlement_runs).where(
            settlement_runs.c.business_date == business_date,
            settlement_runs.c.state != "rejected",
        )
    ).first()


def _event(
    session: Session, run_id: int, before: str | None, after: str, user: User | None, note: str
) -> None:
    session.execute(
        settlement_events.insert().values(
            run_id=run_id,
            from_state=before,
            to_state=after,
            user_id=user.id if user else None,
            note=note,
        )
    )


def load_run(session: Session, business_date: date) -> Run:
    row = _live(session, business_date)
    if row is None:
        raise SettlementNotFound(f"{business_date.isoformat()} has not been settled")
    return _run(session, row)


def _lines(session: Session, run_id: int) -> list[Line]:
    return [
        Line(**{k: v for k, v in r._asdict().items() if k not in ("run_id", "net_fen")})
        for r in session.execute(
            select(settlement_lines)
            .where(settlement_lines.c.run_id == run_id)
            .order_by(settlement_lines.c.partner_id)
        )
    ]


def _run(session: Session, row: Any) -> Run:
    clearing = 0
    if row.entry_id is not None:
        clearing = sum(
            p.amount for p in ledger.entry_postings(session, row.entry_id) if p.address == CLEARING
        )
    return Run(
        row.id,
        row.business_date,
        row.attempt,
        row.cutoff,
        row.state,
        row.bank_reference,
        row.entries,
        _lines(session, row.id),
        clearing,
    )


def _first_open_date(session: Session) -> date | None:
    """The day after the last live run's; without one, the day of the oldest entry awaiting
    settlement."""
    last = session.execute(
        select(func.max(settlement_runs.c.business_date)).where(
            settlement_runs.c.state != "rejected"
        )
    ).scalar_one()
    if last is not None:
        return last + timedelta(days=1)  # type: ignore[no-any-return]
    oldest = session.execute(select(func.min(unsettled_entries.c.recorded_at))).scalar_one()
    return None if oldest is None else business_date_of(oldest)


def _settling_range(session: Session) -> dict[str, int | None]:
    first, last = session.execute(text("SELECT min(entry_id), max(entry_id) FROM settling")).one()
    return {"first": first, "last": last}


def _compute(session: Session, business_date: date, floor: datetime | None) -> Run:
    """Settle `business_date`: its entries are those awaiting settlement recorded before its
    cut-off (and at or after `floor`, the cut-off of an earlier date whose run failed, whose
    entries wait for it)."""
    cut = cutoff(business_date)
    attempt = (
        1
        + session.execute(
            select(func.count()).where(settlement_runs.c.business_date == business_date)
        ).scalar_one()
    )
    run_id = session.execute(
        settlement_runs.insert()
        .values(business_date=business_date, attempt=attempt, cutoff=cut, state="computed")
        .returning(settlement_runs.c.id)
    ).scalar_one()
    params: dict[str, Any] = {"run": run_id, "cutoff": cut, "floor": floor}
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
    lines = _lines(session, run_id)
    entry_id = _post(session, business_date, attempt, lines, restored)
    session.execute(
        update(settlement_runs)
        .where(settlement_runs.c.id == run_id)
        .values(entry_id=entry_id, entries=entries)
    )
    _event(session, run_id, None, "computed", None, f"{entries} entries")
    run = _run(
        session,
        session.execute(select(settlement_runs).where(settlement_runs.c.id == run_id)).one(),
    )
    self_check(session, run)
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
        legs += [
            ledger.Posting(exposure_account(partner_id), -value, "CNY"),
            ledger.Posting(headroom_account(partner_id), value, "CNY"),
        ]
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
        log.error(
            "settlement self-check of %s failed: %s",
            run.business_date.isoformat(),
            "; ".join(problems),
        )
        raise SelfCheckFailed("; ".join(problems))


# --- failed runs, back-off, and the loop over open dates ---------------------------------------


@dataclass(frozen=True)
class FailedDate:
    """A date whose run failed and has not been computed since: its attempt, how many tries of
    it failed, the last one's error, and when the job tries again."""

    business_date: date
    attempt: int
    tries: int
    error: str
    failed_at: datetime
    retry_at: datetime
    state: str = "failed"


@dataclass
class Settled:
    """What one call settled, in order, and the dates whose run failed in it, with the error."""

    runs: list[Run] = field(default_factory=list)
    errors: list[tuple[date, Exception]] = field(default_factory=list)


def describe(error: BaseException) -> str:
    """An error in one line of at most ERROR_LENGTH characters: the driver's own for a database
    error (SQLAlchemy's would add the statement and its parameters)."""
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    message = " ".join(f"{type(cause).__name__}: {cause}".split())
    return message if len(message) <= ERROR_LENGTH else message[: ERROR_LENGTH - 1] + "…"


def backoff(tries: int) -> timedelta:
    """How long the job waits after the `tries`-th failed try of a date."""
    return min(BACKOFF_BASE * (1 << min(max(tries - 1, 0), 16)), BACKOFF_MAX)


# A failure is current while no run of its attempt or a later one has been computed.
_current_failure = ~exists().where(
    settlement_runs.c.business_date == settlement_failures.c.business_date,
    settlement_runs.c.attempt >= settlement_failures.c.attempt,
)


def failed_dates(
    session: Session, limit: int | None = None, before: date | None = None
) -> list[FailedDate]:
    """The dates whose run failed and has not been computed since, newest first; only those
    before the date `before`, if given."""
    last = func.max(settlement_failures.c.id)
    query = (
        select(
            settlement_failures.c.business_date,
            func.max(settlement_failures.c.attempt).label("attempt"),
            func.count().label("tries"),
            last.label("last_id"),
        )
        .where(_current_failure)
        .group_by(settlement_failures.c.business_date)
        .order_by(settlement_failures.c.business_date.desc())
    )
    if before is not None:
        query = query.where(settlement_failures.c.business_date < before)
    if limit is not None:
        query = query.limit(limit)
    summary = query.subquery()
    rows = session.execute(
        select(summary, settlement_failures.c.error, settlement_failures.c.failed_at)
        .add_columns(settlement_failures.c.retry_at)
        .join(settlement_failures, settlement_failures.c.id == summary.c.last_id)
        .order_by(summary.c.business_date.desc())
    ).all()
    return [
        FailedDate(r.business_date, r.attempt, r.tries, r.error, r.failed_at, r.retry_at)
        for r in rows
    ]


def _record_failure(
    sessions: sessionmaker[Session], business_date: date, error: Exception
) -> FailedDate:
    """Keep a failed try of `business_date` (its run's work is rolled back) and log it."""
    with sessions() as session, session.begin():
        _lock(session)
        attempt = (
            1
            + session.execute(
                select(func.count()).where(settlement_runs.c.business_date == business_date)
            ).scalar_one()
        )
        tries = (
            1
            + session.execute(
                select(func.count())
                .select_from(settlement_failures)
                .where(settlement_failures.c.business_date == business_date, _current_failure)
            ).scalar_one()
        )
        now = clock.now()
        failed = FailedDate(
            business_date, attempt, tries, describe(error), now, now + backoff(tries)
        )
        session.execute(
            settlement_failures.insert().values(
                business_date=business_date,
                attempt=attempt,
                failed_at=failed.failed_at,
                retry_at=failed.retry_at,
                error=failed.error,
            )
        )
    log.error(
        "settlement of %s failed (attempt %d, try %d): %s; next try at %s",
        business_date.isoformat(),
        attempt,
        tries,
        failed.error,
        failed.retry_at.isoformat(),
        exc_info=error,
    )
    return failed


def _next_date(
    session: Session,
    business_date: date,
    held: dict[date, FailedDate],
    tried: set[date],
    now: datetime | None,
) -> date | None:
    """The next date to compute on the way to `business_date`, or None when there is none: a
    failed date that is due again (any, when `now` is None), or else the first open date that
    has not failed, up to `business_date`."""
    due = [
        day
        for day, failed in held.items()
        if day <= business_date and day not in tried and (now is None or failed.retry_at <= now)
    ]
    fresh: date | None = None
    if _live(session, business_date) is None:
        first = _first_open_date(session)
        day = business_date if first is None or first > business_date else first
        while day <= business_date and day in held:
            day += timedelta(days=1)
        fresh = day if day <= business_date else None
    candidates = [*due, *([fresh] if fresh is not None else [])]
    return min(candidates) if candidates else None


def settle_through(
    sessions: sessionmaker[Session], business_date: date, *, patient: bool = False
) -> Settled:
    """Settle `business_date` after any earlier open dates, in order, each in a transaction of
    its own; a date already settled is returned as it is. A date whose run fails is recorded
    (`failed_dates`) and logged, and the dates after it are settled without its entries. Dates
    that failed before are tried again first: all of them (a person asked), or when `patient`
    (the job) only those whose back-off has passed by the clock."""
    done = Settled()
    tried: set[date] = set()
    while True:
        target: date | None = None
        try:
            with sessions() as session, session.begin():
                _lock(session)
                held = {f.business_date: f for f in failed_dates(session)}
                target = _next_date(
                    session, business_date, held, tried, clock.now() if patient else None
                )
                if target is None:
                    existing = _live(session, business_date)
                    if existing is not None and all(r.id != existing.id for r in done.runs):
                        done.runs.append(_run(session, existing))
                    return done
                tried.add(target)
                earlier = [day for day in held if day < target]
                floor = cutoff(max(earlier)) if earlier else None
                run = _compute(session, target, floor)
        except Exception as error:
            if target is None:
                raise
            _record_failure(sessions, target, error)
            done.errors.append((target, error))
            continue
        done.runs.append(run)
        if target == business_date:
            return done


def settle(sessions: sessionmaker[Session], business_date: date) -> list[Run]:
    """Settle `business_date`, after any earlier open dates, in order (see `settle_through`);
    return the runs. A date already settled is returned as it is. When a date's run failed,
    raises its error once every date has been tried."""
    done = settle_through(sessions, business_date)
    if done.errors:
        raise done.errors[0][1]
    return done.runs


def _lock_run(session: Session, business_date: date, allowed: tuple[str, ...]) -> Any:
    """The date's live run, locked, provided it is in one of the `allowed` states."""
    row = session.execute(
        select(settlement_runs)
        .where(
            settlement_runs.c.business_date == business_date,
            settlement_runs.c.state != "rejected",
        )
        .with_for_update()
    ).first()
    if row is None:
        raise SettlementNotFound(f"{business_date.isoformat()} has not been settled")
    if row.state not in allowed:
        raise WrongState(f"the settlement of {business_date.isoformat()} is {row.state}")
    return row


def _set_state(
    session: Session, row: Any, after: str, user: User | None, note: str, **values: Any
) -> None:
    session.execute(
        update(settlement_runs).where(settlement_runs.c.id == row.id).values(state=after, **values)
    )
    _event(session, row.id, row.state, after, user, note)


def _transition(
    session: Session,
    business_date: date,
    allowed: tuple[str, ...],
    after: str,
    user: User | None,
    note: str,
    **values: Any,
) -> Any:
    row = _lock_run(session, business_date, allowed)
    _set_state(session, row, after, user, note, **values)
    return row


def open_breaks(session: Session, business_date: date) -> int:
    count = session.execute(
        select(func.coalesce(func.sum(reconciliations.c.break_count), 0)).where(
            reconciliations.c.business_date == business_date,
            reconciliations.c.resolved_at.is_(None),
        )
    ).scalar_one()
    return int(count)


def approve(session: Session, business_date: date, user: User) -> tuple[Run, list[str]]:
    """Record the user's approval; the second approval by another person approves the run.
    Returns the run and warnings (open reconciliation breaks)."""
    require_role(user, "finance", "approver")
    row = _lock_run(session, business_date, ("computed",))
    done = (
        session.execute(
            select(settlement_approvals.c.user_id).where(settlement_approvals.c.run_id == row.id)
        )
        .scalars()
        .all()
    )
    if user.id in done:
        raise FourEyes(f"{user.id} has already approved; another person must approve")
    session.execute(settlement_approvals.insert().values(run_id=row.id, user_id=user.id))
    warnings = []
    breaks = open_breaks(session, business_date)
    if breaks:
        warnings.append(f"{breaks} reconciliation breaks are open for this date")
    if len(done) + 1 >= APPROVERS_NEEDED:
        _set_state(session, row, "approved", user, "second approval")
    else:
        _event(session, row.id, "computed", "computed", user, "first approval")
    return load_run(session, business_date), warnings


def reject(session: Session, business_date: date, user: User, reason: str) -> Run:
    """Reject a computed or approved run: its payables are reversed and its entries become
    unsettled again, to be computed anew. The issuance limit it freed stays freed (the partner
    may already have used it); the next run does not free it twice."""
    require_role(user, "finance", "approver")
    row = _transition(session, business_date, ("computed", "approved"), "rejected", user, reason)
    reversal = [
        ledger.Posting(p.address, -p.amount, p.asset)
        for p in (ledger.entry_postings(session, row.entry_id) if row.entry_id else [])
        if p.address == CLEARING or p.address.endswith(":payable")
    ]
    if reversal:
        ledger.post(
            session,
            ledger.Entry(
                kind="settlement_reversal",
                origin="job:settlement",
                idempotency_key=f"reject:{row.id}",
                postings=reversal,
                occurred_at=cutoff(business_date),
                metadata={"business_date": business_date.isoformat(), "reason": reason},
                reverses=row.entry_id,
            ),
        )
    # Its entries await settlement again, as they were recorded, their issue value freed.
    session.execute(
        text(
            "INSERT INTO unsettled_entries (entry_id, recorded_at, freed)"
            " SELECT e.id, e.recorded_at, true FROM settlement_items AS i"
            " JOIN journal_entries AS e ON e.id = i.entry_id WHERE i.run_id = :run"
        ),
        {"run": row.id},
    )
    rejected = session.execute(select(settlement_runs).where(settlement_runs.c.id == row.id)).one()
    return _run(session, rejected)


def mark_paid(session: Session, business_date: date, user: User, bank_reference: str) -> Run:
    """Record that the approved run's money moved: each partner's payable is cleared against
    the coalition's bank account."""
    require_role(user, "finance", "approver")
    if not bank_reference.strip():
        raise WrongState("a bank reference is required")
    row = _transition(
        session,
        business_date,
        ("approved",),
        "paid",
        user,
        bank_reference,
        bank_reference=bank_reference.strip(),
    )
    run = load_run(session, business_date)
    legs: list[ledger.Posting] = []
    for line in run.lines:
        payable = str(ledger.Address.partner(line.partner_id, "payable"))
        legs += [
            ledger.Posting(payable, -line.net_fen, "CNY"),
            ledger.Posting(BANK, line.net_fen, "CNY"),
        ]
    legs = [leg for leg in legs if leg.amount]
    if legs:
        ledger.post(
            session,
            ledger.Entry(
                kind="settlement_payment",
                origin="job:settlement",
                idempotency_key=f"paid:{row.id}",
                postings=legs,
                occurred_at=clock.now().astimezone(get_settings().zone),
                metadata={"business_date": business_date.isoformat(), "bank": bank_reference},
            ),
        )
    return run


def history(session: Session, business_date: date) -> list[dict[str, Any]]:
    rows = session.execute(
        select(settlement_events, settlement_runs.c.attempt)
        .join(settlement_runs, settlement_runs.c.id == settlement_events.c.run_id)
        .where(settlement_runs.c.business_date == business_date)
        .order_by(settlement_events.c.id)
    )
    return [
        {
            "attempt": r.attempt,
            "from": r.from_state,
            "to": r.to_state,
            "user": r.user_id,
            "note": r.note,
            "at": r.at,
        }
        for r in rows
    ]


def approvals(session: Session, business_date: date) -> list[dict[str, Any]]:
    rows = session.execute(
        select(settlement_approvals.c.user_id, settlement_approvals.c.at)
        .join(settlement_runs, settlement_runs.c.id == settlement_approvals.c.run_id)
        .where(
            settlement_runs.c.business_date == business_date,
            settlement_runs.c.state != "rejected",
        )
        .order_by(settlement_approvals.c.at)
    )
    return [{"user": r.user_id, "at": r.at} for r in rows]


def list_runs(session: Session, limit: int = 60, before: date | None = None) -> list[Run]:
    """The live runs, newest date first; only those before the date `before`, if given."""
    query = select(settlement_runs).where(settlement_runs.c.state != "rejected")
    if before is not None:
        query = query.where(settlement_runs.c.business_date < before)
    rows = session.execute(
        query.order_by(settlement_runs.c.business_date.desc()).limit(limit)
    ).all()
    return [_run(session, row) for row in rows]


def list_dates(
    session: Session, limit: int = 60, before: date | None = None
) -> list[Run | FailedDate]:
    """The live runs and the dates whose run failed (and has not been computed since), newest
    date first; only those before the date `before`, if given."""
    dated: list[Run | FailedDate] = [
        *list_runs(session, limit, before),
        *failed_dates(session, limit, before),
    ]
    return sorted(dated, key=lambda item: item.business_date, reverse=True)[:limit]


def settle_due(sessions: sessionmaker[Session]) -> Settled:
    """Settle yesterday (coalition time, by the clock) and any open date before it, trying dates
    whose run failed again once their back-off has passed; the server runs this every few
    minutes, so a date is settled soon after its cut-off. Safe to repeat. A failed date is
    recorded and logged, never raised: the dates after it are settled all the same."""
    yesterday = clock.today(get_settings().zone) - timedelta(days=1)
    return settle_through(sessions, yesterday, patient=True)
