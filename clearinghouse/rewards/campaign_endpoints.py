"""Campaigns API routes: a partner runs its own campaigns of engagement points (a key for all
its stores), and any partner's front end awards from them and from the coalition's."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Response, status

from clearinghouse.rewards import campaigns
from clearinghouse.rewards.campaign_schemas import AwardIn, AwardOut, CampaignIn, CampaignOut
from partners.gate import Partner
from partners.key_endpoints import for_all_stores

router = APIRouter(prefix="/v1/campaigns", tags=["rewards"])


def _out(campaign: campaigns.Campaign) -> CampaignOut:
    return CampaignOut.model_validate(asdict(campaign))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Start a campaign of engagement points, funded by the partner",
    response_model=CampaignOut,
    dependencies=[Depends(for_all_stores)],
)
async def create_campaign(body: CampaignIn, call: Partner) -> Response:
    spec = campaigns.CampaignSpec(**body.model_dump())
    return await call.answer(lambda tx: _out(campaigns.create_campaign(tx, call.partner_id, spec)))


@router.get(
    "",
    summary="The campaigns the partner may award from: its own and the coalition's",
    response_model=list[CampaignOut],
)
async def list_campaigns(call: Partner) -> Response:
    return await call.answer(
        lambda tx: [_out(c) for c in campaigns.campaigns_for(tx, call.partner_id)]
    )


@router.post(
    "/{campaign_id}/awards",
    status_code=status.HTTP_201_CREATED,
    summary="Award a member engagement points from a campaign's budget",
    response_model=AwardOut,
)
async def award(campaign_id: str, body: AwardIn, call: Partner) -> Response:
    request = campaigns.AwardRequest(campaign_id, **body.model_dump())
    return await call.answer(
        lambda tx: AwardOut.model_validate(asdict(campaigns.award(tx, call.partner_id, request)))
    )
