"""A resident's energy choices (no row means the defaults): whether friends may collect their ripe balls."""

from __future__ import annotations

import uuid

import asyncpg

from wallet.db import connection

__all__ = ["friends_may_collect", "set_friends_may_collect"]


async def friends_may_collect(conn: asyncpg.Connection, holder_id: uuid.UUID) -> bool:
    return await conn.fetchval(
        "SELECT coalesce((SELECT friends_may_collect FROM energy_preference WHERE holder = $1), true)", holder_id
    )


async def set_friends_may_collect(holder_id: uuid.UUID, allowed: bool) -> bool:
    async with connection() as conn:
        await conn.execute(
            """INSERT INTO energy_preference (holder, friends_may_collect, updated_at) VALUES ($1, $2, now())
               ON CONFLICT (holder) DO UPDATE SET friends_may_collect = $2, updated_at = now()""",
            holder_id, allowed,
        )
    return allowed
