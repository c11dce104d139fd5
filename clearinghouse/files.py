"""Files received whole, such as an upload spooled to disk: read in chunks, never at once."""

from __future__ import annotations

import hashlib
from typing import IO

CHUNK = 1 << 16


def sha256_of(file: IO[bytes]) -> bytes:
    """The SHA-256 of the whole file, read from its start."""
    file.seek(0)
    digest = hashlib.sha256()
    while chunk := file.read(CHUNK):
        digest.update(chunk)
    return digest.digest()
