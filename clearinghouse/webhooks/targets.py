"""Where a webhook may be sent. An endpoint's URL is the partner's to choose, and the clearing
house sends to it from inside its own network: so only `https://`, and never to a private,
loopback, link-local or otherwise internal address unless the operator allows it
(`CLEARINGHOUSE_WEBHOOKS_PRIVATE_TARGETS`); plain `http://` to a loopback address only with
`CLEARINGHOUSE_WEBHOOKS_DEV_HTTP`, for development and tests.

The URL is checked when it is registered, and its host resolved and checked again at every
delivery, which connects to the address checked (a name that resolved to a public address
when registered may point inward later)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from clearinghouse.config import Settings
from clearinghouse.errors import InvalidRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
LOOPBACK_NAMES = ("localhost", "localhost.")


class UnsafeUrl(InvalidRequest):
    code = "webhook_url_refused"
    title = "Webhook URL refused"


@dataclass(frozen=True)
class Target:
    """A checked URL, its host resolved to the address the delivery connects to."""

    url: str
    host_header: str
    server_name: str
    """The TLS server name (SNI, and the name the certificate must bear): the URL's own."""


def _internal(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
    )


def _check_address(address: Address, settings: Settings) -> None:
    if address.is_unspecified or address.is_multicast:
        raise UnsafeUrl(f"{address} is not an address a webhook can be sent to")
    if not _internal(address):
        return
    if settings.webhooks_private_targets or (address.is_loopback and settings.webhooks_dev_http):
        return
    raise UnsafeUrl(
        f"{address} is a private, loopback or link-local address: webhooks go to public ones"
    )


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_url(url: str, settings: Settings) -> str:
    """The URL if a webhook may be registered to it, else UnsafeUrl: https (http to a loopback
    address with the development setting), a host, no credentials in it, and not a literal
    internal address or `localhost` (unless the settings allow it)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError as exc:
        raise UnsafeUrl(f"the URL cannot be read: {exc}") from exc
    if not host:
        raise UnsafeUrl("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("the URL may not carry credentials")
    literal = _literal(host)
    loopback = host in LOOPBACK_NAMES or (literal is not None and literal.is_loopback)
    if parts.scheme == "http" and not (settings.webhooks_dev_http and loopback):
        raise UnsafeUrl("webhook URLs must be https://")
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("webhook URLs must be https://")
    if literal is not None:
        _check_address(literal, settings)
    elif loopback:
        _check_address(ipaddress.ip_address("127.0.0.1"), settings)
    return url


def resolve(url: str, settings: Settings) -> Target:
    """The URL checked again and its host resolved, every address it resolves to checked, and
    the URL rewritten to connect to the first of them; UnsafeUrl if any is refused."""
    check_url(url, settings)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise UnsafeUrl(f"{host} does not resolve: {exc}") from exc
    addresses = [ipaddress.ip_address(info[4][0]) for info in found]
    for address in addresses:
        _check_address(address, settings)
    first = addresses[0]
    shown = f"[{first}]" if first.version == 6 else str(first)
    netloc = f"{shown}:{parts.port}" if parts.port else shown
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return Target(pinned, parts.netloc, host)
