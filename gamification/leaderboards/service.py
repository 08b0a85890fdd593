"""Reading boards for residents and the public, the friends board, and operators' exclusions."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from gamification.leaderboards.boards import (
    GROUP_SCOPES,
    HOLDER_SCOPES,
    board_key,
    encode,
    group_keys,
    period_of,
)
from gamification.leaderboards.follow import CURSOR, reseat, seat_from, seat_row
from gamification.leaderboards.store import BoardRead, Standing, read_board
from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.outbox.service import Event, EventHandler, record_events

__all__ = ["Board", "exclude", "exclusions", "friends_board", "group_board", "handlers", "my_board", "public_board",
           "restore"]


@dataclass(frozen=True, slots=True)
class Board:
    scope: str
    scope_id: str
    period: str
    period_key: str
    read: BoardRead
    names: dict[str, dict[str, Any]]
    excluded_reason: str | None = None
    visible: bool = True


_NAMES: dict[str, tuple[float, dict[str, Any]]] = {}
NAMES_TTL_S = 10.0


async def _names(ids: list[str]) -> dict[str, dict[str, Any]]:
    """Nicknames and avatars only (never a phone, an e-mail or a login), kept per process for a few seconds:
    a popular board shows the same hundred names to every reader, and a renamed resident shows their new
    name within `NAMES_TTL_S`."""
    now = time.monotonic()
    out = {i: hit[1] for i in ids if (hit := _NAMES.get(i)) and hit[0] > now}
    missing = [i for i in ids if i not in out]
    if missing:
        async with connection() as conn:
            rows = await conn.fetch("SELECT id, nickname, avatar_url FROM holder WHERE id = ANY($1::uuid[])",
                                    [uuid.UUID(i) for i in missing])
        if len(_NAMES) > 100_000:
            _NAMES.clear()
        for r in rows:
            name = {"nickname": r["nickname"], "avatar_url": r["avatar_url"]}
            _NAMES[str(r["id"])] = (now + NAMES_TTL_S, name)
            out[str(r["id"])] = name
    return out


_TOP_NAMES: dict[int, tuple[list[Standing], dict[str, dict[str, Any]]]] = {}


async def _board_names(read: BoardRead, others: list[str]) -> dict[str, dict[str, Any]]:
    """The top's names are looked up once per cached top N (a list `read_board` hands out again while it is
    current, and re-reads at least every `TOP_TTL_S`), the others' (me, my neighbours) on every read."""
    hit = _TOP_NAMES.get(id(read.top))
    if hit is not None and hit[0] is read.top:
        return {**hit[1], **await _names(others)}
    names = await _names(sorted({s.member for s in read.top}.union(others)))
    if len(_TOP_NAMES) > 1_000:
        _TOP_NAMES.clear()
    _TOP_NAMES[id(read.top)] = (read.top, {s.member: names[s.member] for s in read.top if s.member in names})
    return names


async def _team_names(ids: list[str]) -> dict[str, dict[str, Any]]:
    async with connection() as conn:
        rows = await conn.fetch("SELECT id, name_zh, name_en FROM team WHERE id = ANY($1::bigint[])",
                                [int(i) for i in ids if i.isdigit()])
    return {str(r["id"]): {"nickname": r["name_zh"], "name_en": r["name_en"], "avatar_url": None} for r in rows}


def _check(scope: str, period: str) -> None:
    if scope not in HOLDER_SCOPES:
        raise DomainError("not_found", "unknown-board", f"Boards are {', '.join(HOLDER_SCOPES)} or friends.")
    if period not in ("today", "week", "month", "all"):
        raise DomainError("not_found", "unknown-period", "Periods are today, week, month and all.")


async def public_board(redis: Redis, tz: ZoneInfo, scope: str, scope_id: str, period: str, *, limit: int,
                       now: datetime | None = None) -> Board:
    """What anyone may see: opted-in residents only, by nickname."""
    _check(scope, period)
    p = period_of(period, now or datetime.now(UTC), tz)
    read = await read_board(redis, board_key(scope, scope_id, p), holder=None, limit=limit)
    return Board(scope, scope_id, period, p.key, read, await _board_names(read, []))


async def my_board(redis: Redis, tz: ZoneInfo, holder_id: uuid.UUID, scope: str, period: str, *, limit: int,
                   around: int = 2, now: datetime | None = None) -> Board:
    """A board of a scope I belong to, with my rank and neighbours (also when I keep out of public view)."""
    _check(scope, period)
    async with connection() as conn:
        row = await seat_row(conn, holder_id)
    seat = seat_from(row)
    ids = seat.scope_ids()
    if scope == "newcomer":
        ids["newcomer"] = "-"
    if scope not in ids:
        raise DomainError("not_found", "not-in-scope", f"You are not in a {scope} yet: set it in your profile or team.")
    p = period_of(period, now or datetime.now(UTC), tz)
    read = await read_board(redis, board_key(scope, ids[scope], p), holder=str(holder_id), limit=limit,
                            around=around)
    others = sorted({s.member for s in read.neighbours} | {str(holder_id)})
    return Board(scope, ids[scope], period, p.key, read, await _board_names(read, others),
                 excluded_reason=row["reason"], visible=seat.visible)


async def friends_board(redis: Redis, tz: ZoneInfo, holder_id: uuid.UUID, period: str, *,
                        now: datetime | None = None) -> Board:
    """Me and my friends, ranked like any board (friends see each other whether or not they appear
    publicly; anyone excluded from competition is left out)."""
    _check("global", period)
    async with connection() as conn:
        friends = await conn.fetch(
            """SELECT CASE WHEN holder_a = $1 THEN holder_b ELSE holder_a END AS friend FROM friendship
               WHERE holder_a = $1 OR holder_b = $1""",
            holder_id,
        )
        me_row = await seat_row(conn, holder_id)
    p = period_of(period, now or datetime.now(UTC), tz)
    members = [str(holder_id), *[str(r["friend"]) for r in friends]]
    values = await redis.hmget(board_key("global", "-", p) + ":v", members)
    scored = []
    for member, raw in zip(members, values, strict=True):
        if raw is None:
            continue
        mg, tick = (int(x) for x in (raw.decode() if isinstance(raw, bytes) else raw).split(":"))
        scored.append((encode(mg, tick), member, mg, tick))
    scored.sort(key=lambda s: (s[0], s[1]), reverse=True)  # equal scores: the larger id first, as Redis does
    top = [Standing(m, mg, tick, i) for i, (_, m, mg, tick) in enumerate(scored, start=1)]
    me = next((s for s in top if s.member == str(holder_id)), None)
    return Board("friends", "-", period, p.key, BoardRead(top, len(top), me, []), await _names(members),
                 excluded_reason=me_row["reason"], visible=seat_from(me_row).visible)


async def group_board(redis: Redis, tz: ZoneInfo, scope: str, board_id: str, period: str, *, limit: int,
                      now: datetime | None = None) -> Board:
    """The per-capita board: teams (everywhere) or communities (of one city), by grams per active resident."""
    if scope not in GROUP_SCOPES:
        raise DomainError("not_found", "unknown-board", "Per-capita boards are team and community.")
    _check("global", period)
    p = period_of(period, now or datetime.now(UTC), tz)
    key = group_keys(scope, board_id, "-", p)[0]
    read = await read_board(redis, key, holder=None, limit=limit, per_capita=True)
    names = await _team_names([s.member for s in read.top]) if scope == "team" else {
        s.member: {"nickname": s.member.split("|")[-1], "avatar_url": None} for s in read.top
    }
    return Board(f"{scope}-per-capita", board_id, period, p.key, read, names)


# -- exclusions -------------------------------------------------------------------------------------------


async def exclude(holder_id: uuid.UUID, reason: str, operator_id: uuid.UUID) -> dict[str, Any]:
    reason = reason.strip()
    if not reason or len(reason) > 300:
        raise DomainError("invalid", "reason-required", "Say in at most 300 characters why; the resident reads it.")
    async with engine().transaction() as tx:
        conn = tx.connection
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM holder WHERE id = $1)", holder_id):
            raise DomainError("not_found", "holder-not-found", "No resident has this id.")
        row = await conn.fetchrow(
            """WITH x AS (
                 INSERT INTO competition_exclusion (holder, reason, excluded_by, excluded_at)
                 VALUES ($1, $2, $3, now())
                 ON CONFLICT (holder) DO UPDATE SET reason = $2, excluded_by = $3 RETURNING *)
               SELECT x.*, h.nickname FROM x JOIN holder h ON h.id = x.holder""",
            holder_id, reason, operator_id,
        )
        await record_events([("competition.excluded", {"reason": reason}, holder_id)])
    return dict(row)


async def restore(holder_id: uuid.UUID) -> bool:
    async with engine().transaction() as tx:
        gone = await tx.connection.fetchval(
            "DELETE FROM competition_exclusion WHERE holder = $1 RETURNING holder", holder_id
        )
        if gone is not None:
            await record_events([("competition.restored", {}, holder_id)])
    return gone is not None


async def exclusions() -> list[dict[str, Any]]:
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT x.holder, x.reason, x.excluded_by, x.excluded_at, h.nickname FROM competition_exclusion x
               JOIN holder h ON h.id = x.holder ORDER BY x.excluded_at DESC"""
        )
    return [dict(r) for r in rows]


async def has_cursor(redis: Redis) -> bool:
    return bool(await redis.hexists(CURSOR, "done"))


def handlers(redis: Any, tz: ZoneInfo) -> dict[str, list[EventHandler]]:
    """Moves that change where a resident competes; `redis` is a callable giving this process's client."""

    def reseat_on(name: str) -> EventHandler:
        async def moved(event: Event) -> None:
            if event.holder_id is not None and await has_cursor(redis()):
                await reseat(redis(), event.holder_id, tz)

        # The handler's name is its idempotency key in the outbox: one per event it handles.
        moved.__qualname__ = "reseat_on_" + name.replace(".", "_")
        return moved

    names = ("holder.profile_changed", "holder.deleted", "team.joined", "team.left", "team.department_changed",
             "competition.excluded", "competition.restored")
    return {name: [reseat_on(name)] for name in names}
