"""The client credentials grant (RFC 6749 §4.4): a partner's own token for the enterprise ledger.

The grant authenticates the client exactly as the other token requests do (HTTP Basic or client_secret_post,
live secrets only), issues only `ledger:read`, to active confidential partners that operators allowed it, and
never a refresh token. The token acts for no resident: the partner API refuses it where a resident's link is
needed, and `authorise_partner_client` (the ledger's dependency) accepts it and nothing else.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import pytest

from api.auth.tokens import AccessTokens, PartnerTokens
from api.partners.auth import PartnerClient, authorise_ledger_client
from api.settings import Settings
from tests.partner_support import (
    ALL_SCOPES,
    Browser,
    Partner,
    activity,
    authorize_params,
    bearer,
    create_partner,
    exchange,
    link,
    new_verifier,
    query_of,
    refresh,
)
from tests.support import Resident, assert_problem, register
from wallet.db import connection
from wallet.errors import DomainError

PARTNER_AUDIENCE = "carbon-wallet:partner-api"  # api.app.PARTNER_AUDIENCE (see test_oauth_security.py)
LEDGER = "ledger:read"


def ledger_partner(operator: Resident, **overrides: Any) -> Partner:
    return create_partner(operator, allowed_scopes=[*ALL_SCOPES, LEDGER], **overrides)


def client_token(client: httpx.Client, partner: Partner, *, auth: str = "basic", secret: str | None = None,
                 **data: str) -> httpx.Response:
    """POST /oauth/token with grant_type=client_credentials, client_secret_basic or client_secret_post."""
    secret = partner.client_secret if secret is None else secret
    form = {"grant_type": "client_credentials", **data}
    if auth == "basic":
        return client.post("/oauth/token", data=form, auth=(partner.client_id, secret or ""))
    return client.post("/oauth/token", data={**form, "client_id": partner.client_id, "client_secret": secret or ""})


def assert_oauth_error(response: httpx.Response, error: str, status: int = 400) -> dict[str, Any]:
    """RFC 6749 §5.2 beside RFC 9457, never cached, and never a token."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == error, body
    assert body["error_description"] and body["code"] == f"oauth-{error}" and body["status"] == status
    assert "access_token" not in body
    return body


def assert_client_token(response: httpx.Response, partner: Partner) -> str:
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    # RFC 6749 §4.4.3: no refresh token; and no resident, so no sub-account.
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}, body
    assert (body["token_type"], body["scope"]) == ("Bearer", LEDGER)
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"
    assert claims["sub"] == claims["client_id"] == partner.client_id
    assert claims["gty"] == "client_credentials" and claims["scope"] == LEDGER
    assert claims["aud"] == PARTNER_AUDIENCE and "sid" not in claims
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    return str(body["access_token"])


# --- the verifier, called as the ledger route's dependency with the API's own signing key ---------------------


class _Limiter:
    def __init__(self) -> None:
        self.hits: list[tuple[Any, ...]] = []

    async def hit(self, *args: Any) -> None:
        self.hits.append(args)


@pytest.fixture(scope="module")
def tokens(settings: Settings) -> SimpleNamespace:
    partner = PartnerTokens(settings.jwt_private_key_pem, issuer=settings.jwt_issuer, audience=PARTNER_AUDIENCE,
                            ttl_s=settings.partner_token_ttl_s)
    app = AccessTokens(settings.jwt_private_key_pem, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                       ttl_s=settings.access_token_ttl_s)
    return SimpleNamespace(partner_tokens=partner, access_tokens=app)


async def verify(tokens: SimpleNamespace, token: str | None) -> PartnerClient:
    state = SimpleNamespace(partner_tokens=tokens.partner_tokens, access_tokens=tokens.access_tokens,
                            rate_limiter=_Limiter())
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    request = SimpleNamespace(headers=headers, app=SimpleNamespace(state=state))
    principal = await authorise_ledger_client(request)  # type: ignore[arg-type]
    assert state.rate_limiter.hits and state.rate_limiter.hits[0][1] == str(principal.partner_id)
    return principal


async def refused(tokens: SimpleNamespace, token: str | None, kind: str, code: str) -> DomainError:
    with pytest.raises(DomainError) as caught:
        await verify(tokens, token)
    assert (caught.value.kind, caught.value.code) == (kind, code), caught.value.detail
    return caught.value


# --- the grant ----------------------------------------------------------------------------------------------------


def test_metadata_lists_the_grant_and_the_scope(client: httpx.Client) -> None:
    metadata = client.get("/.well-known/oauth-authorization-server").json()
    assert "client_credentials" in metadata["grant_types_supported"]
    assert {"authorization_code", "refresh_token"} <= set(metadata["grant_types_supported"])
    assert LEDGER in metadata["scopes_supported"]
    assert {"client_secret_basic", "client_secret_post"} <= set(metadata["token_endpoint_auth_methods_supported"])


async def test_basic_and_post_authentication_issue_a_client_token(
    client: httpx.Client, operator: Resident, tokens: SimpleNamespace, db: object
) -> None:
    partner = ledger_partner(operator)
    for auth, data in (("basic", {}), ("post", {"scope": LEDGER})):
        token = assert_client_token(client_token(client, partner, auth=auth, **data), partner)
        principal = await verify(tokens, token)
        assert (str(principal.partner_id), principal.client_id) == (partner.id, partner.client_id)
        assert principal.scopes == frozenset({LEDGER})


def test_wrong_secret_and_unknown_client_are_invalid_client(client: httpx.Client, operator: Resident) -> None:
    partner = ledger_partner(operator)
    wrong = client_token(client, partner, secret="cws_" + "x" * 43)
    assert_oauth_error(wrong, "invalid_client", 401)
    assert wrong.headers["www-authenticate"].startswith("Basic")
    assert_oauth_error(client_token(client, partner, auth="post", secret="cws_wrong"), "invalid_client", 401)
    assert_oauth_error(client_token(client, partner, auth="post", secret=""), "invalid_client", 401)
    stranger = Partner("0", "cwc_nobody_" + str(time.time_ns()), "cws_whatever", "")
    assert_oauth_error(client_token(client, stranger), "invalid_client", 401)
    assert_oauth_error(client_token(client, stranger, auth="post"), "invalid_client", 401)


def test_a_public_client_cannot_use_the_grant(client: httpx.Client, operator: Resident) -> None:
    partner = ledger_partner(operator, client_type="public")
    bare = client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": partner.client_id})
    assert_oauth_error(bare, "unauthorized_client")
    assert_oauth_error(client_token(client, partner, auth="post", secret="anything"), "invalid_client", 401)


def test_a_partner_not_allowed_ledger_read_is_unauthorized_client(client: httpx.Client, operator: Resident) -> None:
    partner = create_partner(operator)  # the three resident scopes, not ledger:read
    assert_oauth_error(client_token(client, partner), "unauthorized_client")
    assert_oauth_error(client_token(client, partner, scope=LEDGER), "unauthorized_client")


@pytest.mark.parametrize("scope", ["activities:write", "book:read", f"{LEDGER} profile:read", "admin:all", " "])
def test_any_scope_but_ledger_read_is_invalid_scope(client: httpx.Client, operator: Resident, scope: str) -> None:
    partner = ledger_partner(operator)
    assert_oauth_error(client_token(client, partner, scope=scope), "invalid_scope")


async def test_suspension_refuses_the_grant_and_the_tokens_already_issued(
    client: httpx.Client, operator: Resident, tokens: SimpleNamespace, db: object
) -> None:
    partner = ledger_partner(operator)
    token = assert_client_token(client_token(client, partner), partner)
    status = f"/v1/admin/partners/{partner.id}/status"
    assert operator.post(status, json={"status": "suspended", "reason": "test"}).status_code == 200
    assert_oauth_error(client_token(client, partner), "unauthorized_client")
    assert_oauth_error(client_token(client, partner, auth="post"), "unauthorized_client")
    await refused(tokens, token, "forbidden", "partner-suspended")
    assert operator.post(status, json={"status": "active"}).status_code == 200
    assert (await verify(tokens, token)).client_id == partner.client_id
    assert_client_token(client_token(client, partner), partner)


async def test_an_operator_narrowing_allowed_scopes_ends_ledger_access_at_once(
    client: httpx.Client, operator: Resident, tokens: SimpleNamespace, db: object
) -> None:
    partner = ledger_partner(operator)
    token = assert_client_token(client_token(client, partner), partner)
    narrowed = operator.patch(f"/v1/admin/partners/{partner.id}", json={"allowed_scopes": ALL_SCOPES})
    assert narrowed.status_code == 200, narrowed.text
    refusal = await refused(tokens, token, "forbidden", "insufficient-scope")
    assert refusal.extra["required_scope"] == LEDGER


async def test_a_rotated_out_secret_is_refused_after_its_overlap(
    client: httpx.Client, operator: Resident, db: object
) -> None:
    partner = ledger_partner(operator)
    rotated = operator.post(f"/v1/admin/partners/{partner.id}/secrets/client", json={"overlap_s": 3600})
    assert rotated.status_code == 201, rotated.text
    new_secret = rotated.json()["secret"]
    for auth in ("basic", "post"):  # during the overlap, both work
        assert_client_token(client_token(client, partner, auth=auth), partner)
        assert_client_token(client_token(client, partner, auth=auth, secret=new_secret), partner)
    async with connection() as conn:  # the overlap ends
        ended = await conn.execute(
            "UPDATE partner_secret SET expires_at = now() - interval '1 second' "
            "WHERE partner = $1 AND purpose = 'client' AND expires_at IS NOT NULL", partner.id,
        )
    assert ended == "UPDATE 1"
    for auth in ("basic", "post"):
        assert_oauth_error(client_token(client, partner, auth=auth), "invalid_client", 401)
        assert_client_token(client_token(client, partner, auth=auth, secret=new_secret), partner)


# --- where each kind of token is accepted -------------------------------------------------------------------------


def test_the_partner_api_refuses_a_client_token_as_a_resident_link(client: httpx.Client, operator: Resident) -> None:
    partner = ledger_partner(operator)
    token = assert_client_token(client_token(client, partner), partner)
    for response in (
        client.post("/v1/partner/activities", headers=bearer(token), json={"activities": [activity()]}),
        client.post("/v1/partner/activity", headers=bearer(token), json=activity()),
        client.get("/v1/partner/profile", headers=bearer(token)),
        client.get("/v1/partner/book", headers=bearer(token)),
    ):
        body = assert_problem(response, 403, "resident-token-required")
        assert "client_credentials" in body["detail"]
    assert_problem(client.get("/v1/me", headers=bearer(token)), 401, "token-invalid")  # nor is it a resident's


async def test_the_verifier_refuses_every_other_token(
    client: httpx.Client, base_url: str, operator: Resident, tokens: SimpleNamespace, db: object
) -> None:
    partner = ledger_partner(operator)
    resident = register(client)
    linked = link(client, base_url, resident, partner)
    refusal = await refused(tokens, linked["access_token"], "forbidden", "client-token-required")
    assert "client_credentials" in refusal.detail and refusal.extra["required_scope"] == LEDGER
    refusal = await refused(tokens, resident.access_token, "unauthorized", "token-invalid")
    assert "resident's app token" in refusal.detail
    await refused(tokens, "not.a.jwt", "unauthorized", "token-invalid")
    await refused(tokens, None, "unauthorized", "authentication-required")
    clients = tokens.partner_tokens.clients
    expired, _ = clients.issue(partner.client_id, [LEDGER], now_s=int(time.time()) - clients.ttl_s - 60)
    await refused(tokens, expired, "unauthorized", "token-expired")
    without_scope, _ = clients.issue(partner.client_id, ["book:read"])
    await refused(tokens, without_scope, "forbidden", "insufficient-scope")
    unknown, _ = clients.issue("cwc_nobody", [LEDGER])
    await refused(tokens, unknown, "unauthorized", "token-invalid")
    # Control: the same signer's token for this partner is accepted.
    good, _ = clients.issue(partner.client_id, [LEDGER])
    assert str((await verify(tokens, good)).partner_id) == partner.id


def test_there_is_nothing_to_refresh_and_revoking_is_harmless(client: httpx.Client, operator: Resident) -> None:
    partner = ledger_partner(operator)
    token = assert_client_token(client_token(client, partner), partner)
    assert_oauth_error(refresh(client, partner, token), "invalid_grant")
    revoked = client.post("/oauth/revoke", data={"token": token}, auth=partner.basic)
    assert revoked.status_code == 200  # RFC 7009: 200 whatever the token; a client token simply expires


# --- residents are never asked for the partner's own scope --------------------------------------------------------


def test_the_authorization_code_flow_never_grants_ledger_read(
    client: httpx.Client, base_url: str, operator: Resident
) -> None:
    partner = ledger_partner(operator)
    resident = register(client)
    browser = Browser(base_url, resident, language="en")
    try:
        asked = browser.consent_page("/oauth/authorize?" + str(httpx.QueryParams(
            authorize_params(partner, new_verifier(), scope=f"profile:read {LEDGER}"))))
        assert asked.status_code == 303
        assert query_of(asked.headers["location"])["error"] == "invalid_scope"
        # Without `scope` the request asks for what the partner is allowed, less its own scope.
        verifier = new_verifier()
        page = browser.consent_page("/oauth/authorize?" + str(httpx.QueryParams(
            authorize_params(partner, verifier, scope=None))))
        assert page.status_code == 200 and "enterprise ledger" not in page.text
        callback = browser.decide(page).headers["location"]
    finally:
        browser.close()
    tokens = exchange(client, partner, query_of(callback)["code"], verifier).json()
    assert set(tokens["scope"].split()) == set(ALL_SCOPES)
    widened = client.post("/oauth/token", auth=partner.basic, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "scope": LEDGER,
    })
    assert_oauth_error(widened, "invalid_scope")


async def test_the_partner_reads_its_enterprise_ledger_with_its_own_token_and_only_that(
        client: httpx.Client, operator: Resident, resident: Resident) -> None:
    from gamification.community.follow import step

    partner = ledger_partner(operator)
    await step(wait=True)
    token = assert_client_token(client_token(client, partner, scope=LEDGER), partner)
    r = client.get("/v1/partner/ledger", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["partner_id"], body["total"]["reduction_mg"], body["months"]) == (partner.id, 0, [])
    assert client.get("/v1/partner/ledger").status_code == 401
    assert client.get("/v1/partner/ledger", headers=resident.headers).status_code == 401
    assert_problem_code(client.get("/v1/partner/ledger", params={"from_day": "2026-02-01", "to_day": "2026-01-01"},
                                   headers={"Authorization": f"Bearer {token}"}), 422, "invalid-range")


def assert_problem_code(response: httpx.Response, status: int, code: str) -> None:
    assert (response.status_code, response.json().get("code")) == (status, code), response.text
