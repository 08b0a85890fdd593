"""Reading a holder's inbox, newest first, with a keyset cursor (the last message id seen)."""

from __future__ import annotations

import uuid
from typing import Any

from notifications.inbox.templates import render_stored
from wallet.db import connection

__all__ = ["PAGE_SIZE_MAX", "list_messages", "mark_all_read", "mark_read", "unread_count"]

PAGE_SIZE_MAX = 100


async def list_messages(
    holder_id: uuid.UUID, language: str, *, before_id: int | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    limit = max(1, min(limit, PAGE_SIZE_MAX))
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT id, kind, params, created_at, read_at, trigger, link FROM inbox_message
               WHERE holder_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3""",
            holder_id, before_id, limit,
        )
    out = []
    for row in rows:
        title, body = render_stored(row["kind"], language, row["params"]) or (
            ("通知", "") if language == "zh-CN" else ("Notification", ""))
        out.append({"id": row["id"], "kind": row["kind"], "trigger": row["trigger"], "title": title, "body": body,
                    "link": row["link"], "created_at": row["created_at"], "read_at": row["read_at"]})
    return out


async def mark_read(holder_id: uuid.UUID, message_id: int) -> bool:
    async with connection() as conn:
        done = await conn.fetchval(
            "UPDATE inbox_message SET read_at = coalesce(read_at, now()) WHERE id = $1 AND holder_id = $2 RETURNING id",
            message_id, holder_id,
        )
    return done is not None


async def mark_all_read(holder_id: uuid.UUID, *, up_to_id: int | None = None) -> int:
    """Everything unread (up to `up_to_id`, the newest message the app showed, so one arriving meanwhile stays
    unread); how many messages changed."""
    async with connection() as conn:
        return int((await conn.execute(
            """UPDATE inbox_message SET read_at = now()
               WHERE holder_id = $1 AND read_at IS NULL AND ($2::bigint IS NULL OR id <= $2)""",
            holder_id, up_to_id)).split()[-1])


async def unread_count(holder_id: uuid.UUID) -> int:
    async with connection() as conn:
        return int(await conn.fetchval(
            "SELECT count(*) FROM inbox_message WHERE holder_id = $1 AND read_at IS NULL", holder_id))
