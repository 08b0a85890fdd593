"""What a resident reads from their book: totals by period, category and sub-account, a daily series for
charts, entries page by page, and the activities with their verdicts. Periods are the holder's local
calendar (their time zone): today, this week from Monday, this month, all time."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from wallet.db import connection
from wallet.errors import DomainError

__all__ = [
    "activities_page", "daily_series", "decode_cursor", "decode_keyset", "encode_cursor", "entries_page",
    "iter_entries", "local_today", "summary",
]

DAYS_MAX = 366


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([str(p) for p in parts])).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[str]:
    try:
        parts = msgspec.json.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, msgspec.DecodeError) as exc:
        raise DomainError("invalid", "invalid-cursor", "cursor must be a next_cursor from a previous page.") from exc
    if not isinstance(parts, list) or len(parts) != arity or not all(isinstance(p, str) for p in parts):
        raise DomainError("invalid", "invalid-cursor", "cursor must be a next_cursor from a previous page.")
    return parts


def decode_keyset(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """A (time, id) keyset cursor from `encode_cursor(time.isoformat(), id)`, as the activity lists page."""
    if cursor is None:
        return None
    at, ident = decode_cursor(cursor, 2)
    try:
        return datetime.fromisoformat(at), uuid.UUID(ident)
    except ValueError as exc:
        raise DomainError("invalid", "invalid-cursor", "cursor must be a next_cursor from a previous page.") from exc


def local_today(time_zone: str, now: datetime | None = None) -> date:
    return (now or datetime.now(ZoneInfo(time_zone))).astimezone(ZoneInfo(time_zone)).date()


async def summary(holder_id: uuid.UUID, time_zone: str, *, now: datetime | None = None) -> dict[str, Any]:
    today = local_today(time_zone, now)
    week = today - timedelta(days=today.weekday())
    month = today.replace(day=1)
    async with connection() as conn:
        totals = await conn.fetchrow(
            """SELECT coalesce(sum(reduction_mg) FILTER (WHERE local_day = $2), 0)::bigint AS today,
                      coalesce(sum(reduction_mg) FILTER (WHERE local_day >= $3), 0)::bigint AS week,
                      coalesce(sum(reduction_mg) FILTER (WHERE local_day >= $4), 0)::bigint AS month,
                      coalesce(sum(reduction_mg), 0)::bigint AS all_time,
                      coalesce(sum(energy), 0)::bigint AS energy,
                      count(*) FILTER (WHERE kind = 'credit') AS credits
               FROM book_entry WHERE holder = $1""",
            holder_id, today, week, month,
        )
        categories = await conn.fetch(
            """SELECT category, sum(reduction_mg)::bigint AS all_time,
                      coalesce(sum(reduction_mg) FILTER (WHERE local_day >= $2), 0)::bigint AS month
               FROM book_entry WHERE holder = $1 GROUP BY category ORDER BY sum(reduction_mg) DESC, category""",
            holder_id, month,
        )
        sources = await conn.fetch(
            """SELECT s.id, s.kind, s.status, p.name, p.name_en, coalesce(sum(e.reduction_mg), 0)::bigint AS all_time,
                      count(e.id) FILTER (WHERE e.kind = 'credit') AS credits
               FROM sub_account s LEFT JOIN partner p ON p.id = s.partner
               LEFT JOIN book_entry e ON e.sub_account = s.id AND e.holder = s.holder
               WHERE s.holder = $1 GROUP BY s.id, s.kind, s.status, p.name, p.name_en, s.linked_at
               ORDER BY s.kind = 'self' DESC, s.linked_at""",
            holder_id,
        )
    return {
        "time_zone": time_zone, "today": today, "totals": dict(totals),
        "by_category": [dict(r) for r in categories], "by_sub_account": [dict(r) for r in sources],
    }


async def daily_series(holder_id: uuid.UUID, first: date, last: date) -> list[dict[str, Any]]:
    """One point per local day, zeros included, so a chart needs no gap-filling."""
    if last < first or (last - first).days >= DAYS_MAX:
        raise DomainError("invalid", "invalid-range", f"Ask for 1 to {DAYS_MAX} days, `from` not after `to`.")
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT local_day, sum(reduction_mg)::bigint AS mg, count(*) FILTER (WHERE kind = 'credit') AS credits
               FROM book_entry WHERE holder = $1 AND local_day BETWEEN $2 AND $3 GROUP BY local_day""",
            holder_id, first, last,
        )
    by_day = {r["local_day"]: r for r in rows}
    out = []
    day = first
    while day <= last:
        row = by_day.get(day)
        out.append({"day": day, "reduction_mg": row["mg"] if row else 0, "credits": row["credits"] if row else 0})
        day += timedelta(days=1)
    return out


_ENTRY_COLUMNS = """e.id, e.seq, e.kind, e.activity, a.external_id, e.reverses, e.sub_account, e.partner,
    p.name AS partner_name, e.note,
    e.trust_tier, e.behaviour, e.behaviour_version, e.methodology_release, e.category, e.quantity, e.reduction_mg,
    e.energy, e.occurred_at, e.local_day, e.recorded_at, e.prev_hash, e.entry_hash"""


async def entries_page(holder_id: uuid.UUID, *, after_seq: int, limit: int) -> list[dict[str, Any]]:
    async with connection() as conn:
        rows = await conn.fetch(
            f"""SELECT {_ENTRY_COLUMNS} FROM book_entry e JOIN activity a ON a.id = e.activity
                LEFT JOIN partner p ON p.id = e.partner
                WHERE e.holder = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3""",  # noqa: S608 - constant columns
            holder_id, after_seq, limit,
        )
    return [dict(r) for r in rows]


async def iter_entries(holder_id: uuid.UUID, *, page: int = 1000) -> AsyncIterator[dict[str, Any]]:
    """The whole book in chain order, a page at a time, for exports of any size."""
    after = 0
    while True:
        rows = await entries_page(holder_id, after_seq=after, limit=page)
        for row in rows:
            yield row
        if len(rows) < page:
            return
        after = rows[-1]["seq"]


async def activities_page(
    holder_id: uuid.UUID, *, before: tuple[datetime, uuid.UUID] | None, limit: int, verdict: str | None
) -> list[dict[str, Any]]:
    """Newest first (by when we received them), keyset-paginated on (received_at, id)."""
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT a.id, a.external_id, a.behaviour, a.quantity, a.occurred_at, a.ended_at, a.received_at,
                      a.received_via, a.verdict, a.reason_code, a.reason_params, a.credited_quantity, a.credited_mg,
                      a.behaviour_version, a.methodology_release, a.sub_account, s.status AS source_status,
                      s.kind AS source_kind, p.name AS partner_name, p.name_en AS partner_name_en,
                      r.note AS reversal_note, r.recorded_at AS reversed_at
               FROM activity a JOIN sub_account s ON s.id = a.sub_account LEFT JOIN partner p ON p.id = a.partner
               LEFT JOIN book_entry r ON r.activity = a.id AND r.kind = 'reversal' AND r.holder = a.holder
               WHERE a.holder = $1 AND ($2::timestamptz IS NULL OR (a.received_at, a.id) < ($2, $3))
                 AND ($4::text IS NULL OR a.verdict = $4)
               ORDER BY a.received_at DESC, a.id DESC LIMIT $5""",
            holder_id, before[0] if before else None, before[1] if before else None, verdict, limit,
        )
    out = []
    for row in rows:
        item = dict(row)
        if isinstance(item["reason_params"], str):
            item["reason_params"] = msgspec.json.decode(item["reason_params"])
        out.append(item)
    return out
