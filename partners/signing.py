"""Partner request signing: our RFC 9421 HTTP Message Signatures profile with Ed25519, plus the
RFC 9530 Content-Digest of the body.

The profile, enforced by `verify_request` and followed by `sign_request`:

- algorithm `ed25519` only; the key record names the algorithm, and a signed `alg` parameter
  that disagrees with it is refused;
- one signature per request, under any label (we sign with `sig1`);
- covered: `@method`, `@authority`, `@path`, `@query`; when the body is not empty also
  `content-digest` (sha-256 only), `content-type` and `idempotency-key`; an `Idempotency-Key`
  header must be covered even on an empty body, because the server acts on it;
- parameters: `created` and `keyid` and `nonce` required, `expires` and `alg` and `tag` optional,
  anything else refused; `created` at most `max_age` (300) seconds old and at most `max_skew` (30)
  seconds ahead of `now`; `expires`, when present, not passed;
- nonce rule: 22 to 128 characters of the base64url alphabet (`A-Z a-z 0-9 - _`, no padding).
  22 such characters hold 132 bits, so base64url of 16 random bytes is the shortest nonce that
  passes. Entropy cannot be measured: the rule only refuses nonces too short to hold 128 bits.
  The upper bound keeps the nonce store's column small.

Replay checking is not here: `verify_request` returns the verified nonce and the caller records it.
The RFC 8941 structured fields these headers are written in: clearinghouse.structured_fields.
"""

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final, Self
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from clearinghouse import structured_fields as sf

__all__ = [
    "ALGORITHM",
    "DEFAULT_LABEL",
    "MAX_AGE_SECONDS",
    "MAX_SKEW_SECONDS",
    "NONCE_MAX_LENGTH",
    "NONCE_MIN_LENGTH",
    "HttpRequest",
    "ParsedSignature",
    "SignatureInput",
    "SignatureRejected",
    "VerificationKey",
    "VerifiedSignature",
    "build_signature_base",
    "component_values",
    "content_digest",
    "create_signature",
    "load_private_key_pem",
    "load_public_key_pem",
    "parse_signature_headers",
    "private_key_to_pem",
    "public_key_to_pem",
    "required_components",
    "sign_request",
    "verify_request",
    "verify_signature",
]

ALGORITHM: Final = "ed25519"
DEFAULT_LABEL: Final = "sig1"
MAX_AGE_SECONDS: Final = 300
MAX_SKEW_SECONDS: Final = 30
NONCE_MIN_LENGTH: Final = 22
NONCE_MAX_LENGTH: Final = 128
_NONCE_BYTES: Final = 16
_ED25519_SIGNATURE_LENGTH: Final = 64
_DIGEST_ALGORITHM: Final = "sha-256"
_REQUEST_COMPONENTS: Final = ("@method", "@authority", "@path", "@query")
_BODY_COMPONENTS: Final = ("content-digest", "content-type", "idempotency-key")
_KNOWN_PARAMS: Final = frozenset({"created", "expires", "keyid", "nonce", "alg", "tag"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_NONCE_RE: Final = re.compile(r"[A-Za-z0-9_-]+")


class SignatureRejected(Exception):
    """A request's signature is missing, malformed, stale or wrong.

    `reason` is a short code for logs and metrics; it never holds key material or signature bytes.
    Clients should only ever see a generic message.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- RFC 9421 signature base, for any covered components ---------------------------------------


@dataclass(frozen=True, slots=True)
class SignatureInput:
    """One signature's covered component names and parameters (RFC 9421 section 2.3).

    Parameter order is kept because it is part of what was signed. Component identifiers with
    parameters (`;sf`, `;key=...`) are outside our profile and not representable here.
    """

    components: tuple[str, ...]
    params: tuple[tuple[str, int | str], ...]

    def __post_init__(self) -> None:
        if len(set(self.components)) != len(self.components):
            raise ValueError("a component is covered twice")
        for name in self.components:
            if not name or name != name.lower() or not sf.is_sf_string(name):
                raise ValueError(f"invalid component name {name!r}")
            if name == "@signature-params":
                raise ValueError("@signature-params cannot be a covered component")
        keys = [key for key, _ in self.params]
        if len(set(keys)) != len(keys):
            raise ValueError("a signature parameter is repeated")
        for key, value in self.params:
            if sf.KEY_RE.fullmatch(key) is None:
                raise ValueError(f"invalid parameter name {key!r}")
            # `type() is` because bool is an int and a token is a str, and neither is allowed.
            if type(value) is int:
                if abs(value) > sf.MAX_SF_INTEGER:
                    raise ValueError(f"parameter {key!r} out of range")
            elif type(value) is not str or not sf.is_sf_string(value):
                raise ValueError(f"parameter {key!r} must be an integer or a printable string")

    def param(self, name: str) -> int | str | None:
        return next((value for key, value in self.params if key == name), None)

    def serialize(self) -> str:
        """The `@signature-params` value, also the Signature-Input member value."""
        components = " ".join(sf.serialize_string(name) for name in self.components)
        params = "".join(f";{key}={sf.serialize_param_value(value)}" for key, value in self.params)
        return f"({components}){params}"


def build_signature_base(signature_input: SignatureInput, values: Mapping[str, str]) -> bytes:
    """The signature base of RFC 9421 section 2.5.

    `values` maps each covered component name to its already-canonical value (derived components
    computed, field values trimmed and combined). Raises ValueError when a value is missing or
    holds characters that could forge extra lines or are not ASCII.
    """
    lines: list[str] = []
    for name in signature_input.components:
        value = values.get(name)
        if value is None:
            raise ValueError(f"no value for covered component {name!r}")
        if not all(" " <= char <= "~" or char == "\t" for char in value):
            raise ValueError(f"value of {name!r} has control or non-ASCII characters")
        lines.append(f"{sf.serialize_string(name)}: {value}")
    lines.append(f'"@signature-params": {signature_input.serialize()}')
    return "\n".join(lines).encode("ascii")


def create_signature(
    signature_input: SignatureInput, values: Mapping[str, str], private_key: Ed25519PrivateKey
) -> bytes:
    """Sign the signature base for these components with Ed25519 (RFC 9421 section 3.3.6)."""
    return private_key.sign(build_signature_base(signature_input, values))


def verify_signature(
    signature_input: SignatureInput,
    values: Mapping[str, str],
    signature: bytes,
    public_key: Ed25519PublicKey,
) -> None:
    """Check an Ed25519 signature over the signature base; raise SignatureRejected if wrong."""
    try:
        base = build_signature_base(signature_input, values)
    except ValueError:
        raise SignatureRejected("unusable_component_value") from None
    if len(signature) != _ED25519_SIGNATURE_LENGTH:
        raise SignatureRejected("bad_signature")
    try:
        public_key.verify(signature, base)
    except InvalidSignature:
        raise SignatureRejected("bad_signature") from None


# --- RFC 9530 Content-Digest ---------------------------------------------------------------------


def content_digest(body: bytes) -> str:
    """The Content-Digest header value for these raw body bytes: `sha-256=:<base64>:`."""
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
    return f"{_DIGEST_ALGORITHM}=:{digest}:"


def _check_content_digest(header: str | None, body_sha256: bytes) -> None:
    if header is None:
        raise SignatureRejected("missing_content_digest")
    try:
        members = sf.parse_dictionary(header)
    except sf.StructuredFieldError:
        raise SignatureRejected("malformed_content_digest") from None
    # Exactly one member: a second algorithm we do not check would be a value we cannot vouch for.
    if list(members) != [_DIGEST_ALGORITHM]:
        raise SignatureRejected("unsupported_digest_algorithm")
    member = members[_DIGEST_ALGORITHM]
    if not isinstance(member, sf.Item) or not isinstance(member.value, bytes) or member.params:
        raise SignatureRejected("malformed_content_digest")
    if not hmac.compare_digest(member.value, body_sha256):
        raise SignatureRejected("content_digest_mismatch")


# --- The request and its components --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """The parts of an HTTP request that a signature can cover.

    `authority` is host[:port] as sent (the Host header); `path` and `query` are the raw,
    still percent-encoded parts of the request target, `query` without its `?`. `body` is the
    raw body as received, before any decoding; for a body too large to hold (a file upload,
    spooled to disk as it arrives), `body_sha256` is its SHA-256 instead and `body` is empty.
    """

    method: str
    authority: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes = b""
    scheme: str = "https"
    body_sha256: bytes | None = None

    @classmethod
    def from_url(cls, method: str, url: str, headers: Mapping[str, str], body: bytes = b"") -> Self:
        """Split an absolute http(s) URL; user info and fragment are dropped, as on the wire."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.netloc:
            raise ValueError("expected an absolute http or https URL")
        authority = parts.netloc.rpartition("@")[2]
        return cls(method, authority, parts.path, parts.query, headers, body, scheme)


class _ComponentError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _header_fields(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased names; repeated fields combined with ", " as RFC 9421 section 2.1 says."""
    # items(), not keys(): multi-dicts such as Starlette's Headers list each field line there.
    lines: dict[str, list[str]] = {}
    for name, value in headers.items():
        lines.setdefault(name.lower(), []).append(value.strip(" \t"))
    return {name: ", ".join(values) for name, values in lines.items()}


def _canonical_authority(authority: str, scheme: str) -> str:
    """Lower-cased host[:port] without the scheme's default port (RFC 9421 section 2.2.3)."""
    authority = authority.lower()
    if authority.startswith("["):
        host, bracket, rest = authority.partition("]")
        host += bracket
        if not bracket or (rest and not rest.startswith(":")):
            raise _ComponentError("malformed_authority")
        port = rest[1:]
    else:
        host, _, port = authority.partition(":")
    if not host or (port and not (port.isascii() and port.isdigit())):
        raise _ComponentError("malformed_authority")
    if not port or int(port) == _DEFAULT_PORTS.get(scheme.lower()):
        return host
    return f"{host}:{port}"


def component_values(request: HttpRequest, components: Sequence[str]) -> dict[str, str]:
    """The canonical value of each covered component of this request (RFC 9421 section 2).

    Supports `@method`, `@authority`, `@path`, `@query` and header fields; raises ValueError for
    other derived components and for fields the request does not have.
    """
    fields = _header_fields(request.headers)
    values: dict[str, str] = {}
    for name in components:
        if name == "@method":
            values[name] = request.method.upper()
        elif name == "@authority":
            values[name] = _canonical_authority(request.authority, request.scheme)
        elif name == "@path":
            values[name] = request.path or "/"
        elif name == "@query":
            # RFC 9421 section 2.2.7: an absent or empty query is "?" alone.
            values[name] = "?" + request.query
        elif name.startswith("@"):
            raise _ComponentError("unsupported_component")
        elif name in fields:
            values[name] = fields[name]
        else:
            raise _ComponentError("missing_covered_field")
    return values


def required_components(has_body: bool, headers: Mapping[str, str]) -> tuple[str, ...]:
    """The components our profile requires a signature on this request to cover."""
    if has_body:
        return _REQUEST_COMPONENTS + _BODY_COMPONENTS
    if "idempotency-key" in _header_fields(headers):
        return (*_REQUEST_COMPONENTS, "idempotency-key")
    return _REQUEST_COMPONENTS


def _nonce_is_acceptable(nonce: str) -> bool:
    return (
        NONCE_MIN_LENGTH <= len(nonce) <= NONCE_MAX_LENGTH
        and _NONCE_RE.fullmatch(nonce) is not None
    )


def _timestamp(moment: datetime | float) -> float:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("naive datetime; pass an aware one")
        return moment.timestamp()
    return float(moment)


# --- Signing (client side) -----------------------------------------------------------------------


def sign_request(
    request: HttpRequest,
    *,
    private_key: Ed25519PrivateKey,
    keyid: str,
    created: datetime | int | None = None,
    expires: datetime | int | None = None,
    nonce: str | None = None,
    label: str = DEFAULT_LABEL,
) -> dict[str, str]:
    """Sign a request under our profile; return the headers to add to it.

    Returns Content-Digest (when the body is not empty), Signature-Input and Signature. The
    request must already carry Content-Type and Idempotency-Key when it has a body. A fresh
    nonce is drawn unless one is given. Raises ValueError for requests the verifier would refuse.
    """
    if sf.KEY_RE.fullmatch(label) is None:
        raise ValueError(f"invalid signature label {label!r}")
    if not keyid:
        raise ValueError("keyid must not be empty")
    if nonce is None:
        nonce = secrets.token_urlsafe(_NONCE_BYTES)
    elif not _nonce_is_acceptable(nonce):
        raise ValueError("nonce must be 22 to 128 base64url characters")
    added: dict[str, str] = {}
    if request.body:
        digest = content_digest(request.body)
        if _header_fields(request.headers).get("content-digest", digest) != digest:
            raise ValueError("the request already has a different Content-Digest")
        added["Content-Digest"] = digest
        # The signed values must be the headers as sent, so sign over the digest we add.
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-digest"}
        request = replace(request, headers=headers | added)

    created_at = int(time.time()) if created is None else int(_timestamp(created))
    params: list[tuple[str, int | str]] = [("created", created_at)]
    if expires is not None:
        params.append(("expires", int(_timestamp(expires))))
    params += [("keyid", keyid), ("nonce", nonce), ("alg", ALGORITHM)]

    components = required_components(bool(request.body), request.headers)
    signature_input = SignatureInput(components, tuple(params))
    try:
        values = component_values(request, signature_input.components)
    except _ComponentError as exc:
        raise ValueError(f"cannot sign this request: {exc.reason}") from None
    signature = create_signature(signature_input, values, private_key)
    added["Signature-Input"] = f"{label}={signature_input.serialize()}"
    added["Signature"] = f"{label}=:{base64.b64encode(signature).decode('ascii')}:"
    return added


# --- Verification (server side) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A partner's public key as the key record holds it; the record names the algorithm."""

    public_key: Ed25519PublicKey
    algorithm: str = ALGORITHM


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    """What a good signature vouches for; the caller still has to check the nonce is fresh."""

    label: str
    keyid: str
    created: int
    expires: int | None
    nonce: str
    algorithm: str
    covered_components: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ParsedSignature:
    """The one signature a request carries, parsed but not yet checked."""

    label: str
    signature_input: SignatureInput
    signature: bytes


def parse_signature_headers(headers: Mapping[str, str]) -> ParsedSignature:
    """Parse the Signature-Input and Signature headers, which must hold one signature between them.

    Only the shape is checked here: components must be plain names and parameters integers or
    strings. Raises SignatureRejected.
    """
    fields = _header_fields(headers)
    raw_input = fields.get("signature-input")
    if raw_input is None:
        raise SignatureRejected("missing_signature_input")
    raw_signature = fields.get("signature")
    if raw_signature is None:
        raise SignatureRejected("missing_signature")
    try:
        inputs = sf.parse_dictionary(raw_input)
        signatures = sf.parse_dictionary(raw_signature)
    except sf.StructuredFieldError:
        raise SignatureRejected("malformed_signature_header") from None
    if len(inputs) != 1 or len(signatures) != 1:
        raise SignatureRejected("not_exactly_one_signature")
    ((label, member),) = inputs.items()
    signature = signatures.get(label)
    if signature is None:
        raise SignatureRejected("signature_label_mismatch")
    if not isinstance(member, sf.InnerList):
        raise SignatureRejected("malformed_signature_input")
    if not isinstance(signature, sf.Item) or not isinstance(signature.value, bytes):
        raise SignatureRejected("malformed_signature")
    if signature.params:
        raise SignatureRejected("malformed_signature")
    components: list[str] = []
    for item in member.items:
        if type(item.value) is not str or item.params:
            raise SignatureRejected("unsupported_component")
        components.append(item.value)
    params: list[tuple[str, int | str]] = []
    for key, value in member.params:
        if type(value) is not int and type(value) is not str:
            raise SignatureRejected("malformed_signature_param")
        params.append((key, value))
    try:
        signature_input = SignatureInput(tuple(components), tuple(params))
    except ValueError:
        raise SignatureRejected("malformed_signature_input") from None
    return ParsedSignature(label, signature_input, signature.value)


def _int_param(signature_input: SignatureInput, name: str) -> int | None:
    value = signature_input.param(name)
    if value is not None and not isinstance(value, int):
        raise SignatureRejected(f"malformed_{name}")
    return value


def _str_param(signature_input: SignatureInput, name: str) -> str | None:
    value = signature_input.param(name)
    if value is not None and not isinstance(value, str):
        raise SignatureRejected(f"malformed_{name}")
    return value


def verify_request(
    request: HttpRequest,
    *,
    resolve_key: Callable[[str], VerificationKey | None],
    now: datetime | float,
    max_age: int = MAX_AGE_SECONDS,
    max_skew: int = MAX_SKEW_SECONDS,
) -> VerifiedSignature:
    """Verify a partner request's signature under our profile.

    `resolve_key` maps a keyid to the key record, or None when there is no active key by that id;
    its own errors (a database outage) propagate unchanged. `now` is an aware datetime or a Unix
    time. Every refusal raises SignatureRejected. The body's digest is checked before the
    signature; the nonce is returned unchecked for the caller's replay store.
    """
    now_ts = _timestamp(now)
    fields = _header_fields(request.headers)
    parsed = parse_signature_headers(request.headers)
    signature_input = parsed.signature_input

    unknown = {key for key, _ in signature_input.params} - _KNOWN_PARAMS
    if unknown:
        raise SignatureRejected("unknown_signature_param")
    keyid = _str_param(signature_input, "keyid")
    if not keyid:
        raise SignatureRejected("missing_keyid")
    nonce = _str_param(signature_input, "nonce")
    if nonce is None:
        raise SignatureRejected("missing_nonce")
    if not _nonce_is_acceptable(nonce):
        raise SignatureRejected("weak_nonce")
    alg = _str_param(signature_input, "alg")
    _str_param(signature_input, "tag")
    created = _int_param(signature_input, "created")
    if created is None:
        raise SignatureRejected("missing_created")
    expires = _int_param(signature_input, "expires")

    if now_ts - created > max_age:
        raise SignatureRejected("created_too_old")
    if created - now_ts > max_skew:
        raise SignatureRejected("created_in_future")
    if expires is not None and (expires < created or now_ts > expires):
        raise SignatureRejected("expired")

    has_body = bool(request.body) or request.body_sha256 is not None
    covered = set(signature_input.components)
    if not covered.issuperset(required_components(has_body, request.headers)):
        raise SignatureRejected("required_component_not_covered")
    if has_body or "content-digest" in fields:
        body_sha256 = request.body_sha256 or hashlib.sha256(request.body).digest()
        _check_content_digest(fields.get("content-digest"), body_sha256)
    try:
        values = component_values(request, signature_input.components)
    except _ComponentError as exc:
        raise SignatureRejected(exc.reason) from None

    key = resolve_key(keyid)
    if key is None:
        raise SignatureRejected("unknown_keyid")
    if key.algorithm != ALGORITHM:
        raise SignatureRejected("unsupported_key_algorithm")
    if alg is not None and alg != key.algorithm:
        raise SignatureRejected("alg_mismatch")
    verify_signature(signature_input, values, parsed.signature, key.public_key)

    return VerifiedSignature(
        label=parsed.label,
        keyid=keyid,
        created=created,
        expires=expires,
        nonce=nonce,
        algorithm=key.algorithm,
        covered_components=signature_input.components,
    )


# --- Keys in PEM, for the CLI --------------------------------------------------------------------


def load_private_key_pem(data: bytes, password: bytes | None = None) -> Ed25519PrivateKey:
    """An Ed25519 private key from PKCS#8 PEM; ValueError for any other kind of key."""
    key = serialization.load_pem_private_key(data, password=password)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def load_public_key_pem(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from SubjectPublicKeyInfo PEM; ValueError for any other kind."""
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def private_key_to_pem(key: Ed25519PrivateKey, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted when a password is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def public_key_to_pem(key: Ed25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
