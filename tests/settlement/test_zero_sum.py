"""Zero-sum on randomised days: a random day's traffic at several partners (accruals at random
issue prices, captures and partial captures at random redemption values, partial refunds,
redemption refunds, voids, a partner-funded referral bonus, exchanges in and out of a partner
programme with a fee) on a throwaway database of its own, settled; every line, the coalition's
revenue and the posted CNY entry are checked against a model written independently of the code
and against the entries' own recorded values."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import ledger
from clearinghouse.points import lots, referrals
from clearinghouse.rules.policy import publish, rule_set_at
from partners.directory import exposure_account, headroom_account
from settlement import netting
from settlement.runs import CLEARING
from settlement.tables import settlement_items, settlement_runs
from tests.builders.databases import own_world
from tests.builders.dates import business_today
from tests.builders.ledger import balance
from tests.builders.partners import DEFAULT_LIMIT_FEN, make_partner, make_programme
from tests.builders.points import (
    accrue,
    available,
    exchange_points,
    hold_and_capture,
    hold_and_void,
    new_member,
    refund_purchase,
    refund_redemption,
)
from tests.builders.settlement import postings_by_address, settle_after_cutoff, settleable_entries
from tests.conftest import Databases

REFERRAL_BONUS = 500
CATEGORY_NAMES = (
    "issued",
    "reversed",
    "redeemed",
    "redemption_refunded",
    "exchange_in",
    "exchange_out",
    "catalogue",
    "catalogue_returned",
)
SIGN = {
    "issued": 1,
    "reversed": -1,
    "redeemed": -1,
    "redemption_refunded": 1,
    "exchange_in": 1,
    "exchange_out": -1,
    "catalogue": -1,
    "catalogue_returned": 1,
}


def half_even(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def floor(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


@dataclass(frozen=True)
class Rates:
    issue_price: Decimal
    redemption_value: Decimal


@dataclass
class Purchase:
    partner_id: str
    txn_id: str
    amount_fen: int
    points: int
    value_fen: int
    refunded_fen: int = 0
    refunded_points: int = 0
    refunded_value: int = 0


@dataclass
class Capture:
    partner_id: str
    hold_id: str
    captured: int
    refunded: int = 0


@dataclass
class Model:
    """What each partner's line must hold, from the operations and the rates alone."""

    rates: dict[str, Rates]
    points: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    fen: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    def add(self, partner_id: str, category: str, points: int, fen: int) -> None:
        self.points[(partner_id, category)] += points
        self.fen[(partner_id, category)] += fen

    def partners(self) -> set[str]:
        return {partner for partner, _ in self.fen} | {partner for partner, _ in self.points}

    def net(self, partner_id: str) -> int:
        return sum(SIGN[c] * self.fen.get((partner_id, c), 0) for c in CATEGORY_NAMES)


decimal_rate = st.decimals(min_value=Decimal("0.3"), max_value=Decimal("1.6"), places=3)
issue_price = st.decimals(min_value=Decimal("0.5"), max_value=Decimal("2.5"), places=3)
operation = st.tuples(
    st.sampled_from(
        [
            "accrue",
            "accrue",
            "refund",
            "small_refund",
            "crumb_refund",
            "redeem",
            "redemption_refund",
            "exchange_in",
            "exchange_out",
            "void",
            "referral",
        ]
    ),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)


@dataclass(frozen=True)
class Day:
    merchant_rates: list[tuple[Decimal, Decimal, int]]
    programme_rates: tuple[Decimal, Decimal, Decimal]
    fee_percent: Decimal
    operations: list[tuple[str, int, int, int]]


days = st.builds(
    Day,
    merchant_rates=st.lists(
        st.tuples(issue_price, decimal_rate, st.integers(1, 3)), min_size=2, max_size=3
    ),
    programme_rates=st.tuples(
        st.decimals(min_value=Decimal("0.2"), max_value=Decimal("4"), places=2),
        issue_price,
        decimal_rate,
    ),
    fee_percent=st.sampled_from([Decimal(0), Decimal("1.5"), Decimal(5)]),
    operations=st.lists(operation, min_size=8, max_size=20),
)


def _set_policy(sessions: sessionmaker[Session], funder: str, fee_percent: Decimal) -> None:
    """Referral bonuses funded by `funder` (settled like an accrual); an exchange fee."""
    with sessions() as session, session.begin():
        current = rule_set_at(session, session.execute(select(func.now())).scalar_one())
        policy = current.policy.model_dump(mode="json")
        policy["referral_funder"] = funder
        policy["referral_bonus_points"] = REFERRAL_BONUS
        policy["default_exchange"] = {**policy["default_exchange"], "fee_percent": str(fee_percent)}
        publish(session, current.earning.model_dump(mode="json"), policy)


def _play(sessions: sessionmaker[Session], day: Day) -> Model:
    merchants: list[str] = []
    model = Model(rates={})
    for issue_price, redemption_value, earn_rate in day.merchant_rates:
        partner = make_partner(
            sessions,
            earn_rate=str(earn_rate),
            issue_price=str(issue_price),
            redemption_value=str(redemption_value),
        )
        merchants.append(partner.id)
        model.rates[partner.id] = Rates(issue_price, redemption_value)
    exchange_rate, prog_issue, prog_redemption = day.programme_rates
    prog = make_programme(
        sessions,
        exchange_rate=exchange_rate,
        issue_price=prog_issue,
        redemption_value=prog_redemption,
    ).id
    model.rates[prog] = Rates(prog_issue, prog_redemption)
    _set_policy(sessions, merchants[0], day.fee_percent)
    everyone = [*merchants, prog]
    members = [new_member(sessions, everyone) for _ in range(3)]
    purchases: list[Purchase] = []
    captures: list[Capture] = []

    def buy(partner_id: str, member_id: str, amount_fen: int) -> None:
        result = accrue(sessions, partner_id, member_id, amount_fen)
        value = half_even(model.rates[partner_id].issue_price * result.points)
        assert result.issue_value_fen == value
        if result.points:
            model.add(partner_id, "issued", result.points, value)
        purchases.append(
            Purchase(partner_id, result.partner_txn_id, amount_fen, result.points, value)
        )

    for kind, a, b, c in day.operations:
        merchant = merchants[a % len(merchants)]
        member = members[b % len(members)]
        if kind == "accrue":
            buy(merchant, member, 1_000 + c % 150_000)
        elif kind in ("refund", "small_refund", "crumb_refund"):
            open_purchases = [p for p in purchases if p.refunded_fen < p.amount_fen]
            if not open_purchases:
                continue
            p = open_purchases[a % len(open_purchases)]
            amount = 1 + c % (p.amount_fen - p.refunded_fen)
            if kind == "small_refund":  # about one point's worth of the purchase
                amount = min(amount, 1 + c % max(1, 2 * p.amount_fen // max(p.points, 1)))
            elif kind == "crumb_refund" and p.value_fen > p.points > 0:
                # Worth at least a fen of issue value but less than a whole point.
                low = -(-p.amount_fen // p.value_fen)
                window = max(1, -(-p.amount_fen // p.points) - low)
                amount = min(amount, low + c % window)
            after = p.refunded_fen + amount
            points = p.points * after // p.amount_fen - p.refunded_points
            done = refund_purchase(sessions, p.partner_id, p.txn_id, amount)
            assert done.points == points
            # The value taken back never goes backwards nor beyond the purchase's, and a full
            # refund takes back all of it.
            assert done.value_fen >= 0
            assert p.refunded_value + done.value_fen <= p.value_fen
            if after == p.amount_fen:
                assert p.refunded_value + done.value_fen == p.value_fen
            p.refunded_fen = after
            p.refunded_points += points
            p.refunded_value += done.value_fen
            # Every fen of issue value a refund answers it took back is owed back to the
            # partner, even when the refund claws back no whole point.
            if done.points or done.value_fen:
                model.add(p.partner_id, "reversed", done.points, done.value_fen)
        elif kind in ("redeem", "void"):
            balance = available(sessions, member)
            if balance < 100:
                continue
            points = 100 + c % (balance - 99)
            if kind == "void":
                hold_and_void(sessions, merchant, member, points)
                continue
            captured = 1 + (c // 7) % points
            hold = hold_and_capture(sessions, merchant, member, points, captured)
            value = half_even(model.rates[merchant].redemption_value * captured)
            assert (hold.captured, hold.value_fen) == (captured, value)
            model.add(merchant, "redeemed", captured, value)
            captures.append(Capture(merchant, hold.id, captured))
        elif kind == "redemption_refund":
            refundable = [x for x in captures if x.refunded < x.captured]
            if not refundable:
                continue
            x = refundable[a % len(refundable)]
            points = 1 + c % (x.captured - x.refunded)
            rate = model.rates[x.partner_id].redemption_value
            value = half_even(rate * (x.refunded + points)) - half_even(rate * x.refunded)
            refund_redemption(sessions, x.partner_id, x.hold_id, points)
            x.refunded += points
            model.add(x.partner_id, "redemption_refunded", points, value)
        elif kind == "exchange_in":
            programme_points = 100 + c % 20_000
            gross = floor(programme_points * exchange_rate)
            fee = half_even(gross * day.fee_percent / 100)
            if gross - fee <= 0:
                continue
            done_in = exchange_points(sessions, prog, member, "in", programme_points)
            assert (done_in.coalition_points, done_in.fee_points) == (gross - fee, fee)
            model.add(prog, "exchange_in", gross, half_even(prog_issue * gross))
        elif kind == "exchange_out":
            balance = available(sessions, member)
            if balance < 100:
                continue
            points = 100 + c % (balance - 99)
            fee = half_even(points * day.fee_percent / 100)
            payout = floor((points - fee) / exchange_rate)
            if payout <= 0:
                continue
            used = math.ceil(payout * exchange_rate)
            done_out = exchange_points(sessions, prog, member, "out", points)
            assert (done_out.programme_points, done_out.fee_points) == (payout, fee)
            assert done_out.rounding_points == points - fee - used
            model.add(prog, "exchange_out", used, half_even(prog_redemption * used))
        elif kind == "referral":
            inviter = member
            invitee = new_member(sessions, everyone)
            with sessions() as session, session.begin():
                referrals.register_referral(session, merchant, inviter, invitee)
            members.append(invitee)
            before = len(purchases)
            buy(merchant, invitee, 1_000 + c % 50_000)
            if purchases[before].points:
                bonus_value = half_even(model.rates[merchants[0]].issue_price * REFERRAL_BONUS)
                model.add(merchants[0], "issued", REFERRAL_BONUS, bonus_value)
    return model


def _recorded_values(entries: list[Any]) -> dict[tuple[str, str], int]:
    """Per (partner, category): the sum of value_fen the entries recorded, straight from
    journal_entries.metadata."""
    values: dict[tuple[str, str], int] = defaultdict(int)
    for entry in entries:
        metadata = entry.metadata
        if "partner_id" not in metadata or "value_fen" not in metadata:
            continue
        category = netting.CATEGORIES[entry.kind][0]
        values[(metadata["partner_id"], category)] += int(metadata["value_fen"])
    return values


def _check(sessions: sessionmaker[Session], model: Model) -> None:
    today = business_today()
    runs = settle_after_cutoff(sessions, today)
    assert [r.business_date for r in runs] == [today]
    run = runs[0]
    assert (run.state, run.attempt) == ("computed", 1)

    # The lines hold exactly what the model says, partner by partner, category by category.
    lines = {line.partner_id: line for line in run.lines}
    assert set(lines) == model.partners()
    for partner_id, line in lines.items():
        for category in CATEGORY_NAMES:
            assert getattr(line, f"{category}_points") == model.points.get(
                (partner_id, category), 0
            ), (partner_id, category)
            assert getattr(line, f"{category}_fen") == model.fen.get((partner_id, category), 0), (
                partner_id,
                category,
            )
        assert line.net_fen == (
            line.issued_fen
            - line.reversed_fen
            - line.redeemed_fen
            + line.redemption_refunded_fen
            + line.exchange_in_fen
            - line.exchange_out_fen
            - line.catalogue_fen
            + line.catalogue_returned_fen
        )
        assert line.net_fen == model.net(partner_id)

    # Each line's fen is the sum of the value_fen its entries recorded.
    entries = settleable_entries(sessions)
    recorded = _recorded_values(entries)
    for partner_id, line in lines.items():
        for category in CATEGORY_NAMES:
            assert getattr(line, f"{category}_fen") == recorded.get((partner_id, category), 0)
    with sessions() as session:
        covered = set(
            session.execute(
                select(settlement_items.c.entry_id).where(settlement_items.c.run_id == run.id)
            ).scalars()
        )
    assert covered == {
        e.id for e in entries if "value_fen" in e.metadata and "partner_id" in e.metadata
    }
    assert run.entries == len(covered)

    # Partners' nets and the coalition's revenue cancel, to the fen.
    nets = sum(line.net_fen for line in run.lines)
    revenue = sum(
        netting.CATEGORIES[e.kind][1] * int(e.metadata["value_fen"])
        for e in entries
        if e.id in covered
    )
    assert nets == revenue == run.coalition_fen
    assert run.zero_sum

    # The posted CNY entry balances, its payable legs are the nets, the clearing account takes
    # the other side and every partner's settled exposure is back in its headroom.
    with sessions() as session:
        entry_id = session.execute(
            select(settlement_runs.c.entry_id).where(settlement_runs.c.id == run.id)
        ).scalar_one()
        assert ledger.check_consistency(session) == []
        assert lots.check_lots(session) == []
    if entry_id is None:
        assert not any(line.net_fen for line in run.lines)
    else:
        legs = postings_by_address(sessions, entry_id)
        with sessions() as session:
            assets = {p.asset for p in ledger.entry_postings(session, entry_id)}
        assert assets == {"CNY"}
        assert sum(sum(amounts) for amounts in legs.values()) == 0
        for line in run.lines:
            payable = legs.get(f"partner:{line.partner_id}:payable", [])
            assert sum(payable) == line.net_fen
            assert len(payable) == (1 if line.net_fen else 0)
        assert sum(legs.get(CLEARING, [])) == -nets
    for partner_id in model.partners():
        assert balance(sessions, exposure_account(partner_id)) == 0
        assert balance(sessions, headroom_account(partner_id)) == DEFAULT_LIMIT_FEN


@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    # Every example costs a database of its own: report the first failure as found.
    phases=[Phase.explicit, Phase.generate],
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(day=days)
def test_a_random_day_settles_to_zero_to_the_fen(databases: Databases, day: Day) -> None:
    with own_world(databases) as world:
        model = _play(world.sessions, day)
        _check(world.sessions, model)


def test_a_purchase_refunded_in_full_in_pieces_settles_to_a_net_of_zero(
    databases: Databases,
) -> None:
    """A refund of less than one whole point's worth of the purchase, then the rest: the pieces
    of a full refund add up to the whole purchase, in the refund answers and in settlement, so
    the partner owes nothing for it (the value returned follows the points clawed back, so a
    refund that claws back no whole point returns no fen either)."""
    with own_world(databases) as world:
        shop = world.merchant(issue_price="1.5")
        member_id = new_member(world.sessions, [shop.id])
        bought = accrue(world.sessions, shop.id, member_id, 100_000)
        assert bought.issue_value_fen > bought.points > 0
        crumb = -(-100_000 // bought.issue_value_fen)  # a fen of value, less than a point
        first = refund_purchase(world.sessions, shop.id, bought.partner_txn_id, crumb)
        assert first.points == 0
        rest = refund_purchase(world.sessions, shop.id, bought.partner_txn_id, 100_000 - crumb)
        assert first.value_fen + rest.value_fen == bought.issue_value_fen
        assert first.points + rest.points == bought.points

        [run] = settle_after_cutoff(world.sessions, business_today())
        [line] = run.lines
        assert (line.issued_points, line.reversed_points) == (bought.points, bought.points)
        assert line.reversed_fen == line.issued_fen == bought.issue_value_fen
        assert line.net_fen == 0
