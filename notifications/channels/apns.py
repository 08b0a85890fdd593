"""Apple Push Notification service (iOS): one POST per push, multiplexed over one long-lived HTTP/2
connection (APNs speaks nothing else), authorised by a provider JWT signed with the team's ES256 .p8 key.

Apple refuses a provider token older than an hour (ExpiredProviderToken) and throttles one renewed too
often (TooManyProviderTokenUpdates), so one token is reused for 50 minutes, and renewed early only when
Apple calls it expired, once per refused token.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from notifications.channels.base import TIMEOUT_S_DEFAULT, Push, Sent, json_or_none, parse_retry_after

__all__ = ["APNS_ID_NAMESPACE", "JWT_REUSE_S", "ApnsChannel", "ApnsConfig", "apns_id", "apns_payload"]

JWT_REUSE_S = 50 * 60  # Apple: renew at most every 20 minutes, never use one older than 60
APNS_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "push.carbon-wallet.dev")  # fixed: apns-id must stay stable
DETAIL_CHARS_MAX = 300
_DEVICE_TOKEN = re.compile(r"[0-9A-Fa-f]{8,512}")  # hex; it becomes part of the request path
_INVALID_TOKEN_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic"})


@dataclass(frozen=True, slots=True)
class ApnsConfig:
    base_url: str  # https://api.push.apple.com, or https://api.sandbox.push.apple.com for development builds
    team_id: str  # the Apple developer team (the JWT's iss)
    key_id: str  # the .p8 key's id (the JWT's kid)
    private_key_pem: str  # the .p8 file's text: an EC P-256 private key in PEM
    bundle_id: str  # the app's bundle id (apns-topic)


def apns_id(message_id: str) -> str:
    """Our idempotency id as the UUID APNs requires: the same message always gets the same apns-id."""
    return str(uuid.uuid5(APNS_ID_NAMESPACE, message_id))


def apns_payload(push: Push) -> dict[str, Any]:
    """The JSON body. "aps" and "deep_link" win over same-named keys in `push.data`."""
    aps: dict[str, Any] = {"alert": {"title": push.title, "body": push.body}, "sound": "default"}
    if push.badge is not None:
        aps["badge"] = push.badge
    return {**push.data, "aps": aps, "deep_link": push.deep_link}


class ApnsChannel:
    """Sends to iOS devices. HTTP/2 only: with TLS negotiated by ALPN, with plain http by prior knowledge."""

    name = "apns"

    def __init__(
        self, config: ApnsConfig, *, timeout_s: float = TIMEOUT_S_DEFAULT, clock: Callable[[], float] = time.time,
    ) -> None:
        missing = [f for f in ("team_id", "key_id", "bundle_id") if not getattr(config, f).strip()]
        if missing:
            raise ValueError(f"the APNs settings lack {', '.join(missing)}")
        self._key = _p256_key(config.private_key_pem)
        self._config = config
        self._clock = clock
        self._jwt = ""
        self._jwt_iat_s = 0
        self._client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/"), http1=False, http2=True, timeout=timeout_s,
        )

    async def send(self, push: Push) -> Sent:
        if not _DEVICE_TOKEN.fullmatch(push.token):
            return Sent("invalid_token", "BadDeviceToken (not a hex device token; not sent)")
        headers = self._headers(push)
        payload = apns_payload(push)
        try:
            token = self._provider_token()
            response = await self._post(push.token, headers, payload, token)
            if response.status_code == 403 and _reason(response) == "ExpiredProviderToken":
                token = self._provider_token(stale=token)
                response = await self._post(push.token, headers, payload, token)
        except httpx.TransportError as exc:
            return Sent("retry", f"network error: {type(exc).__name__} {exc}".strip()[:DETAIL_CHARS_MAX])
        return self._classify(response)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _provider_token(self, stale: str = "") -> str:
        """The provider JWT, renewed after `JWT_REUSE_S` or when Apple just refused this very one."""
        now_s = self._clock()
        if not self._jwt or self._jwt == stale or now_s - self._jwt_iat_s >= JWT_REUSE_S:
            self._jwt_iat_s = int(now_s)
            self._jwt = jwt.encode(
                {"iss": self._config.team_id, "iat": self._jwt_iat_s}, self._key, algorithm="ES256",
                headers={"kid": self._config.key_id},
            )
        return self._jwt

    def _headers(self, push: Push) -> dict[str, str]:
        # apns-expiration 0 means "try once, do not store", which is what a ttl of 0 asks for.
        expiration = str(int(self._clock()) + push.ttl_s) if push.ttl_s else "0"
        headers = {
            "apns-topic": self._config.bundle_id, "apns-push-type": "alert", "apns-priority": "10",
            "apns-expiration": expiration,
        }
        if push.message_id:
            headers["apns-id"] = apns_id(push.message_id)
        if push.collapse_key is not None:
            headers["apns-collapse-id"] = push.collapse_key
        return headers

    async def _post(
        self, device_token: str, headers: dict[str, str], payload: dict[str, Any], provider_token: str,
    ) -> httpx.Response:
        headers = {**headers, "authorization": f"bearer {provider_token}"}
        return await self._client.post(f"/3/device/{device_token}", json=payload, headers=headers)

    def _classify(self, response: httpx.Response) -> Sent:
        status = response.status_code
        provider_id = response.headers.get("apns-id", "")
        if status == 200:
            return Sent("sent", provider_id=provider_id)
        reason = _reason(response) or f"HTTP {status}"
        if status == 410 or (status == 400 and reason in _INVALID_TOKEN_REASONS):
            return Sent("invalid_token", reason, provider_id=provider_id)
        if status == 429 or status >= 500 or (status == 403 and reason == "ExpiredProviderToken"):
            retry_after_s = parse_retry_after(response.headers.get("retry-after"), self._clock())
            return Sent("retry", reason, retry_after_s, provider_id)
        return Sent("failed", reason, provider_id=provider_id)


def _reason(response: httpx.Response) -> str:
    body = json_or_none(response.content)
    reason = body.get("reason") if isinstance(body, dict) else None
    return str(reason)[:DETAIL_CHARS_MAX] if reason else ""


def _p256_key(pem: str) -> EllipticCurvePrivateKey:
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("the APNs key is not a PEM private key (the text of a .p8 file)") from None
    if not isinstance(key, EllipticCurvePrivateKey) or not isinstance(key.curve, SECP256R1):
        raise ValueError("the APNs key is not an EC P-256 key, which ES256 needs")
    return key
