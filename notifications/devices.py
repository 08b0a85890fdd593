"""Phones that receive push: registered by a signed-in app, removed with it (signing the session out deletes
its devices, a trigger on auth_session), and pruned when the provider says a token is dead."""

from __future__ import annotations

import re
import uuid
from typing import Any

from wallet.db import connection, engine
from wallet.errors import DomainError

__all__ = ["PLATFORMS", "devices_of", "prune", "register_device", "unregister_device"]

PLATFORMS = ("fcm", "apns")
_APNS_TOKEN = re.compile(r"^[0-9a-fA-F]{64,200}$")
_FCM_TOKEN = re.compile(r"^[A-Za-z0-9_:\-.]{20,4096}$")
DEVICES_MAX = 20  # per resident: a family's tablets and old phones, not a token farm


def _check(platform: str, token: str) -> str:
    if platform not in PLATFORMS:
        raise DomainError("invalid", "unknown-platform", "platform is fcm (Android) or apns (iOS).", field="platform")
    token = token.strip()
    if not (_APNS_TOKEN if platform == "apns" else _FCM_TOKEN).match(token):
        what = "64 or more hex digits" if platform == "apns" else "the registration token FCM gave the app"
        raise DomainError("invalid", "invalid-push-token", f"This is not a {platform} token ({what}).",
                          field="token")
    return token.lower() if platform == "apns" else token


async def register_device(holder_id: uuid.UUID, session_id: uuid.UUID | None, platform: str, token: str,
                          app_version: str = "") -> dict[str, Any]:
    """Idempotent: the same token again refreshes it; a token another account registered moves here (the
    phone is signed in to this account now)."""
    token = _check(platform, token)
    async with engine().transaction() as tx:
        conn = tx.connection
        # One registration per resident at a time, so two phones registering at once cannot pass the limit.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('device:' || $1::uuid::text))", holder_id)
        count = await conn.fetchval(
            "SELECT count(*) FROM device WHERE holder = $1 AND NOT (platform = $2 AND token = $3)",
            holder_id, platform, token)
        if count >= DEVICES_MAX:
            raise DomainError("conflict", "too-many-devices",
                              f"At most {DEVICES_MAX} phones receive notifications; remove one you no longer use.")
        row = await conn.fetchrow(
            """INSERT INTO device (holder, session, platform, token, app_version, created_at, last_seen_at)
               VALUES ($1, $2, $3, $4, $5, now(), now())
               ON CONFLICT (platform, token) DO UPDATE SET holder = $1, session = $2, app_version = $5,
                   last_seen_at = now(),
                   created_at = CASE WHEN device.holder = $1 THEN device.created_at ELSE now() END
               RETURNING id, platform, token, app_version, created_at, last_seen_at, session""",
            holder_id, session_id, platform, token, app_version[:40],
        )
    return dict(row)


async def unregister_device(holder_id: uuid.UUID, device_id: int) -> bool:
    async with connection() as conn:
        return await conn.fetchval(
            "DELETE FROM device WHERE id = $1 AND holder = $2 RETURNING id", device_id, holder_id) is not None


async def devices_of(holder_id: uuid.UUID) -> list[dict[str, Any]]:
    async with connection() as conn:
        return [dict(r) for r in await conn.fetch(
            """SELECT id, platform, token, app_version, created_at, last_seen_at, session FROM device
               WHERE holder = $1 ORDER BY last_seen_at DESC""", holder_id)]


async def prune(device_id: int) -> bool:
    """The provider said the token is dead: it goes, with every push still waiting for it."""
    async with connection() as conn:
        gone = await conn.fetchval("DELETE FROM device WHERE id = $1 RETURNING id", device_id)
        await conn.execute(
            """UPDATE delivery SET state = 'skipped', reason = 'device-removed', done_at = now()
               WHERE device = $1 AND state = 'pending'""", device_id)
    return gone is not None
