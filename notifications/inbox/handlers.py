"""Event handlers that write the inbox. They run inside the outbox's per-handler transaction, and the
UNIQUE (holder_id, event_id, kind) key makes a second delivery a no-op even without that guard.

Events of one holder may be handled out of order (the relay hands them to parallel jobs), so a handler
never writes for a holder who is no longer active: a late `holder.registered` after `holder.deleted`
must not bring personal messages back."""

from __future__ import annotations

from typing import Any

import msgspec

from wallet.db import connection
from wallet.outbox.service import Event, EventHandler

__all__ = ["HANDLERS"]

_INSERT = """
INSERT INTO inbox_message (holder_id, event_id, kind, params, created_at)
SELECT $1, $2, $3, $4::jsonb, $5 WHERE EXISTS (SELECT 1 FROM holder WHERE id = $1 AND status = 'active')
ON CONFLICT (holder_id, event_id, kind) DO NOTHING
"""


async def _post(event: Event, kind: str, params: dict[str, Any] | None = None) -> None:
    assert event.holder_id is not None
    async with connection() as conn:
        await conn.execute(
            _INSERT, event.holder_id, event.event_id, kind, msgspec.json.encode(params or {}).decode(),
            event.created_at,
        )


async def _partner_names(partner_id: str) -> dict[str, str]:
    """Both names are stored, so the message reads right in whichever language the holder picks later."""
    async with connection() as conn:
        row = await conn.fetchrow("SELECT name, name_en FROM partner WHERE id = $1::uuid", partner_id)
    name = row["name"] if row else "?"
    return {"partner": name, "partner_en": (row["name_en"] if row else "") or name}


async def tell_partner_linked(event: Event) -> None:
    await _post(event, "partner_linked", await _partner_names(event.payload["partner_id"]))


async def tell_partner_unlinked(event: Event) -> None:
    await _post(event, "partner_unlinked", await _partner_names(event.payload["partner_id"]))


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
    "partner.linked": [tell_partner_linked],
    "partner.unlinked": [tell_partner_unlinked],
}
