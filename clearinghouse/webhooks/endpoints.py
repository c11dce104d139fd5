"""Partner API routes of webhook endpoints: register, list, change, disable, rotate the secret,
and follow or ask again for deliveries (clearinghouse.webhooks.service holds the rules).

Only a key for all the partner's stores manages them, as it manages keys: an endpoint hears
about the partner's settlement, which is no one store's business."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from clearinghouse.database import Tx
from clearinghouse.webhooks import service
from clearinghouse.webhooks.schemas import (
    DeliveryOut,
    EndpointCreatedOut,
    EndpointIn,
    EndpointOut,
    EndpointUpdateIn,
    KeyRetiringWebhook,
    RotateIn,
    SecretOut,
)
from partners.gate import Partner
from partners.key_endpoints import for_all_stores

router = APIRouter(
    prefix="/v1/webhook-endpoints", tags=["webhooks"], dependencies=[Depends(for_all_stores)]
)

webhooks = APIRouter(tags=["webhooks"])
"""What the clearing house posts of partners' own affairs (docs/webhooks.md): published in the
OpenAPI document's webhooks section, never served."""

DISABLED_BY_PARTNER = "disabled by the partner"


@router.get("", summary="The partner's webhook endpoints", response_model=list[EndpointOut])
async def list_endpoints(call: Partner) -> Response:
    return await call.answer(
        lambda tx: [
            EndpointOut.model_validate(e) for e in service.list_endpoints(tx, call.partner_id)
        ]
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Register an endpoint; the answer holds its signing secret, shown only now",
    response_model=EndpointCreatedOut,
)
async def create_endpoint(body: EndpointIn, call: Partner) -> Response:
    def created(tx: Tx) -> EndpointCreatedOut:
        endpoint, secret = service.create_endpoint(tx, call.partner_id, body.url, body.event_types)
        return EndpointCreatedOut.model_validate({**asdict(endpoint), "secret": secret})

    return await call.answer(created)


@router.get("/{endpoint_id}", summary="A webhook endpoint", response_model=EndpointOut)
async def get_endpoint(endpoint_id: str, call: Partner) -> Response:
    return await call.answer(
        lambda tx: EndpointOut.model_validate(
            service.get_endpoint(tx, call.partner_id, endpoint_id)
        )
    )


@router.put(
    "/{endpoint_id}",
    summary="Change an endpoint's URL or the events it receives",
    response_model=EndpointOut,
)
async def update_endpoint(endpoint_id: str, body: EndpointUpdateIn, call: Partner) -> Response:
    def updated(tx: Tx) -> EndpointOut:
        endpoint = service.update_endpoint(
            tx, call.partner_id, endpoint_id, body.url, body.event_types
        )
        return EndpointOut.model_validate(endpoint)

    return await call.answer(updated)


@router.post(
    "/{endpoint_id}/disable",
    summary="Stop delivering to an endpoint (its pending deliveries fail)",
    response_model=EndpointOut,
)
async def disable_endpoint(endpoint_id: str, call: Partner) -> Response:
    def disabled(tx: Tx) -> EndpointOut:
        endpoint = service.disable_endpoint(tx, call.partner_id, endpoint_id, DISABLED_BY_PARTNER)
        return EndpointOut.model_validate(endpoint)

    return await call.answer(disabled)


@router.post(
    "/{endpoint_id}/enable",
    summary="Deliver to a disabled endpoint again (the events recorded from now on)",
    response_model=EndpointOut,
)
async def enable_endpoint(endpoint_id: str, call: Partner) -> Response:
    def enabled(tx: Tx) -> EndpointOut:
        return EndpointOut.model_validate(service.enable_endpoint(tx, call.partner_id, endpoint_id))

    return await call.answer(enabled)


@router.post(
    "/{endpoint_id}/rotate-secret",
    summary="A new signing secret; the old one keeps signing beside it for the overlap",
    response_model=SecretOut,
)
async def rotate_secret(endpoint_id: str, body: RotateIn, call: Partner) -> Response:
    def rotated(tx: Tx) -> SecretOut:
        secret, until = service.rotate_secret(tx, call.partner_id, endpoint_id, body.overlap)
        return SecretOut(secret=secret, previous_valid_until=until)

    return await call.answer(rotated)


@router.get(
    "/{endpoint_id}/deliveries",
    summary="An endpoint's latest deliveries, newest first",
    response_model=list[DeliveryOut],
)
async def list_deliveries(
    endpoint_id: str, call: Partner, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> Response:
    return await call.answer(
        lambda tx: [
            DeliveryOut.model_validate(d)
            for d in service.deliveries(tx, call.partner_id, endpoint_id, limit)
        ]
    )


@router.post(
    "/{endpoint_id}/deliveries/{event_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Deliver an event to the endpoint again, with the same webhook-id",
    response_model=DeliveryOut,
)
async def redeliver(endpoint_id: str, event_id: str, call: Partner) -> Response:
    return await call.answer(
        lambda tx: DeliveryOut.model_validate(
            service.redeliver(tx, call.partner_id, endpoint_id, event_id)
        )
    )


@webhooks.post("key.retiring", summary="An API key of the partner stops working within 7 days")
def key_retiring(body: KeyRetiringWebhook) -> None:
    """Posted to the partner's endpoints subscribed to `key.retiring`, once per key and
    deadline."""
