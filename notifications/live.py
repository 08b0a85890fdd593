"""Publishing to a holder's in-app live stream from any process (API or worker), without Litestar.

The API's `ChannelsPlugin` uses `RedisChannelsPubSubBackend`, whose publish script runs `PUBLISH <channel> <data>`
for each channel name as given: unlike the streams backend it applies no key prefix (`LITESTAR_CHANNELS` is only
used by `_make_key`, which the pub/sub backend never calls), and it forwards the bytes untouched to subscribers.
So a plain `PUBLISH holder:<id> <json>` from any redis-py client reaches every API process that has a subscriber
for that holder. Pub/sub keeps no history: the inbox in PostgreSQL is the record, and the stream replays it from
`Last-Event-ID` on reconnect.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
from redis.asyncio import Redis

from notifications.inbox.templates import render_stored
from wallet.db import connection

__all__ = ["EVENT_FIELDS", "REPLAY_MAX", "live_channel", "missed_events", "publish"]

REPLAY_MAX = 100

log = logging.getLogger("carbon_wallet.live")

# What the worker publishes and the stream sends as `data:` (title and body already in the resident's language).
EVENT_FIELDS = ("id", "kind", "trigger", "title", "body", "link", "created_at", "unread")

_encode = msgspec.json.Encoder().encode


def live_channel(holder_id: uuid.UUID) -> str:
    """The Litestar channel name, which is also the Redis pub/sub channel the backend subscribes to."""
    return f"holder:{holder_id}"


async def publish(redis: Redis, holder_id: uuid.UUID, event: Mapping[str, Any]) -> None:
    """Send one event to the holder's live streams in every API process; fire and forget (nobody listening is
    fine). `event["id"]` is the inbox message id: streams use it as the SSE id and to drop duplicates."""
    if not isinstance(event.get("id"), int) or isinstance(event.get("id"), bool):
        raise ValueError("a live event needs the inbox message id as an int under 'id'")
    await redis.publish(live_channel(holder_id), _encode(dict(event)))


async def missed_events(holder_id: uuid.UUID, after_id: int, *, limit: int = REPLAY_MAX) -> list[dict[str, Any]]:
    """The holder's inbox messages newer than `after_id` as live events, oldest first: the newest `limit` of them
    (older ones stay in the inbox listing). One query; `unread` is the count now, the badge the app should show."""
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT m.id, m.kind, m.params, m.created_at, m.trigger, m.link, h.language,
                      (SELECT count(*) FROM inbox_message u WHERE u.holder_id = $1 AND u.read_at IS NULL) AS unread
               FROM (SELECT id, kind, params, created_at, trigger, link FROM inbox_message
                     WHERE holder_id = $1 AND id > $2 ORDER BY id DESC LIMIT $3) AS m
               CROSS JOIN (SELECT language FROM holder WHERE id = $1) AS h
               ORDER BY m.id""",
            holder_id, after_id, limit,
        )
    events = []
    for row in rows:
        text = render_stored(row["kind"], row["language"], row["params"])
        if text is None:  # a kind or parameter the templates no longer know: not replayed
            continue
        title, body = text
        events.append({
            "id": row["id"], "kind": row["kind"], "trigger": row["trigger"], "title": title, "body": body,
            "link": row["link"], "created_at": row["created_at"].isoformat(), "unread": row["unread"],
        })
    return events
