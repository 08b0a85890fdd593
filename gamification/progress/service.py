"""A resident's level, streak and badges, computed from what is stored (the book, redemptions, donations),
so they never drift from it. Badges are awarded exactly once (UNIQUE per resident and badge): whenever the
facts are evaluated (after new book entries, a redemption, a donation, or a read) and however often."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from gamification.progress.rules import Badge, Streak, level_of, rules, streak_of
from wallet.book.snapshots import COMMITTED_BETWEEN
from wallet.db import connection, engine
from wallet.methodology.catalogue import behaviours
from wallet.outbox.service import Event, EventHandler, record_events

__all__ = ["HANDLERS", "Facts", "badges_of", "evaluate", "follow_book", "progress"]


@dataclass(slots=True)
class Facts:
    grams: int = 0
    actions: dict[str, int] | None = None  # behaviour → net credited actions
    days: list[date] | None = None
    redemptions: int = 0
    donations: int = 0
    today: date | None = None
    challenges: int = 0

    def streak(self) -> Streak:
        return streak_of(self.days or [], self.today or date.today())

    def value(self, badge: Badge) -> int:
        actions = self.actions or {}
        if badge.kind == "actions":
            wanted = badge.behaviours or tuple(actions)
            return sum(max(0, actions.get(b, 0)) for b in wanted)
        if badge.kind == "grams":
            return self.grams
        if badge.kind == "categories":
            return len({behaviours()[b].category for b, n in actions.items() if n > 0 and b in behaviours()})
        if badge.kind == "streak":
            return self.streak().longest
        if badge.kind == "redemptions":
            return self.redemptions
        if badge.kind == "challenges":
            return self.challenges
        return self.donations


_FACTS = """
SELECT h.id, h.time_zone, coalesce(b.total_mg, 0) AS total_mg,
       (SELECT count(*) FROM redemption r WHERE r.holder = h.id AND r.state = 'fulfilled') AS redemptions,
       (SELECT count(*) FROM ledger_transfer t JOIN ledger_account a ON a.id = t.debit_account
        WHERE a.holder = h.id AND a.purpose = 'available' AND t.kind = 'donation') AS donations,
       (SELECT count(*) FROM challenge_participant c WHERE c.holder = h.id) AS challenges
FROM holder h LEFT JOIN book_head b ON b.holder_id = h.id WHERE h.id = ANY($1::uuid[])
"""
_ACTIONS = """
SELECT holder, behaviour, sum(CASE WHEN kind = 'credit' THEN 1 ELSE -1 END)::int AS n
FROM book_entry WHERE holder = ANY($1::uuid[]) GROUP BY holder, behaviour
"""
_DAYS = """
SELECT holder, local_day FROM book_entry WHERE holder = ANY($1::uuid[])
GROUP BY holder, local_day HAVING sum(reduction_mg) > 0 ORDER BY holder, local_day
"""


async def facts_of(conn: asyncpg.Connection, holders: Sequence[uuid.UUID],
                   now: datetime | None = None) -> dict[uuid.UUID, Facts]:
    """Everything badges, levels and streaks read, for many residents in three queries."""
    now = now or datetime.now(UTC)
    out: dict[uuid.UUID, Facts] = {}
    for r in await conn.fetch(_FACTS, list(holders)):
        out[r["id"]] = Facts(r["total_mg"] // 1000, defaultdict(int), [], r["redemptions"], r["donations"],
                             now.astimezone(ZoneInfo(r["time_zone"])).date(), r["challenges"])
    for r in await conn.fetch(_ACTIONS, list(holders)):
        out[r["holder"]].actions[r["behaviour"]] = r["n"]  # type: ignore[index]
    for r in await conn.fetch(_DAYS, list(holders)):
        out[r["holder"]].days.append(r["local_day"])  # type: ignore[union-attr]
    return out


async def evaluate(holders: Sequence[uuid.UUID], *, now: datetime | None = None) -> list[tuple[uuid.UUID, str]]:
    """Award every badge these residents have reached and not yet received; returns the new awards."""
    if not holders:
        return []
    async with engine().transaction() as tx:
        conn = tx.connection
        facts = await facts_of(conn, holders, now)
        await _levels(conn, facts)
        due = [(h, b.code) for h, f in facts.items() for b in rules().badges if f.value(b) >= b.target]
        if not due:
            return []
        new = await conn.fetch(
            """INSERT INTO badge_award (holder, badge, awarded_at)
               SELECT h, b, now() FROM unnest($1::uuid[], $2::text[]) AS d(h, b)
               ON CONFLICT (holder, badge) DO NOTHING RETURNING holder, badge""",
            [h for h, _ in due], [b for _, b in due],
        )
        names = {b.code: b for b in rules().badges}
        await record_events([("badge.earned", {"badge": r["badge"], "name_zh": names[r["badge"]].name_zh,
                                               "name_en": names[r["badge"]].name_en}, r["holder"]) for r in new])
    return [(r["holder"], r["badge"]) for r in new]


async def _levels(conn: asyncpg.Connection, facts: dict[uuid.UUID, Facts]) -> None:
    """Record each level a resident reaches, with the ones below it, the first time (`level.reached` for the
    highest new one only): a reversal that takes them below a level and a credit back tell nothing new."""
    pairs = [(h, n) for h, f in facts.items() for n in range(2, level_of(f.grams)[0].number + 1)]
    if not pairs:
        return
    new = await conn.fetch(
        """INSERT INTO level_reached (holder, level, reached_at)
           SELECT h, l, now() FROM unnest($1::uuid[], $2::int[]) AS r(h, l)
           ON CONFLICT (holder, level) DO NOTHING RETURNING holder, level""",
        [h for h, _ in pairs], [n for _, n in pairs],
    )
    highest: dict[uuid.UUID, int] = {}
    for r in new:
        highest[r["holder"]] = max(highest.get(r["holder"], 0), r["level"])
    levels = {lv.number: lv for lv in rules().levels}
    await record_events([("level.reached", {"level": n, "name_zh": levels[n].name_zh, "name_en": levels[n].name_en},
                          h) for h, n in highest.items()])


async def progress(holder_id: uuid.UUID, *, now: datetime | None = None) -> dict[str, Any]:
    """Level, streak and every badge with its progress (earned ones with when)."""
    await evaluate([holder_id], now=now)
    async with connection() as conn:
        facts = (await facts_of(conn, [holder_id], now))[holder_id]
        earned = {r["badge"]: r["awarded_at"] for r in await conn.fetch(
            "SELECT badge, awarded_at FROM badge_award WHERE holder = $1", holder_id)}
    level, following = level_of(facts.grams)
    return {
        "grams": facts.grams, "level": level, "next_level": following, "streak": facts.streak(),
        "badges": [{"badge": b, "value": min(facts.value(b), b.target), "earned_at": earned.get(b.code)}
                   for b in rules().badges],
    }


async def badges_of(holder_id: uuid.UUID) -> list[dict[str, Any]]:
    async with connection() as conn:
        return [dict(r) for r in await conn.fetch(
            "SELECT badge, awarded_at FROM badge_award WHERE holder = $1 ORDER BY awarded_at", holder_id)]


_CHANGED = f"""
SELECT DISTINCT e.holder FROM book_entry e
WHERE {COMMITTED_BETWEEN}
"""  # noqa: S608 - constant fragments


async def follow_book(*, batch: int = 500) -> int:
    """The worker's step: evaluate the residents whose books changed since the cursor's snapshot, then move
    the cursor (the row lock keeps two workers apart; awards are once-only whatever happens)."""
    async with engine().transaction() as tx:
        conn = tx.connection
        done = await conn.fetchval("SELECT snapshot FROM progress_cursor WHERE id = 1 FOR UPDATE SKIP LOCKED")
        if done is None:  # another worker is on it
            return 0
        target = await conn.fetchval("SELECT pg_current_snapshot()::text")
        holders = [r["holder"] for r in await conn.fetch(_CHANGED, done, target)]
        for start in range(0, len(holders), batch):
            await evaluate(holders[start:start + batch])
        await conn.execute("UPDATE progress_cursor SET snapshot = $1, updated_at = now() WHERE id = 1", target)
    return len(holders)


def _evaluate_on(name: str) -> EventHandler:
    async def evaluate_holder(event: Event) -> None:
        if event.holder_id is not None:
            await evaluate([event.holder_id])

    # The handler's name is its idempotency key in the outbox: one per event it handles.
    evaluate_holder.__qualname__ = "evaluate_badges_on_" + name.replace(".", "_")
    return evaluate_holder


HANDLERS: dict[str, list[EventHandler]] = {
    name: [_evaluate_on(name)] for name in ("redemption.fulfilled", "donation.made", "challenge.joined")
}
