"""Request signing: the RFC 9421 Ed25519 example, interop with the independent
`http-message-signatures` library, every refusal of our profile, and properties.

No database: nothing here asks for a fixture from tests/conftest.py.
"""

import base64
import hashlib
import string
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
)
from http_message_signatures.algorithms import ED25519
from hypothesis import given
from hypothesis import strategies as st

from partners.signing import (
    HttpRequest,
    SignatureInput,
    SignatureRejected,
    VerificationKey,
    VerifiedSignature,
    build_signature_base,
    component_values,
    content_digest,
    create_signature,
    load_private_key_pem,
    load_public_key_pem,
    parse_signature_headers,
    private_key_to_pem,
    public_key_to_pem,
    required_components,
    sign_request,
    verify_request,
    verify_signature,
)

# --- RFC 9421 Appendix B values, copied from the RFC (B.1.4 key, B.2 request, B.2.6 signature) ----

RFC_PRIVATE_KEY_PEM = b"""-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF
-----END PRIVATE KEY-----
"""
RFC_PUBLIC_KEY_PEM = b"""-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
-----END PUBLIC KEY-----
"""
RFC_REQUEST = HttpRequest(
    method="POST",
    authority="example.com",
    path="/foo",
    query="param=Value&Pet=dog",
    headers={
        "Host": "example.com",
        "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
        "Content-Type": "application/json",
        "Content-Digest": (
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+"
            "AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
        ),
        "Content-Length": "18",
    },
    body=b'{"hello": "world"}',
)
RFC_B26_SIGNATURE_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
RFC_B26_SIGNATURE = (
    "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u"
    "02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
)
RFC_B26_SIGNATURE_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@method": POST\n'
    '"@path": /foo\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"content-length": 18\n'
    '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" '
    '"content-length");created=1618884473;keyid="test-key-ed25519"'
)

# --- Our own fixtures: fixed keys and clock, so every case is reproducible ------------------------

PARTNER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
KEYID = "partner-7-2026a"
NOW = 1_767_225_600
NONCE = "k2F0Ym9HbFc3dm5xUmVzdA"  # 22 base64url characters, the shortest we accept
BODY = b'{"member": "M-1001", "points": 120, "store": "S-42"}'
BASE_COMPONENTS = ("@method", "@authority", "@path", "@query")
BODY_COMPONENTS = ("content-digest", "content-type", "idempotency-key")


def resolve_key(keyid: str) -> VerificationKey | None:
    return VerificationKey(PARTNER_KEY.public_key()) if keyid == KEYID else None


def post_request(**changes: Any) -> HttpRequest:
    request = HttpRequest.from_url(
        "POST",
        "https://api.clearinghouse.example/v1/accruals?store=S-42&dry_run=0",
        {"Content-Type": "application/json", "Idempotency-Key": "01J9ZB7Q4M3Y1T0W8X6V5N2K7C"},
        BODY,
    )
    return replace(request, **changes)


def get_request() -> HttpRequest:
    return HttpRequest.from_url(
        "GET", "https://api.clearinghouse.example/v1/balances/M-1001", {"Accept": "*/*"}
    )


def with_headers(request: HttpRequest, changes: Mapping[str, str | None]) -> HttpRequest:
    """Set (or with None, remove) headers, matching names case-insensitively."""
    lowered = {name.lower() for name in changes}
    headers = {k: v for k, v in request.headers.items() if k.lower() not in lowered}
    headers |= {k: v for k, v in changes.items() if v is not None}
    return replace(request, headers=headers)


def signed(request: HttpRequest, **kwargs: Any) -> HttpRequest:
    options: dict[str, Any] = {
        "private_key": PARTNER_KEY,
        "keyid": KEYID,
        "created": NOW,
        "nonce": NONCE,
    }
    options.update(kwargs)
    return with_headers(request, sign_request(request, **options))


def params(**overrides: int | str | None) -> tuple[tuple[str, int | str], ...]:
    """Signature parameters, ours by default; None drops one, new names go last."""
    values: dict[str, int | str | None] = {
        "created": NOW,
        "keyid": KEYID,
        "nonce": NONCE,
        "alg": "ed25519",
    }
    values.update(overrides)
    return tuple((k, v) for k, v in values.items() if v is not None)


def signed_custom(
    request: HttpRequest,
    *,
    components: Sequence[str] | None = None,
    signature_params: tuple[tuple[str, int | str], ...] | None = None,
    key: Ed25519PrivateKey = PARTNER_KEY,
) -> HttpRequest:
    """A correctly signed request of any shape, built with the low-level functions, so each
    refusal below comes from the profile's rules and not from a broken signature."""
    if request.body:
        request = with_headers(request, {"Content-Digest": content_digest(request.body)})
    if components is None:
        components = required_components(bool(request.body), request.headers)
    signature_input = SignatureInput(tuple(components), signature_params or params())
    values = component_values(request, signature_input.components)
    signature = base64.b64encode(create_signature(signature_input, values, key)).decode()
    return with_headers(
        request,
        {
            "Signature-Input": f"sig1={signature_input.serialize()}",
            "Signature": f"sig1=:{signature}:",
        },
    )


def verify(request: HttpRequest, now: float = NOW) -> VerifiedSignature:
    return verify_request(request, resolve_key=resolve_key, now=now)


def assert_rejected(request: HttpRequest, reason: str, now: float = NOW) -> None:
    with pytest.raises(SignatureRejected) as excinfo:
        verify(request, now)
    assert excinfo.value.reason == reason


# --- RFC 9421 Appendix B.2.6 and RFC 9530 examples ----------------------------------------------


def test_rfc_keys_are_a_pair() -> None:
    private_key = load_private_key_pem(RFC_PRIVATE_KEY_PEM)
    assert public_key_to_pem(private_key.public_key()) == RFC_PUBLIC_KEY_PEM


def test_rfc_9421_b26_signature_base_and_signature() -> None:
    request = with_headers(
        RFC_REQUEST, {"Signature-Input": RFC_B26_SIGNATURE_INPUT, "Signature": RFC_B26_SIGNATURE}
    )
    parsed = parse_signature_headers(request.headers)
    assert parsed.label == "sig-b26"
    assert parsed.signature_input == SignatureInput(
        ("date", "@method", "@path", "@authority", "content-type", "content-length"),
        (("created", 1618884473), ("keyid", "test-key-ed25519")),
    )

    values = component_values(request, parsed.signature_input.components)
    base = build_signature_base(parsed.signature_input, values)
    assert base == RFC_B26_SIGNATURE_BASE.encode()

    public_key = load_public_key_pem(RFC_PUBLIC_KEY_PEM)
    verify_signature(parsed.signature_input, values, parsed.signature, public_key)
    # Ed25519 is deterministic, so the RFC's private key reproduces the RFC's signature.
    private_key = load_private_key_pem(RFC_PRIVATE_KEY_PEM)
    assert create_signature(parsed.signature_input, values, private_key) == parsed.signature

    with pytest.raises(SignatureRejected) as excinfo:
        verify_signature(
            parsed.signature_input, values | {"@path": "/bar"}, parsed.signature, public_key
        )
    assert excinfo.value.reason == "bad_signature"


def test_rfc_9421_b26_request_does_not_meet_our_profile() -> None:
    request = with_headers(
        RFC_REQUEST, {"Signature-Input": RFC_B26_SIGNATURE_INPUT, "Signature": RFC_B26_SIGNATURE}
    )
    with pytest.raises(SignatureRejected) as excinfo:
        verify_request(request, resolve_key=lambda _: None, now=1618884473)
    assert excinfo.value.reason == "missing_nonce"


def test_rfc_9530_content_digest_example() -> None:
    assert content_digest(b'{"hello": "world"}') == (
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    )


# --- Our profile: what passes --------------------------------------------------------------------


def test_signed_post_verifies() -> None:
    request = signed(post_request())
    assert request.headers["Content-Digest"] == content_digest(BODY)
    result = verify(request)
    assert result == VerifiedSignature(
        label="sig1",
        keyid=KEYID,
        created=NOW,
        expires=None,
        nonce=NONCE,
        algorithm="ed25519",
        covered_components=BASE_COMPONENTS + BODY_COMPONENTS,
    )


def test_signature_input_format() -> None:
    headers = sign_request(
        post_request(), private_key=PARTNER_KEY, keyid=KEYID, created=NOW, nonce=NONCE
    )
    assert set(headers) == {"Content-Digest", "Signature-Input", "Signature"}
    assert headers["Signature-Input"] == (
        'sig1=("@method" "@authority" "@path" "@query" "content-digest" "content-type" '
        f'"idempotency-key");created={NOW};keyid="{KEYID}";nonce="{NONCE}";alg="ed25519"'
    )


def test_signed_get_without_body_verifies() -> None:
    request = signed(get_request())
    assert "Content-Digest" not in request.headers
    assert verify(request).covered_components == BASE_COMPONENTS


def test_sign_request_draws_a_fresh_nonce() -> None:
    first = verify(signed(post_request(), nonce=None)).nonce
    second = verify(signed(post_request(), nonce=None)).nonce
    assert first != second
    assert len(first) >= 22


def test_component_values_of_our_profile() -> None:
    request = HttpRequest.from_url(
        "post", "https://user@API.Example.COM:443/v1/a%2Fb?x=%20y&z#frag", {}, b""
    )
    assert component_values(request, BASE_COMPONENTS) == {
        "@method": "POST",
        "@authority": "api.example.com",
        "@path": "/v1/a%2Fb",
        "@query": "?x=%20y&z",
    }


@pytest.mark.parametrize(
    ("url", "authority", "path", "query"),
    [
        ("https://example.com", "example.com", "/", "?"),
        ("https://example.com/p?", "example.com", "/p", "?"),
        ("http://example.com:80/p", "example.com", "/p", "?"),
        ("http://example.com:443/p", "example.com:443", "/p", "?"),
        ("https://Example.com:8443/p?a=1", "example.com:8443", "/p", "?a=1"),
        ("https://[2001:DB8::1]:443/p", "[2001:db8::1]", "/p", "?"),
        ("https://[2001:db8::1]:8443/p", "[2001:db8::1]:8443", "/p", "?"),
    ],
)
def test_derived_components(url: str, authority: str, path: str, query: str) -> None:
    values = component_values(
        HttpRequest.from_url("GET", url, {}), ("@authority", "@path", "@query")
    )
    assert values == {"@authority": authority, "@path": path, "@query": query}


def test_header_names_are_case_insensitive() -> None:
    request = signed(post_request())
    shouted = replace(request, headers={k.upper(): v for k, v in request.headers.items()})
    whispered = replace(request, headers={k.lower(): v for k, v in request.headers.items()})
    assert verify(shouted).nonce == verify(whispered).nonce == NONCE


def test_extra_covered_components_are_fine() -> None:
    request = with_headers(post_request(), {"Date": "Thu, 01 Jan 2026 00:00:00 GMT"})
    components = (*BASE_COMPONENTS, *BODY_COMPONENTS, "date")
    assert verify(signed_custom(request, components=components)).covered_components == components


def test_params_in_any_order_with_tag_and_without_alg() -> None:
    signature_params = (
        ("keyid", KEYID),
        ("tag", "clearinghouse"),
        ("nonce", NONCE),
        ("created", NOW),
    )
    assert verify(signed_custom(post_request(), signature_params=signature_params)).keyid == KEYID


@pytest.mark.parametrize("created", [NOW - 300, NOW + 30])
def test_created_at_the_edges_of_the_window(created: int) -> None:
    assert verify(signed(post_request(), created=created)).created == created


def test_expires_in_the_future() -> None:
    request = signed(post_request(), expires=NOW + 60)
    assert verify(request).expires == NOW + 60
    assert verify(request, now=NOW + 60).expires == NOW + 60


def test_now_as_aware_datetime() -> None:
    assert (
        verify_request(
            signed(post_request()),
            resolve_key=resolve_key,
            now=datetime.fromtimestamp(NOW, UTC),
        ).created
        == NOW
    )


def test_naive_datetime_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="naive"):
        verify_request(signed(post_request()), resolve_key=resolve_key, now=datetime(2026, 1, 1))


def test_idempotency_key_must_be_covered_even_without_a_body() -> None:
    request = with_headers(get_request(), {"Idempotency-Key": "01J9ZB7Q4M3Y1T0W8X6V5N2K7C"})
    assert verify(signed(request)).covered_components == (*BASE_COMPONENTS, "idempotency-key")
    assert_rejected(
        signed_custom(request, components=BASE_COMPONENTS), "required_component_not_covered"
    )


# --- Our profile: every refusal -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        pytest.param(
            lambda r: replace(r, body=r.body + b" "), "content_digest_mismatch", id="body"
        ),
        pytest.param(lambda r: replace(r, path="/v1/redemptions"), "bad_signature", id="path"),
        pytest.param(lambda r: replace(r, path="/V1/accruals"), "bad_signature", id="path-case"),
        pytest.param(
            lambda r: replace(r, query="store=S-43&dry_run=0"), "bad_signature", id="query"
        ),
        pytest.param(lambda r: replace(r, query=""), "bad_signature", id="query-dropped"),
        pytest.param(lambda r: replace(r, method="PUT"), "bad_signature", id="method"),
        pytest.param(
            lambda r: replace(r, authority="evil.example"), "bad_signature", id="authority"
        ),
        pytest.param(
            lambda r: with_headers(r, {"Idempotency-Key": "01J9ZB7Q4M3Y1T0W8X6V5N2K7D"}),
            "bad_signature",
            id="idempotency-key",
        ),
        pytest.param(
            lambda r: with_headers(r, {"Content-Type": "text/plain"}),
            "bad_signature",
            id="content-type",
        ),
        pytest.param(
            lambda r: with_headers(r, {"Content-Type": None}),
            "missing_covered_field",
            id="no-ctype",
        ),
        pytest.param(
            lambda r: with_headers(r, {"Content-Digest": None}),
            "missing_content_digest",
            id="no-content-digest",
        ),
        pytest.param(
            lambda r: with_headers(r, {"Signature": None}), "missing_signature", id="no-signature"
        ),
        pytest.param(
            lambda r: with_headers(r, {"Signature-Input": None}),
            "missing_signature_input",
            id="no-signature-input",
        ),
    ],
)
def test_tampering_is_refused(tamper: Callable[[HttpRequest], HttpRequest], reason: str) -> None:
    request = signed(post_request())
    assert verify(request)
    assert_rejected(tamper(request), reason)


def test_body_added_to_a_get_is_refused() -> None:
    request = replace(signed(get_request()), body=b"{}")
    assert_rejected(request, "required_component_not_covered")


@pytest.mark.parametrize(
    "digest",
    [
        "sha-512=:" + base64.b64encode(hashlib.sha512(BODY).digest()).decode() + ":",
        content_digest(BODY)
        + ", sha-512=:"
        + base64.b64encode(hashlib.sha512(BODY).digest()).decode()
        + ":",
        "md5=:" + base64.b64encode(hashlib.md5(BODY).digest()).decode() + ":",
    ],
)
def test_wrong_digest_algorithm(digest: str) -> None:
    # Signed over the foreign digest, so only the digest rule can refuse it.
    request = with_headers(post_request(), {"Content-Digest": digest})
    components = (*BASE_COMPONENTS, *BODY_COMPONENTS)
    signature_input = SignatureInput(components, params())
    values = component_values(request, components)
    signature = base64.b64encode(create_signature(signature_input, values, PARTNER_KEY)).decode()
    request = with_headers(
        request,
        {
            "Signature-Input": f"sig1={signature_input.serialize()}",
            "Signature": f"sig1=:{signature}:",
        },
    )
    assert_rejected(request, "unsupported_digest_algorithm")


def test_rfc_example_sha512_digest_is_refused() -> None:
    request = with_headers(
        signed(post_request()), {"Content-Digest": RFC_REQUEST.headers["Content-Digest"]}
    )
    assert_rejected(request, "unsupported_digest_algorithm")


@pytest.mark.parametrize(
    ("created", "reason"),
    [(NOW - 301, "created_too_old"), (NOW + 31, "created_in_future")],
)
def test_created_outside_the_window(created: int, reason: str) -> None:
    assert_rejected(signed(post_request(), created=created), reason)


def test_created_window_follows_max_age_and_max_skew() -> None:
    request = signed(post_request(), created=NOW - 100)
    with pytest.raises(SignatureRejected):
        verify_request(request, resolve_key=resolve_key, now=NOW, max_age=60)
    request = signed(post_request(), created=NOW + 10)
    with pytest.raises(SignatureRejected):
        verify_request(request, resolve_key=resolve_key, now=NOW, max_skew=5)


@pytest.mark.parametrize("expires", [NOW - 1, NOW - 200])
def test_expired(expires: int) -> None:
    request = signed_custom(
        post_request(), signature_params=params(created=NOW - 250, expires=expires)
    )
    assert_rejected(request, "expired")


def test_expires_before_created() -> None:
    # Checked at a time before `expires`, so only the ordering rule can refuse it.
    request = signed_custom(post_request(), signature_params=params(created=NOW, expires=NOW - 1))
    assert_rejected(request, "expired", now=NOW - 5)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        pytest.param({"nonce": None}, "missing_nonce", id="no-nonce"),
        pytest.param({"nonce": NONCE[:-1]}, "weak_nonce", id="21-chars"),
        pytest.param({"nonce": "a"}, "weak_nonce", id="1-char"),
        pytest.param({"nonce": "k2F0Ym9HbFc3dm5xUmVzdA=="}, "weak_nonce", id="padding"),
        pytest.param({"nonce": "k2F0Ym9HbFc3dm5xUmVz+A"}, "weak_nonce", id="plus"),
        pytest.param({"nonce": "k" * 129}, "weak_nonce", id="129-chars"),
        pytest.param({"nonce": 123456789012345}, "malformed_nonce", id="int"),
        pytest.param({"keyid": None}, "missing_keyid", id="no-keyid"),
        pytest.param({"keyid": ""}, "missing_keyid", id="empty-keyid"),
        pytest.param({"keyid": "partner-8"}, "unknown_keyid", id="unknown-keyid"),
        pytest.param({"created": None}, "missing_created", id="no-created"),
        pytest.param({"created": str(NOW)}, "malformed_created", id="string-created"),
        pytest.param({"expires": str(NOW + 9)}, "malformed_expires", id="string-expires"),
        pytest.param({"alg": "rsa-pss-sha512"}, "alg_mismatch", id="alg"),
        pytest.param({"alg": "ED25519"}, "alg_mismatch", id="alg-case"),
        pytest.param({"alg": 25519}, "malformed_alg", id="alg-int"),
        pytest.param({"context": "x"}, "unknown_signature_param", id="unknown-param"),
    ],
)
def test_signature_params_are_refused(overrides: dict[str, int | str | None], reason: str) -> None:
    assert_rejected(signed_custom(post_request(), signature_params=params(**overrides)), reason)


def test_key_record_with_another_algorithm() -> None:
    request = signed(post_request())
    with pytest.raises(SignatureRejected) as excinfo:
        verify_request(
            request,
            resolve_key=lambda _: VerificationKey(PARTNER_KEY.public_key(), algorithm="rsa-pss"),
            now=NOW,
        )
    assert excinfo.value.reason == "unsupported_key_algorithm"


@pytest.mark.parametrize("missing", BASE_COMPONENTS + BODY_COMPONENTS)
def test_required_component_not_covered(missing: str) -> None:
    components = [c for c in BASE_COMPONENTS + BODY_COMPONENTS if c != missing]
    assert_rejected(
        signed_custom(post_request(), components=components), "required_component_not_covered"
    )


@pytest.mark.parametrize(
    ("component", "reason"),
    [
        ("x-absent", "missing_covered_field"),
        ("@target-uri", "unsupported_component"),
        ("@request-target", "unsupported_component"),
    ],
)
def test_unusable_extra_component(component: str, reason: str) -> None:
    signature_input = SignatureInput((*BASE_COMPONENTS, *BODY_COMPONENTS, component), params())
    request = signed(post_request())
    # Any signature will do: the component is refused before the signature is checked.
    request = with_headers(request, {"Signature-Input": f"sig1={signature_input.serialize()}"})
    assert_rejected(request, reason)


def test_signature_by_another_key() -> None:
    assert_rejected(signed(post_request(), private_key=OTHER_KEY), "bad_signature")
    assert_rejected(signed_custom(post_request(), key=OTHER_KEY), "bad_signature")


def test_signature_of_wrong_length() -> None:
    request = with_headers(signed(post_request()), {"Signature": "sig1=:" + "A" * 84 + ":"})
    assert_rejected(request, "bad_signature")


def test_two_signatures_are_refused() -> None:
    request = signed(post_request())
    both = with_headers(
        request,
        {
            "Signature-Input": request.headers["Signature-Input"]
            + ", "
            + request.headers["Signature-Input"].replace("sig1=", "sig2=", 1),
            "Signature": request.headers["Signature"]
            + ", "
            + request.headers["Signature"].replace("sig1=", "sig2=", 1),
        },
    )
    assert_rejected(both, "not_exactly_one_signature")


def test_extra_signature_without_input_is_refused() -> None:
    request = signed(post_request())
    extra = with_headers(request, {"Signature": request.headers["Signature"] + ", sig2=:AAAA:"})
    assert_rejected(extra, "not_exactly_one_signature")


def test_repeated_header_lines_are_combined_not_picked() -> None:
    # A second Signature-Input line in another case joins the first, like a repeated field would.
    request = signed(post_request())
    headers = dict(request.headers) | {"signature-input": 'sig2=("@method");created=1'}
    assert_rejected(replace(request, headers=headers), "not_exactly_one_signature")


def test_label_mismatch() -> None:
    request = signed(post_request())
    relabelled = with_headers(
        request, {"Signature": request.headers["Signature"].replace("sig1=", "sig2=", 1)}
    )
    assert_rejected(relabelled, "signature_label_mismatch")


MALFORMED = [
    "",
    " ",
    "sig1",
    "sig1=",
    "sig1=(",
    'sig1=("@method"',
    'sig1=("@method")x',
    "sig1=:not base64!:",
    "sig1=:YWJj:",  # canonical base64 but a byte sequence where an inner list belongs
    'sig1=("@method" "@method");created=1',
    'sig1=("@Method");created=1',
    'sig1=("@method";sf);created=1',
    "sig1=(@method);created=1",
    'sig1=("@method");created=1.5',
    'sig1=("@method");created=?1',
    'sig1=("@method");created=1;created=2',
    'sig1=("@method");created=9999999999999999',
    'sig1=("@method");keyid=token',
    'sig1=("@method");keyid=:YWJj:',
    'sig1=("@method");keyid="\\x"',
    'sig1=("@method");keyid="é"',
    'sig1=("@signature-params");created=1',
    'sig1=("@method"),',
    'sig1=("@method"), sig1=("@path")',
    "SIG1=()",
    "sig1=()\x00",
    '\x00\xff\u2028"',
]


@pytest.mark.parametrize("value", MALFORMED)
@pytest.mark.parametrize("header", ["Signature-Input", "Signature", "Content-Digest"])
def test_malformed_structured_fields(header: str, value: str) -> None:
    assert_rejected_any(with_headers(signed(post_request()), {header: value}))


@pytest.mark.parametrize("value", ["sig1=?1", "sig1=1", 'sig1="abc"', "sig1=(:YWJj:)", "sig1"])
def test_signature_member_must_be_a_byte_sequence(value: str) -> None:
    assert_rejected(
        with_headers(signed(post_request()), {"Signature": value}), "malformed_signature"
    )


_BASE64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"


def test_signature_must_be_canonical_base64() -> None:
    request = signed(post_request())
    value = request.headers["Signature"]
    assert value.endswith("==:")
    # The last character before "==" carries 4 unused bits: same bytes, another spelling.
    last = value[-4]
    respelled = value[:-4] + _BASE64[_BASE64.index(last) ^ 1] + value[-3:]
    assert base64.b64decode(respelled[6:-1]) == base64.b64decode(value[6:-1])
    assert_rejected(with_headers(request, {"Signature": respelled}), "malformed_signature_header")
    unpadded = value[:-3] + ":"
    assert_rejected(with_headers(request, {"Signature": unpadded}), "malformed_signature_header")
    with_params = value + ";x"
    assert_rejected(with_headers(request, {"Signature": with_params}), "malformed_signature")


def assert_rejected_any(request: HttpRequest) -> None:
    with pytest.raises(SignatureRejected):
        verify(request)


@given(
    header=st.sampled_from(["Signature-Input", "Signature", "Content-Digest"]),
    value=st.text(max_size=200),
)
def test_garbage_headers_only_ever_raise_signature_rejected(header: str, value: str) -> None:
    assert_rejected_any(with_headers(signed(post_request()), {header: value}))


_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


@given(
    header=st.sampled_from(["Signature-Input", "Content-Digest"]),
    data=st.data(),
)
def test_any_one_character_edit_of_a_covered_header_is_refused(
    header: str, data: st.DataObject
) -> None:
    request = signed(post_request())
    value = request.headers[header]
    index = data.draw(st.integers(0, len(value) - 1))
    char = data.draw(_PRINTABLE.filter(lambda c: c != value[index]))
    edited = value[:index] + char + value[index + 1 :]
    assert_rejected_any(with_headers(request, {header: edited}))


@given(data=st.data())
def test_any_one_character_edit_of_the_signature_is_refused(data: st.DataObject) -> None:
    request = signed(post_request())
    value = request.headers["Signature"]
    index = data.draw(st.integers(0, len(value) - 1))
    char = data.draw(_PRINTABLE.filter(lambda c: c != value[index]))
    # Canonical base64 only: no other spelling of the same signature bytes is accepted either.
    assert_rejected_any(
        with_headers(request, {"Signature": value[:index] + char + value[index + 1 :]})
    )


# --- Properties ----------------------------------------------------------------------------------

_URL_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%"


@given(
    body=st.binary(min_size=1, max_size=2048),
    path=st.text(alphabet=_URL_CHARS + "/", max_size=60).map(lambda p: "/" + p),
    query=st.text(alphabet=_URL_CHARS + "/?", max_size=60),
    data=st.data(),
)
def test_sign_then_verify_and_any_flipped_body_byte_fails(
    body: bytes, path: str, query: str, data: st.DataObject
) -> None:
    request = signed(post_request(body=body, path=path, query=query))
    assert verify(request).nonce == NONCE

    index = data.draw(st.integers(0, len(body) - 1), label="index")
    mask = data.draw(st.integers(1, 255), label="mask")
    flipped = bytearray(body)
    flipped[index] ^= mask
    assert_rejected(replace(request, body=bytes(flipped)), "content_digest_mismatch")


# --- Signing refuses what the verifier would refuse ----------------------------------------------


@pytest.mark.parametrize(
    ("request_", "kwargs", "message"),
    [
        (post_request(headers={"Idempotency-Key": "k"}), {}, "missing_covered_field"),
        (post_request(headers={"Content-Type": "application/json"}), {}, "missing_covered_field"),
        (
            post_request(headers={"Content-Digest": "sha-256=:AAAA:", "Content-Type": "a/b"}),
            {},
            "different Content-Digest",
        ),
        (post_request(), {"nonce": "short"}, "nonce"),
        (post_request(), {"keyid": ""}, "keyid"),
        (post_request(), {"label": "Sig1"}, "label"),
        (post_request(path="/caf\u00e9"), {}, "non-ASCII"),
        (post_request(authority="bad host:port"), {}, "malformed_authority"),
    ],
)
def test_sign_request_refuses(request_: HttpRequest, kwargs: dict[str, Any], message: str) -> None:
    options: dict[str, Any] = {"private_key": PARTNER_KEY, "keyid": KEYID} | kwargs
    with pytest.raises(ValueError, match=message):
        sign_request(request_, **options)


def test_sign_request_accepts_a_matching_content_digest() -> None:
    request = with_headers(post_request(), {"content-digest": content_digest(BODY)})
    assert verify(signed(request)).nonce == NONCE


def test_from_url_needs_an_absolute_http_url() -> None:
    with pytest.raises(ValueError, match="absolute"):
        HttpRequest.from_url("GET", "/v1/balances", {})
    with pytest.raises(ValueError, match="absolute"):
        HttpRequest.from_url("GET", "ftp://example.com/x", {})


# --- PEM helpers ---------------------------------------------------------------------------------


def test_pem_round_trip() -> None:
    pem = private_key_to_pem(PARTNER_KEY)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_private_key_pem(pem).private_bytes_raw() == PARTNER_KEY.private_bytes_raw()

    encrypted = private_key_to_pem(PARTNER_KEY, password=b"correct horse")
    assert encrypted.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    key = load_private_key_pem(encrypted, password=b"correct horse")
    assert key.private_bytes_raw() == PARTNER_KEY.private_bytes_raw()

    public_pem = public_key_to_pem(PARTNER_KEY.public_key())
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert isinstance(load_public_key_pem(public_pem), Ed25519PublicKey)


def test_pem_of_another_key_type_is_refused() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="Ed25519"):
        load_private_key_pem(
            ec_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with pytest.raises(ValueError, match="Ed25519"):
        load_public_key_pem(
            ec_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


# --- Interop with the independent `http-message-signatures` library -------------------------------


@dataclass
class LibraryMessage:
    """The request shape that library reads: method, absolute url and a headers mapping."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


class LibraryKeys(HTTPSignatureKeyResolver):
    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey | None:
        return PARTNER_KEY.public_key() if key_id == KEYID else None

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        assert key_id == KEYID
        return PARTNER_KEY


INTEROP_URLS = [
    "https://api.clearinghouse.example/v1/accruals",
    "https://API.Clearinghouse.Example:443/v1/accruals?store=S-42&sku=a%20b",
    "http://localhost:8080/v1/holds/H-9/capture?",
]


@pytest.mark.parametrize("url", INTEROP_URLS)
def test_library_signed_post_is_accepted_by_us(url: str) -> None:
    message = LibraryMessage(
        "POST", url, {"Content-Type": "application/json", "Idempotency-Key": "01J9ZB7Q4M"}
    )
    HTTPMessageSigner(signature_algorithm=ED25519, key_resolver=LibraryKeys()).sign(
        message,
        key_id=KEYID,
        created=datetime.now(UTC),
        nonce="bGlicmFyeS1ub25jZS0wMDAx",
        label="sig1",
        covered_component_ids=BASE_COMPONENTS + BODY_COMPONENTS,
        body=BODY,  # the library computes Content-Digest itself
    )
    request = HttpRequest.from_url(message.method, message.url, message.headers, BODY)
    result = verify_request(request, resolve_key=resolve_key, now=time.time())
    assert result.nonce == "bGlicmFyeS1ub25jZS0wMDAx"
    assert result.covered_components == BASE_COMPONENTS + BODY_COMPONENTS
    assert_rejected_at_now(replace(request, body=BODY + b"\n"))
    assert_rejected_at_now(replace(request, path=request.path + "x"))


@pytest.mark.parametrize("url", INTEROP_URLS)
def test_our_signed_post_is_accepted_by_the_library(url: str) -> None:
    headers = {"Content-Type": "application/json", "Idempotency-Key": "01J9ZB7Q4M"}
    request = HttpRequest.from_url("POST", url, headers, BODY)
    headers |= sign_request(request, private_key=PARTNER_KEY, keyid=KEYID)

    verifier = HTTPMessageVerifier(signature_algorithm=ED25519, key_resolver=LibraryKeys())
    (result,) = verifier.verify(
        LibraryMessage("POST", url, headers),
        max_age=timedelta(minutes=5),
        require_components=BASE_COMPONENTS + BODY_COMPONENTS,
        body=BODY,
    )
    assert result.parameters["keyid"] == KEYID
    assert result.parameters["alg"] == "ed25519"
    assert result.nonce is not None
    assert len(result.nonce) >= 22
    assert result.body == BODY


def test_get_interop_both_ways() -> None:
    url = "https://api.clearinghouse.example/v1/balances/M-1001?as_of=2026-01-01"
    message = LibraryMessage("GET", url, {"Accept": "application/json"})
    HTTPMessageSigner(signature_algorithm=ED25519, key_resolver=LibraryKeys()).sign(
        message,
        key_id=KEYID,
        created=datetime.now(UTC),
        nonce="bGlicmFyeS1ub25jZS0wMDAy",
        label="sig1",
        covered_component_ids=BASE_COMPONENTS,
    )
    request = HttpRequest.from_url("GET", url, message.headers)
    assert verify_request(request, resolve_key=resolve_key, now=time.time()).nonce == (
        "bGlicmFyeS1ub25jZS0wMDAy"
    )

    ours = {"Accept": "application/json"}
    ours |= sign_request(
        HttpRequest.from_url("GET", url, ours), private_key=PARTNER_KEY, keyid=KEYID
    )
    verifier = HTTPMessageVerifier(signature_algorithm=ED25519, key_resolver=LibraryKeys())
    (result,) = verifier.verify(
        LibraryMessage("GET", url, ours),
        max_age=timedelta(minutes=5),
        require_components=BASE_COMPONENTS,
    )
    assert result.parameters["keyid"] == KEYID


def assert_rejected_at_now(request: HttpRequest) -> None:
    with pytest.raises(SignatureRejected):
        verify_request(request, resolve_key=resolve_key, now=time.time())
