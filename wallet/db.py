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

__all__ = ["connection", "engine"]


def engine() -> PostgresEngine:
    db = engine_finder()
    assert isinstance(db, PostgresEngine), "Carbon Wallet runs on PostgreSQL only"
    return db


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
