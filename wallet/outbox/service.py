"""Record events inside the caller's transaction; relay due events; run handlers exactly once.

Delivery is at least once (the relay re-dispatches anything unhandled after `redeliver_after_s`); the
effect is exactly once because each handler runs in one transaction with its `outbox_handled` row.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from wallet.db import connection, engine
from wallet.outbox.tables import OutboxEvent

__all__ = [
    "Event",
    "EventHandler",
    "handle_event",
    "handler_key",
    "record_event",
    "record_events",
    "relay_due_events",
]

log = logging.getLogger("carbon_wallet.outbox")

DISPATCH_ATTEMPTS_MAX = 25
RELAY_BATCH_MAX = 500


@dataclass(frozen=True, slots=True)
class Event:
    event_id: uuid.UUID
    name: str
    holder_id: uuid.UUID | None
    payload: dict[str, Any]
    created_at: datetime


EventHandler = Callable[[Event], Awaitable[None]]


def handler_key(handler: EventHandler) -> str:
    """The name stored in `outbox_handled`; renaming a handler re-runs it for unhandled events only."""
    return f"{handler.__module__}.{handler.__qualname__}"[:100]


async def record_event(name: str, payload: dict[str, Any], holder_id: uuid.UUID | None = None) -> uuid.UUID:
    """Call inside the transaction that makes the change, so the event exists if and only if the change does."""
    event_id = uuid.uuid4()
    await OutboxEvent.insert(
        OutboxEvent(event_id=event_id, name=name, holder_id=holder_id, payload=msgspec.json.encode(payload).decode())
    )
    return event_id


async def record_events(events: Sequence[tuple[str, dict[str, Any], uuid.UUID | None]]) -> list[uuid.UUID]:
    """Many events in one statement, for batches (a 1,000-activity report emits up to 1,000 events); same
    contract as `record_event`: call inside the transaction that makes the change."""
    if not events:
        return []
    ids = [uuid.uuid4() for _ in events]
    async with connection() as conn:
        await conn.execute(
            """INSERT INTO outbox_event (event_id, name, holder_id, payload, created_at, dispatch_count)
               SELECT e.id, e.name, e.holder, e.payload::jsonb, now(), 0
               FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[]) AS e(id, name, holder, payload)""",
            ids,
            [name for name, _, _ in events],
            [holder for _, _, holder in events],
            [msgspec.json.encode(payload).decode() for _, payload, _ in events],
        )
    return ids


_CLAIM_SQL = """
WITH due AS (
    SELECT id FROM outbox_event
    WHERE handled_at IS NULL
      AND dispatch_count < $1
      AND (dispatched_at IS NULL OR dispatched_at < now() - make_interval(secs => $2))
    ORDER BY id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox_event o SET dispatched_at = now(), dispatch_count = o.dispatch_count + 1
FROM due WHERE o.id = due.id
RETURNING o.event_id, o.dispatch_count, o.name
"""


async def relay_due_events(
    enqueue: Callable[[uuid.UUID, int], Awaitable[None]],
    *,
    redeliver_after_s: float = 30.0,
    batch_max: int = RELAY_BATCH_MAX,
    subscribed: Collection[str] | None = None,
) -> int:
    """Hand due events to `enqueue` inside the claiming transaction: if enqueueing fails (the queue is
    down) the claim rolls back and the next tick tries again, so nothing is lost. Events no handler
    subscribes to (`subscribed` names those that have one) are marked handled here instead of costing a
    job each: a 1,000-activity report records 1,000 `reduction.recorded` events."""
    async with engine().transaction() as tx:
        rows = await tx.connection.fetch(_CLAIM_SQL, DISPATCH_ATTEMPTS_MAX, redeliver_after_s, batch_max)
        idle = [r["event_id"] for r in rows if subscribed is not None and r["name"] not in subscribed]
        if idle:
            await tx.connection.execute(
                "UPDATE outbox_event SET handled_at = now() WHERE event_id = ANY($1::uuid[])", idle
            )
        for row in rows:
            if subscribed is None or row["name"] in subscribed:
                await enqueue(row["event_id"], row["dispatch_count"])
    return len(rows)


_MARK_HANDLED_SQL = """
INSERT INTO outbox_handled (event_id, handler, handled_at) VALUES ($1, $2, now())
ON CONFLICT (event_id, handler) DO NOTHING RETURNING id
"""


async def handle_event(event_id: uuid.UUID, handlers: Mapping[str, Sequence[EventHandler]]) -> int:
    """Run every handler registered for the event that has not yet run; returns how many ran now."""
    row = await OutboxEvent.select().where(OutboxEvent.event_id == event_id).first()
    if row is None or row["handled_at"] is not None:
        return 0
    payload = row["payload"]
    event = Event(
        event_id=row["event_id"],
        name=row["name"],
        holder_id=row["holder_id"],
        payload=msgspec.json.decode(payload) if isinstance(payload, str | bytes) else payload,
        created_at=row["created_at"],
    )
    ran = 0
    db = engine()
    for handler in handlers.get(event.name, ()):
        async with db.transaction() as tx:
            if await tx.connection.fetchval(_MARK_HANDLED_SQL, event.event_id, handler_key(handler)) is None:
                continue
            await handler(event)
            ran += 1
    await OutboxEvent.update({OutboxEvent.handled_at: datetime.now().astimezone()}).where(
        (OutboxEvent.event_id == event_id) & (OutboxEvent.handled_at.is_null())
    )
    if ran:
        log.info("event handled", extra={"event_id": str(event_id), "event": event.name, "handlers_run": ran})
    return ran
