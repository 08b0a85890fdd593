"""Raw SQL on the current Piccolo transaction, or on a pooled connection when there is none.

Piccolo's builder covers most queries; hot paths and statements it cannot say (ON CONFLICT … RETURNING,
guarded updates, CTEs) use asyncpg directly through this one door.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from piccolo.engine import engine_finder
from piccolo.engine.postgres import PostgresEngine

__all__ = ["close_pool", "connection", "engine", "start_pool"]


def engine() -> PostgresEngine:
    db = engine_finder()
    assert isinstance(db, PostgresEngine), "Carbon Wallet runs on PostgreSQL only"
    return db


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release hook. asyncpg always rolls back an open transaction first; its default reset then also runs
    `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every release, which measured at nearly half
    of a pooled round trip. Our pooled connections never hold session state (no SET, LISTEN, session advisory
    locks or holdable cursors; migrations lock on a connection of their own), so there is nothing to reset."""


async def start_pool(database_url: str, *, size_min: int, size_max: int) -> None:
    """The one way a process opens its PostgreSQL pool (API lifespan, worker start-up, CLI, tests)."""
    db = engine()
    db.config["dsn"] = database_url
    await db.start_connection_pool(min_size=size_min, max_size=size_max, reset=_keep_session)


async def close_pool() -> None:
    await engine().close_connection_pool()


@asynccontextmanager
async def connection() -> AsyncIterator[asyncpg.Connection]:
    db = engine()
    tx = db.current_transaction.get()
    if tx is not None:
        yield tx.connection
    elif db.pool is not None:
        async with db.pool.acquire() as conn:
            yield conn
    else:
        conn = await db.get_new_connection()
        try:
            yield conn
        finally:
            await conn.close()
