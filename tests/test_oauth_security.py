"""Security tests for the OAuth 2 authorization server that partner platforms use to act for residents.

`test_oauth_flow.py` proves the happy path works with an independent client library. This module is the
other half: each test makes exactly one thing wrong (a redirect URI, a client, a verifier, a reused code or
refresh token, a suspension, an unlink, a scope, a cookie, a consent token) and checks that the server
refuses it *and* that the refusal has the right shape, because in OAuth the shape is part of the security:

* before the client and its redirect URI are validated, errors are shown on our own page and never
  redirected (otherwise the authorization endpoint is an open redirector, RFC 6749 §4.1.2.1);
* after that, errors go back to the registered redirect URI with the client's `state`;
* codes and refresh tokens are single-use, and presenting a spent one revokes what it produced
  (RFC 6749 §4.1.2 and §10.4, RFC 9700 §4.14);
* suspension, unlinking and revocation take effect on the very next request.

Every test is independent: it registers its own partner (through the operator's admin API) and its own
residents, and drives the real API process over HTTP, with a resident's browser simulated by
`tests.partner_support.Browser` (cookies kept, redirects not followed, so each step can be checked).
"""

from __future__ import annotations

import html
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from api.auth.tokens import PartnerTokens
from api.settings import Settings
from tests.partner_support import (
    REDIRECT_URI,
    Browser,
    Partner,
    activity,
    authorize_params,
    bearer,
    challenge_of,
    create_partner,
    exchange,
    link,
    new_verifier,
    query_of,
    refresh,
)
from tests.support import Resident, assert_problem, race, register
from wallet.db import connection

OTHER_REDIRECT_URI = "https://partner.example/oauth/other-callback"
SESSION_COOKIE = "cw_web"
# api.app.PARTNER_AUDIENCE; not imported, because importing the app module here would build every controller
# in the test process. test_minted_control_token_is_accepted proves the value is right.
PARTNER_AUDIENCE = "carbon-wallet:partner-api"


# --- helpers ------------------------------------------------------------------------------------------------------


@pytest.fixture
def anon(base_url: str) -> Iterator[httpx.Client]:
    """A fresh browser with no cookies, reading English pages; never follows redirects."""
    with httpx.Client(base_url=base_url, timeout=30, follow_redirects=False,
                      headers={"Accept-Language": "en"}) as http:
        yield http


def authorize_url(params: dict[str, str]) -> str:
    return "/oauth/authorize?" + str(httpx.QueryParams(params))


def form_field(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no {name} field in the page"
    return html.unescape(match.group(1))


def get_code(base_url: str, resident: Resident, partner: Partner, verifier: str | None = None,
             **overrides: str | None) -> tuple[str, str]:
    """Run the front channel as `resident` and return (code, verifier)."""
    verifier = verifier or new_verifier()
    params = authorize_params(partner, verifier, **overrides)
    browser = Browser(base_url, resident)
    try:
        callback = browser.approve(authorize_url(params))
    finally:
        browser.close()
    answer = query_of(callback)
    assert answer["state"] == params["state"]
    return answer["code"], verifier


def token_request(client: httpx.Client, partner: Partner, **data: str) -> httpx.Response:
    """POST /oauth/token authenticated the way `partner` should be (Basic, or client_id for public ones)."""
    if partner.client_secret is None:
        return client.post("/oauth/token", data={"client_id": partner.client_id, **data})
    return client.post("/oauth/token", data=data, auth=partner.basic)


def revoke(client: httpx.Client, partner: Partner, token: str) -> httpx.Response:
    if partner.client_secret is None:
        return client.post("/oauth/revoke", data={"client_id": partner.client_id, "token": token})
    return client.post("/oauth/revoke", data={"token": token}, auth=partner.basic)


def set_status(operator: Resident, partner: Partner, status: str) -> None:
    r = operator.post(f"/v1/admin/partners/{partner.id}/status", json={"status": status, "reason": "security test"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == status


def profile(client: httpx.Client, access_token: str) -> httpx.Response:
    return client.get("/v1/partner/profile", headers=bearer(access_token))


def assert_oauth_error(response: httpx.Response, error: str, status: int = 400) -> dict[str, Any]:
    """RFC 6749 §5.2: JSON with `error` and `error_description`, never cached."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == error, body
    assert body["error_description"]
    assert "access_token" not in body and "refresh_token" not in body
    return body


def assert_page_headers(response: httpx.Response) -> None:
    """Linking pages can be neither framed (clickjacking the Approve button) nor cached."""
    assert response.headers["content-type"].startswith("text/html"), response.headers
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def assert_error_page(response: httpx.Response, text: str | None = None) -> None:
    """Shown to the resident on our own page; never a redirect anywhere."""
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert_page_headers(response)
    assert "code=" not in response.text
    if text is not None:
        assert text in response.text, response.text


def assert_redirected_error(response: httpx.Response, error: str, state: str | None, base_url: str) -> dict[str, str]:
    """Sent back to the registered redirect URI with the client's state and our issuer (RFC 9207)."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    answer = query_of(location)
    assert answer["error"] == error, answer
    assert answer.get("state") == state
    assert answer["iss"] == base_url
    assert "code" not in answer
    return answer


def set_cookies(response: httpx.Response) -> str:
    return "\n".join(response.headers.get_list("set-cookie"))


# --- 1. redirect URI validation: errors are shown, never redirected -----------------------------------------------


@pytest.mark.parametrize("redirect_uri", [
    "https://evil.example/oauth/callback",
    REDIRECT_URI + "/",
    REDIRECT_URI + "?x=1",
    REDIRECT_URI.replace("https://", "http://"),
    REDIRECT_URI.upper(),
    REDIRECT_URI + "#fragment",
    "",
], ids=["other-host", "trailing-slash", "extra-query", "http-scheme", "different-case", "fragment", "empty"])
def test_unregistered_redirect_uri_is_an_error_page(anon: httpx.Client, operator: Resident, redirect_uri: str) -> None:
    partner = create_partner(operator)
    r = anon.get(authorize_url(authorize_params(partner, new_verifier(), redirect_uri=redirect_uri)))
    assert_error_page(r, "does not match what this platform registered")
    assert "evil.example" not in r.headers.get("location", "")


@pytest.mark.parametrize("client_id", ["cwc_unknown-client", None, ""], ids=["unknown", "missing", "empty"])
def test_unknown_or_missing_client_is_an_error_page(anon: httpx.Client, operator: Resident,
                                                    client_id: str | None) -> None:
    partner = create_partner(operator)
    r = anon.get(authorize_url(authorize_params(partner, new_verifier(), client_id=client_id)))
    assert_error_page(r, "is not registered with Carbon Wallet")


def test_unknown_client_with_attacker_redirect_uri_is_not_redirected(anon: httpx.Client, operator: Resident) -> None:
    partner = create_partner(operator)
    params = authorize_params(partner, new_verifier(), client_id="cwc_nobody", redirect_uri="https://evil.example/cb",
                              response_type="token")
    assert_error_page(anon.get(authorize_url(params)), "is not registered with Carbon Wallet")


def test_several_registered_uris_need_an_explicit_redirect_uri(anon: httpx.Client, operator: Resident) -> None:
    partner = create_partner(operator, redirect_uris=[REDIRECT_URI, OTHER_REDIRECT_URI])
    r = anon.get(authorize_url(authorize_params(partner, new_verifier(), redirect_uri=None)))
    assert_error_page(r, "redirect_uri is required for this client")


def test_repeated_client_id_or_redirect_uri_is_an_error_page(anon: httpx.Client, operator: Resident) -> None:
    partner = create_partner(operator, redirect_uris=[REDIRECT_URI, OTHER_REDIRECT_URI])
    params = list(authorize_params(partner, new_verifier()).items())
    for name, value in [("redirect_uri", OTHER_REDIRECT_URI), ("client_id", partner.client_id)]:
        r = anon.get("/oauth/authorize", params=[*params, (name, value)])
        assert_error_page(r, f"{name} appears more than once")


def test_single_registered_uri_is_used_when_redirect_uri_is_omitted(anon: httpx.Client, base_url: str,
                                                                    operator: Resident) -> None:
    """Control for the error cases above: with one registered URI, errors go back to it."""
    partner = create_partner(operator)
    params = authorize_params(partner, new_verifier(), redirect_uri=None, response_type="token")
    assert_redirected_error(anon.get(authorize_url(params)), "unsupported_response_type", params["state"], base_url)


# --- 2. errors after the redirect URI is validated go back to it (no sign-in needed) ------------------------------


@pytest.mark.parametrize(("overrides", "error"), [
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": None}, "unsupported_response_type"),
    ({"code_challenge": None}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),
    ({"code_challenge": "too-short"}, "invalid_request"),
    ({"code_challenge": "a" * 42 + "="}, "invalid_request"),
    ({"code_challenge": "a" * 42 + "+"}, "invalid_request"),
    ({"scope": "carbon:everything"}, "invalid_scope"),
    ({"scope": "profile:read admin"}, "invalid_scope"),
], ids=["token", "no-response-type", "no-challenge", "plain", "no-method", "short-challenge", "padded-challenge",
        "non-url-safe-challenge", "unknown-scope", "one-unknown-scope"])
def test_invalid_request_is_redirected_with_error_and_state(
    anon: httpx.Client, base_url: str, operator: Resident, overrides: dict[str, str | None], error: str
) -> None:
    partner = create_partner(operator)
    params = authorize_params(partner, new_verifier(), **overrides)
    r = anon.get(authorize_url(params))
    answer = assert_redirected_error(r, error, params["state"], base_url)
    assert answer["error_description"]
    assert SESSION_COOKIE not in set_cookies(r)


def test_plain_pkce_is_refused_even_with_a_plain_challenge(anon: httpx.Client, base_url: str,
                                                           operator: Resident) -> None:
    partner = create_partner(operator)
    verifier = new_verifier()
    params = authorize_params(partner, verifier, code_challenge=verifier[:43], code_challenge_method="plain")
    answer = assert_redirected_error(anon.get(authorize_url(params)), "invalid_request", params["state"], base_url)
    assert "plain" in answer["error_description"]


def test_scope_not_allowed_for_the_partner_is_invalid_scope(anon: httpx.Client, base_url: str,
                                                            operator: Resident) -> None:
    partner = create_partner(operator, allowed_scopes=["activities:write"])
    for scope in ["profile:read", "activities:write profile:read"]:
        params = authorize_params(partner, new_verifier(), scope=scope)
        answer = assert_redirected_error(anon.get(authorize_url(params)), "invalid_scope", params["state"], base_url)
        assert "profile:read" in answer["error_description"]


def test_overlong_or_repeated_state_is_not_echoed(anon: httpx.Client, base_url: str, operator: Resident) -> None:
    partner = create_partner(operator)
    params = authorize_params(partner, new_verifier(), state="s" * 501)
    assert_redirected_error(anon.get(authorize_url(params)), "invalid_request", None, base_url)
    params = authorize_params(partner, new_verifier())
    r = anon.get("/oauth/authorize", params=[*params.items(), ("state", "second")])
    assert_redirected_error(r, "invalid_request", None, base_url)


def test_valid_request_without_sign_in_goes_to_our_login_page(anon: httpx.Client, operator: Resident) -> None:
    """Control: the same requests, made valid, are not redirected to the partner but to our login."""
    partner = create_partner(operator)
    r = anon.get(authorize_url(authorize_params(partner, new_verifier())))
    assert r.status_code == 303
    assert r.headers["location"].startswith("/oauth/login?next=%2Foauth%2Fauthorize%3F")


# --- 3. the resident denies ---------------------------------------------------------------------------------------


def test_deny_redirects_access_denied_and_links_nothing(client: httpx.Client, base_url: str,
                                                       operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    params = authorize_params(partner, new_verifier())
    browser = Browser(base_url, resident)
    try:
        r = browser.decide(browser.consent_page(authorize_url(params)), decision="deny")
    finally:
        browser.close()
    assert_redirected_error(r, "access_denied", params["state"], base_url)
    subs = resident.get("/v1/me/accounts").json()["sub_accounts"]
    assert [s for s in subs if s["kind"] == "partner"] == []
    assert resident.get("/v1/me/consents").json() == []


# --- 4-7. authorization codes -------------------------------------------------------------------------------------


def test_code_reuse_is_refused_and_revokes_the_first_tokens(client: httpx.Client, base_url: str,
                                                            operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    code, verifier = get_code(base_url, resident, partner)
    first = exchange(client, partner, code, verifier)
    assert first.status_code == 200, first.text
    tokens = first.json()
    assert profile(client, tokens["access_token"]).status_code == 200

    body = assert_oauth_error(exchange(client, partner, code, verifier), "invalid_grant")
    assert "already used" in body["error_description"]

    assert_problem(profile(client, tokens["access_token"]), 401, "token-revoked")
    assert_oauth_error(refresh(client, partner, tokens["refresh_token"]), "invalid_grant")


def test_code_is_bound_to_its_client_and_spent_by_any_presentation(client: httpx.Client, base_url: str,
                                                                   operator: Resident) -> None:
    """Partner B presenting partner A's code (with the right verifier and redirect URI) gets invalid_grant.
    The code is spent by that presentation, whoever made it: A cannot use it afterwards either."""
    partner_a, partner_b = create_partner(operator), create_partner(operator)
    resident = register(client)
    code, verifier = get_code(base_url, resident, partner_a)

    assert_oauth_error(exchange(client, partner_b, code, verifier), "invalid_grant")
    assert_oauth_error(exchange(client, partner_a, code, verifier), "invalid_grant")


def test_wrong_pkce_verifier_is_invalid_grant_and_spends_the_code(client: httpx.Client, base_url: str,
                                                                  operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    code, verifier = get_code(base_url, resident, partner)
    body = assert_oauth_error(exchange(client, partner, code, new_verifier()), "invalid_grant")
    assert "code_verifier" in body["error_description"]
    # A failed guess spends the code, so the verifier cannot be brute-forced against it.
    assert_oauth_error(exchange(client, partner, code, verifier), "invalid_grant")


@pytest.mark.parametrize("verifier", [None, "", "short", "a" * 129, "a" * 42 + " "],
                         ids=["missing", "empty", "short", "too-long", "bad-characters"])
def test_missing_or_malformed_verifier_is_invalid_request(client: httpx.Client, base_url: str, operator: Resident,
                                                          verifier: str | None) -> None:
    partner = create_partner(operator)
    resident = register(client)
    code, _ = get_code(base_url, resident, partner)
    assert_oauth_error(exchange(client, partner, code, verifier), "invalid_request")


def test_challenge_itself_is_not_accepted_as_verifier(client: httpx.Client, base_url: str,
                                                      operator: Resident) -> None:
    """What an attacker who saw the authorization URL knows is the challenge, never the verifier."""
    partner = create_partner(operator)
    resident = register(client)
    code, verifier = get_code(base_url, resident, partner)
    assert_oauth_error(exchange(client, partner, code, challenge_of(verifier)), "invalid_grant")


@pytest.mark.parametrize("exchange_uri", [OTHER_REDIRECT_URI, REDIRECT_URI + "/", None],
                         ids=["other-registered", "trailing-slash", "missing"])
def test_redirect_uri_at_exchange_must_match_the_authorize_one(client: httpx.Client, base_url: str,
                                                               operator: Resident, exchange_uri: str | None) -> None:
    partner = create_partner(operator, redirect_uris=[REDIRECT_URI, OTHER_REDIRECT_URI])
    resident = register(client)
    code, verifier = get_code(base_url, resident, partner)
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    if exchange_uri is not None:
        data["redirect_uri"] = exchange_uri
    assert_oauth_error(token_request(client, partner, **data), "invalid_grant")


async def test_expired_code_is_invalid_grant(client: httpx.Client, base_url: str, operator: Resident,
                                             db: object) -> None:
    partner = create_partner(operator)
    resident = register(client)
    code, verifier = get_code(base_url, resident, partner)
    async with connection() as conn:
        expired = await conn.execute(
            "UPDATE oauth_code SET expires_at = now() - interval '1 second' WHERE partner = $1 AND used_at IS NULL",
            uuid.UUID(partner.id),
        )
    assert expired == "UPDATE 1"
    assert_oauth_error(exchange(client, partner, code, verifier), "invalid_grant")


def test_concurrent_exchanges_of_one_code_yield_one_token(client: httpx.Client, base_url: str,
                                                         operator: Resident) -> None:
    """The guarded UPDATE lets exactly one presentation win; the others are reuse, which ends that grant."""
    partner = create_partner(operator)
    resident = register(client)
    code, verifier = get_code(base_url, resident, partner)
    results = race(5, lambda: httpx.Client(base_url=base_url, timeout=30),
                   lambda http: exchange(http, partner, code, verifier))
    winners = [r for r in results if r.status_code == 200]
    assert len(winners) == 1, [r.text for r in results]
    for loser in results:
        if loser.status_code != 200:
            assert_oauth_error(loser, "invalid_grant")


def test_garbage_code_and_unknown_grant_type(client: httpx.Client, operator: Resident) -> None:
    partner = create_partner(operator)
    assert_oauth_error(exchange(client, partner, "cwa_" + "x" * 43, new_verifier()), "invalid_grant")
    assert_oauth_error(exchange(client, partner, "", new_verifier()), "invalid_grant")
    assert_oauth_error(token_request(client, partner, grant_type="password", username="u", password="p"),
                       "unsupported_grant_type")
    assert_oauth_error(token_request(client, partner, grant_type="urn:ietf:params:oauth:grant-type:device_code"),
                       "unsupported_grant_type")


def test_code_is_refused_after_the_resident_unlinks(client: httpx.Client, base_url: str,
                                                    operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    first = link(client, base_url, resident, partner)
    code, verifier = get_code(base_url, resident, partner)
    assert resident.delete(f"/v1/me/accounts/{first['sub_account_id']}").status_code == 204
    assert_oauth_error(exchange(client, partner, code, verifier), "invalid_grant")


def test_callback_and_token_responses_are_not_cached(client: httpx.Client, base_url: str,
                                                     operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    verifier = new_verifier()
    browser = Browser(base_url, resident)
    try:
        answer = browser.decide(browser.consent_page(authorize_url(authorize_params(partner, verifier))))
    finally:
        browser.close()
    assert answer.status_code == 303
    assert answer.headers["cache-control"] == "no-store"
    code = query_of(answer.headers["location"])["code"]
    r = exchange(client, partner, code, verifier)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["pragma"] == "no-cache"


# --- 8. refresh token rotation and reuse detection ----------------------------------------------------------------


def test_refresh_rotates_and_reuse_revokes_the_whole_family(client: httpx.Client, base_url: str,
                                                            operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    original = link(client, base_url, resident, partner)

    rotated = refresh(client, partner, original["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    newer = rotated.json()
    assert newer["refresh_token"] != original["refresh_token"]
    assert newer["sub_account_id"] == original["sub_account_id"]
    assert profile(client, newer["access_token"]).status_code == 200

    latest_response = refresh(client, partner, newer["refresh_token"])
    assert latest_response.status_code == 200, latest_response.text
    latest = latest_response.json()
    assert profile(client, latest["access_token"]).status_code == 200

    # The original refresh token comes back: someone copied it. The grant ends for everyone.
    body = assert_oauth_error(refresh(client, partner, original["refresh_token"]), "invalid_grant")
    assert "already used" in body["error_description"]
    assert_oauth_error(refresh(client, partner, latest["refresh_token"]), "invalid_grant")
    for access_token in (original["access_token"], newer["access_token"], latest["access_token"]):
        assert_problem(profile(client, access_token), 401, "token-revoked")


def test_concurrent_refreshes_of_one_token_yield_one_token(client: httpx.Client, base_url: str,
                                                         operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    tokens = link(client, base_url, resident, partner)
    results = race(5, lambda: httpx.Client(base_url=base_url, timeout=30),
                   lambda http: refresh(http, partner, tokens["refresh_token"]))
    winners = [r for r in results if r.status_code == 200]
    assert len(winners) == 1, [r.text for r in results]
    for loser in results:
        if loser.status_code != 200:
            assert_oauth_error(loser, "invalid_grant")


async def test_expired_refresh_token_is_invalid_grant(client: httpx.Client, base_url: str, operator: Resident,
                                                      db: object) -> None:
    partner = create_partner(operator)
    resident = register(client)
    tokens = link(client, base_url, resident, partner)
    async with connection() as conn:
        expired = await conn.execute(
            """UPDATE oauth_refresh_token t SET expires_at = now() - interval '1 second' FROM oauth_grant g
               WHERE g.id = t.grant_id AND g.partner = $1 AND t.used_at IS NULL""",
            uuid.UUID(partner.id),
        )
    assert expired == "UPDATE 1"
    body = assert_oauth_error(refresh(client, partner, tokens["refresh_token"]), "invalid_grant")
    assert "expired" in body["error_description"]


def test_garbage_refresh_token_is_invalid_grant(client: httpx.Client, operator: Resident) -> None:
    partner = create_partner(operator)
    for token in ["", "cwpr_" + "x" * 43, "not-a-token"]:
        assert_oauth_error(refresh(client, partner, token), "invalid_grant")


# --- 9. client authentication at the token endpoint ---------------------------------------------------------------


def test_wrong_client_secret_is_invalid_client(client: httpx.Client, base_url: str, operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    code, verifier = get_code(base_url, resident, partner)
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": REDIRECT_URI}

    basic = client.post("/oauth/token", data=data, auth=(partner.client_id, "cws_wrong"))
    assert_oauth_error(basic, "invalid_client", 401)
    assert basic.headers["www-authenticate"].startswith("Basic")

    posted = client.post("/oauth/token", data={**data, "client_id": partner.client_id, "client_secret": "cws_wrong"})
    assert_oauth_error(posted, "invalid_client", 401)

    # Failed client authentication happens before the code is looked at, so it does not spend it.
    ok = exchange(client, partner, code, verifier)
    assert ok.status_code == 200, ok.text


def test_secret_of_another_client_is_invalid_client(client: httpx.Client, operator: Resident) -> None:
    partner_a, partner_b = create_partner(operator), create_partner(operator)
    assert partner_b.client_secret is not None
    r = client.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "cwpr_x"},
                    auth=(partner_a.client_id, partner_b.client_secret))
    assert_oauth_error(r, "invalid_client", 401)


@pytest.mark.parametrize("client_id", [None, "cwc_unknown"], ids=["no-client-id", "unknown-client"])
def test_missing_or_unknown_client_is_invalid_client(client: httpx.Client, client_id: str | None) -> None:
    data = {"grant_type": "refresh_token", "refresh_token": "cwpr_x"}
    if client_id:
        data["client_id"] = client_id
    assert_oauth_error(client.post("/oauth/token", data=data), "invalid_client", 401)


def test_malformed_basic_credentials_are_invalid_client(client: httpx.Client) -> None:
    r = client.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "cwpr_x"},
                    headers={"Authorization": "Basic !!!not-base64!!!"})
    assert_oauth_error(r, "invalid_client", 401)
    assert r.headers["www-authenticate"].startswith("Basic")


def test_confidential_client_without_secret_is_invalid_client(client: httpx.Client, base_url: str,
                                                              operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    code, verifier = get_code(base_url, resident, partner)
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": REDIRECT_URI}
    assert_oauth_error(client.post("/oauth/token", data={**data, "client_id": partner.client_id}),
                       "invalid_client", 401)
    assert_oauth_error(client.post("/oauth/token", data={**data, "client_id": partner.client_id, "client_secret": ""}),
                       "invalid_client", 401)
    assert_oauth_error(client.post("/oauth/token", data=data, auth=(partner.client_id, "")), "invalid_client", 401)


def test_public_client_presenting_a_secret_is_invalid_client(client: httpx.Client, operator: Resident) -> None:
    partner = create_partner(operator, client_type="public")
    assert partner.client_secret is None
    data = {"grant_type": "refresh_token", "refresh_token": "cwpr_x"}
    posted = client.post("/oauth/token", data={**data, "client_id": partner.client_id, "client_secret": "anything"})
    assert_oauth_error(posted, "invalid_client", 401)
    basic = client.post("/oauth/token", data=data, auth=(partner.client_id, "anything"))
    assert_oauth_error(basic, "invalid_client", 401)
    # Control: the same request without a secret authenticates and fails only on the token.
    assert_oauth_error(client.post("/oauth/token", data={**data, "client_id": partner.client_id}), "invalid_grant")


def test_rotated_out_client_secret_stops_working(client: httpx.Client, base_url: str, operator: Resident) -> None:
    partner = create_partner(operator)
    tokens = link(client, base_url, register(client), partner)
    rotated = operator.post(f"/v1/admin/partners/{partner.id}/secrets/client", json={"overlap_s": 0})
    assert rotated.status_code == 201, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != partner.client_secret

    old = client.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                      auth=partner.basic)
    assert_oauth_error(old, "invalid_client", 401)
    assert revoke(client, partner, tokens["access_token"]).status_code == 401
    new = client.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                      auth=(partner.client_id, new_secret))
    assert new.status_code == 200, new.text


def test_basic_and_body_secret_together_is_invalid_request(client: httpx.Client, operator: Resident) -> None:
    partner = create_partner(operator)
    assert partner.client_secret is not None
    r = client.post("/oauth/token", auth=partner.basic, data={
        "grant_type": "refresh_token", "refresh_token": "cwpr_x", "client_secret": partner.client_secret,
    })
    assert_oauth_error(r, "invalid_request")


def test_body_client_id_differing_from_basic_is_invalid_request(client: httpx.Client, operator: Resident) -> None:
    partner_a, partner_b = create_partner(operator), create_partner(operator)
    r = client.post("/oauth/token", auth=partner_a.basic, data={
        "grant_type": "refresh_token", "refresh_token": "cwpr_x", "client_id": partner_b.client_id,
    })
    assert_oauth_error(r, "invalid_request")


def test_refresh_token_of_another_client_is_invalid_grant(client: httpx.Client, base_url: str,
                                                          operator: Resident) -> None:
    partner_a, partner_b = create_partner(operator), create_partner(operator)
    resident = register(client)
    tokens = link(client, base_url, resident, partner_a)

    assert_oauth_error(refresh(client, partner_b, tokens["refresh_token"]), "invalid_grant")

    # B's attempt neither spent A's refresh token nor counted as reuse.
    assert profile(client, tokens["access_token"]).status_code == 200
    renewed = refresh(client, partner_a, tokens["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert profile(client, renewed.json()["access_token"]).status_code == 200


# --- 10. a suspended partner --------------------------------------------------------------------------------------


def test_suspension_stops_tokens_refresh_and_authorization(client: httpx.Client, anon: httpx.Client, base_url: str,
                                                           operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    tokens = link(client, base_url, resident, partner)
    pending_code, pending_verifier = get_code(base_url, resident, partner)
    assert profile(client, tokens["access_token"]).status_code == 200

    set_status(operator, partner, "suspended")

    assert_problem(profile(client, tokens["access_token"]), 403, "partner-suspended")
    assert_problem(client.post("/v1/partner/activities", json={"activities": [activity()]},
                               headers=bearer(tokens["access_token"])), 403, "partner-suspended")
    assert_oauth_error(refresh(client, partner, tokens["refresh_token"]), "unauthorized_client")
    assert_oauth_error(exchange(client, partner, pending_code, pending_verifier), "unauthorized_client")
    params = authorize_params(partner, new_verifier())
    assert_redirected_error(anon.get(authorize_url(params)), "unauthorized_client", params["state"], base_url)

    set_status(operator, partner, "active")

    assert profile(client, tokens["access_token"]).status_code == 200
    renewed = refresh(client, partner, tokens["refresh_token"])
    assert renewed.status_code == 200, renewed.text


def test_suspension_between_consent_page_and_approval_issues_no_code(client: httpx.Client, base_url: str,
                                                                     operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    params = authorize_params(partner, new_verifier())
    browser = Browser(base_url, resident)
    try:
        page = browser.consent_page(authorize_url(params))
        set_status(operator, partner, "suspended")
        r = browser.decide(page)
    finally:
        browser.close()
    assert_redirected_error(r, "unauthorized_client", params["state"], base_url)


# --- 11. a resident who unlinks the partner -----------------------------------------------------------------------


def test_unlink_revokes_tokens_and_relinking_reuses_the_sub_account(client: httpx.Client, base_url: str,
                                                                    operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    tokens = link(client, base_url, resident, partner)
    sub_account_id = tokens["sub_account_id"]

    assert resident.delete(f"/v1/me/accounts/{sub_account_id}").status_code == 204

    assert_problem(profile(client, tokens["access_token"]), 403, "resident-unlinked")
    assert_problem(client.post("/v1/partner/activities", json={"activities": [activity()]},
                               headers=bearer(tokens["access_token"])), 403, "resident-unlinked")
    assert_oauth_error(refresh(client, partner, tokens["refresh_token"]), "invalid_grant")

    subs = {s["id"]: s for s in resident.get("/v1/me/accounts").json()["sub_accounts"]}
    assert subs[sub_account_id]["status"] == "unlinked"
    assert subs[sub_account_id]["unlinked_at"] is not None
    assert subs[sub_account_id]["scopes"] == []
    consents = resident.get("/v1/me/consents").json()
    assert len(consents) == 1
    assert consents[0]["sub_account_id"] == sub_account_id
    assert consents[0]["revoked_at"] is not None
    assert consents[0]["revoked_reason"] == "resident-unlinked"

    # Unlinking twice is harmless.
    assert resident.delete(f"/v1/me/accounts/{sub_account_id}").status_code == 204

    again = link(client, base_url, resident, partner)
    assert again["sub_account_id"] == sub_account_id
    assert profile(client, again["access_token"]).status_code == 200
    # The old tokens stay dead after the new link.
    assert_problem(profile(client, tokens["access_token"]), 401, "token-revoked")
    assert_oauth_error(refresh(client, partner, tokens["refresh_token"]), "invalid_grant")

    subs = {s["id"]: s for s in resident.get("/v1/me/accounts").json()["sub_accounts"]}
    assert subs[sub_account_id]["status"] == "active"
    consents = resident.get("/v1/me/consents").json()
    assert len(consents) == 2
    newest, oldest = consents
    assert newest["sub_account_id"] == sub_account_id
    assert newest["revoked_at"] is None and newest["id"] != oldest["id"]
    assert oldest["revoked_reason"] == "resident-unlinked"


def test_resident_cannot_unlink_another_residents_sub_account(client: httpx.Client, base_url: str,
                                                              operator: Resident) -> None:
    partner = create_partner(operator)
    owner, stranger = register(client), register(client)
    tokens = link(client, base_url, owner, partner)
    assert_problem(stranger.delete(f"/v1/me/accounts/{tokens['sub_account_id']}"), 404, "sub-account-not-found")
    assert profile(client, tokens["access_token"]).status_code == 200


def test_relinking_with_fewer_scopes_narrows_earlier_tokens(client: httpx.Client, base_url: str,
                                                            operator: Resident) -> None:
    """The consent page says re-approving *replaces* what the platform may do. After the resident re-links
    granting only profile:read, no token of that partner may still write activities for them."""
    partner = create_partner(operator)
    resident = register(client)
    wide = link(client, base_url, resident, partner)
    write = client.post("/v1/partner/activities", json={"activities": [activity()]},
                        headers=bearer(wide["access_token"]))
    assert write.status_code == 200, write.text

    narrow = link(client, base_url, resident, partner, scopes=["profile:read"])
    assert narrow["sub_account_id"] == wide["sub_account_id"]
    assert narrow["scope"] == "profile:read"
    sub = next(s for s in resident.get("/v1/me/accounts").json()["sub_accounts"] if s["id"] == wide["sub_account_id"])
    assert [s["scope"] for s in sub["scopes"]] == ["profile:read"]
    consents = resident.get("/v1/me/consents").json()
    assert consents[1]["revoked_reason"] == "superseded"

    old_write = client.post("/v1/partner/activities", json={"activities": [activity()]},
                            headers=bearer(wide["access_token"]))
    assert old_write.status_code in (401, 403), old_write.text
    renewed = refresh(client, partner, wide["refresh_token"])
    assert renewed.status_code == 400 or "activities:write" not in renewed.json()["scope"].split(), renewed.text


# --- 12. scopes: no escalation ------------------------------------------------------------------------------------


def test_token_cannot_exceed_its_scopes(client: httpx.Client, base_url: str, operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    tokens = link(client, base_url, resident, partner, scopes=["profile:read"])
    assert tokens["scope"] == "profile:read"

    r = client.post("/v1/partner/activities", json={"activities": [activity()]},
                    headers=bearer(tokens["access_token"]))
    assert_problem(r, 403, "insufficient-scope")
    assert "insufficient_scope" in r.headers["www-authenticate"]
    assert 'scope="activities:write"' in r.headers["www-authenticate"]
    assert_problem(client.get("/v1/partner/book", headers=bearer(tokens["access_token"])), 403, "insufficient-scope")
    assert profile(client, tokens["access_token"]).status_code == 200


def test_refresh_can_narrow_but_never_widen_scopes(client: httpx.Client, base_url: str, operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    tokens = link(client, base_url, resident, partner, scopes=["profile:read", "book:read"])
    assert set(tokens["scope"].split()) == {"profile:read", "book:read"}

    for wider in ["profile:read activities:write", "activities:write", "profile:read carbon:admin"]:
        body = assert_oauth_error(
            token_request(client, partner, grant_type="refresh_token", refresh_token=tokens["refresh_token"],
                          scope=wider),
            "invalid_scope",
        )
        assert body["error_description"]

    # A refused widening did not spend the refresh token (nor count as reuse): narrowing still works.
    narrowed = token_request(client, partner, grant_type="refresh_token", refresh_token=tokens["refresh_token"],
                             scope="profile:read")
    assert narrowed.status_code == 200, narrowed.text
    narrow = narrowed.json()
    assert narrow["scope"] == "profile:read"
    assert profile(client, narrow["access_token"]).status_code == 200
    assert_problem(client.get("/v1/partner/book", headers=bearer(narrow["access_token"])), 403, "insufficient-scope")


def test_consent_page_request_for_fewer_scopes_grants_only_those(client: httpx.Client, base_url: str,
                                                                 operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    tokens = link(client, base_url, resident, partner, scopes=["book:read"])
    assert tokens["scope"] == "book:read"
    assert_problem(profile(client, tokens["access_token"]), 403, "insufficient-scope")


# --- 13. resident tokens and partner tokens are not interchangeable -----------------------------------------------


def test_partner_token_is_refused_by_resident_routes(client: httpx.Client, base_url: str,
                                                     operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    tokens = link(client, base_url, resident, partner)
    for path in ["/v1/me", "/v1/me/accounts", "/v1/me/consents"]:
        assert_problem(client.get(path, headers=bearer(tokens["access_token"])), 401)
    r = client.request("DELETE", f"/v1/me/accounts/{tokens['sub_account_id']}", headers=bearer(tokens["access_token"]))
    assert_problem(r, 401)
    assert_problem(client.get("/v1/admin/partners", headers=bearer(tokens["access_token"])), 401)
    assert profile(client, tokens["access_token"]).status_code == 200


def test_resident_token_is_refused_by_partner_routes(client: httpx.Client) -> None:
    resident = register(client)
    assert resident.get("/v1/me").status_code == 200
    for path in ["/v1/partner/profile", "/v1/partner/book"]:
        assert_problem(client.get(path, headers=resident.headers), 401, "token-invalid")
    assert_problem(client.post("/v1/partner/activities", json={"activities": [activity()]}, headers=resident.headers),
                   401, "token-invalid")


def test_partner_routes_need_a_bearer_token(client: httpx.Client) -> None:
    r = client.get("/v1/partner/profile")
    assert_problem(r, 401, "authentication-required")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_problem(client.get("/v1/partner/profile", headers={"Authorization": "Basic eDp5"}), 401,
                   "authentication-required")
    assert_problem(client.get("/v1/partner/profile", headers=bearer("not.a.jwt")), 401, "token-invalid")


# --- 13b. partner tokens minted with the real key: every claim is checked against the live grant ------------------


@pytest.fixture(scope="module")
def partner_tokens(settings: Settings) -> PartnerTokens:
    """The API's own signer (same data folder, same key), so each forged token differs in one claim only."""
    return PartnerTokens(settings.jwt_private_key_pem, issuer=settings.jwt_issuer, audience=PARTNER_AUDIENCE,
                         ttl_s=settings.partner_token_ttl_s)


def _claims(access_token: str) -> dict[str, Any]:
    return jwt.decode(access_token, options={"verify_signature": False})


def test_minted_control_token_is_accepted(client: httpx.Client, base_url: str, operator: Resident,
                                          partner_tokens: PartnerTokens) -> None:
    partner = create_partner(operator)
    tokens = link(client, base_url, register(client), partner)
    c = _claims(tokens["access_token"])
    minted, _ = partner_tokens.issue(uuid.UUID(c["sub"]), uuid.UUID(c["sid"]), c["client_id"], c["scope"].split())
    assert profile(client, minted).status_code == 200


def test_expired_partner_token_is_refused(client: httpx.Client, base_url: str, operator: Resident,
                                          partner_tokens: PartnerTokens) -> None:
    partner = create_partner(operator)
    tokens = link(client, base_url, register(client), partner)
    c = _claims(tokens["access_token"])
    old, _ = partner_tokens.issue(uuid.UUID(c["sub"]), uuid.UUID(c["sid"]), c["client_id"], c["scope"].split(),
                                  now_s=int(time.time()) - partner_tokens.ttl_s - 60)
    r = profile(client, old)
    assert_problem(r, 401, "token-expired")
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_token_naming_another_client_is_refused(client: httpx.Client, base_url: str, operator: Resident,
                                                partner_tokens: PartnerTokens) -> None:
    partner_a, partner_b = create_partner(operator), create_partner(operator)
    tokens = link(client, base_url, register(client), partner_a)
    c = _claims(tokens["access_token"])
    forged, _ = partner_tokens.issue(uuid.UUID(c["sub"]), uuid.UUID(c["sid"]), partner_b.client_id,
                                     c["scope"].split())
    assert_problem(profile(client, forged), 401, "token-revoked")


def test_token_claiming_more_scope_than_its_grant_gets_only_the_grant(
    client: httpx.Client, base_url: str, operator: Resident, partner_tokens: PartnerTokens
) -> None:
    partner = create_partner(operator)
    tokens = link(client, base_url, register(client), partner, scopes=["profile:read"])
    c = _claims(tokens["access_token"])
    wider, _ = partner_tokens.issue(uuid.UUID(c["sub"]), uuid.UUID(c["sid"]), c["client_id"],
                                    ["profile:read", "book:read", "activities:write"])
    assert profile(client, wider).status_code == 200
    assert_problem(client.get("/v1/partner/book", headers=bearer(wider)), 403, "insufficient-scope")
    assert_problem(client.post("/v1/partner/activities", json={"activities": [activity()]}, headers=bearer(wider)),
                   403, "insufficient-scope")


def test_token_mixing_one_residents_grant_with_another_sub_account_is_refused(
    client: httpx.Client, base_url: str, operator: Resident, partner_tokens: PartnerTokens
) -> None:
    partner = create_partner(operator)
    mine = _claims(link(client, base_url, register(client), partner)["access_token"])
    theirs = _claims(link(client, base_url, register(client), partner)["access_token"])
    forged, _ = partner_tokens.issue(uuid.UUID(theirs["sub"]), uuid.UUID(mine["sid"]), partner.client_id,
                                     mine["scope"].split())
    assert_problem(profile(client, forged), 401, "token-revoked")


def test_other_token_kinds_are_not_partner_tokens(client: httpx.Client, base_url: str, operator: Resident) -> None:
    """A consent token and the browser sign-in cookie share the signing key but not the audience."""
    partner = create_partner(operator)
    resident = register(client)
    browser = Browser(base_url, resident)
    try:
        page = browser.consent_page(authorize_url(authorize_params(partner, new_verifier())))
        consent_token = form_field(page.text, "consent_token")
        web_session = browser.http.cookies[SESSION_COOKIE]
        tokens = link(client, base_url, resident, partner)
        for token in (consent_token, web_session):
            assert_problem(profile(client, token), 401, "token-invalid")
            assert_problem(client.get("/v1/me", headers=bearer(token)), 401, "token-invalid")
        # ...and neither a resident's nor a partner's access token is a consent token.
        for token in (resident.access_token, tokens["access_token"], web_session):
            r = browser.http.post("/oauth/authorize", data={"consent_token": token, "decision": "approve"})
            assert_error_page(r)
    finally:
        browser.close()


# --- 14. revocation (RFC 7009) ------------------------------------------------------------------------------------


def test_revoking_an_access_token_revokes_its_grant(client: httpx.Client, base_url: str,
                                                    operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    tokens = link(client, base_url, resident, partner)
    r = revoke(client, partner, tokens["access_token"])
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert_problem(profile(client, tokens["access_token"]), 401, "token-revoked")
    assert_oauth_error(refresh(client, partner, tokens["refresh_token"]), "invalid_grant")
    # Revoking again is still 200.
    assert revoke(client, partner, tokens["access_token"]).status_code == 200


def test_revoking_a_refresh_token_revokes_its_grant(client: httpx.Client, base_url: str, operator: Resident) -> None:
    partner = create_partner(operator, client_type="public")
    resident = register(client)
    tokens = link(client, base_url, resident, partner)
    assert revoke(client, partner, tokens["refresh_token"]).status_code == 200
    assert_problem(profile(client, tokens["access_token"]), 401, "token-revoked")
    assert_oauth_error(refresh(client, partner, tokens["refresh_token"]), "invalid_grant")


@pytest.mark.parametrize("token", ["garbage", "", "cwpr_" + "x" * 43, "a.b.c"])
def test_revoking_garbage_is_200(client: httpx.Client, operator: Resident, token: str) -> None:
    partner = create_partner(operator)
    r = revoke(client, partner, token)
    assert r.status_code == 200, r.text


def test_revoking_another_partners_tokens_is_200_but_changes_nothing(client: httpx.Client, base_url: str,
                                                                      operator: Resident) -> None:
    partner_a, partner_b = create_partner(operator), create_partner(operator)
    resident = register(client)
    tokens = link(client, base_url, resident, partner_a)
    assert revoke(client, partner_b, tokens["access_token"]).status_code == 200
    assert revoke(client, partner_b, tokens["refresh_token"]).status_code == 200
    assert profile(client, tokens["access_token"]).status_code == 200
    renewed = refresh(client, partner_a, tokens["refresh_token"])
    assert renewed.status_code == 200, renewed.text


def test_revocation_needs_client_authentication(client: httpx.Client, base_url: str, operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    tokens = link(client, base_url, resident, partner)
    assert_oauth_error(client.post("/oauth/revoke", data={"token": tokens["access_token"]}), "invalid_client", 401)
    r = client.post("/oauth/revoke", data={"token": tokens["access_token"]}, auth=(partner.client_id, "cws_wrong"))
    assert_oauth_error(r, "invalid_client", 401)
    assert r.headers["www-authenticate"].startswith("Basic")
    # Confidential clients cannot revoke with their client_id alone.
    r = client.post("/oauth/revoke", data={"token": tokens["access_token"], "client_id": partner.client_id})
    assert_oauth_error(r, "invalid_client", 401)
    assert profile(client, tokens["access_token"]).status_code == 200


# --- 15. the login page -------------------------------------------------------------------------------------------


def _login_form(http: httpx.Client, next_url: str = "/oauth/authorize?client_id=x") -> tuple[httpx.Response, str]:
    page = http.get("/oauth/login", params={"next": next_url})
    assert page.status_code == 200, page.text
    return page, form_field(page.text, "csrf")


def test_login_page_headers_and_cookie_flags(anon: httpx.Client) -> None:
    resident = register(anon)
    page, csrf = _login_form(anon)
    assert_page_headers(page)
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
    csrf_cookie = set_cookies(page).lower()
    assert "cw_csrf=" in csrf_cookie and "httponly" in csrf_cookie and "path=/oauth" in csrf_cookie

    r = anon.post("/oauth/login", data={"login": resident.login, "password": resident.password, "csrf": csrf,
                                        "next": "/oauth/authorize?client_id=x"})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/oauth/authorize?client_id=x"
    cookie = set_cookies(r).lower()
    assert f"{SESSION_COOKIE}=" in cookie
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/oauth" in cookie


def test_wrong_password_shows_the_error_and_signs_nobody_in(anon: httpx.Client) -> None:
    resident = register(anon)
    _, csrf = _login_form(anon)
    r = anon.post("/oauth/login", data={"login": resident.login, "password": "not the password", "csrf": csrf,
                                        "next": "/oauth/authorize?client_id=x"})
    assert r.status_code == 401
    assert "location" not in r.headers
    assert_page_headers(r)
    assert "The login or the password is wrong." in r.text
    assert SESSION_COOKIE not in set_cookies(r)
    assert SESSION_COOKIE not in anon.cookies
    # The password is never echoed back into the form.
    assert "not the password" not in r.text


def test_unknown_login_gets_the_same_error(anon: httpx.Client) -> None:
    _, csrf = _login_form(anon)
    r = anon.post("/oauth/login", data={"login": "nobody-" + uuid.uuid4().hex + "@example.com",
                                        "password": "whatever it is", "csrf": csrf})
    assert r.status_code == 401
    assert "The login or the password is wrong." in r.text
    assert SESSION_COOKIE not in set_cookies(r)


@pytest.mark.parametrize("csrf", [None, "", "wrong" * 9], ids=["missing", "empty", "wrong"])
def test_login_without_matching_csrf_is_400(anon: httpx.Client, csrf: str | None) -> None:
    resident = register(anon)
    _login_form(anon)
    data = {"login": resident.login, "password": resident.password, "next": "/oauth/authorize?client_id=x"}
    if csrf is not None:
        data["csrf"] = csrf
    r = anon.post("/oauth/login", data=data)
    assert r.status_code == 400
    assert "location" not in r.headers
    assert "This page expired; please submit it again." in r.text
    assert SESSION_COOKIE not in set_cookies(r)


def test_login_without_csrf_cookie_is_400(anon: httpx.Client, base_url: str) -> None:
    """A cross-site form post carries a field it chose but not our cookie: login CSRF fails."""
    resident = register(anon)
    _, csrf = _login_form(anon)
    with httpx.Client(base_url=base_url, timeout=30, follow_redirects=False) as fresh:
        r = fresh.post("/oauth/login", data={"login": resident.login, "password": resident.password, "csrf": csrf})
    assert r.status_code == 400
    assert SESSION_COOKIE not in set_cookies(r)


@pytest.mark.parametrize("next_url", [
    "https://evil.example/",
    "//evil.example",
    "//evil.example/oauth/authorize?x=1",
    "/\\evil.example",
    "\\\\evil.example",
    "https://evil.example/oauth/authorize?x=1",
    "/oauth/authorize",
    "/oauth/authorizeX?x=1",
    "/v1/me",
    "javascript:alert(1)",
    "",
], ids=["absolute", "protocol-relative", "protocol-relative-path", "backslash", "double-backslash",
        "absolute-same-path", "no-query", "prefix-trick", "other-path", "javascript", "empty"])
def test_login_never_redirects_off_site(anon: httpx.Client, next_url: str) -> None:
    resident = register(anon)
    page, csrf = _login_form(anon, next_url)
    assert form_field(page.text, "next") == "/oauth/authorize"
    r = anon.post("/oauth/login", data={"login": resident.login, "password": resident.password, "csrf": csrf,
                                        "next": next_url})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/oauth/authorize"


def test_login_next_cannot_inject_headers(anon: httpx.Client) -> None:
    resident = register(anon)
    _, csrf = _login_form(anon)
    r = anon.post("/oauth/login", data={"login": resident.login, "password": resident.password, "csrf": csrf,
                                        "next": "/oauth/authorize?x=1\r\nSet-Cookie: injected=1"})
    assert r.status_code == 303
    assert r.headers["location"].startswith("/oauth/authorize?")
    assert "\n" not in r.headers["location"] and "\r" not in r.headers["location"]
    assert "injected" not in set_cookies(r)


# --- 16. the consent page: language and the consent token ---------------------------------------------------------


@pytest.mark.parametrize(("language", "ui_locales", "expected", "absent"), [
    ("en", None, "Approve and link", "同意并连接"),
    ("zh", None, "同意并连接", "Approve and link"),
    ("zh-CN", "en", "Approve and link", "同意并连接"),
    ("en-GB,en;q=0.9", "zh-CN", "同意并连接", "Approve and link"),
], ids=["accept-en", "accept-zh", "ui-locales-en-over-zh", "ui-locales-zh-over-en"])
def test_consent_page_language(client: httpx.Client, base_url: str, operator: Resident, language: str,
                               ui_locales: str | None, expected: str, absent: str) -> None:
    partner = create_partner(operator)
    resident = register(client)
    browser = Browser(base_url, resident, language=language)
    try:
        page = browser.consent_page(authorize_url(authorize_params(partner, new_verifier(), ui_locales=ui_locales)))
    finally:
        browser.close()
    assert page.status_code == 200, page.text
    assert_page_headers(page)
    assert expected in page.text
    assert absent not in page.text


def test_tampered_consent_token_is_an_error_page(client: httpx.Client, base_url: str, operator: Resident) -> None:
    partner = create_partner(operator)
    resident = register(client)
    browser = Browser(base_url, resident, language="en")
    try:
        page = browser.consent_page(authorize_url(authorize_params(partner, new_verifier())))
        token = form_field(page.text, "consent_token")
        header, payload, signature = token.split(".")
        middle = len(payload) // 2
        swapped = "B" if payload[middle] != "B" else "C"
        forged = ".".join([header, payload[:middle] + swapped + payload[middle + 1:], signature])
        for bad in [forged, "", "not-a-token", token + "x", ".".join([header, payload, ""])]:
            r = browser.http.post("/oauth/authorize", data={"consent_token": bad, "decision": "approve"})
            assert_error_page(r, "This page expired")
        # The genuine token still works: the forgeries above changed nothing.
        ok = browser.http.post("/oauth/authorize", data={"consent_token": token, "decision": "approve"})
    finally:
        browser.close()
    assert ok.status_code == 303
    assert "code" in query_of(ok.headers["location"])


def test_consent_token_is_bound_to_the_signed_in_resident(client: httpx.Client, anon: httpx.Client, base_url: str,
                                                          operator: Resident) -> None:
    partner = create_partner(operator)
    victim, attacker = register(client), register(client)
    params = authorize_params(partner, new_verifier())
    victim_browser = Browser(base_url, victim, language="en")
    attacker_browser = Browser(base_url, attacker, language="en")
    try:
        page = victim_browser.consent_page(authorize_url(params))
        token = form_field(page.text, "consent_token")
        # The attacker signs in in their own browser and posts the victim's consent token.
        other_request = authorize_url(authorize_params(partner, new_verifier()))
        assert attacker_browser.consent_page(other_request).status_code == 200
        stolen = attacker_browser.http.post("/oauth/authorize", data={"consent_token": token, "decision": "approve"})
        assert_error_page(stolen, "Your sign-in changed")
        # A cross-site post (SameSite=Lax: no sign-in cookie) is refused the same way.
        assert_error_page(anon.post("/oauth/authorize", data={"consent_token": token, "decision": "approve"}),
                          "Your sign-in changed")
        # Neither attempt linked anything; the victim's own approval still works.
        for resident in (victim, attacker):
            assert [s for s in resident.get("/v1/me/accounts").json()["sub_accounts"] if s["kind"] == "partner"] == []
        mine = victim_browser.http.post("/oauth/authorize", data={"consent_token": token, "decision": "approve"})
    finally:
        victim_browser.close()
        attacker_browser.close()
    assert mine.status_code == 303
    assert query_of(mine.headers["location"])["state"] == params["state"]


def test_consent_token_dies_with_the_browser_session(client: httpx.Client, base_url: str,
                                                     operator: Resident) -> None:
    """Switching account (logout) ends the session the consent token names."""
    partner = create_partner(operator)
    resident = register(client)
    browser = Browser(base_url, resident, language="en")
    try:
        page = browser.consent_page(authorize_url(authorize_params(partner, new_verifier())))
        token = form_field(page.text, "consent_token")
        out = browser.http.post("/oauth/logout", data={"csrf": form_field(page.text, "csrf"),
                                                       "next": form_field(page.text, "next")})
        assert out.status_code == 303
        assert out.headers["location"].startswith("/oauth/login?next=%2Foauth%2Fauthorize%3F")
        # Log in again as the same resident: a new session, so the old consent token no longer fits.
        browser.log_in("/oauth/authorize?x=1")
        r = browser.http.post("/oauth/authorize", data={"consent_token": token, "decision": "approve"})
    finally:
        browser.close()
    assert_error_page(r, "Your sign-in changed")


# --- 17. HTML escaping --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_partner_name_is_escaped_on_the_consent_page(client: httpx.Client, base_url: str, operator: Resident,
                                                     language: str) -> None:
    payload = "<script>alert(1)</script>"
    partner = create_partner(operator, name=payload, name_en=payload + '"><img src=x>')
    resident = register(client, nickname="<b>nick</b>")
    browser = Browser(base_url, resident, language=language)
    try:
        page = browser.consent_page(authorize_url(authorize_params(partner, new_verifier())))
    finally:
        browser.close()
    assert page.status_code == 200, page.text
    assert "<script>" not in page.text
    assert "<img" not in page.text and "<b>nick" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "&lt;b&gt;nick&lt;/b&gt;" in page.text


def test_login_echo_is_escaped(anon: httpx.Client) -> None:
    _, csrf = _login_form(anon)
    r = anon.post("/oauth/login", data={"login": '"><script>alert(1)</script>', "password": "whatever it is",
                                        "csrf": csrf})
    assert r.status_code == 401
    assert "<script>" not in r.text
    assert "&#34;&gt;&lt;script&gt;" in r.text or "&quot;&gt;&lt;script&gt;" in r.text


def test_a_consent_page_approves_once(client: httpx.Client, base_url: str, operator: Resident) -> None:
    """Posting the same consent form twice (a double tap) gives one code, not two."""
    partner = create_partner(operator)
    browser = Browser(base_url, register(client), language="en")
    try:
        page = browser.consent_page(authorize_url(authorize_params(partner, new_verifier())))
        first = browser.decide(page)
        again = browser.decide(page)
    finally:
        browser.close()
    assert first.status_code == 303 and "code" in query_of(first.headers["location"])
    assert_error_page(again, "This page expired")


def test_a_suspended_partner_can_still_revoke_its_tokens(client: httpx.Client, base_url: str,
                                                         operator: Resident) -> None:
    partner = create_partner(operator)
    tokens = link(client, base_url, register(client), partner)
    set_status(operator, partner, "suspended")
    r = client.post("/oauth/revoke", data={"token": tokens["refresh_token"]}, auth=partner.basic)
    assert r.status_code == 200, r.text
    set_status(operator, partner, "active")
    assert_problem(profile(client, tokens["access_token"]), 401, "token-revoked")


def test_the_login_page_speaks_the_language_the_partner_asked_for(client: httpx.Client, base_url: str,
                                                                   operator: Resident) -> None:
    partner = create_partner(operator)
    params = authorize_params(partner, new_verifier(), ui_locales="en")
    with httpx.Client(base_url=base_url, follow_redirects=False, headers={"Accept-Language": "zh-CN"}) as anon:
        to_login = anon.get(authorize_url(params))
        assert to_login.status_code == 303
        page = anon.get(to_login.headers["location"])
    assert page.status_code == 200 and "Log in to Carbon Wallet" in page.text
