"""Telling residents something: an inbox message and its deliveries (live to the open app, push to each of the
resident's phones, as their preferences allow), written in the caller's transaction, in one statement.

The inbox message is unique per (resident, event, kind) and each delivery per (message, channel, device), so
an event handled twice, a retried job or a cron that runs again never tells anyone twice. Quiet hours and the
daily cap are judged when a delivery is sent (notifications/delivery/send.py), against the settings of that
moment."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from notifications.catalogue import link_for, trigger_of

__all__ = ["BATCH", "notify", "notify_many"]

BATCH = 5_000  # residents per statement when one event tells many (a challenge of 100,000 participants)

_NOTIFY = """
WITH msg AS (
  INSERT INTO inbox_message (holder_id, event_id, kind, params, created_at, trigger, link)
  SELECT t.holder, $2, $3, t.params::jsonb, coalesce($4, now()), $5, t.link
  FROM unnest($1::uuid[], $6::text[], $7::text[]) AS t(holder, params, link)
  JOIN holder h ON h.id = t.holder AND h.status = 'active'
  ON CONFLICT (holder_id, event_id, kind) DO NOTHING
  RETURNING id, holder_id),
live AS (
  INSERT INTO delivery (message, holder, channel, device, state, attempts, due_at)
  SELECT m.id, m.holder_id, 'live', NULL, 'pending', 0, now() FROM msg m
  WHERE coalesce((SELECT p.enabled FROM notification_preference p
                  WHERE p.holder = m.holder_id AND p.trigger = $5 AND p.channel = 'live'), true)
  RETURNING 1),
push AS (
  INSERT INTO delivery (message, holder, channel, device, state, attempts, due_at)
  SELECT m.id, m.holder_id, 'push', d.id, 'pending', 0, now() FROM msg m JOIN device d ON d.holder = m.holder_id
  WHERE $8 OR coalesce((SELECT p.enabled FROM notification_preference p
                        WHERE p.holder = m.holder_id AND p.trigger = $5 AND p.channel = 'push'), $9)
  RETURNING 1)
SELECT (SELECT count(*) FROM msg) AS messages, (SELECT count(*) FROM live) AS live, (SELECT count(*) FROM push) AS push
"""


async def notify_many(conn: asyncpg.Connection, holders: Sequence[uuid.UUID], kind: str,
                      params: dict[str, Any] | Sequence[dict[str, Any]], *, event_id: uuid.UUID,
                      at: datetime | None = None) -> int:
    """Tell each resident (the same `params`, or one dict each); returns how many messages are new.
    Residents who are not active are skipped; call inside the transaction that records the reason."""
    trigger = trigger_of(kind)
    each = [params] * len(holders) if isinstance(params, dict) else list(params)
    if len(each) != len(holders):
        raise ValueError("params must be one dict, or one per resident")
    new = 0
    for start in range(0, len(holders), BATCH):
        part = each[start:start + BATCH]
        row = await conn.fetchrow(
            _NOTIFY, list(holders[start:start + BATCH]), event_id, kind, at, trigger.key,
            [msgspec.json.encode(p).decode() for p in part], [link_for(kind, p) for p in part],
            trigger.locked, trigger.push,
        )
        new += row["messages"]
    return new


async def notify(conn: asyncpg.Connection, holder_id: uuid.UUID, kind: str, params: dict[str, Any] | None = None,
                 *, event_id: uuid.UUID, at: datetime | None = None) -> bool:
    """Tell one resident; False when they were told of this event already (or are not active)."""
    return bool(await notify_many(conn, [holder_id], kind, params or {}, event_id=event_id, at=at))
