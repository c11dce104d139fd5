"""The identifiers the clearing house makes itself: a capital letter naming the kind (M for a
member, H for a hold, C for a risk case), then random characters of Crockford's base32, which
has no I, L, O or U, so that an id read aloud or copied by hand is not mistaken for another."""

from __future__ import annotations

import secrets

CROCKFORD_BASE32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(kind: str, length: int) -> str:
    """`kind` followed by `length` random characters (5 bits of randomness each)."""
    return kind + "".join(secrets.choice(CROCKFORD_BASE32) for _ in range(length))
