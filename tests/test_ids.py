"""Identifiers made here: the kind's letter, then Crockford base32."""

from __future__ import annotations

from clearinghouse.ids import CROCKFORD_BASE32, new_id


def test_an_id_is_its_kind_then_crockford_characters() -> None:
    made = {new_id("H", 15) for _ in range(200)}
    assert len(made) == 200
    for made_id in made:
        assert len(made_id) == 16
        assert made_id[0] == "H"
        assert set(made_id[1:]) <= set(CROCKFORD_BASE32)
    assert not set("ILOU") & set(CROCKFORD_BASE32)
    assert len(set(CROCKFORD_BASE32)) == 32
