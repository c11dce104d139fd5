"""Reward orders: a member orders a catalogue reward through a partner's front end, paying in
points earned anywhere in the coalition.

An order reserves (`place_order`) and then is confirmed (`confirm_order`), or both at once.
Reserving holds the member's points (a hold screened like any other, which only the order
closes), takes the units from the reward's stock and, for a coupon, draws its codes from the
supplier's pool. Confirming captures the points to the supplier's `redeemed` account in a
`reward_order` entry, which settles with the supplier at the order's value (unit value x
quantity): the partner whose front end took the order is neither paid nor charged. Cancelling a
reserved order, or letting its reservation expire, gives the points, the units and the codes
back. Goods are then fulfilled by their supplier: placed -> shipped or ready for pick-up ->
delivered or collected, and may come back (`returned`, or a cancellation before shipping): a
`reward_order_return` entry gives the member the points back into the lots they came from, and
the supplier owes the value back.

Every change to an order takes the order's row, then the member's lock, then the hold's (as
every member write does); a placement takes the member's lock, then the reward's row, whose
update of the stock is the one place units are counted out, so the last unit is never sold
twice. The per-member limits are counted under the member's lock."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from clearinghouse import clock, ledger
from clearinghouse.config import get_settings
from clearinghouse.database import Tx
from clearinghouse.errors import Conflict, InvalidRequest, NotFound
from clearinghouse.ids import new_id
from clearinghouse.members.service import linked_member
from clearinghouse.points import holds, lots, wallet
from clearinghouse.rewards import service
from clearinghouse.rewards.service import Reward, StockExhausted
from clearinghouse.settleable import Settleable
from partners import directory
from partners.auth import PARTNER_WIDE, KeyScope


class OrderNotFound(NotFound):
    code = "order_not_found"
    title = "Unknown reward order"


class RewardUnavailable(Conflict):
    code = "reward_unavailable"
    title = "The reward cannot be ordered"


class NotEligible(Conflict):
    code = "reward_not_eligible"
    title = "The member may not order the reward"


class LimitReached(Conflict):
    code = "order_limit_reached"
    title = "The member's limit for the reward is reached"


class OrderClosed(Conflict):
    code = "order_closed"
    title = "The order cannot change so"


NEXT_STEPS: dict[str, tuple[str, ...]] = {
    "placed": ("shipped", "ready"),
    "shipped": ("delivered", "returned"),
    "ready": ("collected", "returned"),
    "delivered": ("returned",),
    "collected": ("returned",),
    "returned": (),
}
"""A goods order's fulfilment: where each step may go next."""


@dataclass(frozen=True)
class Order:
    id: str
    reward_id: str
    supplier_id: str
    kind: str
    partner_id: str
    member_id: str
    store_id: str | None
    quantity: int
    points: int
    price_version: int
    unit_value_fen: int
    value_fen: int
    hold_id: str
    state: str
    fulfilment: str | None
    business_date: date
    created_at: datetime
    confirmed_at: datetime | None
    closed_at: datetime | None
    expires_at: datetime
    """Until when a reserved order holds its units and points."""
    codes: list[str]
    review_case_id: str | None
    """An open risk case on its points: the order is confirmed once an operator approves."""
    entry_id: int | None
    idempotency_key: str

    @property
    def receipt_reference(self) -> str | None:
        """A confirmed donation's receipt reference, for the member and the charity: the
        order's id."""
        return self.id if self.kind == "charity" and self.entry_id is not None else None


_ORDER = (
    "SELECT o.*, r.supplier_id, r.kind, h.expires_at,"
    " coalesce((SELECT array_agg(c.code ORDER BY c.id) FROM reward_codes c"
    " WHERE c.order_id = o.id), '{}') AS codes,"
    " (SELECT f.id FROM fraud_cases f WHERE f.hold_id = o.hold_id AND f.state = 'open')"
    " AS review_case_id"
    " FROM reward_orders o JOIN rewards r ON r.id = o.reward_id JOIN holds h ON h.id = o.hold_id"
)


def _order(row: Any) -> Order:
    values = row._asdict()
    return Order(**{f.name: values[f.name] for f in fields(Order)})


def get_order(db: Session | Tx, partner_id: str | None, order_id: str) -> Order:
    """The order, for the partner that took it or the reward's supplier (any, for None)."""
    row = Tx.of(db).first(
        _ORDER + " WHERE o.id = %(id)s AND (%(partner)s::text IS NULL"
        " OR o.partner_id = %(partner)s OR r.supplier_id = %(partner)s)",
        {"id": order_id, "partner": partner_id},
    )
    if row is None:
        raise OrderNotFound(f"no reward order {order_id}")
    return _order(row)


def _by_key(tx: Tx, partner_id: str, key: str) -> Order | None:
    row = tx.first(
        _ORDER + " WHERE o.partner_id = %s AND o.idempotency_key = %s", (partner_id, key)
    )
    return None if row is None else _order(row)


def _again(earlier: Order, reward_id: str, member_id: str, quantity: int) -> Order:
    """An order asked for again with the same key: the first, if it asked for the same."""
    if (earlier.reward_id, earlier.member_id, earlier.quantity) != (reward_id, member_id, quantity):
        raise Conflict(f"the key was used for order {earlier.id}, of other details")
    return earlier


def _eligible(tx: Tx, reward: Reward, member_id: str, store: directory.Store | None) -> None:
    if reward.tiers is not None:
        tier = wallet.current_tier(tx.session, member_id)
        if tier not in reward.tiers:
            raise NotEligible(f"reward {reward.id} is for {', '.join(reward.tiers)} members")
    if reward.channels is not None and (store is None or store.channel not in reward.channels):
        raise NotEligible(f"reward {reward.id} is ordered at {', '.join(reward.channels)} stores")
    if reward.cities is not None and (store is None or store.city not in reward.cities):
        raise NotEligible(f"reward {reward.id} is ordered in {', '.join(reward.cities)}")


def _within_limits(tx: Tx, reward: Reward, member_id: str, on: date, quantity: int) -> None:
    """Under the member's lock: the units the member has ordered (not given back) stay within
    the reward's limits."""
    ordered = tx.one(
        "SELECT coalesce(sum(quantity) FILTER (WHERE business_date = %s), 0) AS today,"
        " coalesce(sum(quantity), 0) AS total FROM reward_orders"
        " WHERE reward_id = %s AND member_id = %s AND state IN ('reserved', 'confirmed')",
        (on, reward.id, member_id),
    )
    daily, overall = reward.per_member_daily_limit, reward.per_member_limit
    if daily is not None and ordered.today + quantity > daily:
        raise LimitReached(f"a member orders at most {daily} of reward {reward.id} a day")
    if overall is not None and ordered.total + quantity > overall:
        raise LimitReached(f"a member orders at most {overall} of reward {reward.id}")


def place_order(
    db: Session | Tx,
    partner_id: str,
    member_id: str,
    reward_id: str,
    quantity: int,
    *,
    key: str,
    store_id: str | None = None,
    confirm: bool = False,
    scope: KeyScope = PARTNER_WIDE,
) -> Order:
    """Reserve `quantity` units of the reward for a member linked to the partner, and confirm
    the order at once with `confirm` (unless its points wait for a risk review). The same `key`
    answers the first order again."""
    tx = Tx.of(db)
    if not 1 <= quantity <= 100:
        raise InvalidRequest("order 1 to 100 units")
    earlier = _by_key(tx, partner_id, key)
    if earlier is not None:
        return _again(earlier, reward_id, member_id, quantity)
    linked_member(tx, partner_id, member_id)
    store = None if store_id is None else directory.get_store(tx, partner_id, store_id, scope)
    reward = service.get_reward(tx, reward_id)
    now = clock.now()
    if reward.status != "active" or reward.points is None:
        raise RewardUnavailable(f"reward {reward_id} is {reward.status}")
    if now < reward.valid_from or (reward.valid_until is not None and now >= reward.valid_until):
        raise RewardUnavailable(f"reward {reward_id} is not valid now")
    _eligible(tx, reward, member_id, store)
    order_id = new_id("O", 14)
    hold = holds.place_order_hold(
        tx,
        partner_id,
        member_id,
        reward.points * quantity,
        key=f"order:{key}",
        order_id=order_id,
        store_id=store_id,
    )
    # Under the member's lock: an order of the same key that committed meanwhile is the answer.
    earlier = _by_key(tx, partner_id, key)
    if earlier is not None:
        return _again(earlier, reward_id, member_id, quantity)
    on = now.astimezone(get_settings().zone).date()
    _within_limits(tx, reward, member_id, on, quantity)
    if reward.stock_left is not None:
        taken = tx.first(
            "UPDATE rewards SET stock_left = stock_left - %s"
            " WHERE id = %s AND stock_left >= %s AND status = 'active' RETURNING stock_left",
            (quantity, reward_id, quantity),
        )
        if taken is None:
            raise StockExhausted(f"reward {reward_id} has fewer than {quantity} units left")
    tx.execute(
        "INSERT INTO reward_orders (id, reward_id, partner_id, member_id, store_id,"
        " idempotency_key, quantity, points, price_version, unit_value_fen, value_fen, hold_id,"
        " state, business_date, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'reserved', %s, %s)",
        (
            order_id,
            reward_id,
            partner_id,
            member_id,
            store_id,
            key,
            quantity,
            reward.points * quantity,
            reward.price_version,
            reward.unit_value_fen,
            reward.unit_value_fen * quantity,
            hold.id,
            on,
            now,
        ),
    )
    if reward.kind == "coupon":
        drawn = tx.all(
            "UPDATE reward_codes SET order_id = %s WHERE id IN (SELECT id FROM reward_codes"
            " WHERE reward_id = %s AND order_id IS NULL ORDER BY id LIMIT %s FOR UPDATE)"
            " RETURNING code",
            (order_id, reward_id, quantity),
        )
        if len(drawn) != quantity:
            raise StockExhausted(f"reward {reward_id} has fewer than {quantity} codes left")
    if confirm and hold.review_case_id is None:
        return confirm_order(tx, partner_id, order_id)
    return get_order(tx, None, order_id)


def _lock(tx: Tx, partner_id: str | None, order_id: str, *, supplier: bool = False) -> Order:
    """The order's row locked: the partner's that took it (or, with `supplier`, the reward's
    supplier's); any, for None."""
    who = "r.supplier_id" if supplier else "o.partner_id"
    row = tx.first(
        "SELECT o.id FROM reward_orders o JOIN rewards r ON r.id = o.reward_id"
        " WHERE o.id = %(id)s AND (%(partner)s::text IS NULL OR " + who + " = %(partner)s)"
        " FOR NO KEY UPDATE OF o",
        {"id": order_id, "partner": partner_id},
    )
    if row is None:
        raise OrderNotFound(f"no reward order {order_id}")
    return get_order(tx, None, order_id)


def confirm_order(db: Session | Tx, partner_id: str | None, order_id: str) -> Order:
    """Capture the reserved order's points to the reward's supplier. Safe to repeat."""
    tx = Tx.of(db)
    order = _lock(tx, partner_id, order_id)
    if order.state == "confirmed":
        return order
    if order.state != "reserved":
        raise OrderClosed(f"order {order_id} is {order.state}")
    holds.close_order_hold(
        tx, order.hold_id, holds.OrderSettlement(order.id, order.supplier_id, order.value_fen)
    )
    tx.execute(
        "UPDATE reward_orders SET state = 'confirmed', confirmed_at = %s, fulfilment = %s,"
        " entry_id = (SELECT close_entry_id FROM holds WHERE id = %s) WHERE id = %s",
        (clock.now(), "placed" if order.kind == "goods" else None, order.hold_id, order_id),
    )
    return get_order(tx, None, order_id)


def _give_back_units(tx: Tx, order: Order) -> None:
    """The order's units back to a limited stock."""
    tx.execute(
        "UPDATE rewards SET stock_left = stock_left + %s WHERE id = %s AND stock_left IS NOT NULL",
        (order.quantity, order.reward_id),
    )


def _release(tx: Tx, order: Order, state: str) -> Order:
    """A reserved order given up: its points, units and codes back; it ends `state`."""
    holds.close_order_hold(tx, order.hold_id, None)
    _give_back_units(tx, order)
    tx.execute("UPDATE reward_codes SET order_id = NULL WHERE order_id = %s", (order.id,))
    tx.execute(
        "UPDATE reward_orders SET state = %s, closed_at = %s WHERE id = %s",
        (state, clock.now(), order.id),
    )
    return get_order(tx, None, order.id)


def _return(tx: Tx, order: Order, state: str, fulfilment: str | None) -> Order:
    """A confirmed order given back: its points to the member, into the lots they came from,
    and its value owed back by the supplier (`reward_order_return`); its units back to stock."""
    assert order.entry_id is not None
    wallet.lock_member(tx.session, order.member_id)
    posted = ledger.post(
        tx.session,
        ledger.Entry(
            kind="reward_order_return",
            origin=f"partner:{order.partner_id}",
            idempotency_key=f"return:{order.id}",
            postings=[
                ledger.Posting(
                    str(ledger.Address.partner(order.supplier_id, "redeemed")), -order.points
                ),
                ledger.Posting(wallet.available_account(order.member_id), order.points),
            ],
            occurred_at=clock.now(),
            metadata={
                **Settleable(order.supplier_id, order.value_fen).to_metadata(),
                "order_id": order.id,
                "member_id": order.member_id,
            },
            reverses=order.entry_id,
        ),
    )
    hold_entry = tx.scalar("SELECT hold_entry_id FROM holds WHERE id = %s", (order.hold_id,))
    spent: dict[int, int] = {}
    for entry in (hold_entry, order.entry_id):
        for lot_id, amount in lots.movements_of(tx, entry):
            spent[lot_id] = spent.get(lot_id, 0) - amount
    by_expiry = tx.all(
        "SELECT id FROM point_lots WHERE id = ANY(%s) ORDER BY expires_at, id",
        ([lot_id for lot_id, amount in spent.items() if amount > 0],),
    )
    lots.restore(tx, [(row.id, -spent[row.id]) for row in by_expiry], order.points, posted.id)
    _give_back_units(tx, order)
    tx.execute(
        "UPDATE reward_orders SET state = %s, fulfilment = %s, return_entry_id = %s,"
        " closed_at = %s WHERE id = %s",
        (state, fulfilment, posted.id, clock.now(), order.id),
    )
    return get_order(tx, None, order.id)


def cancel_order(db: Session | Tx, partner_id: str | None, order_id: str) -> Order:
    """Cancel an order: a reserved one gives its points, units and codes back; confirmed goods
    not yet shipped come back as a return. A confirmed coupon, voucher, membership or donation
    is final. Safe to repeat."""
    tx = Tx.of(db)
    order = _lock(tx, partner_id, order_id)
    if order.state == "cancelled":
        return order
    if order.state == "reserved":
        return _release(tx, order, "cancelled")
    if order.state == "confirmed" and order.fulfilment == "placed":
        return _return(tx, order, "cancelled", None)
    raise OrderClosed(
        f"order {order_id} is {order.state}"
        + (f" ({order.fulfilment})" if order.fulfilment else "")
        + ": only a reserved order, or goods not yet shipped, can be cancelled"
    )


def fulfil(db: Session | Tx, supplier_id: str | None, order_id: str, step: str) -> Order:
    """The supplier moves a confirmed goods order on (NEXT_STEPS); `returned` gives the points
    and units back and the value is owed back. Asking for the step it is at changes nothing."""
    tx = Tx.of(db)
    order = _lock(tx, supplier_id, order_id, supplier=True)
    if order.fulfilment is None:
        raise OrderClosed(f"order {order_id} is {order.state}, with nothing to fulfil")
    if step == order.fulfilment:
        return order
    if step not in NEXT_STEPS.get(order.fulfilment, ()):
        allowed = ", ".join(NEXT_STEPS[order.fulfilment]) or "nothing"
        raise OrderClosed(f"order {order_id} is {order.fulfilment}: next is {allowed}")
    if step == "returned":
        return _return(tx, order, "returned", "returned")
    tx.execute("UPDATE reward_orders SET fulfilment = %s WHERE id = %s", (step, order_id))
    return get_order(tx, None, order_id)


def expire_orders(sessions: sessionmaker[Session], limit: int = 500) -> int:
    """Give back what reserved orders past their reservation hold: points, units, codes; each
    in a transaction of its own. Safe to run twice or at once."""
    with sessions() as session:
        due = Tx.of(session).all(
            "SELECT o.id FROM reward_orders o JOIN holds h ON h.id = o.hold_id"
            " WHERE o.state = 'reserved' AND (h.state <> 'held' OR h.expires_at <= %s)"
            " ORDER BY o.created_at LIMIT %s",
            (clock.now(), limit),
        )
    expired = 0
    for row in due:
        with sessions() as session, session.begin():
            tx = Tx.of(session)
            order = _lock(tx, None, row.id)
            if order.state != "reserved":
                continue
            hold_state = tx.scalar("SELECT state FROM holds WHERE id = %s", (order.hold_id,))
            if hold_state == "held":
                _release(tx, order, "expired")
            else:
                # The holds job let its points go already: the units and codes follow.
                _give_back_units(tx, order)
                tx.execute("UPDATE reward_codes SET order_id = NULL WHERE order_id = %s", (row.id,))
                tx.execute(
                    "UPDATE reward_orders SET state = 'expired', closed_at = %s WHERE id = %s",
                    (clock.now(), row.id),
                )
            expired += 1
    return expired
