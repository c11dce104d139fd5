"""`clearinghouse partner ...` and `clearinghouse store ...`: onboarding, rates and keys."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer

from clearinghouse import clock
from clearinghouse.cli_support import fail, transaction
from clearinghouse.config import get_settings
from partners import directory, keys, limits, rates
from partners.auth import KeyScope
from partners.signing import load_public_key_pem

partner_app = typer.Typer(no_args_is_help=True)
store_app = typer.Typer(no_args_is_help=True)
key_app = typer.Typer(help="Partners' API keys.", no_args_is_help=True)
rates_app = typer.Typer(help="Partners' conversion rates.", no_args_is_help=True)
partner_app.add_typer(key_app, name="key")
partner_app.add_typer(rates_app, name="rates")


LegalName = Annotated[
    str | None,
    typer.Option(help="The name settlement reports and advices print (at creation: --name)."),
]
BankName = Annotated[str | None, typer.Option(help="The bank the partner is paid at.")]
BankAccount = Annotated[str | None, typer.Option(help="The account the partner is paid to.")]


@partner_app.command("create")
def partner_create(
    partner_id: str,
    name: Annotated[str, typer.Option(help="Display name.")],
    kind: Annotated[
        str, typer.Option(help="online_merchant, store_chain, programme or charity.")
    ] = "online_merchant",
    asset: Annotated[
        str | None, typer.Option(help="A programme's points asset code (default: from the id).")
    ] = None,
    limit_fen: Annotated[
        int | None,
        typer.Option(
            help="Issuance limit: most unsettled issuance value allowed, in fen "
            "(default: CLEARINGHOUSE_ISSUANCE_LIMIT_FEN, 10,000,000)."
        ),
    ] = None,
    legal_name: LegalName = None,
    bank_name: BankName = None,
    bank_account: BankAccount = None,
) -> None:
    """Register a partner, open its ledger accounts and set its issuance limit."""
    if limit_fen is None:
        limit_fen = get_settings().issuance_limit_fen
    with transaction() as session:
        partner = directory.create_partner(
            session,
            partner_id,
            name,
            kind,  # type: ignore[arg-type]
            programme_asset=asset,
            legal_name=legal_name,
            bank_name=bank_name,
            bank_account=bank_account,
        )
        limits.set_issuance_limit(session, partner_id, limit_fen)
    extra = f", points asset {partner.programme_asset}" if partner.programme_asset else ""
    typer.echo(
        f"created partner {partner.id} ({partner.kind}{extra}), issuance limit {limit_fen:,} fen"
    )


@partner_app.command("list")
def partner_list() -> None:
    with transaction() as session:
        found = directory.list_partners(session)
    for p in found:
        typer.echo(f"{p.id:<24} {p.status:<10} {p.kind:<16} {p.name} ({p.legal_name})")


@partner_app.command("details")
def partner_details(
    partner_id: str,
    legal_name: LegalName = None,
    bank_name: BankName = None,
    bank_account: BankAccount = None,
) -> None:
    """Set the partner's legal name and bank details (those given; the rest stay)."""
    with transaction() as session:
        partner = directory.set_partner_details(
            session,
            partner_id,
            legal_name=legal_name,
            bank_name=bank_name,
            bank_account=bank_account,
        )
    typer.echo(
        f"partner {partner.id}: {partner.legal_name}, paid to "
        f"{partner.bank_name or '(no bank)'} {partner.bank_account or '(no account)'}"
    )


def _set_status(partner_id: str, status: directory.Status) -> None:
    with transaction() as session:
        partner = directory.set_partner_status(session, partner_id, status)
    typer.echo(f"partner {partner.id} is {partner.status}")


@partner_app.command("suspend")
def partner_suspend(partner_id: str) -> None:
    """Refuse the partner's requests until it is activated again."""
    _set_status(partner_id, "suspended")


@partner_app.command("activate")
def partner_activate(partner_id: str) -> None:
    _set_status(partner_id, "active")


@partner_app.command("expiring-notice")
def partner_expiring_notice(
    partner_id: str,
    days: Annotated[int, typer.Argument(help="1 to 90.")],
) -> None:
    """Set how many days ahead the partner hears of its members' points expiring."""
    with transaction() as session:
        partner = directory.set_expiring_notice_days(session, partner_id, days)
    typer.echo(
        f"partner {partner.id} hears of points expiring {partner.expiring_notice_days} days ahead"
    )


@store_app.command("add")
def store_add(
    partner_id: str,
    store_id: str,
    name: Annotated[str, typer.Option()],
    channel: Annotated[str, typer.Option(help="online, offline or terminal.")] = "offline",
    city: Annotated[str | None, typer.Option()] = None,
    latitude: Annotated[float | None, typer.Option()] = None,
    longitude: Annotated[float | None, typer.Option()] = None,
) -> None:
    """Add a store or terminal to a partner."""
    with transaction() as session:
        store = directory.add_store(
            session,
            partner_id,
            store_id,
            name=name,
            channel=channel,  # type: ignore[arg-type]
            city=city,
            latitude=latitude,
            longitude=longitude,
        )
    typer.echo(f"added store {store.id} to partner {store.partner_id}")


@store_app.command("update")
def store_update(
    store_id: str,
    offline_allowance: Annotated[
        int,
        typer.Option(
            help="Points a member may redeem here in a business day while the till is offline, "
            "even beyond the member's points (0: none)."
        ),
    ],
) -> None:
    """Change a store's offline allowance."""
    with transaction() as session:
        store = directory.set_offline_allowance(session, store_id, offline_allowance)
    typer.echo(
        f"store {store.id}: offline allowance {store.offline_allowance:,} points per member a day"
    )


@store_app.command("list")
def store_list(partner_id: str) -> None:
    with transaction() as session:
        found = directory.list_stores(session, partner_id)
    for s in found:
        typer.echo(f"{s.id:<24} {s.channel:<9} {s.status:<10} {s.city or '-':<12} {s.name}")


def _print_rates(r: rates.Rates) -> None:
    exchange = f" exchange={r.exchange_rate}" if r.exchange_rate is not None else ""
    typer.echo(
        f"v{r.version} from {r.effective_from.isoformat()}: earn={r.earn_rate} pts/yuan "
        f"issue={r.issue_price} fen/pt redemption={r.redemption_value} fen/pt{exchange}"
    )


@rates_app.command("set")
def rates_set(
    partner_id: str,
    earn_rate: Annotated[Decimal, typer.Option(help="Points per yuan spent.")],
    issue_price: Annotated[Decimal, typer.Option(help="Fen the partner pays per point issued.")],
    redemption_value: Annotated[
        Decimal, typer.Option(help="Fen the partner receives per point redeemed.")
    ],
    exchange_rate: Annotated[
        Decimal | None, typer.Option(help="Coalition points per programme point.")
    ] = None,
    effective_from: Annotated[
        datetime | None, typer.Option(help="ISO 8601 instant with offset; now by default.")
    ] = None,
) -> None:
    """Add a new version of a partner's rates (the old ones are kept, never edited)."""
    with transaction() as session:
        new = rates.set_rates(
            session,
            partner_id,
            earn_rate=earn_rate,
            issue_price=issue_price,
            redemption_value=redemption_value,
            exchange_rate=exchange_rate,
            effective_from=effective_from,
        )
    _print_rates(new)


@rates_app.command("show")
def rates_show(partner_id: str) -> None:
    """Every version of a partner's rates, oldest first."""
    with transaction() as session:
        history = rates.rate_history(session, partner_id)
    if not history:
        raise fail(f"partner {partner_id} has no rates")
    for r in history:
        _print_rates(r)


def _print_key(k: keys.PartnerKey) -> None:
    used = k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "never"
    until = f" until {k.retire_at.isoformat(timespec='seconds')}" if k.retire_at else ""
    expires = f", expires {k.expires_at.isoformat(timespec='seconds')}" if k.expires_at else ""
    typer.echo(f"{k.id:<28} {k.status}{until}, {k.scope}{expires}, last used {used}")


Store = Annotated[
    str | None, typer.Option("--store", help="Scope the key to this store of the partner.")
]
Terminal = Annotated[
    str | None, typer.Option("--terminal", help="The terminal of --store that holds the key.")
]
ExpiresAt = Annotated[
    datetime | None,
    typer.Option(help="ISO 8601 instant with offset after which the key is refused."),
]


@key_app.command("generate")
def key_generate(
    partner_id: str,
    out: Annotated[Path, typer.Option(help="Where to write the private key (PEM, mode 0600).")],
    store: Store = None,
    terminal: Terminal = None,
    expires_at: ExpiresAt = None,
) -> None:
    """Make a key pair for the partner: the private key goes to OUT, only the public key is
    kept here."""
    scope = KeyScope(store, terminal)
    with transaction() as session:
        record = keys.generate_key(session, partner_id, out, scope=scope, expires_at=expires_at)
    typer.echo(f"key id {record.id}; private key written to {out}")


@key_app.command("add")
def key_add(
    partner_id: str,
    public_key: Annotated[Path, typer.Argument(help="The partner's Ed25519 public key (PEM).")],
    key_id: Annotated[str | None, typer.Option(help="Key id; generated if omitted.")] = None,
    store: Store = None,
    terminal: Terminal = None,
    expires_at: ExpiresAt = None,
) -> None:
    """Register a public key the partner made itself."""
    try:
        key = load_public_key_pem(public_key.read_bytes())
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read an Ed25519 public key from {public_key}: {exc}") from exc
    scope = KeyScope(store, terminal)
    with transaction() as session:
        record = keys.register_key(
            session, partner_id, key, key_id, scope=scope, expires_at=expires_at
        )
    typer.echo(f"key id {record.id}")


@key_app.command("list")
def key_list(partner_id: str) -> None:
    with transaction() as session:
        found = keys.list_keys(session, partner_id)
    for k in found:
        _print_key(k)


@key_app.command("retire")
def key_retire(
    key_id: str,
    days: Annotated[float, typer.Option(help="Days the key keeps working.")] = keys.RETIREMENT_DAYS,
) -> None:
    """Let a key keep working for a while, then refuse it (rotation without downtime)."""
    with transaction() as session:
        record = keys.retire_key(session, key_id, clock.now() + timedelta(days=days))
    _print_key(record)


@key_app.command("revoke")
def key_revoke(key_id: str) -> None:
    """Refuse a key from now on."""
    with transaction() as session:
        record = keys.revoke_key(session, key_id)
    _print_key(record)


limit_app = typer.Typer(help="Partners' issuance limits (积分预算).", no_args_is_help=True)
partner_app.add_typer(limit_app, name="limit")


@limit_app.command("set")
def limit_set(
    partner_id: str,
    fen: Annotated[int, typer.Option(help="Most unsettled issuance value allowed, in fen.")],
) -> None:
    """Set how much unsettled issuance (valued at the issue price) the partner may run up."""
    with transaction() as session:
        limits.set_issuance_limit(session, partner_id, fen)
        limit, exposure = limits.issuance_limit(session, partner_id)
    typer.echo(f"partner {partner_id}: limit {limit:,} fen, unsettled issuance {exposure:,} fen")


@limit_app.command("show")
def limit_show(partner_id: str) -> None:
    with transaction() as session:
        directory.get_partner(session, partner_id)
        limit, exposure = limits.issuance_limit(session, partner_id)
    typer.echo(f"partner {partner_id}: limit {limit:,} fen, unsettled issuance {exposure:,} fen")
