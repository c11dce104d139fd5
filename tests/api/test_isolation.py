"""Each partner sees only its own stores and the members linked to it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from partners.client import PartnerClient
from tests.builders.calls import link_body
from tests.builders.http import assert_problem
from tests.builders.partners import ApiPartner


def test_partner_cannot_read_another_partners_store(
    client: PartnerClient, other_partner: ApiPartner, partner: ApiPartner, http: TestClient
) -> None:
    assert client.get(f"/v1/stores/{partner.store_id}")["id"] == partner.store_id

    theirs = http.send(client.build("GET", f"/v1/stores/{other_partner.store_id}"))
    missing = http.send(client.build("GET", "/v1/stores/no-such-store"))
    # Another partner's store is exactly as unknown as a missing one.
    assert assert_problem(theirs, 404, "store_not_found")["detail"] == (
        f"no store {other_partner.store_id}"
    )
    assert_problem(missing, 404, "store_not_found")


def test_store_list_holds_only_the_partners_own_stores(
    client: PartnerClient, other_client: PartnerClient, partner: ApiPartner
) -> None:
    assert [store["id"] for store in client.get("/v1/stores")] == [partner.store_id]
    assert partner.store_id not in [store["id"] for store in other_client.get("/v1/stores")]


def test_partner_cannot_read_a_member_linked_only_to_another(
    client: PartnerClient, other_client: PartnerClient, http: TestClient
) -> None:
    member_id = other_client.post("/v1/members", link_body())["member_id"]
    assert other_client.get(f"/v1/members/{member_id}")["member_id"] == member_id

    response = http.send(client.build("GET", f"/v1/members/{member_id}"))
    assert_problem(response, 404, "member_not_found")


def test_another_partners_member_can_be_linked_explicitly_by_id(
    client: PartnerClient, other_client: PartnerClient, http: TestClient
) -> None:
    """Observed behaviour: a member id is the coalition-wide id a customer shows (their card),
    so any partner that knows it can link its own customer reference to that member, without
    any proof from the member; from then on it reads the member's coalition balance. There is
    no implicit access: before the explicit link, the member is unknown to the partner."""
    theirs = other_client.post("/v1/members", link_body("their-ref"))
    member_id = theirs["member_id"]
    assert http.send(client.build("GET", f"/v1/members/{member_id}")).status_code == 404

    linked = http.send(
        client.build("POST", "/v1/members", body={"customer_ref": "my-ref", "member_id": member_id})
    )
    assert linked.status_code == 201, linked.text
    assert linked.json()["member_id"] == member_id
    assert linked.json()["customer_ref"] == "my-ref"

    mine = client.get(f"/v1/members/{member_id}")
    assert (mine["member_id"], mine["customer_ref"], mine["available_points"]) == (
        member_id,
        "my-ref",
        0,
    )
    # The other partner's customer reference is not disclosed, and its link is unchanged.
    assert other_client.get(f"/v1/members/{member_id}")["customer_ref"] == "their-ref"

    # The same member cannot be linked to a second customer of the same partner.
    again = http.send(
        client.build(
            "POST", "/v1/members", body={"customer_ref": "my-other-ref", "member_id": member_id}
        )
    )
    assert_problem(again, 409, "conflict")
