"""Firebase Cloud Messaging HTTP v1 (Android): one POST per push, authorised by an OAuth 2 access token that
a service account buys from Google's token endpoint with a signed JWT (RFC 7523).

The access token is cached until a minute before it expires and fetched by one caller at a time, so a
burst of sends costs one token request. A 401 means the token went stale early (revoked, clock skew):
one refresh and one more try, then the delivery job's backoff takes over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from notifications.channels.base import TIMEOUT_S_DEFAULT, Push, Sent, json_or_none, parse_retry_after

__all__ = ["FCM_SCOPE", "JWT_BEARER_GRANT", "FcmChannel", "FcmConfig"]

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME_S = 3600  # the longest Google accepts
TOKEN_REFRESH_MARGIN_S = 60  # never send a token in its last minute: it could expire in flight
TTL_MAX_S = 2_419_200  # FCM keeps a message at most four weeks and rejects a longer ttl
DETAIL_CHARS_MAX = 300
_ACCOUNT_FIELDS = ("client_email", "private_key", "project_id")
_FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


@dataclass(frozen=True, slots=True)
class FcmConfig:
    base_url: str  # https://fcm.googleapis.com in production
    service_account: dict[str, Any]  # the Google service-account JSON (client_email, private_key, project_id, …)
    token_uri: str | None = None  # overrides the account's token_uri, e.g. for a local fake in tests


class _TokenRefused(Exception):
    """The token endpoint said no; carries the outcome so `send` can return it as is."""

    def __init__(self, sent: Sent) -> None:
        super().__init__(sent.detail)
        self.sent = sent


class _AccessTokens:
    """One cached access token, refreshed under a lock so concurrent senders share a single fetch."""

    def __init__(
        self, client: httpx.AsyncClient, account: dict[str, Any], key: RSAPrivateKey, token_uri: str,
        clock: Callable[[], float],
    ) -> None:
        self._client = client
        self._email: str = account["client_email"]
        self._key_id = str(account.get("private_key_id") or "")
        self._key = key
        self._token_uri = token_uri
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token = ""
        self._refresh_at_s = 0.0

    async def get(self, stale: str = "") -> str:
        """The current token; `stale` is one the provider just refused, so it is replaced unless already done."""
        async with self._lock:
            if self._token and self._token != stale and self._clock() < self._refresh_at_s:
                return self._token
            started_s = self._clock()
            token, expires_in_s = await self._fetch(int(started_s))
            self._token, self._refresh_at_s = token, started_s + expires_in_s - TOKEN_REFRESH_MARGIN_S
            return token

    async def _fetch(self, now_s: int) -> tuple[str, float]:
        claims = {"iss": self._email, "scope": FCM_SCOPE, "aud": self._token_uri, "iat": now_s,
                  "exp": now_s + ASSERTION_LIFETIME_S}
        headers = {"kid": self._key_id} if self._key_id else None
        assertion = jwt.encode(claims, self._key, algorithm="RS256", headers=headers)
        form = {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
        response = await self._client.post(self._token_uri, data=form)
        body = json_or_none(response.content)
        body = body if isinstance(body, dict) else {}
        token, expires_in_s = body.get("access_token"), body.get("expires_in", ASSERTION_LIFETIME_S)
        if response.status_code == 200 and isinstance(token, str) and token and isinstance(expires_in_s, int | float):
            return token, float(expires_in_s)
        status = response.status_code
        reason = " ".join(str(body[k]) for k in ("error", "error_description") if body.get(k)) or f"HTTP {status}"
        # A refused grant (bad key, deleted account, wrong clock) will not heal by retrying; an outage will.
        outcome = "retry" if status == 200 or status == 429 or status >= 500 else "failed"
        retry_after_s = parse_retry_after(response.headers.get("retry-after"), self._clock())
        raise _TokenRefused(Sent(outcome, f"token endpoint: {reason}"[:DETAIL_CHARS_MAX], retry_after_s))


class FcmChannel:
    """Sends to Android devices through FCM HTTP v1; HTTP/2 with Google (ALPN), HTTP/1.1 with a plain-http fake."""

    name = "fcm"

    def __init__(
        self, config: FcmConfig, *, timeout_s: float = TIMEOUT_S_DEFAULT, clock: Callable[[], float] = time.time,
    ) -> None:
        account = config.service_account
        missing = [f for f in _ACCOUNT_FIELDS if not isinstance(account.get(f), str) or not account[f]]
        token_uri = config.token_uri or account.get("token_uri")
        if not isinstance(token_uri, str) or not token_uri:
            missing.append("token_uri")
        if missing:
            raise ValueError(f"the service account lacks {', '.join(missing)}")
        key = _rsa_key(account["private_key"])
        self._clock = clock
        self._url = f"{config.base_url.rstrip('/')}/v1/projects/{quote(account['project_id'], safe='')}/messages:send"
        self._client = httpx.AsyncClient(http2=True, timeout=timeout_s)
        self._tokens = _AccessTokens(self._client, account, key, token_uri, clock)

    async def send(self, push: Push) -> Sent:
        if not push.token:
            return Sent("invalid_token", "empty registration token")
        message = fcm_message(push)
        try:
            token = await self._tokens.get()
            response = await self._post(message, token)
            if response.status_code == 401 and _error(response)[0] != "THIRD_PARTY_AUTH_ERROR":
                token = await self._tokens.get(stale=token)
                response = await self._post(message, token)
        except _TokenRefused as exc:
            return exc.sent
        except httpx.TransportError as exc:
            return Sent("retry", f"network error: {type(exc).__name__} {exc}".strip()[:DETAIL_CHARS_MAX])
        return self._classify(response)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _post(self, message: dict[str, Any], token: str) -> httpx.Response:
        return await self._client.post(self._url, json=message, headers={"authorization": f"Bearer {token}"})

    def _classify(self, response: httpx.Response) -> Sent:
        status = response.status_code
        if status == 200:
            body = json_or_none(response.content)
            return Sent("sent", provider_id=str(body.get("name", "")) if isinstance(body, dict) else "")
        code, message, about_token = _error(response)
        detail = (f"{code}: {message}" if message else code)[:DETAIL_CHARS_MAX]
        retry_after_s = parse_retry_after(response.headers.get("retry-after"), self._clock())
        if (status == 404 and code == "UNREGISTERED") or (status == 400 and code == "INVALID_ARGUMENT" and about_token):
            return Sent("invalid_token", detail)
        if status == 401 and code == "THIRD_PARTY_AUTH_ERROR":
            return Sent("failed", detail)  # the project's APNs/web-push credentials in Firebase: an operator's fix
        if status in (401, 429) or status >= 500:
            return Sent("retry", detail, retry_after_s)
        return Sent("failed", detail)


def fcm_message(push: Push) -> dict[str, Any]:
    """The v1 request body. Our "deep_link" and "message_id" win over same-named keys in `push.data`."""
    data = {**push.data, "deep_link": push.deep_link}
    if push.message_id:
        data["message_id"] = push.message_id
    android: dict[str, Any] = {"ttl": f"{min(push.ttl_s, TTL_MAX_S)}s"}
    if push.collapse_key is not None:
        android["collapse_key"] = push.collapse_key
    if push.badge is not None:
        android["notification"] = {"notification_count": push.badge}
    notification = {"title": push.title, "body": push.body}
    return {"message": {"token": push.token, "notification": notification, "data": data, "android": android}}


def _error(response: httpx.Response) -> tuple[str, str, bool]:
    """(FCM error code or status, message, whether it is about the registration token) from a v1 error body.

    INVALID_ARGUMENT also covers our own payload mistakes, so it counts against the token only when the
    field violation names `message.token` or the message says the registration token is not valid."""
    body = json_or_none(response.content)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"HTTP {response.status_code}", "", False
    code = str(error.get("status") or f"HTTP {response.status_code}")
    message = str(error.get("message") or "")
    about_token = "registration token" in message.lower()
    for item in error.get("details") or []:
        if not isinstance(item, dict):
            continue
        if item.get("@type") == _FCM_ERROR and item.get("errorCode"):
            code = str(item["errorCode"])
        if item.get("@type") == _BAD_REQUEST:
            violations = item.get("fieldViolations") or []
            about_token |= any(isinstance(v, dict) and v.get("field") == "message.token" for v in violations)
    return code, message, about_token


def _rsa_key(pem: str) -> RSAPrivateKey:
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("the service account's private_key is not a PEM private key") from None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("the service account's private_key is not an RSA key")
    return key
