"""The whole linking flow with an independent OAuth client library (authlib), discovering the server
from its RFC 8414 metadata: authorize with PKCE S256, log in, consent, exchange, call the partner API,
refresh, revoke."""

from __future__ import annotations

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from tests.partner_support import REDIRECT_URI, Browser, create_partner, new_verifier, query_of
from tests.support import Resident, assert_problem, register


@pytest.fixture(scope="module")
def metadata(client: httpx.Client) -> dict[str, object]:
    r = client.get("/.well-known/oauth-authorization-server")
    assert r.status_code == 200
    return r.json()


def test_metadata_describes_the_server(metadata: dict[str, object], base_url: str) -> None:
    assert metadata["issuer"] == base_url
    assert metadata["authorization_endpoint"] == f"{base_url}/oauth/authorize"
    assert metadata["token_endpoint"] == f"{base_url}/oauth/token"
    assert metadata["revocation_endpoint"] == f"{base_url}/oauth/revoke"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert {"activities:write", "book:read", "profile:read"} <= set(metadata["scopes_supported"])  # type: ignore[arg-type]
    assert metadata["response_types_supported"] == ["code"]
    assert "none" in metadata["token_endpoint_auth_methods_supported"]  # type: ignore[operator]


@pytest.mark.parametrize("client_type", ["confidential", "public"])
def test_authlib_client_completes_the_flow(
    client: httpx.Client, base_url: str, operator: Resident, metadata: dict[str, str], client_type: str
) -> None:
    partner = create_partner(operator, client_type=client_type)
    resident = register(client, nickname="绿色骑手")
    oauth = OAuth2Client(
        client_id=partner.client_id, client_secret=partner.client_secret,
        token_endpoint_auth_method="client_secret_basic" if partner.client_secret else "none",
        redirect_uri=REDIRECT_URI, scope="activities:write book:read profile:read", code_challenge_method="S256",
        base_url=base_url,
    )
    verifier = new_verifier()
    url, state = oauth.create_authorization_url(metadata["authorization_endpoint"], code_verifier=verifier)
    assert query_of(url)["code_challenge"] == create_s256_code_challenge(verifier)

    browser = Browser(base_url, resident)
    consent = browser.consent_page(url)
    assert consent.status_code == 200
    assert "测试平台" in consent.text and "代你上报绿色行为" in consent.text
    callback = browser.decide(consent).headers["location"]
    browser.close()
    assert callback.startswith(REDIRECT_URI)
    assert query_of(callback)["state"] == state

    token = oauth.fetch_token(metadata["token_endpoint"], authorization_response=callback, code_verifier=verifier)
    assert token["token_type"] == "Bearer"
    assert set(token["scope"].split()) == {"activities:write", "book:read", "profile:read"}

    profile = oauth.get("/v1/partner/profile")
    assert profile.status_code == 200, profile.text
    assert profile.json() == {"sub_account_id": token["sub_account_id"], "nickname": "绿色骑手"}

    first_refresh = token["refresh_token"]
    renewed = oauth.refresh_token(metadata["token_endpoint"])
    assert renewed["refresh_token"] != first_refresh
    assert oauth.get("/v1/partner/book").status_code == 200

    # The resident sees the link and the consent behind it.
    accounts = resident.get("/v1/me/accounts").json()
    linked = [s for s in accounts["sub_accounts"] if s["kind"] == "partner"]
    assert [s["id"] for s in linked] == [token["sub_account_id"]]
    assert linked[0]["partner"]["id"] == partner.id
    assert resident.get("/v1/me/consents").json()[0]["sub_account_id"] == token["sub_account_id"]

    revoked = oauth.revoke_token(metadata["revocation_endpoint"], token=renewed["refresh_token"],
                                 token_type_hint="refresh_token")
    assert revoked.status_code == 200
    assert_problem(oauth.get("/v1/partner/profile"), 401, "token-revoked")
    assert oauth.post(metadata["token_endpoint"], data={
        "grant_type": "refresh_token", "refresh_token": renewed["refresh_token"], "client_id": partner.client_id,
    }, auth=partner.basic if partner.client_secret else None).json()["error"] == "invalid_grant"
    oauth.close()


async def test_linking_and_unlinking_reach_the_inbox_and_the_export(
    client: httpx.Client, base_url: str, operator: Resident, db: object
) -> None:
    from tests.partner_support import activity, bearer, link
    from tests.support import deliver_pending_events

    partner = create_partner(operator, name="绿碗外卖测试", name_en="GreenBowl Test")
    resident = register(client)
    token = link(client, base_url, resident, partner)
    reported = client.post("/v1/partner/activities", headers=bearer(token["access_token"]),
                           json={"activities": [activity("order-1", details={"order_total_fen": 3200})]})
    assert reported.json()["credited"] == 1 and reported.json()["receipts"][0]["verdict"] == "credited"
    assert resident.delete(f"/v1/me/accounts/{token['sub_account_id']}").status_code == 204
    await deliver_pending_events()

    titles = [m["title"] for m in resident.get("/v1/me/inbox").json()["items"]]
    assert titles[:2] == ["已解除与绿碗外卖测试的连接", "已连接绿碗外卖测试"]
    assert resident.patch("/v1/me", json={"language": "en"}).status_code == 200
    titles = [m["title"] for m in resident.get("/v1/me/inbox").json()["items"]]
    assert titles[:2] == ["GreenBowl Test is unlinked", "GreenBowl Test is linked"]

    export = resident.get("/v1/me/export").json()
    partner_accounts = [s for s in export["sub_accounts"] if s["kind"] == "partner"]
    assert [(s["id"], s["status"], s["activities"]) for s in partner_accounts] == [
        (token["sub_account_id"], "unlinked", 1)
    ]
    assert export["consents"][0]["revoked_reason"] == "resident-unlinked"
    assert export["activities"][0]["event_id"] == "order-1"
    assert export["activities"][0]["source_status"] == "unlinked"
    assert export["activities"][0]["details"] == {"order_total_fen": 3200}
    assert (export["activities"][0]["verdict"], export["activities"][0]["reason_code"]) == ("credited", "credited")


def test_redirect_uri_may_be_left_out_when_only_one_is_registered(
    client: httpx.Client, base_url: str, operator: Resident
) -> None:
    """RFC 6749 §4.1.3: the token request repeats redirect_uri only if the authorization request had it."""
    from tests.partner_support import authorize_params

    partner = create_partner(operator)
    resident = register(client)
    for at_token in (None, REDIRECT_URI, "https://partner.example/other"):
        verifier = new_verifier()
        params = authorize_params(partner, verifier, redirect_uri=None)
        browser = Browser(base_url, resident)
        callback = browser.approve("/oauth/authorize?" + str(httpx.QueryParams(params)))
        browser.close()
        assert callback.startswith(REDIRECT_URI + "?")
        data = {"grant_type": "authorization_code", "code": query_of(callback)["code"], "code_verifier": verifier}
        if at_token is not None:
            data["redirect_uri"] = at_token
        r = client.post("/oauth/token", data=data, auth=partner.basic)
        if at_token == "https://partner.example/other":
            assert r.json()["error"] == "invalid_grant"
        else:
            assert r.status_code == 200, r.text


async def test_the_database_keeps_reported_activities_and_consents(
    client: httpx.Client, base_url: str, operator: Resident, db: object
) -> None:
    import asyncpg

    from tests.partner_support import activity, bearer, link
    from wallet.db import connection

    partner = create_partner(operator)
    token = link(client, base_url, register(client), partner)
    receipt = client.post("/v1/partner/activities", headers=bearer(token["access_token"]),
                          json={"activities": [activity()]}).json()["receipts"][0]
    async with connection() as conn:
        for statement in (
            "DELETE FROM activity WHERE id = $1",
            "UPDATE activity SET quantity = quantity + 1 WHERE id = $1",
        ):
            with pytest.raises(asyncpg.RestrictViolationError):
                await conn.execute(statement, receipt["activity_id"])
        with pytest.raises(asyncpg.RestrictViolationError):
            await conn.execute("DELETE FROM consent WHERE sub_account = $1", token["sub_account_id"])
        # A given verdict is final too (only one held for review moves once more)...
        assert receipt["verdict"] == "credited"
        with pytest.raises(asyncpg.RestrictViolationError):
            await conn.execute("UPDATE activity SET verdict = 'received' WHERE id = $1", receipt["activity_id"])
        # ...while the judgement's own columns stay writable: the triggers guard facts, not every update.
        assert await conn.execute("UPDATE activity SET judged_at = judged_at WHERE id = $1",
                                  receipt["activity_id"]) == "UPDATE 1"
        assert await conn.fetchval("SELECT verdict FROM activity WHERE id = $1", receipt["activity_id"]) == "credited"


def test_the_behaviour_catalogue_is_public(client: httpx.Client) -> None:
    everything = client.get("/v1/methodology/behaviours")
    assert everything.status_code == 200
    assert "public" in everything.headers["cache-control"]
    body = everything.json()
    assert len(body["categories"]) == 7 and len(body["items"]) >= 40
    food = client.get("/v1/methodology/behaviours", params={"category": "food"}).json()["items"]
    assert food and {b["category"] for b in food} == {"food"}
    one = client.get("/v1/methodology/behaviours/no_disposable_cutlery").json()
    assert one["unit"] == "order" and one["name_zh"]
    assert_problem(client.get("/v1/methodology/behaviours/teleportation"), 404, "behaviour-not-found")
    assert_problem(client.get("/v1/methodology/behaviours", params={"category": "space"}), 400)
