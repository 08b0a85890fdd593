"""Writing and reading boards in Valkey/Redis: one book entry is one APPLY (O(log N) per board, all its
boards and periods in one script), a batch of entries is one MULTI round trip, a read is one READ."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from gamification.leaderboards.boards import (
    PERIODS,
    Period,
    Seat,
    board_key,
    decode,
    group_keys,
    period_of,
)
from gamification.leaderboards.scripts import APPLY, READ, REMOVE

__all__ = [
    "GENERATION", "SEATS", "BoardRead", "Entry", "Part", "Standing", "apply_commands", "boards_of", "entry_parts",
    "read_board", "remove_commands", "scripts",
]

SEATS = "lb:seats"
GENERATION = "lb:generation"  # moved on by every write to any board (APPLY, REMOVE, a rebuild's swap)
TOP_TTL_S = 10.0  # a cached top N is re-read at least this often, for renamed residents' new nicknames


@dataclass(frozen=True, slots=True)
class Entry:
    holder: str
    reduction_mg: int
    occurred_at: datetime
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Part:
    """An amount for one period's boards: `regular` ones (every scope of the seat and its groups) and/or the
    newcomer league."""

    period: Period
    mg: int
    recorded_at: datetime
    regular: bool = True
    newcomer: bool = False


def boards_of(seat: Seat, period: Period, *, regular: bool = True,
              newcomer: bool = True) -> tuple[list[str], list[tuple[str, str, str, str]]]:
    """The resident boards (global first) and group boards (keys and group) of a seat for one period."""
    if seat.excluded:
        return [], []
    keys = [board_key(scope, scope_id, period) for scope, scope_id in seat.scope_ids().items()] if regular else []
    if newcomer:
        keys.append(board_key("newcomer", "-", period))
    groups = [(*group_keys(scope, board_id, group, period), group)
              for scope, (board_id, group) in seat.group_ids().items()] if regular else []
    return keys, groups


def entry_parts(entry: Entry, seat: Seat, tz: ZoneInfo, now: datetime) -> list[Part]:
    """An entry counts on the newcomer league if it happened in its resident's first 30 days and they are
    still in them (the league is for newcomers; the nightly rebuild lets the others go)."""
    newcomer = entry.occurred_at < seat.newcomer_until and now < seat.newcomer_until
    return [Part(period_of(name, entry.occurred_at, tz), entry.reduction_mg, entry.recorded_at, True, newcomer)
            for name in PERIODS]


def apply_commands(holder: str, seat: Seat, parts: list[Part]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of one APPLY adding `parts` to the resident's boards."""
    keys: list[str] = []
    holder_args: list[Any] = []
    triples: list[str] = []
    group_args: list[Any] = []
    for part in parts:
        tick, exp = part.period.tick(part.recorded_at), part.period.expire_at or 0
        boards, groups = boards_of(seat, part.period, regular=part.regular, newcomer=part.newcomer)
        for key in boards:
            keys += [key, key + ":v"]
            holder_args += [part.mg, tick, exp]
        for z, h, s, group in groups:
            triples += [z, h, s]
            group_args += [group, part.mg, tick, exp]
    args = [holder, len(keys) // 2, len(triples) // 3, "1" if seat.visible else "0", seat.pack(),
            *holder_args, *group_args]
    return [*keys, *triples, SEATS, GENERATION], args


def remove_commands(holder: str, seat: Seat, period: Period) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of one REMOVE taking the resident off every board of `seat` for one period (as if not
    excluded: an exclusion may just have been added)."""
    boards, groups = boards_of(replace(seat, excluded=False), period)
    keys = [k for key in boards for k in (key, key + ":v")] + [k for z, h, s, _ in groups for k in (z, h, s)]
    return [*keys, GENERATION], [holder, len(boards), len(groups), *[g for *_, g in groups]]


@dataclass(frozen=True, slots=True)
class Standing:
    member: str
    mg: int
    tick: int
    rank: int


@dataclass(frozen=True, slots=True)
class BoardRead:
    top: list[Standing]
    count: int
    me: Standing | None
    neighbours: list[Standing]
    generation: str = ""  # the boards' generation the top is from ('' when there is none to compare)


@dataclass(frozen=True, slots=True)
class _Top:
    generation: str
    top: list[Standing]
    until: float


# The top N of a popular board is what every reader asks for and changes only when the follower writes: kept per
# process and per (board, N, per capita), and used only while Valkey's generation is the one it was read at.
_TOPS: dict[tuple[str, int, bool], _Top] = {}


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _exact(raw: Any) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    mg, tick = text.split(":")
    return int(mg), int(tick)


def _standings(rows: list[Any], first_rank: int) -> list[Standing]:
    out = []
    for i, (member, score, exact) in enumerate(rows):
        name = member.decode() if isinstance(member, bytes) else member
        mg, tick = _exact(exact) if exact else (decode(float(score))[0] * 1000, decode(float(score))[1])
        out.append(Standing(name, mg, tick, first_rank + i))
    return out


def scripts(redis: Redis) -> dict[str, Any]:
    """The scripts bound to this client (EVALSHA, loaded again after a server restart or SCRIPT FLUSH)."""
    bound = getattr(redis, "_cw_leaderboard_scripts", None)
    if bound is None:
        bound = {"apply": redis.register_script(APPLY), "remove": redis.register_script(REMOVE),
                 "read": redis.register_script(READ)}
        redis._cw_leaderboard_scripts = bound  # type: ignore[attr-defined]
    return bound


async def read_board(redis: Redis, key: str, *, holder: str | None, limit: int, around: int = 2,
                     per_capita: bool = False) -> BoardRead:
    """`per_capita`: a group board, whose rows show the grams per active resident they are ranked by, not the
    group's total."""
    slot, now = (key, limit, per_capita), time.monotonic()
    cached = _TOPS.get(slot)
    known = cached.generation if cached is not None and cached.until > now else ""
    top, count, me, rank, near, generation = await scripts(redis)["read"](
        keys=[key, key + ":v", GENERATION], args=[holder or "", limit, around, known])
    generation = _text(generation) if generation else ""
    me_standing = None
    neighbours: list[Standing] = []
    if rank:
        mg, tick = _exact(me)
        me_standing = Standing(holder or "", mg, tick, int(rank))
        neighbours = _standings(near, max(1, int(rank) - around))
    if top is None and cached is not None:
        standings = cached.top
    else:
        if per_capita:
            top = [(m, score, False) for m, score, _ in top or []]
        standings = _standings(top or [], 1)
        if generation:
            if len(_TOPS) > 10_000:
                _TOPS.clear()
            _TOPS[slot] = _Top(generation, standings, now + TOP_TTL_S)
    return BoardRead(standings, int(count), me_standing, neighbours, generation)
