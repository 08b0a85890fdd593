"""Event handlers that write the inbox. They run inside the outbox's per-handler transaction, and the
UNIQUE (holder_id, event_id, kind) key makes a second delivery a no-op even without that guard.

Events of one holder may be handled out of order (the relay hands them to parallel jobs), so a handler
never writes for a holder who is no longer active: a late `holder.registered` after `holder.deleted`
must not bring personal messages back."""

from __future__ import annotations

from wallet.db import connection
from wallet.outbox.service import Event, EventHandler

__all__ = ["HANDLERS"]

_INSERT = """
INSERT INTO inbox_message (holder_id, event_id, kind, params, created_at)
SELECT $1, $2, $3, $4::jsonb, $5 WHERE EXISTS (SELECT 1 FROM holder WHERE id = $1 AND status = 'active')
ON CONFLICT (holder_id, event_id, kind) DO NOTHING
"""


async def _post(event: Event, kind: str) -> None:
    assert event.holder_id is not None
    async with connection() as conn:
        await conn.execute(_INSERT, event.holder_id, event.event_id, kind, "{}", event.created_at)


async def welcome_new_holder(event: Event) -> None:
    await _post(event, "welcome")


async def warn_password_changed(event: Event) -> None:
    await _post(event, "password_changed")


async def erase_inbox_of_deleted_holder(event: Event) -> None:
    assert event.holder_id is not None
    async with connection() as conn:
        await conn.execute("DELETE FROM inbox_message WHERE holder_id = $1", event.holder_id)


HANDLERS: dict[str, list[EventHandler]] = {
    "holder.registered": [welcome_new_holder],
    "holder.password_changed": [warn_password_changed],
    "holder.deleted": [erase_inbox_of_deleted_holder],
}
