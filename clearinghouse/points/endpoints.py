"""Partner API routes of the points lifecycle: purchases (accrual) and their refunds, holds,
captures, voids and one-step redemptions, offline redemptions, redemption refunds, lots and
expiring points, referrals."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from clearinghouse import clock
from clearinghouse.database import Tx
from clearinghouse.members.schemas import MemberIdPath
from clearinghouse.members.service import linked_member
from clearinghouse.points import (
    accrual,
    exchange,
    holds,
    lots,
    offline,
    outstanding,
    referrals,
    refunds,
)
from clearinghouse.points.schemas import (
    AccrualOut,
    CaptureIn,
    ExchangeIn,
    ExchangeOut,
    ExpiringMemberOut,
    ExpiringOut,
    HoldIn,
    HoldOut,
    LotOut,
    OfflineRedeemIn,
    OfflineRedemptionOut,
    PointsEarnedWebhook,
    PointsExpiredWebhook,
    PointsExpiringWebhook,
    PointsRedeemedWebhook,
    PurchaseClawbackWebhook,
    PurchaseIn,
    PurchaseOut,
    RedeemIn,
    RedemptionRefundIn,
    RedemptionRefundOut,
    ReferralIn,
    ReferralOut,
    RefundIn,
    RefundOut,
    TierChangedWebhook,
)
from partners.gate import Partner

router = APIRouter(prefix="/v1", tags=["points"])
webhooks = APIRouter(tags=["points"])
"""What the points lifecycle posts to partners' endpoints (docs/webhooks.md): published in the
OpenAPI document's webhooks section, never served."""


@router.post(
    "/purchases",
    status_code=status.HTTP_201_CREATED,
    summary="Report a purchase",
    response_model=AccrualOut,
)
async def report_purchase(body: PurchaseIn, call: Partner) -> Response:
    def accrue(tx: Tx) -> AccrualOut:
        report = accrual.report_of(body, call.scope.store_for(body.store_id))
        return AccrualOut.model_validate(accrual.accrue(tx, call.partner_id, report))

    return await call.answer(accrue)


@router.post(
    "/purchases/{partner_txn_id}/refunds",
    status_code=status.HTTP_201_CREATED,
    summary="Refund all or part of a purchase; its points are clawed back in proportion",
    response_model=RefundOut,
)
async def refund_purchase(partner_txn_id: str, body: RefundIn, call: Partner) -> Response:
    def refund(tx: Tx) -> RefundOut:
        r = refunds.refund_purchase(
            tx, call.partner_id, partner_txn_id, body.refund_id, body.amount_fen, call.scope
        )
        return RefundOut.model_validate(r)

    return await call.answer(refund)


@router.get(
    "/purchases/{partner_txn_id}",
    summary="One of the partner's purchases",
    response_model=PurchaseOut,
)
async def get_purchase(partner_txn_id: str, call: Partner) -> Response:
    def purchase(tx: Tx) -> PurchaseOut:
        found = refunds.purchase(tx, call.partner_id, partner_txn_id, call.scope)
        return PurchaseOut.model_validate(found)

    return await call.answer(purchase)


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
            store_id=call.scope.store_for(body.store_id),
            partner_ref=body.partner_ref,
            minutes=body.expires_in_minutes,
        )
        return HoldOut.model_validate(hold)

    return await call.answer(place)


@router.get("/holds/{hold_id}", summary="One of the partner's holds", response_model=HoldOut)
async def get_hold(hold_id: str, call: Partner) -> Response:
    def hold(tx: Tx) -> HoldOut:
        found = holds.get_hold(tx, call.partner_id, hold_id, call.scope)
        return HoldOut.model_validate(found)

    return await call.answer(hold)


@router.post(
    "/holds/{hold_id}/capture", summary="Capture all or part of a hold", response_model=HoldOut
)
async def capture_hold(hold_id: str, body: CaptureIn, call: Partner) -> Response:
    def captured(tx: Tx) -> HoldOut:
        hold = holds.capture(tx, call.partner_id, hold_id, body.points, call.scope)
        return HoldOut.model_validate(hold)

    return await call.answer(captured)


@router.post(
    "/holds/{hold_id}/void",
    summary="Release a hold's points to the member",
    response_model=HoldOut,
)
async def void_hold(hold_id: str, call: Partner) -> Response:
    return await call.answer(
        lambda tx: HoldOut.model_validate(holds.void(tx, call.partner_id, hold_id, call.scope))
    )


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
            store_id=call.scope.store_for(body.store_id),
            partner_ref=body.partner_ref,
        )
        return HoldOut.model_validate(hold)

    return await call.answer(redemption)


@router.post(
    "/offline-redemptions",
    status_code=status.HTTP_201_CREATED,
    summary="Report a redemption a till approved while offline; within the store's offline "
    "allowance it may overdraw the member",
    response_model=OfflineRedemptionOut,
)
async def redeem_offline(body: OfflineRedeemIn, call: Partner) -> Response:
    def redemption(tx: Tx) -> OfflineRedemptionOut:
        redeemed = offline.redeem_offline(
            tx,
            call.partner_id,
            body.member_id,
            body.points,
            key=call.idempotency_key,
            store_id=call.scope.store_for(body.store_id),
            occurred_at=body.occurred_at,
            partner_ref=body.partner_ref,
        )
        return OfflineRedemptionOut.model_validate(redeemed)

    return await call.answer(redemption)


@router.post(
    "/holds/{hold_id}/refunds",
    status_code=status.HTTP_201_CREATED,
    summary="Refund points of a captured redemption to the member, with their lots' expiry",
    response_model=RedemptionRefundOut,
)
async def refund_redemption(hold_id: str, body: RedemptionRefundIn, call: Partner) -> Response:
    def refund(tx: Tx) -> RedemptionRefundOut:
        r = refunds.refund_redemption(
            tx.session,
            call.partner_id,
            hold_id,
            body.points,
            key=call.idempotency_key,
            scope=call.scope,
        )
        return RedemptionRefundOut.model_validate(r)

    return await call.answer(refund)


@router.get(
    "/members/{member_id}/lots",
    summary="A linked member's points by lot",
    response_model=list[LotOut],
)
async def member_lots(member_id: MemberIdPath, call: Partner) -> Response:
    def member_lot_list(tx: Tx) -> list[LotOut]:
        linked_member(tx, call.partner_id, member_id)
        return [LotOut.model_validate(lot) for lot in lots.open_lots(tx, member_id)]

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
        return ExpiringOut.model_validate(
            {
                "member_id": member_id,
                "days": days,
                "points": sum(lot.remaining for lot in due),
                "lots": due,
            }
        )

    return await call.answer(expiring)


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

    def members(tx: Tx) -> list[ExpiringMemberOut]:
        due = outstanding.expiring_members(tx.session, call.partner_id, horizon, limit, after)
        return [ExpiringMemberOut.model_validate(member) for member in due]

    return await call.answer(members)


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
        return ReferralOut.model_validate(r)

    return await call.answer(referral)


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
        return ExchangeOut.model_validate(e)

    return await call.answer(exchanged)


@webhooks.post("points.earned", summary="A member linked to the partner earned points")
def points_earned(body: PointsEarnedWebhook) -> None:
    """Sent only to endpoints that name it: for partners that mirror members' balances."""


@webhooks.post("points.redeemed", summary="A member linked to the partner spent points")
def points_redeemed(body: PointsRedeemedWebhook) -> None:
    """Sent only to endpoints that name it: for partners that mirror members' balances."""


@webhooks.post("points.expiring", summary="A member's points expire within the partner's horizon")
def points_expiring(body: PointsExpiringWebhook) -> None:
    """Sent once per member and expiry time, `expiring_notice_days` ahead (docs/webhooks.md)."""


@webhooks.post("points.expired", summary="A member's unspent points expired")
def points_expired(body: PointsExpiredWebhook) -> None:
    """Sent to each partner the member is linked to."""


@webhooks.post("purchase.clawback", summary="A refund left a member owing points")
def purchase_clawback(body: PurchaseClawbackWebhook) -> None:
    """Sent to the partner whose purchase was refunded."""


@webhooks.post("tier.changed", summary="A member moved to another tier")
def tier_changed(body: TierChangedWebhook) -> None:
    """Sent to each partner the member is linked to."""
