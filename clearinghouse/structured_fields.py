"""RFC 8941 structured field values, as far as the HTTP signature and digest headers need them:
dictionaries of items and inner lists with parameters, read strictly (a duplicate key or
parameter, non-canonical base64 or a non-ASCII value is refused), and the string and parameter
serialisations a signature base writes. No knowledge of signatures or partners."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final


class Token(str):
    """An sf-token; kept apart from sf-string because the RFC types parameters as strings."""

    __slots__ = ()


BareItem = int | Decimal | str | bytes | bool
Params = tuple[tuple[str, BareItem], ...]


@dataclass(frozen=True, slots=True)
class Item:
    value: BareItem
    params: Params


@dataclass(frozen=True, slots=True)
class InnerList:
    items: tuple[Item, ...]
    params: Params


class StructuredFieldError(ValueError):
    pass


KEY_RE: Final = re.compile(r"[a-z*][a-z0-9_.*-]*")
"""A dictionary key or parameter name."""
_TOKEN_RE: Final = re.compile(r"[A-Za-z*][!#$%&'*+.^_`|~0-9A-Za-z:/-]*")
_NUMBER_RE: Final = re.compile(r"(-?)([0-9]+)(?:\.([0-9]*))?")
_BYTES_RE: Final = re.compile(r":([A-Za-z0-9+/=]*):")
# A string without escapes: printable ASCII but '"' and '\\' (the common case, read at once).
_PLAIN_STRING_RE: Final = re.compile(r'"([ !#-\[\]-~]*)"')
MAX_SF_INTEGER: Final = 999_999_999_999_999
"""The largest sf-integer (15 digits)."""


class _Parser:
    def __init__(self, text: str) -> None:
        if not text.isascii():
            raise StructuredFieldError("non-ASCII field value")
        self.text = text
        self.pos = 0

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _at_end(self) -> bool:
        return self.pos >= len(self.text)

    def _skip(self, chars: tuple[str, ...]) -> None:
        while not self._at_end() and self.text[self.pos] in chars:
            self.pos += 1

    def _match(self, pattern: re.Pattern[str]) -> re.Match[str]:
        match = pattern.match(self.text, self.pos)
        if match is None:
            raise StructuredFieldError(f"unexpected input at {self.pos}")
        self.pos = match.end()
        return match

    def dictionary(self) -> dict[str, Item | InnerList]:
        members: dict[str, Item | InnerList] = {}
        self._skip((" ",))
        while not self._at_end():
            key = self._match(KEY_RE).group()
            # RFC 8941 lets the last duplicate win; refusing is safer for security headers.
            if key in members:
                raise StructuredFieldError(f"duplicate dictionary key {key!r}")
            if self._peek() == "=":
                self.pos += 1
                members[key] = self._item_or_inner_list()
            else:
                members[key] = Item(True, self._params())
            self._skip((" ", "\t"))
            if self._at_end():
                break
            if self._peek() != ",":
                raise StructuredFieldError("expected ','")
            self.pos += 1
            self._skip((" ", "\t"))
            if self._at_end():
                raise StructuredFieldError("trailing ','")
        return members

    def _item_or_inner_list(self) -> Item | InnerList:
        if self._peek() == "(":
            return self._inner_list()
        return Item(self._bare_item(), self._params())

    def _inner_list(self) -> InnerList:
        self.pos += 1
        items: list[Item] = []
        while not self._at_end():
            self._skip((" ",))
            if self._peek() == ")":
                self.pos += 1
                return InnerList(tuple(items), self._params())
            items.append(Item(self._bare_item(), self._params()))
            if self._peek() not in (" ", ")"):
                raise StructuredFieldError("expected ' ' or ')' in inner list")
        raise StructuredFieldError("unterminated inner list")

    def _params(self) -> Params:
        params: dict[str, BareItem] = {}
        while self._peek() == ";":
            self.pos += 1
            self._skip((" ",))
            key = self._match(KEY_RE).group()
            value: BareItem = True
            if self._peek() == "=":
                self.pos += 1
                value = self._bare_item()
            if key in params:
                raise StructuredFieldError(f"duplicate parameter {key!r}")
            params[key] = value
        return tuple(params.items())

    def _bare_item(self) -> BareItem:
        char = self._peek()
        if char == "-" or char.isdigit():
            return self._number()
        if char == '"':
            return self._string()
        if char == ":":
            return self._byte_sequence()
        if char == "?":
            return self._boolean()
        if char == "*" or char.isalpha():
            return Token(self._match(_TOKEN_RE).group())
        raise StructuredFieldError(f"unexpected input at {self.pos}")

    def _number(self) -> int | Decimal:
        sign, integer, fraction = self._match(_NUMBER_RE).groups()
        if fraction is None:
            if len(integer) > 15:
                raise StructuredFieldError("integer too long")
            return int(sign + integer)
        if len(integer) > 12 or not 1 <= len(fraction) <= 3:
            raise StructuredFieldError("malformed decimal")
        return Decimal(f"{sign}{integer}.{fraction}")

    def _string(self) -> str:
        plain = _PLAIN_STRING_RE.match(self.text, self.pos)
        if plain is not None:
            self.pos = plain.end()
            return plain.group(1)
        self.pos += 1
        chars: list[str] = []
        while not self._at_end():
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\":
                escaped = self._peek()
                if escaped not in ('"', "\\"):
                    raise StructuredFieldError("bad escape in string")
                chars.append(escaped)
                self.pos += 1
            elif char == '"':
                return "".join(chars)
            elif not " " <= char <= "~":
                raise StructuredFieldError("control character in string")
            else:
                chars.append(char)
        raise StructuredFieldError("unterminated string")

    def _byte_sequence(self) -> bytes:
        encoded = self._match(_BYTES_RE).group(1)
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise StructuredFieldError("malformed byte sequence") from exc
        # Canonical base64 only, so one signature or digest has exactly one spelling.
        if base64.b64encode(decoded).decode("ascii") != encoded:
            raise StructuredFieldError("non-canonical base64")
        return decoded

    def _boolean(self) -> bool:
        value = self.text[self.pos + 1 : self.pos + 2]
        if value not in ("0", "1"):
            raise StructuredFieldError("malformed boolean")
        self.pos += 2
        return value == "1"


def parse_dictionary(text: str) -> dict[str, Item | InnerList]:
    return _Parser(text).dictionary()


def is_sf_string(value: str) -> bool:
    return all(" " <= char <= "~" for char in value)


def serialize_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_param_value(value: int | str) -> str:
    return str(value) if isinstance(value, int) else serialize_string(value)
