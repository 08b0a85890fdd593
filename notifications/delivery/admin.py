"""What operators read about delivery: the dead letters (given up after the last retry, with the reason)."""

from __future__ import annotations

from typing import Any

from wallet.db import connection

__all__ = ["dead_letters"]


async def dead_letters(limit: int = 100) -> list[dict[str, Any]]:
    async with connection() as conn:
        return [dict(r) for r in await conn.fetch(
            """SELECT d.id AS delivery_id, d.message AS message_id, d.holder AS holder_id, m.kind, d.channel,
                      d.attempts, d.reason, d.done_at AS failed_at
               FROM delivery d JOIN inbox_message m ON m.id = d.message
               WHERE d.state = 'dead' ORDER BY d.done_at DESC, d.id DESC LIMIT $1""", limit)]
