"""Webhook signatures by the Standard Webhooks convention, so that a partner verifies them with
a published library in any language (docs/webhooks.md has a worked example):

    webhook-id: msg_…             the event's id, the same at every delivery of it
    webhook-timestamp: 1764590400 seconds since the epoch, at this delivery
    webhook-signature: v1,<base64 of HMAC-SHA256("{id}.{timestamp}.{body}")>

keyed with the bytes of the endpoint's secret (`whsec_` + their base64). While a rotation's
overlap lasts, the header holds one `v1,` signature per secret, separated by spaces, and a
receiver that knows either secret accepts it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import datetime

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    """A fresh signing secret: `whsec_` and the base64 of SECRET_BYTES random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of the delivery under `secret`."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    message_id: str, at: datetime, body: bytes, signing_secrets: Sequence[str]
) -> dict[str, str]:
    """The three headers of a delivery made at `at`, signed with every secret in force."""
    timestamp = int(at.timestamp())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(secret, message_id, timestamp, body) for secret in signing_secrets
        ),
    }
