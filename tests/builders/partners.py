"""Partners as the onboarding leaves them: one maker, make_partner, for every kind (online
merchants by default, partner programmes through make_programme), with a store, an Ed25519 key
of the test's own, rates (version 1, in effect from `rates_since` ago so that back-dated
purchases find them) and an issuance limit, each of which a test can leave out; and what a
partner adds later: keys (for all its stores or one), stores, a new limit, a store's offline
allowance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from partners import directory, keys, limits
from partners.auth import PARTNER_WIDE, KeyScope
from partners.tables import partner_rates
from tests.builders.ids import unique_id

DEFAULT_LIMIT_FEN = 10**12


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    private_key: Ed25519PrivateKey


@dataclass(frozen=True)
class ApiPartner:
    id: str
    key: SigningKey
    store_id: str

    @property
    def key_id(self) -> str:
        return self.key.key_id

    @property
    def private_key(self) -> Ed25519PrivateKey:
        return self.key.private_key


def legal_name(partner_id: str) -> str:
    """The legal name `make_partner` gives a partner."""
    return f"{partner_id.upper()} Trading Co., Ltd."


def make_partner(
    sessions: sessionmaker[Session],
    *,
    kind: directory.PartnerKind = "online_merchant",
    key: bool = True,
    rates: bool = True,
    earn_rate: Decimal | str = "1",
    issue_price: Decimal | str = "1",
    redemption_value: Decimal | str = "1",
    exchange_rate: Decimal | str | None = None,
    rates_since: timedelta = timedelta(days=60),
    limit_fen: int = DEFAULT_LIMIT_FEN,
    store_name: str = "Flagship",
    store_channel: directory.Channel = "offline",
    store_city: str | None = "Shanghai",
) -> ApiPartner:
    """An active partner of `kind` with one store, a generated key (unless `key` is false),
    rates (unless `rates` is false) and an issuance limit of `limit_fen` (none when 0);
    committed.

    Rates version 1 is written as the onboarding would have written it `rates_since` ago:
    set_rates only takes effect now or later. With `rates_since` zero it is set_rates's row."""
    partner_id = unique_id("g" if kind == "programme" else "p")
    store_id = unique_id("s")
    private_key = Ed25519PrivateKey.generate()
    key_id = ""
    with sessions() as session, session.begin():
        directory.create_partner(
            session,
            partner_id,
            f"Partner {partner_id}",
            kind,
            legal_name=legal_name(partner_id),
        )
        if key:
            key_id = keys.register_key(session, partner_id, private_key.public_key()).id
        if rates:
            started = session.execute(select(func.now())).scalar_one() - rates_since
            session.execute(
                partner_rates.insert().values(
                    partner_id=partner_id,
                    version=1,
                    effective_from=started,
                    earn_rate=Decimal(earn_rate),
                    issue_price=Decimal(issue_price),
                    redemption_value=Decimal(redemption_value),
                    exchange_rate=None if exchange_rate is None else Decimal(exchange_rate),
                )
            )
        if limit_fen:
            limits.set_issuance_limit(session, partner_id, limit_fen)
        directory.add_store(
            session,
            partner_id,
            store_id,
            name=store_name,
            channel=store_channel,
            city=store_city,
        )
    return ApiPartner(partner_id, SigningKey(key_id, private_key), store_id)


def make_programme(
    sessions: sessionmaker[Session],
    *,
    exchange_rate: Decimal | str = "1",
    issue_price: Decimal | str = "1",
    redemption_value: Decimal | str = "1",
) -> ApiPartner:
    """A partner programme (its own points are a ledger asset) with an online counter, a key,
    rates that carry an exchange rate, in effect for a day, and a generous issuance limit;
    committed."""
    return make_partner(
        sessions,
        kind="programme",
        exchange_rate=exchange_rate,
        issue_price=issue_price,
        redemption_value=redemption_value,
        rates_since=timedelta(days=1),
        store_name="Counter",
        store_channel="online",
        store_city=None,
    )


def add_key(
    sessions: sessionmaker[Session],
    partner_id: str,
    *,
    scope: KeyScope = PARTNER_WIDE,
    expires_at: datetime | None = None,
) -> SigningKey:
    """Register a freshly generated Ed25519 key for the partner, acting for `scope`, until
    `expires_at` if given; committed."""
    private_key = Ed25519PrivateKey.generate()
    with sessions() as session, session.begin():
        record = keys.register_key(
            session, partner_id, private_key.public_key(), scope=scope, expires_at=expires_at
        )
    return SigningKey(record.id, private_key)


def add_store(
    sessions: sessionmaker[Session],
    partner_id: str,
    *,
    channel: directory.Channel = "offline",
    city: str | None = "Shanghai",
    at: tuple[float, float] | None = None,
) -> str:
    """A new store of the partner, on the map when `at` is given; committed."""
    store_id = unique_id("s")
    latitude, longitude = at if at is not None else (None, None)
    with sessions() as session, session.begin():
        directory.add_store(
            session,
            partner_id,
            store_id,
            name=f"Store {store_id}",
            channel=channel,
            city=city,
            latitude=latitude,
            longitude=longitude,
        )
    return store_id


def set_offline_allowance(sessions: sessionmaker[Session], store_id: str, points: int) -> None:
    with sessions() as session, session.begin():
        directory.set_offline_allowance(session, store_id, points)


def set_limit(sessions: sessionmaker[Session], partner_id: str, limit_fen: int) -> None:
    with sessions() as session, session.begin():
        limits.set_issuance_limit(session, partner_id, limit_fen)
