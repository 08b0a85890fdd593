"""The one interface every push channel keeps, and the channels configured from the environment.

Invariants:
- `Channel.send` never raises for anything the provider or the network does: every answer becomes a `Sent`,
  so the delivery job has one place that decides retry, dead letter or pruning of the device token.
- "invalid_token" is returned only when the provider says the token itself is dead (never for our own
  mistakes), because the delivery jobs delete device tokens on that outcome.
- A channel retries on its own only once, after refreshing a credential the provider rejected as stale.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

__all__ = [
    "RETRY_AFTER_MAX_S",
    "TIMEOUT_S_DEFAULT",
    "Channel",
    "Outcome",
    "Push",
    "Sent",
    "channel_from_env",
    "json_or_none",
    "parse_retry_after",
]

Outcome = Literal["sent", "retry", "invalid_token", "failed"]

TIMEOUT_S_DEFAULT = 10.0
RETRY_AFTER_MAX_S = 86_400.0  # a provider asking for more than a day is treated as asking for a day
FCM_BASE_URL_DEFAULT = "https://fcm.googleapis.com"
APNS_BASE_URL_DEFAULT = "https://api.push.apple.com"
_APNS_VARIABLES = ("CW_APNS_TEAM_ID", "CW_APNS_KEY_ID", "CW_APNS_KEY_FILE", "CW_APNS_BUNDLE_ID")


@dataclass(frozen=True, slots=True)
class Push:
    """One notification for one device; the same value goes to whichever channel the device uses."""

    token: str  # the device's provider token
    title: str
    body: str
    deep_link: str  # e.g. "carbonwallet://energy"; sent in the data payload as "deep_link"
    data: dict[str, str]  # extra string key/values for the app (FCM requires string values)
    collapse_key: str | None = None  # FCM android.collapse_key / APNs apns-collapse-id
    badge: int | None = None  # unread count (APNs aps.badge; FCM android.notification.notification_count)
    ttl_s: int = 86_400  # how long the provider may keep it (FCM android.ttl, APNs apns-expiration)
    message_id: str = ""  # our idempotency id: APNs apns-id is its uuid5; FCM data["message_id"]

    def __post_init__(self) -> None:
        if self.ttl_s < 0:
            raise ValueError(f"a push's ttl_s must be 0 or more, not {self.ttl_s}")
        if self.badge is not None and self.badge < 0:
            raise ValueError(f"a push's badge must be 0 or more, not {self.badge}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.data.items()):
            raise ValueError("a push's data must map strings to strings (FCM rejects other values)")


@dataclass(frozen=True, slots=True)
class Sent:
    """What the provider said about one push, reduced to what the delivery job must decide on."""

    outcome: Outcome
    detail: str = ""  # the provider's reason, human-readable (e.g. "UNREGISTERED", "BadDeviceToken")
    retry_after_s: float | None = None  # from Retry-After when the provider gives one
    provider_id: str = ""  # FCM "name" of the message / APNs apns-id echoed back


class Channel(Protocol):
    name: str  # "fcm" | "apns" | "log"

    async def send(self, push: Push) -> Sent: ...

    async def aclose(self) -> None: ...


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        delay_s = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        delay_s = when.timestamp() - now_s
    if not math.isfinite(delay_s):
        return None
    return min(max(delay_s, 0.0), RETRY_AFTER_MAX_S)


def json_or_none(content: bytes) -> Any:
    """A provider's JSON body, or None: a proxy's HTML error page must not break classification."""
    try:
        return json.loads(content)
    except ValueError:
        return None


def channel_from_env(env: Mapping[str, str]) -> dict[str, Channel]:
    """The channels the environment configures, by name: "log" always, "fcm" and "apns" when set up.

    A half-configured provider is an error rather than a silently disabled one, so a typo in deployment
    cannot quietly stop every push to one platform."""
    # Imported here because the channel modules import this one for the interface.
    from notifications.channels.apns import ApnsChannel, ApnsConfig
    from notifications.channels.fcm import FcmChannel, FcmConfig
    from notifications.channels.log import LogChannel

    channels: dict[str, Channel] = {"log": LogChannel()}
    account_file = env.get("CW_FCM_SERVICE_ACCOUNT_FILE", "").strip()
    if account_file:
        base_url = _base_url(env, "CW_FCM_BASE_URL", FCM_BASE_URL_DEFAULT)
        text = _read(account_file, "CW_FCM_SERVICE_ACCOUNT_FILE")
        try:
            account = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"CW_FCM_SERVICE_ACCOUNT_FILE: {account_file} is not JSON ({exc}).") from None
        if not isinstance(account, dict):
            raise ValueError(f"CW_FCM_SERVICE_ACCOUNT_FILE: {account_file} is not a JSON object.")
        try:
            channels["fcm"] = FcmChannel(FcmConfig(base_url=base_url, service_account=account))
        except ValueError as exc:
            raise ValueError(f"CW_FCM_SERVICE_ACCOUNT_FILE: in {account_file}, {exc}.") from None
    given = {name: env.get(name, "").strip() for name in _APNS_VARIABLES}
    if any(given.values()):
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise ValueError(f"APNs needs all of {', '.join(_APNS_VARIABLES)}; {', '.join(missing)} not set.")
        base_url = _base_url(env, "CW_APNS_BASE_URL", APNS_BASE_URL_DEFAULT)
        key_file = given["CW_APNS_KEY_FILE"]
        config = ApnsConfig(
            base_url=base_url, team_id=given["CW_APNS_TEAM_ID"], key_id=given["CW_APNS_KEY_ID"],
            private_key_pem=_read(key_file, "CW_APNS_KEY_FILE"), bundle_id=given["CW_APNS_BUNDLE_ID"],
        )
        try:
            channels["apns"] = ApnsChannel(config)
        except ValueError as exc:
            raise ValueError(f"CW_APNS_KEY_FILE: in {key_file}, {exc}.") from None
    return channels


def _base_url(env: Mapping[str, str], variable: str, default: str) -> str:
    value = env.get(variable, "").strip() or default
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{variable} must be an http(s) URL such as {default}, not {value!r}.")
    return value.rstrip("/")


def _read(path: str, variable: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"{variable}: cannot read {path} ({reason}).") from None
