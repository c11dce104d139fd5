"""What settlement needs of a ledger entry: the partner it settles with and the value, in fen, it
is settled at, fixed when the entry is written (from the rates version in force), so that a later
change of rates never changes a settlement.

Every operation that writes a settleable entry puts these into the entry's metadata with
`Settleable.to_metadata()`; settlement reads them back with `Settleable.from_metadata()` (or, in
its statements, by the key names below). Both sides import this module, which knows nothing of
either."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PARTNER_KEY = "partner_id"
VALUE_KEY = "value_fen"


class NotSettleable(ValueError):
    """An entry's metadata lacks a settleable partner or value, or holds one of the wrong type."""


@dataclass(frozen=True)
class Settleable:
    partner_id: str
    value_fen: int

    def __post_init__(self) -> None:
        if not isinstance(self.partner_id, str) or not self.partner_id:
            raise NotSettleable(f"a settleable partner is a partner id, not {self.partner_id!r}")
        # bool is an int to Python, and a float or Decimal may hide a fraction of a fen.
        if type(self.value_fen) is not int:
            raise NotSettleable(
                f"a settleable value is a whole number of fen, not {self.value_fen!r}"
            )

    def to_metadata(self) -> dict[str, object]:
        return {PARTNER_KEY: self.partner_id, VALUE_KEY: self.value_fen}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> Settleable:
        """The settleable facts of an entry's metadata; NotSettleable when it has none."""
        missing = [key for key in (PARTNER_KEY, VALUE_KEY) if key not in metadata]
        if missing:
            raise NotSettleable(f"the entry's metadata has no {' or '.join(missing)}")
        return cls(metadata[PARTNER_KEY], metadata[VALUE_KEY])
