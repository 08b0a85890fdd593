"""Which domain handlers run for which outbox event: the one place packages are wired to each other's
events. Domain packages export their handler tables; only this edge module knows them all."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from redis.asyncio import Redis

from api.settings import board_zone
from gamification.friends.service import HANDLERS as FRIEND_HANDLERS
from gamification.leaderboards.service import handlers as leaderboard_handlers
from gamification.progress.service import HANDLERS as PROGRESS_HANDLERS
from gamification.teams.service import HANDLERS as TEAM_HANDLERS
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


_REDIS: dict[int, Redis] = {}


def _redis() -> Redis:
    """This event loop's Redis client for handlers that need one (the worker's and a test's loop differ)."""
    loop = id(asyncio.get_running_loop())
    if loop not in _REDIS:
        _REDIS[loop] = Redis.from_url(os.environ["REDIS_URL"], socket_timeout=5)
    return _REDIS[loop]


BOARD_ZONE = board_zone()
LEADERBOARD_HANDLERS = leaderboard_handlers(_redis, BOARD_ZONE)

EVENT_HANDLERS = _merge(
    INBOX_HANDLERS, DONATION_HANDLERS, LEADERBOARD_HANDLERS, PROGRESS_HANDLERS, FRIEND_HANDLERS, TEAM_HANDLERS
)
