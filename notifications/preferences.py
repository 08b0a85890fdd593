"""A resident's notification settings: per trigger and channel (defaults from triggers.toml, only the
differences stored), quiet hours in their own time zone, and a daily push cap."""

from __future__ import annotations

import re
import uuid
from typing import Any

from notifications.catalogue import CHANNELS, triggers
from wallet.db import engine
from wallet.errors import DomainError

__all__ = ["DAILY_CAP_DEFAULT", "DAILY_CAP_MAX", "minutes_of", "settings_of", "update_settings"]

DAILY_CAP_DEFAULT = 10
DAILY_CAP_MAX = 100
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def minutes_of(clock: str, field: str) -> int:
    """'22:30' → 1350 (minutes after local midnight)."""
    m = _CLOCK.match(clock) if isinstance(clock, str) else None
    if m is None:
        raise DomainError("invalid", "invalid-quiet-hours", "Quiet hours are HH:MM, 00:00 to 23:59.", field=field)
    return int(m[1]) * 60 + int(m[2])


def _clock(minutes: int | None) -> str | None:
    return None if minutes is None else f"{minutes // 60:02d}:{minutes % 60:02d}"


async def settings_of(holder_id: uuid.UUID) -> dict[str, Any]:
    async with engine().transaction() as tx:
        conn = tx.connection
        row = await conn.fetchrow(
            "SELECT quiet_start, quiet_end, daily_cap FROM notification_settings WHERE holder = $1", holder_id)
        chosen = {(r["trigger"], r["channel"]): r["enabled"] for r in await conn.fetch(
            "SELECT trigger, channel, enabled FROM notification_preference WHERE holder = $1", holder_id)}
    quiet = None
    if row is not None and row["quiet_start"] is not None:
        quiet = {"start": _clock(row["quiet_start"]), "end": _clock(row["quiet_end"])}
    return {
        "quiet_hours": quiet,
        "daily_cap": row["daily_cap"] if row is not None else DAILY_CAP_DEFAULT,
        "triggers": [{
            "trigger": t.key, "name": {"zh-CN": t.name_zh, "en": t.name_en}, "locked": t.locked,
            "push": t.locked or chosen.get((t.key, "push"), t.push), "live": chosen.get((t.key, "live"), True),
            "quiet": t.quiet, "capped": t.capped,
        } for t in triggers().values()],
    }


async def update_settings(holder_id: uuid.UUID, changes: dict[str, Any]) -> dict[str, Any]:
    """`quiet_hours` ({start, end} as HH:MM, or null for none), `daily_cap` (0–100 pushes a local day),
    `triggers` ({trigger: {push?: bool, live?: bool}}). All or nothing."""
    quiet = changes.get("quiet_hours", ...)
    cap = changes.get("daily_cap")
    if cap is not None and not (isinstance(cap, int) and 0 <= cap <= DAILY_CAP_MAX):
        raise DomainError("invalid", "invalid-daily-cap", f"daily_cap is 0 to {DAILY_CAP_MAX} pushes a day.",
                          field="daily_cap")
    window: tuple[int | None, int | None] | None = None
    if quiet is None:
        window = (None, None)
    elif quiet is not ...:
        start = minutes_of(quiet.get("start"), "quiet_hours.start")
        end = minutes_of(quiet.get("end"), "quiet_hours.end")
        if start == end:
            raise DomainError("invalid", "invalid-quiet-hours", "Quiet hours must start and end at different times.",
                              field="quiet_hours")
        window = (start, end)
    choices: list[tuple[str, str, bool]] = []
    for key, by_channel in (changes.get("triggers") or {}).items():
        trigger = triggers().get(key)
        if trigger is None:
            raise DomainError("invalid", "unknown-trigger", f"No trigger is called {key}.", field=f"triggers.{key}")
        for channel, enabled in by_channel.items():
            if channel not in CHANNELS or not isinstance(enabled, bool):
                raise DomainError("invalid", "invalid-preference", "Each trigger takes push and live, true or false.",
                                  field=f"triggers.{key}.{channel}")
            if trigger.locked and channel == "push" and not enabled:
                raise DomainError("invalid", "locked-trigger", f"{trigger.name_en} notifications keep your account "
                                  "safe; their push cannot be turned off.", field=f"triggers.{key}.push")
            choices.append((key, channel, enabled))
    async with engine().transaction() as tx:
        conn = tx.connection
        await conn.execute(
            """INSERT INTO notification_settings (holder, quiet_start, quiet_end, daily_cap, updated_at)
               VALUES ($1, $2::smallint, $3::smallint, coalesce($4::int, $5::int), now())
               ON CONFLICT (holder) DO UPDATE SET
                 quiet_start = CASE WHEN $6::bool THEN $2::smallint ELSE notification_settings.quiet_start END,
                 quiet_end = CASE WHEN $6::bool THEN $3::smallint ELSE notification_settings.quiet_end END,
                 daily_cap = coalesce($4::int, notification_settings.daily_cap), updated_at = now()""",
            holder_id, window[0] if window else None, window[1] if window else None, cap, DAILY_CAP_DEFAULT,
            window is not None,
        )
        if choices:
            await conn.execute(
                """INSERT INTO notification_preference (holder, trigger, channel, enabled)
                   SELECT $1, t, c, e FROM unnest($2::text[], $3::text[], $4::bool[]) AS x(t, c, e)
                   ON CONFLICT (holder, trigger, channel) DO UPDATE SET enabled = EXCLUDED.enabled""",
                holder_id, [k for k, _, _ in choices], [c for _, c, _ in choices], [e for _, _, e in choices],
            )
    return await settings_of(holder_id)
