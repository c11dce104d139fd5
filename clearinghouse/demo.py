"""A small coalition day, through the real signed API: a tea-house chain and a book chain share
the coalition's points; Alice earns at the tea house and spends at the book chain; the day is
settled, as the server's job settles a day once its cut-off has passed, and its report written as
CSV. Then the tea house hears by webhook, on a receiver of its own on 127.0.0.1, that Alice's
points will expire: the reminders job runs with the clock moved to a week before her lot's
expiry, the worker delivers the `points.expiring` event, and the demo checks its signature with
the Standard Webhooks library, as a partner does.

The demo sets the partners up (rates, issuance limits, keys kept in CLEARINGHOUSE_HOME/demo-keys),
serves the API on 127.0.0.1 and calls it with the partner client. Alice also orders the book
chain's book token from the coalition's catalogue through the tea house's app. Every request
carries a fixed idempotency key or transaction id for the day, so running it again the same day
changes nothing."""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from clearinghouse import clock
from clearinghouse.app import create_app
from clearinghouse.audit import sealing
from clearinghouse.errors import NotFound
from clearinghouse.points.reminders import remind_expiring
from clearinghouse.webhooks import service as webhooks
from clearinghouse.webhooks.worker import process_webhooks
from partners import directory, keys, limits, rates
from partners.client import PartnerClient
from partners.signing import load_private_key_pem
from settlement import netting, reports, runs, schedule


@dataclass(frozen=True)
class DemoPartner:
    name: str
    kind: str
    legal_name: str
    bank_name: str
    bank_account: str


PARTNERS = {
    "teahouse": DemoPartner(
        "Teahouse (online shop)",
        "online_merchant",
        "Shanghai Teahouse Trading Co., Ltd.",
        "Bank of Shanghai, Jing'an Branch",
        "3100 1234 5678 0001",
    ),
    "bookchain": DemoPartner(
        "Book chain (offline stores)",
        "store_chain",
        "Bookchain Retail (Shanghai) Co., Ltd.",
        "China Merchants Bank, Shanghai People's Square Branch",
        "6214 8301 2345 0002",
    ),
}
LIMIT_FEN = 10_000_000


@dataclass(frozen=True)
class DemoDay:
    member_id: str
    accrual: dict[str, Any]
    redemption: dict[str, Any]
    order: dict[str, Any]
    """Alice's order of the book chain's book token, through the tea house's front end."""
    member: dict[str, Any]
    lots: list[dict[str, Any]]
    settlement: runs.Run
    report: Path
    digest: str
    """The newest block's hash once the day is sealed: what an auditor keeps."""
    reminder: Reminder


@dataclass(frozen=True)
class Reminder:
    """The `points.expiring` event the tea house's receiver got, its signature checked."""

    event_id: str
    body: dict[str, Any]
    redelivered: bool
    """Whether it was sent again: a day's demo run again finds the reminder written already."""


class _Receiver(ThreadingHTTPServer):
    """The tea house's webhook receiver on a free port of 127.0.0.1: keeps what it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks"


def _key_file(home: Path, partner_id: str) -> Path:
    return home / "demo-keys" / f"{partner_id}.pem"


def set_up_partners(sessions: sessionmaker[Session], home: Path) -> dict[str, str]:
    """Create the demo partners if they are missing; return each one's key id."""
    key_ids: dict[str, str] = {}
    (home / "demo-keys").mkdir(parents=True, exist_ok=True)
    for partner_id, partner in PARTNERS.items():
        with sessions() as session, session.begin():
            try:
                directory.get_partner(session, partner_id)
            except NotFound:
                directory.create_partner(
                    session,
                    partner_id,
                    partner.name,
                    partner.kind,  # type: ignore[arg-type]
                    legal_name=partner.legal_name,
                    bank_name=partner.bank_name,
                    bank_account=partner.bank_account,
                )
                rates.set_rates(
                    session, partner_id, earn_rate="1", issue_price="1", redemption_value="1"
                )
                limits.set_issuance_limit(session, partner_id, LIMIT_FEN)
                if partner.kind == "store_chain":
                    directory.add_store(
                        session,
                        partner_id,
                        "bookchain-sh-001",
                        name="People's Square",
                        channel="offline",
                        city="Shanghai",
                        latitude=31.2304,
                        longitude=121.4737,
                    )
            key_ids[partner_id] = _demo_key(session, partner_id, _key_file(home, partner_id))
    return key_ids


def _demo_key(session: Session, partner_id: str, key_file: Path) -> str:
    """The id of the partner's active key whose private half is `key_file`.

    One home may serve several databases and one database several homes, in any order: the
    file's key is registered where it is unknown, and a new pair replaces a missing file or one
    whose key this database no longer accepts. The demo signs only with the file, so the
    partner's other keys are revoked."""
    held = keys.list_keys(session, partner_id)
    public_key = (
        load_private_key_pem(key_file.read_bytes()).public_key() if key_file.exists() else None
    )
    raw = keys.raw_public_key(public_key) if public_key is not None else None
    ours = next((record for record in held if record.public_key == raw), None)
    if ours is not None and ours.status == "active":
        return ours.id
    for record in held:
        if record.status != "revoked":
            keys.revoke_key(session, record.id)
    if public_key is not None and ours is None:
        return keys.register_key(session, partner_id, public_key).id
    key_file.unlink(missing_ok=True)
    return keys.generate_key(session, partner_id, key_file).id


@contextmanager
def serving(sessions: sessionmaker[Session]) -> Iterator[str]:
    """The API on a free port of 127.0.0.1, for as long as the block runs."""
    config = uvicorn.Config(create_app(sessions), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the demo API server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run(sessions: sessionmaker[Session], home: Path) -> DemoDay:
    key_ids = set_up_partners(sessions, home)
    now = clock.now()
    today = now.date().isoformat()
    with sessions() as session:
        rates_from = rates.rate_history(session, "teahouse")[0].effective_from
    # The same instant on every run of the day, and never before the tea house's first rates.
    purchased_at = max(
        now.replace(hour=0, minute=0, second=0, microsecond=0),
        rates_from.replace(microsecond=0) + timedelta(seconds=1),
    )
    # On the first run that instant may be a moment ahead; a purchase is reported after it.
    time.sleep(max(0.0, (purchased_at - clock.now()).total_seconds()))
    with serving(sessions) as base_url:
        tea = PartnerClient.from_key_file(
            base_url, key_ids["teahouse"], _key_file(home, "teahouse")
        )
        books = PartnerClient.from_key_file(
            base_url, key_ids["bookchain"], _key_file(home, "bookchain")
        )
        try:
            alice = tea.post("/v1/members", {"customer_ref": "alice"}, idempotency_key="alice")
            member_id = alice["member_id"]
            books.post(
                "/v1/members",
                {"customer_ref": "BC-alice", "member_id": member_id},
                idempotency_key="alice",
            )
            accrual = tea.post(
                "/v1/purchases",
                {
                    "partner_txn_id": f"demo-{today}",
                    "member_id": member_id,
                    "amount_fen": 52_000,
                    "occurred_at": purchased_at.isoformat(),
                },
                idempotency_key=f"demo-purchase-{today}",
            )
            redemption = books.post(
                "/v1/redemptions",
                {"member_id": member_id, "points": 1_000, "store_id": "bookchain-sh-001"},
                idempotency_key=f"demo-redemption-{today}",
            )
            order = tea.post(
                "/v1/reward-orders",
                {"reward_id": _book_token(books), "member_id": member_id, "confirm": True},
                idempotency_key=f"demo-order-{today}",
            )
            member = tea.get(f"/v1/members/{member_id}")
            lots = tea.get(f"/v1/members/{member_id}/lots")
        finally:
            tea.close()
            books.close()
    # Settle the day and keep the CSV. A date is settled only once it is over, and the database
    # stamps each entry's recorded_at by its own clock, so the day just written cannot be moved
    # into the past: it is settled as the server's job settles a day just after its midnight, by
    # a clock standing at its cut-off (the run takes what was recorded before it).
    business_date = netting.business_date_of(clock.now())
    with clock.use(clock.Manual(netting.cutoff(business_date))):
        run = schedule.settle(sessions, business_date)[-1]
    report = home / "reports" / f"settlement-{business_date.isoformat()}.csv"
    report.parent.mkdir(parents=True, exist_ok=True)
    with sessions() as session:
        report.write_text(reports.settlement_csv(reports.report_of(session, run)))
    # Seal the day, as the server's job does: entries are sealed once SEAL_DELAY old.
    time.sleep(sealing.SEAL_DELAY.total_seconds())
    sealing.seal_all(sessions)
    with sessions() as session:
        newest = sealing.newest_block(session)
    assert newest is not None, "the day has entries, so the chain has a block"
    expires_at = datetime.fromisoformat(accrual["lot_expires_at"])
    reminder = remind(sessions, member_id, expires_at)
    return DemoDay(
        member_id,
        accrual,
        redemption,
        order,
        member,
        lots,
        run,
        report,
        newest.block_hash.hex(),
        reminder,
    )


BOOK_TOKEN = {
    "kind": "coupon",
    "title_zh": "书店购书券",
    "title_en": "Book token",
    "points": 200,
    "unit_value_fen": 150,
}
BOOK_TOKEN_CODES = 1_000


def _book_token(books: PartnerClient) -> str:
    """The book chain's book token in the catalogue, supplied with a pool of codes on the first
    run (a code a day for the demo's orders)."""
    supplied = books.get("/v1/rewards")
    if supplied:
        reward_id: str = supplied[0]["reward_id"]
        return reward_id
    reward_id = books.post("/v1/rewards", BOOK_TOKEN, idempotency_key="book-token")["reward_id"]
    codes = [f"BOOK-{n:04d}" for n in range(1, BOOK_TOKEN_CODES + 1)]
    books.post(f"/v1/rewards/{reward_id}/codes", {"codes": codes}, idempotency_key="book-codes")
    return reward_id


def remind(sessions: sessionmaker[Session], member_id: str, expires_at: datetime) -> Reminder:
    """The tea house's endpoint (made, or on a later run pointed at this run's receiver with a
    fresh secret) hears of the member's points expiring: the reminders job and the worker run as
    the server runs them, on a clock a week before the expiry. The delivery's signature is
    checked with the Standard Webhooks library."""
    receiver = _Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        with sessions() as session, session.begin():
            known = webhooks.list_endpoints(session, "teahouse")
            if known:
                endpoint = webhooks.update_endpoint(
                    session, "teahouse", known[0].id, url=receiver.url
                )
                secret, _ = webhooks.rotate_secret(session, "teahouse", endpoint.id, timedelta(0))
            else:
                endpoint, secret = webhooks.create_endpoint(
                    session, "teahouse", receiver.url, ["points.expiring"]
                )
        with clock.use(clock.Manual(expires_at - timedelta(days=7))):
            redelivered = remind_expiring(sessions) == 0
            if redelivered:
                with sessions() as session, session.begin():
                    [sent] = webhooks.deliveries(session, "teahouse", endpoint.id, limit=1)
                    webhooks.redeliver(session, "teahouse", endpoint.id, sent.event_id)
            process_webhooks(sessions)
    finally:
        receiver.shutdown()
        receiver.server_close()
    # Other members of the tea house may be reminded too: Alice's is the one shown.
    [(headers, body)] = [
        (headers, body)
        for headers, body in receiver.received
        if json.loads(body)["data"]["member_id"] == member_id
    ][:1]
    # The clock of the delivery is a week before the expiry, so the library's check of the
    # time would refuse it: the signature is checked by signing with the library and comparing.
    at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    expected = Webhook(secret).sign(headers["webhook-id"], at, body.decode())
    if not hmac.compare_digest(headers["webhook-signature"], expected):
        raise RuntimeError("the reminder's signature does not verify")
    return Reminder(headers["webhook-id"], json.loads(body), redelivered)
