"""Partner API routes of the partner's own API keys: list them, register a public key the
partner made, retire or revoke one (partners.keys holds the rules).

Only a key for all the partner's stores manages keys. A store's key is held by a till or a
store's system: were it able to register keys, it could make itself a key for every store."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response, status

from clearinghouse import clock
from clearinghouse.database import Tx
from partners import keys
from partners.auth import KeyScope, OutsideKeyScope
from partners.gate import Partner
from partners.schemas import KeyIn, KeyOut, RetireIn


async def for_all_stores(call: Partner) -> None:
    """Refuse a store's key on every route of a router that depends on this (keys here,
    webhook endpoints). Raised before the route runs, the refusal is
    settled by the gate as an invalid body is: the nonce spent, the POST's key answered."""
    if call.scope.store_id is not None:
        raise OutsideKeyScope(
            f"this key acts for store {call.scope.store_id} only: "
            "this is managed with a key for all the partner's stores"
        )


router = APIRouter(prefix="/v1/keys", tags=["partner"], dependencies=[Depends(for_all_stores)])


@router.get("", summary="The partner's API keys", response_model=list[KeyOut])
async def list_keys(call: Partner) -> Response:
    def listed(tx: Tx) -> list[KeyOut]:
        return [KeyOut.model_validate(k) for k in keys.list_keys(tx.session, call.partner_id)]

    return await call.answer(listed)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Register a public key the partner made",
    response_model=KeyOut,
)
async def register_key(body: KeyIn, call: Partner) -> Response:
    def registered(tx: Tx) -> KeyOut:
        record = keys.register_key(
            tx.session,
            call.partner_id,
            body.key(),
            body.key_id,
            scope=KeyScope(body.store_id, body.terminal_id),
            expires_at=body.expires_at,
        )
        return KeyOut.model_validate(record)

    return await call.answer(registered)


@router.post(
    "/{key_id}/retire",
    summary="Keep a key working until a deadline, then refuse it",
    response_model=KeyOut,
)
async def retire_key(key_id: str, body: RetireIn, call: Partner) -> Response:
    def retired(tx: Tx) -> KeyOut:
        deadline = body.deadline(clock.now())
        record = keys.retire_key(tx.session, key_id, deadline, partner_id=call.partner_id)
        return KeyOut.model_validate(record)

    return await call.answer(retired)


@router.post("/{key_id}/revoke", summary="Refuse a key from now on", response_model=KeyOut)
async def revoke_key(key_id: str, call: Partner) -> Response:
    def revoked(tx: Tx) -> KeyOut:
        record = keys.revoke_key(tx.session, key_id, partner_id=call.partner_id)
        return KeyOut.model_validate(record)

    return await call.answer(revoked)
