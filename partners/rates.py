"""Conversion rates per partner, effective-dated and never edited: a new version supersedes.

- earn rate: points a member earns per yuan spent at the partner;
- issue price: fen the partner pays the coalition per point it issues;
- redemption value: fen the partner receives per point redeemed with it;
- exchange rate (partner programmes only): coalition points per point of the programme.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clearinghouse import clock
from clearinghouse.database import Tx
from clearinghouse.errors import InvalidRequest, NotFound
from clearinghouse.reference import Reference
from partners.directory import lock_partner
from partners.tables import partner_rates

# NUMERIC(12, 6): a rate with more places would be rounded by the database, so it is refused.
RATE_PLACES = 6
RATE_MAX = Decimal("999999.999999")


class RatesNotFound(NotFound):
    code = "rates_not_found"
    title = "No conversion rates in effect"


@dataclass(frozen=True)
class Rates:
    partner_id: str
    version: int
    effective_from: datetime
    earn_rate: Decimal
    issue_price: Decimal
    redemption_value: Decimal
    exchange_rate: Decimal | None
    created_at: datetime


def _rates(row: Any) -> Rates:
    return Rates(**row._asdict())


def exact_rate(value: Decimal | str | int, name: str) -> Decimal:
    """A rate as an exact decimal with at most six places, or a clear refusal."""
    try:
        rate = Decimal(value) if not isinstance(value, Decimal) else value
    except InvalidOperation as exc:
        raise InvalidRequest(f"{name} must be a decimal number, not {value!r}") from exc
    if not rate.is_finite() or rate < 0 or rate > RATE_MAX:
        raise InvalidRequest(f"{name} must be between 0 and {RATE_MAX}")
    exponent = rate.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -RATE_PLACES:
        raise InvalidRequest(f"{name} has more than {RATE_PLACES} decimal places: {rate}")
    return rate


def set_rates(
    session: Session,
    partner_id: str,
    *,
    earn_rate: Decimal | str,
    issue_price: Decimal | str,
    redemption_value: Decimal | str,
    exchange_rate: Decimal | str | None = None,
    effective_from: datetime | None = None,
) -> Rates:
    """Add a new version of the partner's rates, effective from now or a later instant."""
    partner = lock_partner(session, partner_id)
    now = session.execute(select(func.now())).scalar_one()
    start = effective_from or now
    if start.tzinfo is None:
        raise InvalidRequest("effective_from must carry a time zone")
    if start < now:
        raise InvalidRequest("rates cannot take effect in the past; past entries keep their rates")
    if (partner.kind == "programme") != (exchange_rate is not None):
        raise InvalidRequest("an exchange rate is set for partner programmes, and only for them")
    exchange = exact_rate(exchange_rate, "exchange_rate") if exchange_rate is not None else None
    if exchange is not None and exchange == 0:
        raise InvalidRequest("exchange_rate must be above zero")
    latest = session.execute(
        select(func.max(partner_rates.c.version), func.max(partner_rates.c.effective_from)).where(
            partner_rates.c.partner_id == partner_id
        )
    ).one()
    if latest[1] is not None and start <= latest[1]:
        raise InvalidRequest(
            f"a new version must take effect after the latest one ({latest[1].isoformat()})"
        )
    row = session.execute(
        partner_rates.insert()
        .values(
            partner_id=partner_id,
            version=(latest[0] or 0) + 1,
            effective_from=start,
            earn_rate=exact_rate(earn_rate, "earn_rate"),
            issue_price=exact_rate(issue_price, "issue_price"),
            redemption_value=exact_rate(redemption_value, "redemption_value"),
            exchange_rate=exchange,
        )
        .returning(*partner_rates.c)
    ).one()
    return _rates(row)


def _load_rate_book(tx: Tx) -> dict[str, list[Rates]]:
    book: dict[str, list[Rates]] = {}
    for row in tx.all("SELECT * FROM partner_rates ORDER BY partner_id, effective_from"):
        book.setdefault(row.partner_id, []).append(_rates(row))
    return book


_rate_book: Reference[dict[str, list[Rates]]] = Reference(("partner_rates",), _load_rate_book)


def rates_at(db: Session | Tx, partner_id: str, at: datetime | None = None) -> Rates:
    """The version in effect at `at` (now by default)."""
    moment = at or clock.now()
    versions = _rate_book.get(Tx.of(db)).get(partner_id, [])
    index = bisect_right(versions, moment, key=lambda r: r.effective_from)
    if index == 0:
        raise RatesNotFound(f"partner {partner_id} has no rates in effect at {moment.isoformat()}")
    return versions[index - 1]


def rates_version(db: Session | Tx, partner_id: str, version: int) -> Rates:
    found = next(
        (r for r in rate_history(db, partner_id) if r.version == version),
        None,
    )
    if found is None:
        raise RatesNotFound(f"partner {partner_id} has no rates version {version}")
    return found


def rate_history(db: Session | Tx, partner_id: str) -> list[Rates]:
    """Every version, oldest first."""
    return list(_rate_book.get(Tx.of(db)).get(partner_id, []))
