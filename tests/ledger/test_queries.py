"""Reading the books: balances as of past instants, the trial balance, statements with cursor
pagination, and the lookups behind them."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.database import make_engine, session_factory
from tests.builders import ledger as b
from tests.cli_fixtures import run_cli
from tests.conftest import Databases

MICROSECOND = timedelta(microseconds=1)


def cursor_of(raw: str | bytes) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_balance_as_of_past_instants(session: Session) -> None:
    with session.begin():
        member, partner = b.member_account(session), b.partner_account(session)
    with session.begin():
        first = b.post_transfer(session, partner, member, 5)
    with session.begin():
        second = b.post_transfer(session, partner, member, 7)
    with session.begin():
        third = b.post_transfer(session, member, partner, 2, kind="redemption")
    t1, t2, t3 = first.recorded_at, second.recorded_at, third.recorded_at
    assert t1 < t2 < t3

    with session.begin():

        def at(address: str, when: datetime | None) -> int:
            return ledger.balance(session, address, as_of=when)

        assert at(member, t1 - MICROSECOND) == 0
        assert at(member, t1) == 5
        assert at(member, t1 + (t2 - t1) / 2) == 5
        assert at(member, t2 - MICROSECOND) == 5
        assert at(member, t2) == 12
        assert at(member, t3) == 10
        assert at(member, b.now()) == 10
        assert at(member, None) == 10
        assert [at(partner, t) for t in (t1 - MICROSECOND, t1, t2, t3)] == [0, -5, -12, -10]
        assert at(partner, None) == -10


@pytest.fixture
def fresh_books(databases: Databases) -> Iterator[sessionmaker[Session]]:
    """Sessions on a migrated database of this test's own, so that global figures are exact."""
    engine = make_engine(databases.create(), pool_size=2)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()


def test_trial_balance_per_asset_sums_to_zero(fresh_books: sessionmaker[Session]) -> None:
    with fresh_books() as session:
        with session.begin():
            # Accounts the migrations open hold nothing yet.
            assert all(
                (line.accounts, line.debit, line.credit) == (0, 0, 0)
                for line in ledger.trial_balance(session)
            )
            partner, shop = b.partner_account(session), b.store_account(session)
            alice, bob = b.member_account(session), b.member_account(session)
            payable, till = b.cny_account(session), b.store_account(session, "CNY")
        with session.begin():
            first = b.post_transfer(session, partner, alice, 100)
        with session.begin():
            b.post_transfer(session, partner, bob, 50)
            b.post_transfer(session, alice, shop, 30, kind="redemption")
        with session.begin():
            last = ledger.post(session, b.entry((payable, -500, "CNY"), (till, 500, "CNY")))

        with session.begin():
            now = ledger.trial_balance(session)
            assert now == [
                ledger.TrialBalanceLine("CNY", accounts=2, debit=500, credit=500),
                ledger.TrialBalanceLine("PTS", accounts=4, debit=150, credit=150),
            ]
            assert all(line.net == 0 for line in now)
            assert ledger.trial_balance(session, as_of=last.recorded_at) == now
            assert ledger.trial_balance(session, as_of=first.recorded_at) == [
                ledger.TrialBalanceLine("PTS", accounts=2, debit=100, credit=100)
            ]
            assert ledger.trial_balance(session, as_of=first.recorded_at - MICROSECOND) == []
            assert ledger.check_consistency(session) == []


def test_trial_balance_account_by_account_and_its_command(databases: Databases) -> None:
    url = databases.create()
    engine = make_engine(url, pool_size=1)
    try:
        with session_factory(engine)() as session:
            with session.begin():
                partner, alice = b.partner_account(session), b.member_account(session)
                bob, shop = b.member_account(session), b.store_account(session)
            with session.begin():
                first = b.post_transfer(session, partner, alice, 100)
            with session.begin():
                b.post_transfer(session, partner, bob, 50)
                b.post_transfer(session, bob, shop, 50, kind="redemption")  # bob back to 0
            with session.begin():
                lines = ledger.trial_balance_accounts(session)
                at_first = ledger.trial_balance_accounts(session, first.recorded_at)
                paged = ledger.trial_balance_accounts(session, limit=1) + (
                    ledger.trial_balance_accounts(session, after=alice, limit=5)
                )
    finally:
        engine.dispose()
    expected = sorted([(alice, 100, 0), (partner, 0, 150), (shop, 50, 0)])
    assert [(line.address, line.debit, line.credit) for line in lines] == expected
    assert [(line.address, line.balance) for line in at_first] == sorted(
        [(alice, 100), (partner, -100)]
    )
    assert paged[0].address == expected[0][0] == alice  # members' addresses sort first
    assert paged == lines

    shown = run_cli("ledger", "trial-balance", "--accounts", env={"DATABASE_URL": url})
    assert shown.exit_code == 0, shown.stderr
    rows = [line.split() for line in shown.stdout.splitlines()]
    assert [row for row in rows if row and row[0] in (alice, partner, shop)] == [
        [address, "PTS", f"{debit:,}", f"{credit:,}"] for address, debit, credit in expected
    ]
    assert bob not in shown.stdout  # a zero balance is no line
    assert ["PTS", "3", "150", "150", "0"] in rows  # the totals follow

    at = run_cli(
        "ledger",
        "trial-balance",
        "--accounts",
        "--as-of",
        first.recorded_at.isoformat(),
        env={"DATABASE_URL": url},
    )
    assert at.exit_code == 0, at.stderr
    assert shop not in at.stdout
    naive = first.recorded_at.replace(tzinfo=None).isoformat()
    for command in (["trial-balance"], ["balance", alice]):
        refused = run_cli("ledger", *command, "--as-of", naive, env={"DATABASE_URL": url})
        assert refused.exit_code == 1
        assert "--as-of needs a time zone offset" in refused.stderr


@pytest.fixture
def busy_member(session: Session) -> tuple[str, list[int]]:
    """A member with 25 postings: accruals, with every fifth entry a redemption of 3 points.
    Returns the member's address and the amounts, oldest first."""
    with session.begin():
        member, partner = b.member_account(session), b.partner_account(session)
    amounts = []
    for i in range(1, 26):
        with session.begin():
            if i % 5:
                b.post_transfer(session, partner, member, i)
                amounts.append(i)
            else:
                b.post_transfer(session, member, partner, 3, kind="redemption")
                amounts.append(-3)
    return member, amounts


def test_statement_has_running_balances(
    session: Session, busy_member: tuple[str, list[int]]
) -> None:
    member, amounts = busy_member
    with session.begin():
        page = ledger.statement(session, member)
    assert (page.address, page.asset, page.opening_balance) == (member, "PTS", 0)
    assert page.next_cursor is None
    assert [line.amount for line in page.lines] == amounts
    assert [line.balance for line in page.lines] == list(itertools.accumulate(amounts))
    assert [line.kind for line in page.lines[3:5]] == ["accrual", "redemption"]
    assert page.lines == sorted(page.lines, key=lambda line: (line.recorded_at, line.posting_id))
    assert page.lines[-1].balance == sum(amounts) == ledger.balance(session, member)


def read_all(session: Session, address: str, limit: int) -> list[ledger.StatementPage]:
    pages = [ledger.statement(session, address, limit=limit)]
    while pages[-1].next_cursor is not None:
        assert len(pages) < 100, "pagination does not end"
        pages.append(ledger.statement(session, address, limit=limit, cursor=pages[-1].next_cursor))
    return pages


@pytest.mark.parametrize(("limit", "sizes"), [(10, [10, 10, 5]), (5, [5] * 5), (25, [25])])
def test_statement_pages_continue_without_gaps_or_duplicates(
    session: Session, busy_member: tuple[str, list[int]], limit: int, sizes: list[int]
) -> None:
    member, amounts = busy_member
    with session.begin():
        whole = ledger.statement(session, member).lines
        pages = read_all(session, member, limit)
    assert [len(page.lines) for page in pages] == sizes
    lines = [line for page in pages for line in page.lines]
    assert lines == whole
    assert len({line.posting_id for line in lines}) == 25
    opening = 0
    for page in pages:
        assert page.opening_balance == opening
        opening = page.lines[-1].balance


def test_statement_pages_split_one_entry_by_posting_id(session: Session) -> None:
    """Postings of one entry share their instant; the cursor tells them apart by id."""
    with session.begin():
        member, partner = b.member_account(session), b.partner_account(session)
        ledger.post(session, b.entry((partner, -6), (member, 1), (member, 2), (member, 3)))
        ledger.post(session, b.entry((partner, -9), (member, 4), (member, 5)))
    with session.begin():
        pages = read_all(session, member, limit=2)
    assert [len(page.lines) for page in pages] == [2, 2, 1]
    lines = [line for page in pages for line in page.lines]
    # Legs on one account keep no caller order among themselves; entries keep theirs.
    assert sorted(line.amount for line in lines[:3]) == [1, 2, 3]
    assert sorted(line.amount for line in lines[3:]) == [4, 5]
    assert [line.posting_id for line in lines] == sorted(line.posting_id for line in lines)
    assert [line.balance for line in lines] == list(
        itertools.accumulate(line.amount for line in lines)
    )
    assert [page.opening_balance for page in pages] == [0, lines[1].balance, lines[3].balance]
    assert lines[-1].balance == 15


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("not a cursor!", id="not-base64"),
        pytest.param("a", id="truncated-base64"),
        pytest.param(cursor_of("no separator"), id="no-separator"),
        pytest.param(cursor_of("2026-01-01T00:00:00+00:00|1|2"), id="too-many-parts"),
        pytest.param(cursor_of("yesterday|1"), id="not-a-time"),
        pytest.param(cursor_of("2026-01-01T00:00:00|1"), id="naive-time"),
        pytest.param(cursor_of("2026-01-01T00:00:00+00:00|one"), id="not-an-id"),
        pytest.param(cursor_of(b"\xff\xfe|1"), id="not-utf8"),
        pytest.param(cursor_of(f"2026-01-01T00:00:00+00:00|{2**63}"), id="id-beyond-bigint"),
    ],
)
def test_malformed_cursor_is_refused(session: Session, cursor: str) -> None:
    with session.begin():
        member = b.member_account(session)
    with pytest.raises(ledger.InvalidEntry), session.begin():
        ledger.statement(session, member, cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_statement_page_size_is_bounded(session: Session, limit: int) -> None:
    with session.begin():
        member = b.member_account(session)
    with pytest.raises(ledger.InvalidEntry), session.begin():
        ledger.statement(session, member, limit=limit)


def test_opening_an_account_again(session: Session) -> None:
    with session.begin():
        member = b.member_account(session)
        again = ledger.open_account(session, member)
        assert again == ledger.get_account(session, member)
        assert (again.asset, again.non_negative, again.shards) == ("PTS", True, 1)
    with pytest.raises(ledger.AssetMismatch), session.begin():
        ledger.open_account(session, member, "CNY")
    with pytest.raises(ledger.AssetMismatch), session.begin():
        ledger.open_accounts(
            session,
            [ledger.AccountSpec(b.cny_account(session), "CNY"), ledger.AccountSpec(member, "CNY")],
        )
    with session.begin():
        assert ledger.get_account(session, member).asset == "PTS"


def test_unknown_accounts_are_not_found(session: Session) -> None:
    ghost = str(ledger.Address.member(b.unique_id("ghost")))
    with pytest.raises(ledger.UnknownAccount), session.begin():
        ledger.get_account(session, ghost)
    with pytest.raises(ledger.UnknownAccount), session.begin():
        ledger.balance(session, ghost)
    with pytest.raises(ledger.UnknownAccount), session.begin():
        ledger.balance(session, ghost, as_of=b.now())
    with pytest.raises(ledger.UnknownAccount), session.begin():
        ledger.statement(session, ghost)
