"""Apply Piccolo migrations under a PostgreSQL advisory lock, so processes starting together cannot race."""

from __future__ import annotations

import asyncpg
from piccolo.apps.migrations.commands.forwards import run_forwards

__all__ = ["migrate"]

_LOCK_KEY = 0x63_77_6D_69  # "cwmi"


async def migrate(database_url: str) -> None:
    lock = await asyncpg.connect(database_url)
    try:
        await lock.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        result = await run_forwards("all")
        if not result.success:
            raise RuntimeError(f"migrations failed: {result.message}")
    finally:
        await lock.close()
