"""Per-device sessions and their rotating refresh tokens.

A session is a refresh-token family. Each refresh marks the presented token used (a guarded UPDATE, so
two concurrent refreshes cannot both win) and issues a new one. Presenting a used token means it was
copied: the whole family is revoked, and the legitimate device must log in again.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from wallet.db import connection, engine
from wallet.errors import DomainError

__all__ = [
    "Rotation",
    "erase_sessions",
    "list_sessions",
    "live_holder_of_session",
    "revoke_all_sessions",
    "revoke_session",
    "rotate_refresh_token",
    "start_session",
]

REFRESH_PREFIX = "cwr_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_refresh_token() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Rotation:
    holder_id: uuid.UUID
    session_id: uuid.UUID
    refresh_token: str
    refresh_expires_at: datetime


async def _insert_refresh(conn: Any, session_id: uuid.UUID, ttl_s: int) -> tuple[str, datetime]:
    token = _new_refresh_token()
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl_s)
    await conn.execute(
        "INSERT INTO auth_refresh_token (session, token_hash, created_at, expires_at) VALUES ($1, $2, now(), $3)",
        session_id,
        _digest(token),
        expires_at,
    )
    return token, expires_at


async def start_session(
    holder_id: uuid.UUID, *, device_name: str, user_agent: str, ip: str, refresh_ttl_s: int
) -> Rotation:
    session_id = uuid.uuid4()
    async with engine().transaction() as tx:
        await tx.connection.execute(
            """INSERT INTO auth_session (id, holder, device_name, user_agent, created_ip, created_at, last_refreshed_at)
               VALUES ($1, $2, $3, $4, $5, now(), now())""",
            session_id,
            holder_id,
            device_name[:100],
            user_agent[:300],
            ip[:45],
        )
        token, expires_at = await _insert_refresh(tx.connection, session_id, refresh_ttl_s)
    return Rotation(holder_id, session_id, token, expires_at)


async def rotate_refresh_token(presented: str, *, refresh_ttl_s: int) -> Rotation:
    digest = _digest(presented)
    reused_session: uuid.UUID | None = None
    async with engine().transaction() as tx:
        conn = tx.connection
        row = await conn.fetchrow(
            "UPDATE auth_refresh_token SET used_at = now() WHERE token_hash = $1 AND used_at IS NULL "
            "RETURNING session, expires_at",
            digest,
        )
        if row is None:
            reused_session = await conn.fetchval("SELECT session FROM auth_refresh_token WHERE token_hash = $1", digest)
            if reused_session is not None:
                await conn.execute(
                    "UPDATE auth_session SET revoked_at = now(), revoked_reason = 'refresh-reuse' "
                    "WHERE id = $1 AND revoked_at IS NULL",
                    reused_session,
                )
        else:
            if row["expires_at"] <= datetime.now(UTC):
                raise DomainError("unauthorized", "refresh-token-expired", "This session has expired; log in again.")
            holder_id = await conn.fetchval(
                """SELECT s.holder FROM auth_session s JOIN holder h ON h.id = s.holder
                   WHERE s.id = $1 AND s.revoked_at IS NULL AND h.status = 'active'""",
                row["session"],
            )
            if holder_id is None:
                raise DomainError("unauthorized", "session-revoked", "This session was signed out; log in again.")
            await conn.execute("UPDATE auth_session SET last_refreshed_at = now() WHERE id = $1", row["session"])
            token, expires_at = await _insert_refresh(conn, row["session"], refresh_ttl_s)
            return Rotation(holder_id, row["session"], token, expires_at)
    if reused_session is not None:
        raise DomainError(
            "unauthorized",
            "refresh-token-reused",
            "This refresh token was already used, so it may have been copied; that session is now signed out.",
        )
    raise DomainError("unauthorized", "refresh-token-invalid", "This refresh token is not valid; log in again.")


async def live_holder_of_session(session_id: uuid.UUID) -> uuid.UUID | None:
    """The holder of a session that is neither revoked nor belongs to a deleted holder."""
    async with connection() as conn:
        return await conn.fetchval(
            """SELECT s.holder FROM auth_session s JOIN holder h ON h.id = s.holder
               WHERE s.id = $1 AND s.revoked_at IS NULL AND h.status = 'active'""",
            session_id,
        )


async def revoke_session(holder_id: uuid.UUID, session_id: uuid.UUID, *, reason: str) -> bool:
    async with connection() as conn:
        done = await conn.fetchval(
            "UPDATE auth_session SET revoked_at = now(), revoked_reason = $3 "
            "WHERE id = $1 AND holder = $2 AND revoked_at IS NULL RETURNING id",
            session_id,
            holder_id,
            reason,
        )
    return done is not None


async def revoke_all_sessions(holder_id: uuid.UUID, *, reason: str, keep: uuid.UUID | None = None) -> int:
    async with connection() as conn:
        result = await conn.execute(
            "UPDATE auth_session SET revoked_at = now(), revoked_reason = $2 "
            "WHERE holder = $1 AND revoked_at IS NULL AND ($3::uuid IS NULL OR id <> $3)",
            holder_id,
            reason,
            keep,
        )
    return int(result.split()[-1])


async def erase_sessions(holder_id: uuid.UUID) -> None:
    """Account deletion: revoke every session and blank what identifies the person's devices."""
    async with connection() as conn:
        await conn.execute(
            """UPDATE auth_session SET device_name = '', user_agent = '', created_ip = '',
                   revoked_at = coalesce(revoked_at, now()),
                   revoked_reason = coalesce(revoked_reason, 'account-deleted')
               WHERE holder = $1""",
            holder_id,
        )


async def list_sessions(holder_id: uuid.UUID, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT id, device_name, user_agent, created_ip, created_at, last_refreshed_at, revoked_at, revoked_reason
               FROM auth_session WHERE holder = $1 AND ($2 OR revoked_at IS NULL) ORDER BY created_at DESC LIMIT 200""",
            holder_id,
            include_revoked,
        )
    return [dict(r) for r in rows]
