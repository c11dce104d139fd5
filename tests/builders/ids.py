"""Fresh names for what the tests make: slugs for partners, stores, members' customer refs,
users and transactions, and idempotency keys."""

from __future__ import annotations

import itertools
import uuid

_counter = itertools.count(1)


def unique_id(prefix: str = "t") -> str:
    """A fresh slug (partner, store and key ids share the pattern ^[a-z0-9][a-z0-9_-]{1,39}$)."""
    return f"{prefix}{uuid.uuid4().hex[:10]}{next(_counter)}"


def key() -> str:
    """A fresh idempotency key."""
    return uuid.uuid4().hex
