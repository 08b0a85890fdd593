from __future__ import annotations

from piccolo.columns import JSONB, UUID, BigSerial, Integer, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table


class OutboxEvent(Table, tablename="outbox_event"):
    """One domain event. `handled_at` is set once every registered handler has run."""

    id = BigSerial(primary_key=True)
    event_id = UUID(unique=True)
    name = Varchar(length=64)
    holder_id = UUID(null=True, default=None)
    payload = JSONB(default="{}")
    created_at = Timestamptz(default=TimestamptzNow())
    dispatched_at = Timestamptz(null=True, default=None)
    dispatch_count = Integer(default=0)
    handled_at = Timestamptz(null=True, default=None)


class HandledEvent(Table, tablename="outbox_handled"):
    """Proof that a handler ran for an event; UNIQUE (event_id, handler) makes handlers idempotent."""

    id = BigSerial(primary_key=True)
    event_id = UUID()
    handler = Varchar(length=100)
    handled_at = Timestamptz(default=TimestamptzNow())
