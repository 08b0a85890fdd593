"""Access-token and session security over HTTP against the real API process.

Forged tokens are minted with the app's real Ed25519 key (from the same data folder the API process uses)
so that in each negative case exactly one property is wrong; `test_minted_control_token_is_accepted`
proves the minting helper itself produces tokens the API accepts, so every rejection below is caused by
the one property under test.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api.auth.keys import load_private_key
from api.auth.tokens import AccessTokens
from api.settings import Settings
from tests.support import PASSWORD, Resident, assert_problem, race, register

NEW_PASSWORD = "a different horse staple"


# --- token minting -------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_json(obj: dict[str, Any]) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


@pytest.fixture(scope="module")
def tokens(settings: Settings) -> AccessTokens:
    return AccessTokens(
        settings.jwt_private_key_pem, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
        ttl_s=settings.access_token_ttl_s,
    )


@pytest.fixture(scope="module")
def signing_key(settings: Settings) -> Ed25519PrivateKey:
    return load_private_key(settings.jwt_private_key_pem)


def _claims(resident: Resident, tokens: AccessTokens, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": tokens.issuer,
        "aud": tokens.audience,
        "sub": resident.holder_id,
        "sid": resident.session_id,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def _mint(
    key: Any, claims: dict[str, Any], *, algorithm: str = "EdDSA", headers: dict[str, Any] | None = None
) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def _me(client: httpx.Client, token: str) -> httpx.Response:
    return client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})


def _login(
    client: httpx.Client, resident: Resident, *, password: str | None = None, device: str = "second"
) -> Resident:
    r = client.post(
        "/v1/auth/login",
        json={"login": resident.login, "password": password or resident.password, "device_name": device},
    )
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["holder_id"] == resident.holder_id
    assert data["session_id"] != resident.session_id
    return Resident(
        client=client, login=resident.login, password=password or resident.password, holder_id=data["holder_id"],
        session_id=data["session_id"], access_token=data["access_token"], refresh_token=data["refresh_token"],
    )


def _refresh(client: httpx.Client, refresh_token: str) -> httpx.Response:
    return client.post("/v1/auth/refresh", json={"refresh_token": refresh_token})


def _assert_token_rejected(response: httpx.Response, code: str) -> None:
    assert_problem(response, 401, code)
    assert response.headers["www-authenticate"].startswith("Bearer ")


# --- forged and malformed access tokens ---------------------------------------------------------------


def test_minted_control_token_is_accepted(
    client: httpx.Client, resident: Resident, tokens: AccessTokens, signing_key: Ed25519PrivateKey
) -> None:
    """The helpers below mint accepted tokens when nothing is wrong, so each negative test isolates one flaw."""
    token = _mint(signing_key, _claims(resident, tokens), headers={"typ": "at+jwt", "kid": tokens.kid})
    r = _me(client, token)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == resident.holder_id
    issued, _exp = tokens.issue(uuid.UUID(resident.holder_id), uuid.UUID(resident.session_id))
    assert _me(client, issued).status_code == 200


def test_expired_token_is_rejected(client: httpx.Client, resident: Resident, tokens: AccessTokens) -> None:
    long_ago = int(time.time()) - 24 * 3600
    token, exp = tokens.issue(uuid.UUID(resident.holder_id), uuid.UUID(resident.session_id), now_s=long_ago)
    assert exp < time.time()
    _assert_token_rejected(_me(client, token), "token-expired")


def test_token_just_past_the_leeway_is_expired(
    client: httpx.Client, resident: Resident, tokens: AccessTokens, signing_key: Ed25519PrivateKey
) -> None:
    now = int(time.time())
    claims = _claims(resident, tokens, iat=now - 900, nbf=now - 900, exp=now - 30)
    token = _mint(signing_key, claims, headers={"typ": "at+jwt"})
    _assert_token_rejected(_me(client, token), "token-expired")


def test_tampered_payload_character_is_rejected(client: httpx.Client, resident: Resident) -> None:
    header, payload, signature = resident.access_token.split(".")
    middle = len(payload) // 2
    flipped = "A" if payload[middle] != "A" else "B"
    tampered = f"{header}.{payload[:middle]}{flipped}{payload[middle + 1:]}.{signature}"
    assert tampered != resident.access_token
    _assert_token_rejected(_me(client, tampered), "token-invalid")
    assert _me(client, resident.access_token).status_code == 200


def test_payload_swapped_to_another_holder_is_rejected(client: httpx.Client, resident: Resident) -> None:
    """Re-encoding the payload with someone else's `sub` and `sid` keeps valid base64 and JSON; only the
    signature is now wrong."""
    other = register(client)
    header, payload, signature = resident.access_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(sub=other.holder_id, sid=other.session_id)
    forged = f"{header}.{_b64_json(claims)}.{signature}"
    _assert_token_rejected(_me(client, forged), "token-invalid")


def test_signature_stripped_is_rejected(client: httpx.Client, resident: Resident) -> None:
    header, payload, _signature = resident.access_token.split(".")
    _assert_token_rejected(_me(client, f"{header}.{payload}."), "token-invalid")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_rejected(client: httpx.Client, resident: Resident, tokens: AccessTokens, alg: str) -> None:
    header = _b64_json({"alg": alg, "typ": "at+jwt", "kid": tokens.kid})
    payload = _b64_json(_claims(resident, tokens))
    for token in (f"{header}.{payload}.", f"{header}.{payload}"):
        _assert_token_rejected(_me(client, token), "token-invalid")


def _hmac_token(secret: bytes, alg: str, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = f"{_b64_json({**header, 'alg': alg})}.{_b64_json(claims)}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    mac = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{_b64(mac)}"


def test_hmac_with_public_key_as_secret_is_rejected(
    client: httpx.Client, resident: Resident, tokens: AccessTokens, signing_key: Ed25519PrivateKey
) -> None:
    """Algorithm confusion: HMAC keyed with the public key, which an attacker can know."""
    public = signing_key.public_key()
    secrets_to_try = [
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
    ]
    for alg in ("HS256", "HS384", "HS512"):
        for secret in secrets_to_try:
            token = _hmac_token(secret, alg, {"typ": "at+jwt", "kid": tokens.kid}, _claims(resident, tokens))
            _assert_token_rejected(_me(client, token), "token-invalid")


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_token_signed_with_a_foreign_key_is_rejected(
    client: httpx.Client, resident: Resident, tokens: AccessTokens, alg: str
) -> None:
    key: Any
    if alg in {"RS256", "PS256"}:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = Ed25519PrivateKey.generate()
    token = _mint(key, _claims(resident, tokens), algorithm=alg, headers={"typ": "at+jwt", "kid": tokens.kid})
    _assert_token_rejected(_me(client, token), "token-invalid")


def test_embedded_attacker_jwk_is_ignored(client: httpx.Client, resident: Resident, tokens: AccessTokens) -> None:
    """A token that carries its own verification key (`jwk` header) must not be verified with that key."""
    attacker = Ed25519PrivateKey.generate()
    raw = attacker.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}
    token = _mint(attacker, _claims(resident, tokens), headers={"typ": "at+jwt", "jwk": jwk, "kid": "attacker"})
    _assert_token_rejected(_me(client, token), "token-invalid")


@pytest.mark.parametrize(
    ("overrides", "headers"),
    [
        pytest.param({"aud": "carbon-wallet:partner"}, {"typ": "at+jwt"}, id="wrong-aud"),
        pytest.param({"aud": None}, {"typ": "at+jwt"}, id="missing-aud"),
        pytest.param({"iss": "https://evil.example"}, {"typ": "at+jwt"}, id="wrong-iss"),
        pytest.param({"iss": None}, {"typ": "at+jwt"}, id="missing-iss"),
        pytest.param({"jti": None}, {"typ": "at+jwt"}, id="missing-jti"),
        pytest.param({"sid": None}, {"typ": "at+jwt"}, id="missing-sid"),
        pytest.param({"sub": None}, {"typ": "at+jwt"}, id="missing-sub"),
        pytest.param({"exp": None}, {"typ": "at+jwt"}, id="missing-exp"),
        pytest.param({"iat": None}, {"typ": "at+jwt"}, id="missing-iat"),
        pytest.param({"sid": "not-a-uuid"}, {"typ": "at+jwt"}, id="malformed-sid"),
        pytest.param({"sub": "not-a-uuid"}, {"typ": "at+jwt"}, id="malformed-sub"),
        pytest.param({"nbf": int(time.time()) + 3600}, {"typ": "at+jwt"}, id="not-yet-valid"),
        pytest.param({}, {"typ": "JWT"}, id="typ-JWT"),
        pytest.param({}, {"typ": "refresh+jwt"}, id="typ-other"),
        pytest.param({}, {}, id="typ-missing"),
    ],
)
def test_token_with_one_wrong_claim_or_header_is_rejected(
    client: httpx.Client, resident: Resident, tokens: AccessTokens, signing_key: Ed25519PrivateKey,
    overrides: dict[str, Any], headers: dict[str, Any],
) -> None:
    token = _mint(signing_key, _claims(resident, tokens, **overrides), headers={**headers, "kid": tokens.kid})
    if not headers:  # PyJWT adds typ=JWT by default; remove it to test a header without any typ
        h, p, _signature = token.split(".")
        header = json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))
        header.pop("typ", None)
        unsigned = f"{_b64_json(header)}.{p}"
        token = f"{unsigned}.{_b64(signing_key.sign(unsigned.encode()))}"
        assert "typ" not in jwt.get_unverified_header(token)
    _assert_token_rejected(_me(client, token), "token-invalid")


def test_validly_signed_token_naming_another_holder_is_rejected(
    client: httpx.Client, resident: Resident, tokens: AccessTokens, signing_key: Ed25519PrivateKey
) -> None:
    """Even with our key, a `sub` that does not own the `sid` never acts as either holder."""
    other = register(client)
    token = _mint(signing_key, _claims(resident, tokens, sub=other.holder_id), headers={"typ": "at+jwt"})
    _assert_token_rejected(_me(client, token), "session-revoked")
    unknown = _mint(signing_key, _claims(resident, tokens, sid=str(uuid.uuid4())), headers={"typ": "at+jwt"})
    _assert_token_rejected(_me(client, unknown), "session-revoked")


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Basic dXNlcjpwYXNz", "Token abc", "bearer-abc", "Bearer\tabc"],
)
def test_missing_or_non_bearer_credentials_are_rejected(client: httpx.Client, authorization: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    r = client.get("/v1/me", headers=headers)
    _assert_token_rejected(r, "authentication-required")


@pytest.mark.parametrize("garbage", ["abc", "a.b.c", "....", "eyJ.eyJ.sig", "x" * 4000])
def test_garbage_bearer_tokens_are_rejected(client: httpx.Client, garbage: str) -> None:
    _assert_token_rejected(_me(client, garbage), "token-invalid")


# --- revocation ---------------------------------------------------------------------------------------


def test_logout_revokes_access_and_refresh_token(client: httpx.Client, resident: Resident) -> None:
    assert resident.get("/v1/me").status_code == 200
    assert resident.post("/v1/auth/logout").status_code == 204
    _assert_token_rejected(resident.get("/v1/me"), "session-revoked")
    _assert_token_rejected(resident.post("/v1/auth/logout"), "session-revoked")
    assert_problem(_refresh(client, resident.refresh_token), 401, "session-revoked")


def test_revoking_another_device_ends_its_tokens(client: httpx.Client, resident: Resident) -> None:
    phone = _login(client, resident, device="phone")
    listed = {s["id"]: s for s in resident.get("/v1/me/sessions").json()}
    assert set(listed) == {resident.session_id, phone.session_id}
    assert listed[resident.session_id]["current"] is True
    assert listed[phone.session_id]["current"] is False

    assert resident.delete(f"/v1/me/sessions/{phone.session_id}").status_code == 204
    _assert_token_rejected(phone.get("/v1/me"), "session-revoked")
    assert_problem(_refresh(client, phone.refresh_token), 401, "session-revoked")
    assert resident.get("/v1/me").status_code == 200
    assert [s["id"] for s in resident.get("/v1/me/sessions").json()] == [resident.session_id]
    assert_problem(resident.delete(f"/v1/me/sessions/{phone.session_id}"), 404, "session-not-found")


# --- refresh-token rotation ---------------------------------------------------------------------------


def test_refresh_rotates_and_reuse_revokes_the_whole_family(client: httpx.Client, resident: Resident) -> None:
    other_device = _login(client, resident, device="tablet")

    first = _refresh(client, resident.refresh_token)
    assert first.status_code == 200, first.text
    pair1 = first.json()
    assert pair1["session_id"] == resident.session_id
    assert pair1["refresh_token"] != resident.refresh_token
    assert pair1["access_token"] != resident.access_token
    assert _me(client, pair1["access_token"]).status_code == 200

    second = _refresh(client, pair1["refresh_token"])
    assert second.status_code == 200, second.text
    newest = second.json()
    assert _me(client, newest["access_token"]).status_code == 200

    # The original refresh token was already used: presenting it again is theft, not a retry.
    assert_problem(_refresh(client, resident.refresh_token), 401, "refresh-token-reused")

    # Every token of that session family is dead, including the newest pair and the original access token.
    _assert_token_rejected(_me(client, newest["access_token"]), "session-revoked")
    _assert_token_rejected(_me(client, pair1["access_token"]), "session-revoked")
    _assert_token_rejected(_me(client, resident.access_token), "session-revoked")
    assert_problem(_refresh(client, newest["refresh_token"]), 401, "session-revoked")
    assert_problem(_refresh(client, pair1["refresh_token"]), 401, "refresh-token-reused")

    # The holder's other device is a different family and keeps working.
    assert other_device.get("/v1/me").status_code == 200
    rotated = _refresh(client, other_device.refresh_token)
    assert rotated.status_code == 200, rotated.text
    assert _me(client, rotated.json()["access_token"]).status_code == 200


@pytest.mark.parametrize(
    "token", ["cwr_" + "A" * 43, "not-a-refresh-token", "x", "cwr_" + uuid.uuid4().hex],
)
def test_unknown_refresh_token_is_invalid(client: httpx.Client, token: str) -> None:
    assert_problem(_refresh(client, token), 401, "refresh-token-invalid")


def test_access_token_is_not_a_refresh_token(client: httpx.Client, resident: Resident) -> None:
    r = client.post("/v1/auth/refresh", json={"refresh_token": resident.access_token[:200]})
    assert_problem(r, 401, "refresh-token-invalid")
    assert resident.get("/v1/me").status_code == 200


def test_refresh_token_is_not_an_access_token(client: httpx.Client, resident: Resident) -> None:
    _assert_token_rejected(_me(client, resident.refresh_token), "token-invalid")


def test_concurrent_refresh_of_one_token_succeeds_once(base_url: str, resident: Resident) -> None:
    threads_n = 10
    results = race(
        threads_n,
        lambda: httpx.Client(base_url=base_url, timeout=30),
        lambda http: _refresh(http, resident.refresh_token),
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [401] * (threads_n - 1), [r.text for r in results]
    for r in results:
        if r.status_code == 401:
            assert_problem(r, 401, "refresh-token-reused")
    # Exactly one new refresh token was minted for the session.
    assert len({r.json()["refresh_token"] for r in results if r.status_code == 200}) == 1


# --- password change and account deletion --------------------------------------------------------------


def test_password_change_keeps_this_session_and_revokes_the_others(client: httpx.Client, resident: Resident) -> None:
    laptop = _login(client, resident, device="laptop")

    wrong = resident.post("/v1/me/password", json={"current_password": "not my password", "new_password": NEW_PASSWORD})
    assert_problem(wrong, 403, "wrong-password")
    assert laptop.get("/v1/me").status_code == 200  # a failed change revokes nothing

    r = resident.post("/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert r.status_code == 204, r.text
    assert resident.get("/v1/me").status_code == 200
    _assert_token_rejected(laptop.get("/v1/me"), "session-revoked")
    assert_problem(_refresh(client, laptop.refresh_token), 401, "session-revoked")
    rotated = _refresh(client, resident.refresh_token)
    assert rotated.status_code == 200, rotated.text

    old = client.post("/v1/auth/login", json={"login": resident.login, "password": PASSWORD})
    assert_problem(old, 401, "invalid-credentials")
    assert client.post("/v1/auth/login", json={"login": resident.login, "password": NEW_PASSWORD}).status_code == 200


def test_account_deletion_revokes_every_token(client: httpx.Client, resident: Resident) -> None:
    laptop = _login(client, resident, device="laptop")
    wrong = resident.delete("/v1/me", json={"password": "not my password", "confirm": "DELETE"})
    assert_problem(wrong, 403, "wrong-password")
    assert resident.get("/v1/me").status_code == 200

    r = resident.delete("/v1/me", json={"password": PASSWORD, "confirm": "DELETE"})
    assert r.status_code == 204, r.text
    for device in (resident, laptop):
        _assert_token_rejected(device.get("/v1/me"), "session-revoked")
        _assert_token_rejected(device.get("/v1/me/export"), "session-revoked")
        assert_problem(_refresh(client, device.refresh_token), 401, "session-revoked")
    login = client.post("/v1/auth/login", json={"login": resident.login, "password": PASSWORD})
    assert_problem(login, 401, "invalid-credentials")


def test_deleted_holder_token_minted_with_the_real_key_is_refused(
    client: httpx.Client, resident: Resident, tokens: AccessTokens
) -> None:
    """Even a freshly signed token for a session that was live before deletion is refused afterwards."""
    r = resident.delete("/v1/me", json={"password": PASSWORD, "confirm": "DELETE"})
    assert r.status_code == 204, r.text
    token, _ = tokens.issue(uuid.UUID(resident.holder_id), uuid.UUID(resident.session_id))
    _assert_token_rejected(_me(client, token), "session-revoked")


# --- object-level authorisation (BOLA) -----------------------------------------------------------------


@pytest.fixture
def inbox_message_of() -> Iterator[Any]:
    """Puts a message in a holder's inbox directly in PostgreSQL (the worker that normally does it is not
    under test here) and returns its id."""
    import os

    async def insert(holder_id: str) -> int:
        conn = await asyncpg.connect(os.environ["DATABASE_URL"])
        try:
            return await conn.fetchval(
                "INSERT INTO inbox_message (holder_id, event_id, kind, params, created_at) "
                "VALUES ($1, $2, 'welcome', '{}'::jsonb, now()) RETURNING id",
                uuid.UUID(holder_id), uuid.uuid4(),
            )
        finally:
            await conn.close()

    def make(holder_id: str) -> int:
        return asyncio.run(insert(holder_id))

    yield make


def test_holder_cannot_revoke_another_holders_session(client: httpx.Client) -> None:
    alice, bob = register(client), register(client)
    assert_problem(bob.delete(f"/v1/me/sessions/{alice.session_id}"), 404, "session-not-found")
    assert alice.get("/v1/me").status_code == 200
    assert alice.session_id in {s["id"] for s in alice.get("/v1/me/sessions").json()}
    assert _refresh(client, alice.refresh_token).status_code == 200


def test_holder_cannot_read_another_holders_inbox_message(client: httpx.Client, inbox_message_of: Any) -> None:
    alice, bob = register(client), register(client)
    message_id = inbox_message_of(alice.holder_id)
    assert_problem(bob.post(f"/v1/me/inbox/{message_id}/read"), 404, "message-not-found")
    assert message_id not in {m["id"] for m in bob.get("/v1/me/inbox").json()["items"]}

    mine = {m["id"]: m for m in alice.get("/v1/me/inbox").json()["items"]}
    assert mine[message_id]["read_at"] is None  # Bob's attempt changed nothing
    assert alice.post(f"/v1/me/inbox/{message_id}/read").status_code == 204
    mine = {m["id"]: m for m in alice.get("/v1/me/inbox").json()["items"]}
    assert mine[message_id]["read_at"] is not None


def test_me_is_always_the_token_holder(client: httpx.Client) -> None:
    alice, bob = register(client), register(client)
    assert alice.get("/v1/me").json()["id"] == alice.holder_id
    assert alice.get("/v1/me").json()["email"] == alice.login
    assert bob.get("/v1/me").json()["id"] == bob.holder_id
    assert bob.patch("/v1/me", json={"nickname": "bob"}).json()["id"] == bob.holder_id
    assert alice.get("/v1/me").json()["nickname"] != "bob"

    bob_sessions = {s["id"] for s in bob.get("/v1/me/sessions").json()}
    assert bob_sessions == {bob.session_id}
    export = bob.get("/v1/me/export")
    assert export.status_code == 200
    assert alice.holder_id not in export.text
    assert alice.session_id not in export.text
    assert alice.login not in export.text
    assert export.json()["profile"]["id"] == bob.holder_id

    # Query parameters and bodies cannot name another holder.
    assert bob.get("/v1/me", params={"holder_id": alice.holder_id, "id": alice.holder_id}).json()["id"] == bob.holder_id
    assert_problem(bob.patch("/v1/me", json={"id": alice.holder_id}), 400, "invalid-request")


# --- every protected route demands a token -------------------------------------------------------------


def _is_me(path: str) -> bool:
    return path == "/v1/me" or path.startswith("/v1/me/")


def _protected_operations(client: httpx.Client) -> list[tuple[str, str]]:
    spec = client.get("/schema/openapi.json").json()
    out = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if _is_me(path) or op.get("security"):
                # A value each path parameter's type accepts, so the request reaches the route (an integer
                # id given a UUID would be an unmatched path, 404, and prove nothing about the token).
                integers = {p["name"] for p in op.get("parameters", [])
                            if p.get("in") == "path" and p.get("schema", {}).get("type") == "integer"}
                concrete = re.sub(
                    r"\{(\w+)\}",
                    lambda m, integers=integers: "1" if m.group(1) in integers
                    else {"purpose": "client"}.get(m.group(1), str(uuid.uuid4())),
                    path,
                )
                out.append((method.upper(), concrete))
    return out


def test_every_me_route_requires_a_token(client: httpx.Client) -> None:
    operations = _protected_operations(client)
    me_routes = [op for op in operations if _is_me(op[1])]
    assert len(me_routes) >= 9, operations
    assert ("POST", "/v1/auth/logout") in operations
    for method, path in operations:
        r = client.request(method, path, json={})
        assert r.status_code == 401, (method, path, r.text)
        body = assert_problem(r, 401, "authentication-required")
        assert body["instance"] == path
        assert r.headers["www-authenticate"].startswith("Bearer"), (method, path)
        bad = client.request(method, path, json={}, headers={"Authorization": "Bearer not.a.token"})
        assert_problem(bad, 401, "token-invalid")


def test_protected_operations_are_documented_as_secured(client: httpx.Client) -> None:
    spec = client.get("/schema/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if _is_me(path) or path == "/v1/auth/logout":
                assert op.get("security") == [{"BearerToken": []}], (method, path)
