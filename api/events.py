"""Which domain handlers run for which outbox event: the one place packages are wired to each other's
events. Domain packages export their handler tables; only this edge module knows them all."""

from __future__ import annotations

from collections.abc import Sequence

from notifications.inbox.handlers import HANDLERS as INBOX_HANDLERS
from wallet.donations.service import HANDLERS as DONATION_HANDLERS
from wallet.outbox.service import EventHandler

__all__ = ["EVENT_HANDLERS"]


def _merge(*tables: dict[str, list[EventHandler]]) -> dict[str, Sequence[EventHandler]]:
    merged: dict[str, list[EventHandler]] = {}
    for table in tables:
        for name, handlers in table.items():
            merged.setdefault(name, []).extend(handlers)
    return merged


EVENT_HANDLERS = _merge(INBOX_HANDLERS, DONATION_HANDLERS)
