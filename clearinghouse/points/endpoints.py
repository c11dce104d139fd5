"""Partner API routes of the points lifecycle: purchases (accrual) and their refunds, holds,
captures, voids and one-step redemptions, redemption refunds, lots and expiring points,
referrals."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import Field
from sqlalchemy import func, select

from clearinghouse import clock
from clearinghouse.api.schemas import JsonInstant, RequestBody, ResponseModel
from clearinghouse.database import Tx
from clearinghouse.members.endpoints import MEMBER_ID, MemberIdPath
from clearinghouse.members.service import linked_member
from clearinghouse.members.tables import member_links
from clearinghouse.numbers import PlainDecimal
from clearinghouse.points import accrual, exchange, holds, lots, referrals, refunds
from clearinghouse.points.tables import point_lots
from partners.gate import Partner

router = APIRouter(prefix="/v1", tags=["points"])

REF = r"^[A-Za-z0-9._:-]{1,64}$"


class PurchaseIn(RequestBody):
    partner_txn_id: str = Field(pattern=REF, description="Your own id of the transaction.")
    member_id: str = Field(pattern=MEMBER_ID)
    store_id: str | None = None
    amount_fen: int = Field(gt=0, le=10**12, description="Amount paid, in fen.")
    currency: str = Field(default="CNY", pattern="^CNY$")
    occurred_at: JsonInstant


class BreakdownLineOut(ResponseModel):
    rule: str
    description: str
    points: PlainDecimal


class AccrualOut(ResponseModel):
    purchase_id: int
    partner_txn_id: str
    member_id: str
    points: int
    debt_repaid: int = Field(description="Points of this accrual that repaid a points debt.")
    breakdown: list[BreakdownLineOut]
    rules_version: int
    rates_version: int
    issue_value_fen: int
    lot_expires_at: datetime | None
    tier: str
    review_case_id: str | None = Field(
        default=None,
        description="Set when the points wait, not spendable, for a risk review: see "
        "GET /v1/cases/{id}.",
    )

    @classmethod
    def of(cls, r: accrual.AccrualResult) -> AccrualOut:
        return cls(
            purchase_id=r.purchase_id,
            partner_txn_id=r.partner_txn_id,
            member_id=r.member_id,
            points=r.points,
            debt_repaid=r.debt_repaid,
            breakdown=[BreakdownLineOut(**line) for line in r.breakdown],
            rules_version=r.rules_version,
            rates_version=r.rates_version,
            issue_value_fen=r.issue_value_fen,
            lot_expires_at=r.lot_expires_at,
            tier=r.tier,
            review_case_id=r.review_case_id,
        )


@router.post(
    "/purchases",
    status_code=status.HTTP_201_CREATED,
    summary="Report a purchase",
    response_model=AccrualOut,
)
async def report_purchase(body: PurchaseIn, call: Partner) -> Response:
    report = accrual.PurchaseReport(
        partner_txn_id=body.partner_txn_id,
        member_id=body.member_id,
        amount_fen=body.amount_fen,
        occurred_at=body.occurred_at,
        store_id=body.store_id,
        currency=body.currency,
    )
    return await call.answer(lambda tx: AccrualOut.of(accrual.accrue(tx, call.partner_id, report)))


class RefundIn(RequestBody):
    refund_id: str = Field(pattern=REF, description="Your own id of this refund.")
    amount_fen: int = Field(gt=0, le=10**12)


class RefundOut(ResponseModel):
    partner_txn_id: str
    refund_id: str
    amount_fen: int
    points: int = Field(description="Points clawed back in all.")
    from_available: int
    to_debt: int = Field(description="Points the member had spent: now owed as a debt.")
    value_fen: int


@router.post(
    "/purchases/{partner_txn_id}/refunds",
    status_code=status.HTTP_201_CREATED,
    summary="Refund all or part of a purchase; its points are clawed back in proportion",
    response_model=RefundOut,
)
async def refund_purchase(partner_txn_id: str, body: RefundIn, call: Partner) -> Response:
    def refund(tx: Tx) -> RefundOut:
        r = refunds.refund_purchase(
            tx, call.partner_id, partner_txn_id, body.refund_id, body.amount_fen
        )
        return RefundOut(
            partner_txn_id=r.partner_txn_id,
            refund_id=r.partner_refund_id,
            amount_fen=r.amount_fen,
            points=r.points,
            from_available=r.from_available,
            to_debt=r.to_debt,
            value_fen=r.value_fen,
        )

    return await call.answer(refund)


class PurchaseOut(ResponseModel):
    partner_txn_id: str
    member_id: str
    store_id: str | None
    amount_fen: int
    occurred_at: datetime
    points: int
    refunded_fen: int
    refunded_points: int
    rules_version: int
    rates_version: int
    breakdown: list[BreakdownLineOut]


@router.get(
    "/purchases/{partner_txn_id}",
    summary="One of the partner's purchases",
    response_model=PurchaseOut,
)
async def get_purchase(partner_txn_id: str, call: Partner) -> Response:
    return await call.answer(lambda tx: _purchase(tx, call.partner_id, partner_txn_id))


def _purchase(tx: Tx, partner_id: str, partner_txn_id: str) -> PurchaseOut:
    row = tx.first(
        "SELECT * FROM purchases WHERE partner_id = %s AND partner_txn_id = %s",
        (partner_id, partner_txn_id),
    )
    if row is None:
        raise refunds.PurchaseNotFound(f"no purchase {partner_txn_id}")
    return PurchaseOut(
        partner_txn_id=row.partner_txn_id,
        member_id=row.member_id,
        store_id=row.store_id,
        amount_fen=row.amount_fen,
        occurred_at=row.occurred_at,
        points=row.points,
        refunded_fen=row.refunded_fen,
        refunded_points=row.refunded_points,
        rules_version=row.rules_version,
        rates_version=row.rates_version,
        breakdown=[BreakdownLineOut(**line) for line in row.breakdown],
    )


class HoldIn(RequestBody):
    member_id: str = Field(pattern=MEMBER_ID)
    points: int = Field(gt=0, le=10**12)
    store_id: str | None = None
    partner_ref: str | None = Field(default=None, pattern=REF)
    expires_in_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)


class RedeemIn(RequestBody):
    member_id: str = Field(pattern=MEMBER_ID)
    points: int = Field(gt=0, le=10**12)
    store_id: str | None = None
    partner_ref: str | None = Field(default=None, pattern=REF)


class HoldOut(ResponseModel):
    hold_id: str
    member_id: str
    store_id: str | None
    partner_ref: str | None
    points: int
    captured: int
    refunded: int
    state: str
    value_fen: int = Field(description="Cash value of the held (or captured) points.")
    rates_version: int
    expires_at: datetime
    created_at: datetime
    closed_at: datetime | None
    review_case_id: str | None = Field(
        default=None,
        description="Set while the hold waits for a risk review (capture answers 409 until "
        "then): see GET /v1/cases/{id}.",
    )

    @classmethod
    def of(cls, h: holds.Hold) -> HoldOut:
        return cls(
            hold_id=h.id,
            member_id=h.member_id,
            store_id=h.store_id,
            partner_ref=h.partner_ref,
            points=h.amount,
            captured=h.captured,
            refunded=h.refunded,
            state=h.state,
            value_fen=h.value_fen,
            rates_version=h.rates_version,
            expires_at=h.expires_at,
            created_at=h.created_at,
            closed_at=h.closed_at,
            review_case_id=h.review_case_id,
        )


@router.post(
    "/holds",
    status_code=status.HTTP_201_CREATED,
    summary="Reserve points",
    response_model=HoldOut,
)
async def place_hold(body: HoldIn, call: Partner) -> Response:
    def place(tx: Tx) -> HoldOut:
        hold = holds.place_hold(
            tx,
            call.partner_id,
            body.member_id,
            body.points,
            key=call.idempotency_key,
            store_id=body.store_id,
            partner_ref=body.partner_ref,
            minutes=body.expires_in_minutes,
        )
        return HoldOut.of(hold)

    return await call.answer(place)


@router.get("/holds/{hold_id}", summary="One of the partner's holds", response_model=HoldOut)
async def get_hold(hold_id: str, call: Partner) -> Response:
    return await call.answer(lambda tx: HoldOut.of(holds.get_hold(tx, call.partner_id, hold_id)))


class CaptureIn(RequestBody):
    points: int | None = Field(default=None, gt=0, le=10**12, description="Omit to capture all.")


@router.post(
    "/holds/{hold_id}/capture", summary="Capture all or part of a hold", response_model=HoldOut
)
async def capture_hold(hold_id: str, body: CaptureIn, call: Partner) -> Response:
    def capture(tx: Tx) -> HoldOut:
        hold = holds.capture(tx, call.partner_id, hold_id, body.points)
        return HoldOut.of(hold)

    return await call.answer(capture)


@router.post(
    "/holds/{hold_id}/void",
    summary="Release a hold's points to the member",
    response_model=HoldOut,
)
async def void_hold(hold_id: str, call: Partner) -> Response:
    return await call.answer(lambda tx: HoldOut.of(holds.void(tx, call.partner_id, hold_id)))


@router.post(
    "/redemptions",
    status_code=status.HTTP_201_CREATED,
    summary="Redeem points in one step",
    response_model=HoldOut,
)
async def redeem(body: RedeemIn, call: Partner) -> Response:
    def redemption(tx: Tx) -> HoldOut:
        hold = holds.redeem(
            tx,
            call.partner_id,
            body.member_id,
            body.points,
            key=call.idempotency_key,
            store_id=body.store_id,
            partner_ref=body.partner_ref,
        )
        return HoldOut.of(hold)

    return await call.answer(redemption)


class RedemptionRefundIn(RequestBody):
    points: int = Field(gt=0, le=10**12)


class RedemptionRefundOut(ResponseModel):
    hold_id: str
    points: int
    refunded_total: int


@router.post(
    "/holds/{hold_id}/refunds",
    status_code=status.HTTP_201_CREATED,
    summary="Refund points of a captured redemption to the member, with their lots' expiry",
    response_model=RedemptionRefundOut,
)
async def refund_redemption(hold_id: str, body: RedemptionRefundIn, call: Partner) -> Response:
    def refund(tx: Tx) -> RedemptionRefundOut:
        r = refunds.refund_redemption(
            tx.session, call.partner_id, hold_id, body.points, key=call.idempotency_key
        )
        return RedemptionRefundOut(
            hold_id=r.hold_id, points=r.points, refunded_total=r.refunded_total
        )

    return await call.answer(refund)


class LotOut(ResponseModel):
    earned_at: datetime
    expires_at: datetime
    points: int
    source: str


class ExpiringOut(ResponseModel):
    member_id: str
    days: int
    points: int
    lots: list[LotOut]


@router.get(
    "/members/{member_id}/lots",
    summary="A linked member's points by lot",
    response_model=list[LotOut],
)
async def member_lots(member_id: MemberIdPath, call: Partner) -> Response:
    def member_lot_list(tx: Tx) -> list[LotOut]:
        linked_member(tx, call.partner_id, member_id)
        return [
            LotOut(
                earned_at=lot.earned_at,
                expires_at=lot.expires_at,
                points=lot.remaining,
                source=lot.source,
            )
            for lot in lots.open_lots(tx, member_id)
        ]

    return await call.answer(member_lot_list)


Days = Annotated[int, Query(ge=1, le=3660)]


@router.get(
    "/members/{member_id}/expiring",
    summary="A linked member's points expiring soon",
    response_model=ExpiringOut,
)
async def member_expiring(member_id: MemberIdPath, call: Partner, days: Days = 30) -> Response:
    def expiring(tx: Tx) -> ExpiringOut:
        linked_member(tx, call.partner_id, member_id)
        horizon = clock.now() + timedelta(days=days)
        due = [lot for lot in lots.open_lots(tx, member_id) if lot.expires_at <= horizon]
        return ExpiringOut(
            member_id=member_id,
            days=days,
            points=sum(lot.remaining for lot in due),
            lots=[
                LotOut(
                    earned_at=lot.earned_at,
                    expires_at=lot.expires_at,
                    points=lot.remaining,
                    source=lot.source,
                )
                for lot in due
            ],
        )

    return await call.answer(expiring)


class ExpiringMemberOut(ResponseModel):
    member_id: str
    customer_ref: str
    points: int
    first_expiry: datetime


@router.get(
    "/expiring-members",
    summary="Members linked to the partner with points expiring soon (for reminder pushes)",
    response_model=list[ExpiringMemberOut],
)
async def expiring_members(
    call: Partner,
    days: Days = 30,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(description="member_id to continue after")] = None,
) -> Response:
    horizon = clock.now() + timedelta(days=days)
    query: Any = (
        select(
            member_links.c.member_id,
            member_links.c.customer_ref,
            func.sum(point_lots.c.remaining).label("points"),
            func.min(point_lots.c.expires_at).label("first_expiry"),
        )
        .join(point_lots, point_lots.c.member_id == member_links.c.member_id)
        .where(
            member_links.c.partner_id == call.partner_id,
            point_lots.c.remaining > 0,
            point_lots.c.expires_at <= horizon,
        )
        .group_by(member_links.c.member_id, member_links.c.customer_ref)
        .order_by(member_links.c.member_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(member_links.c.member_id > after)
    return await call.answer(
        lambda tx: [
            ExpiringMemberOut(
                member_id=r.member_id,
                customer_ref=r.customer_ref,
                points=int(r.points),
                first_expiry=r.first_expiry,
            )
            for r in tx.session.execute(query)
        ]
    )


class ReferralIn(RequestBody):
    inviter_member_id: str = Field(pattern=MEMBER_ID)
    invitee_member_id: str = Field(pattern=MEMBER_ID)


class ReferralOut(ResponseModel):
    inviter_member_id: str
    invitee_member_id: str
    registered_at: datetime
    bonus_paid: bool


@router.post(
    "/referrals",
    status_code=status.HTTP_201_CREATED,
    summary="Register that one member invited another; the inviter earns a bonus at the "
    "invitee's first purchase",
    response_model=ReferralOut,
)
async def register_referral(body: ReferralIn, call: Partner) -> Response:
    def referral(tx: Tx) -> ReferralOut:
        r = referrals.register_referral(
            tx.session, call.partner_id, body.inviter_member_id, body.invitee_member_id
        )
        return ReferralOut(
            inviter_member_id=r.inviter_member_id,
            invitee_member_id=r.invitee_member_id,
            registered_at=r.registered_at,
            bonus_paid=r.bonus_entry_id is not None,
        )

    return await call.answer(referral)


class ExchangeIn(RequestBody):
    member_id: str = Field(pattern=MEMBER_ID)
    direction: Literal["in", "out"] = Field(
        description="in: programme points to coalition points; out: the reverse."
    )
    points: int = Field(
        gt=0, le=10**12, description="Programme points going in, or coalition points going out."
    )


class ExchangeOut(ResponseModel):
    direction: str
    member_id: str
    programme_asset: str
    programme_points: int
    coalition_points: int
    fee_points: int
    rounding_points: int
    rate: PlainDecimal
    rates_version: int


@router.post(
    "/exchanges",
    status_code=status.HTTP_201_CREATED,
    summary="Exchange a member's points between the partner's programme and the coalition",
    response_model=ExchangeOut,
)
async def exchange_points(body: ExchangeIn, call: Partner) -> Response:
    def exchanged(tx: Tx) -> ExchangeOut:
        e = exchange.exchange(
            tx,
            call.partner_id,
            body.member_id,
            body.direction,
            body.points,
            key=call.idempotency_key,
        )
        return ExchangeOut(
            direction=e.direction,
            member_id=e.member_id,
            programme_asset=e.programme_asset,
            programme_points=e.programme_points,
            coalition_points=e.coalition_points,
            fee_points=e.fee_points,
            rounding_points=e.rounding_points,
            rate=e.rate,
            rates_version=e.rates_version,
        )

    return await call.answer(exchanged)
