"""`clearinghouse partner|store ...`, run as an operator would, on this worker's database (in
this process: tests/cli_fixtures.py)."""

from __future__ import annotations

import re
import shlex
import stat
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from partners import directory, keys, limits
from partners.keys import raw_public_key
from partners.signing import load_private_key_pem, public_key_to_pem
from tests.builders.http import assert_unauthorized, client_for
from tests.builders.ids import unique_id
from tests.builders.partners import SigningKey, make_partner
from tests.cli_fixtures import Cli


def test_partner_create_list_suspend_activate(cli: Cli, sessions: sessionmaker[Session]) -> None:
    partner_id = unique_id("p")
    created = cli.ok(
        "partner", "create", partner_id, "--name", "Tea House", "--kind", "store_chain"
    )
    assert created.strip() == (
        f"created partner {partner_id} (store_chain), issuance limit 10,000,000 fen"
    )

    listed = [line.split() for line in cli.ok("partner", "list").splitlines()]
    assert [partner_id, "active", "store_chain", "Tea", "House", "(Tea", "House)"] in listed

    assert cli.ok("partner", "suspend", partner_id).strip() == f"partner {partner_id} is suspended"
    with sessions() as session:
        assert directory.get_partner(session, partner_id).status == "suspended"
    assert cli.ok("partner", "activate", partner_id).strip() == f"partner {partner_id} is active"

    assert "already exists" in cli.refused("partner", "create", partner_id, "--name", "Again")


def test_partner_create_sets_the_issuance_limit_given_or_configured(
    cli: Cli, sessions: sessionmaker[Session]
) -> None:
    given, configured = unique_id("p"), unique_id("p")
    out = cli.ok("partner", "create", given, "--name", "Given", "--limit-fen", "5000")
    assert out.strip().endswith("issuance limit 5,000 fen")
    cli.env["CLEARINGHOUSE_ISSUANCE_LIMIT_FEN"] = "7000"
    cli.ok("partner", "create", configured, "--name", "Configured")
    with sessions() as session:
        assert limits.issuance_limit(session, given) == (5000, 0)
        assert limits.issuance_limit(session, configured) == (7000, 0)
    assert "zero or more fen" in cli.refused(
        "partner", "create", unique_id("p"), "--name", "Negative", "--limit-fen", "-1"
    )


def test_partner_legal_name_and_bank_details_at_creation_and_later(
    cli: Cli, sessions: sessionmaker[Session]
) -> None:
    partner_id = unique_id("p")
    cli.ok(
        "partner",
        "create",
        partner_id,
        "--name",
        "Tea House",
        "--legal-name",
        "Tea House Trading Co., Ltd.",
        "--bank-name",
        "Bank of Shanghai",
    )
    with sessions() as session:
        created = directory.get_partner(session, partner_id)
    assert (created.legal_name, created.bank_name, created.bank_account) == (
        "Tea House Trading Co., Ltd.",
        "Bank of Shanghai",
        None,
    )
    listed = cli.ok("partner", "list")
    assert "Tea House (Tea House Trading Co., Ltd.)" in listed

    changed = cli.ok("partner", "details", partner_id, "--bank-account", "3100 0000 0001")
    assert changed.strip() == (
        f"partner {partner_id}: Tea House Trading Co., Ltd., paid to Bank of Shanghai"
        " 3100 0000 0001"
    )
    with sessions() as session:
        assert directory.get_partner(session, partner_id).bank_account == "3100 0000 0001"
    assert "give at least one of" in cli.refused("partner", "details", partner_id)
    assert "1 to 200 characters" in cli.refused(
        "partner", "details", partner_id, "--legal-name", " "
    )
    assert "no partner" in cli.refused("partner", "details", "p-missing", "--bank-name", "B")

    # Without --legal-name, the legal name is the name.
    plain = unique_id("p")
    cli.ok("partner", "create", plain, "--name", "Plain Shop")
    with sessions() as session:
        assert directory.get_partner(session, plain).legal_name == "Plain Shop"


def _guide_commands() -> list[list[str]]:
    """The operator's commands in docs/partner-integration.md: the onboarding block and the
    one that generates the partner's key (the first two shell blocks)."""
    guide = (Path(__file__).parents[2] / "docs" / "partner-integration.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", guide, flags=re.DOTALL)[:2]
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if line.startswith("clearinghouse ")]


def test_the_guide_s_onboarding_lets_the_first_signed_purchase_through(
    cli: Cli, http: TestClient, tmp_path: Path
) -> None:
    partner_id, store_id = unique_id("p"), unique_id("s")
    commands = _guide_commands()
    assert [c[1:3] for c in commands] == [
        ["partner", "create"],
        ["partner", "details"],
        ["partner", "rates"],
        ["store", "add"],
        ["partner", "key"],
    ]
    outputs = [
        cli.ok(
            *(arg.replace("teahouse", partner_id).replace("tea-sh-001", store_id) for arg in c[1:]),
            cwd=tmp_path,
        )
        for c in commands
    ]
    key_id = outputs[-1].split()[2].rstrip(";")
    private_key = load_private_key_pem((tmp_path / f"{partner_id}.pem").read_bytes())

    partner = client_for(SigningKey(key_id, private_key), http)
    member = partner.post("/v1/members", {"customer_ref": "cust-42"}, idempotency_key="m-1")
    purchase = {
        "partner_txn_id": "order-1",
        "member_id": member["member_id"],
        "store_id": store_id,
        "amount_fen": 52_000,
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    accrual = partner.post("/v1/purchases", purchase, idempotency_key="order-1")
    assert accrual["points"] >= 520
    assert accrual["issue_value_fen"] == accrual["points"]  # the guide's issue price: 1 fen


def test_store_add(cli: Cli, sessions: sessionmaker[Session]) -> None:
    partner = make_partner(sessions, key=False)
    store_id = unique_id("s")
    options = ("--name", "Airport", "--channel", "terminal", "--city", "Chengdu")
    out = cli.ok("store", "add", partner.id, store_id, *options)
    assert out.strip() == f"added store {store_id} to partner {partner.id}"
    with sessions() as session:
        store = directory.get_store(session, partner.id, store_id)
    assert (store.name, store.channel, store.city) == ("Airport", "terminal", "Chengdu")


def test_store_update_sets_the_offline_allowance(cli: Cli, sessions: sessionmaker[Session]) -> None:
    partner = make_partner(sessions, key=False)
    out = cli.ok("store", "update", partner.store_id, "--offline-allowance", "2000")
    assert out.strip() == (
        f"store {partner.store_id}: offline allowance 2,000 points per member a day"
    )
    with sessions() as session:
        assert directory.get_store(session, partner.id, partner.store_id).offline_allowance == 2000
    assert "0 to" in cli.refused("store", "update", partner.store_id, "--offline-allowance", "-1")
    assert "no store" in cli.refused("store", "update", "no-such-store", "--offline-allowance", "1")


def test_rates_set_show_and_seven_places_refused(cli: Cli, sessions: sessionmaker[Session]) -> None:
    partner = make_partner(sessions, key=False, rates=False, limit_fen=0)
    assert "has no rates" in cli.refused("partner", "rates", "show", partner.id)

    rates = ("--earn-rate", "1.5", "--issue-price", "0.85", "--redemption-value", "0.7")
    out = cli.ok("partner", "rates", "set", partner.id, *rates)
    assert out.startswith("v1 from ")
    assert "earn=1.500000 pts/yuan issue=0.850000 fen/pt redemption=0.700000 fen/pt" in out

    shown = cli.ok("partner", "rates", "show", partner.id).splitlines()
    assert len(shown) == 1
    assert shown[0] == out.strip()

    too_precise = ("--earn-rate", "1.1234567", "--issue-price", "1", "--redemption-value", "1")
    error = cli.refused("partner", "rates", "set", partner.id, *too_precise)
    assert "more than 6 decimal places" in error
    assert len(cli.ok("partner", "rates", "show", partner.id).splitlines()) == 1


def test_key_generate_writes_an_owner_only_pem_and_never_overwrites(
    cli: Cli, sessions: sessionmaker[Session], http: TestClient, tmp_path: Path
) -> None:
    partner = make_partner(sessions, key=False)
    pem = tmp_path / "partner.pem"
    out = cli.ok("partner", "key", "generate", partner.id, "--out", str(pem))
    key_id = out.split()[2].rstrip(";")
    assert out.strip() == f"key id {key_id}; private key written to {pem}"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    private_key = load_private_key_pem(pem.read_bytes())
    with sessions() as session:
        (record,) = keys.list_keys(session, partner.id)
    assert record.id == key_id
    assert record.public_key == raw_public_key(private_key.public_key())
    assert client_for(SigningKey(key_id, private_key), http).get("/v1/partner")["id"] == partner.id

    before = pem.read_bytes()
    assert "exists" in cli.refused("partner", "key", "generate", partner.id, "--out", str(pem))
    assert pem.read_bytes() == before
    with sessions() as session:
        assert [k.id for k in keys.list_keys(session, partner.id)] == [key_id]


def test_key_add_list_retire_revoke(
    cli: Cli, sessions: sessionmaker[Session], http: TestClient, tmp_path: Path
) -> None:
    partner = make_partner(sessions)
    private_key = Ed25519PrivateKey.generate()
    public_pem = tmp_path / "partner.pub.pem"
    public_pem.write_bytes(public_key_to_pem(private_key.public_key()))
    key_id = f"{partner.id}-new"

    assert cli.ok("partner", "key", "add", partner.id, str(public_pem), "--key-id", key_id) == (
        f"key id {key_id}\n"
    )
    new = client_for(SigningKey(key_id, private_key), http)
    assert new.get("/v1/partner")["id"] == partner.id

    listed = cli.ok("partner", "key", "list", partner.id).splitlines()
    assert [line.split()[:2] for line in listed] == [
        [partner.key_id, "active,"],
        [key_id, "active,"],
    ]
    assert "last used 20" in listed[1]

    retired = cli.ok("partner", "key", "retire", key_id, "--days", "1")
    assert retired.split()[:3] == [key_id, "retiring", "until"]
    assert new.get("/v1/partner")["id"] == partner.id

    assert cli.ok("partner", "key", "revoke", key_id).split()[:2] == [key_id, "revoked,"]
    assert_unauthorized(http.send(new.build("GET", "/v1/partner")))
    assert "is revoked" in cli.refused("partner", "key", "revoke", key_id)

    not_a_key = tmp_path / "garbage.pem"
    not_a_key.write_text("not a key")
    assert "cannot read an Ed25519 public key" in cli.refused(
        "partner", "key", "add", partner.id, str(not_a_key)
    )


def test_key_generate_into_a_missing_folder_is_a_clear_error(
    cli: Cli, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # Every OSError, not only FileExistsError, must become a one-line error, not a traceback.
    partner = make_partner(sessions, key=False)
    pem = tmp_path / "missing" / "partner.pem"
    error = cli.refused("partner", "key", "generate", partner.id, "--out", str(pem))
    assert "Traceback" not in error
    assert error.startswith("error: ")
    assert str(pem) in error
    with sessions() as session:
        assert keys.list_keys(session, partner.id) == []


def test_store_keys_are_added_generated_and_listed_with_their_scope_and_expiry(
    cli: Cli, sessions: sessionmaker[Session], http: TestClient, tmp_path: Path
) -> None:
    partner = make_partner(sessions, kind="store_chain")
    private_key = Ed25519PrivateKey.generate()
    public_pem = tmp_path / "till.pub.pem"
    public_pem.write_bytes(public_key_to_pem(private_key.public_key()))
    till_key, expiry = f"{partner.id}-till", "2031-01-02T03:04:05+00:00"
    store = ("--store", partner.store_id)

    scoped = ("--key-id", till_key, *store, "--terminal", "till-1", "--expires-at", expiry)
    cli.ok("partner", "key", "add", partner.id, str(public_pem), *scoped)
    out = cli.ok("partner", "key", "generate", partner.id, "--out", str(tmp_path / "s.pem"), *store)
    store_key = out.split()[2].rstrip(";")

    till = client_for(SigningKey(till_key, private_key), http)
    member_id = till.post("/v1/members", {"customer_ref": "cust-1"})["member_id"]
    purchase = {
        "partner_txn_id": "order-1",
        "member_id": member_id,
        "amount_fen": 52_000,
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    till.post("/v1/purchases", purchase)
    assert till.get("/v1/purchases/order-1")["store_id"] == partner.store_id

    listed = {
        line.split()[0]: line for line in cli.ok("partner", "key", "list", partner.id).splitlines()
    }
    assert listed[partner.key_id].split(", ")[1] == "all stores"
    assert (
        listed[till_key]
        .split(None, 1)[1]
        .startswith(
            f"active, store {partner.store_id} terminal till-1, expires {expiry}, last used 20"
        )
    )
    assert listed[store_key].split(None, 1)[1] == (
        f"active, store {partner.store_id}, last used never"
    )

    other = make_partner(sessions)
    elsewhere = ("--out", str(tmp_path / "o.pem"), "--store", other.store_id)
    assert f"no store {other.store_id}" in cli.refused(
        "partner", "key", "generate", partner.id, *elsewhere
    )
    past = ("--out", str(tmp_path / "p.pem"), "--expires-at", "2020-01-01T00:00:00+00:00")
    assert "the expiry must be in the future" in cli.refused(
        "partner", "key", "generate", partner.id, *past
    )
