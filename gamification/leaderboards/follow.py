"""Keeping the boards in step with the book, exactly.

The boards follow book entries by PostgreSQL snapshots, not by events: a cursor in Redis holds the snapshot
whose entries are all applied (`done`); a step takes a new snapshot (`target`) and applies the entries of
transactions visible in it but not in `done` (each entry records its transaction id), in batches; each batch
and the cursor's progress commit together in one MULTI, so a crash repeats nothing and loses nothing. A step
runs every second in the worker (`follow_book`), so boards trail the book by about a second, and a busy
ingestion costs two Redis round trips per batch of entries (the seats, then one MULTI), not a job per entry.

`rebuild` recomputes every current board from one REPEATABLE READ snapshot of the book and swaps them in
with the cursor set to that snapshot: exact by construction, and the nightly job and the Redis-wiped
recovery path. A resident who moves (profile, team, visibility, exclusion) is `reseat`ed: taken off their
old boards and given, on their new ones, their totals from the entries the cursor has applied.

All three hold one Redis lease (`wallet.lease`), so they never interleave, and a killed worker's step frees
the boards within seconds.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from redis.asyncio import Redis

from gamification.leaderboards.boards import NEWCOMER_DAYS, Period, Seat, current_periods
from gamification.leaderboards.store import (
    GENERATION,
    SEATS,
    Entry,
    Part,
    apply_commands,
    entry_parts,
    remove_commands,
    scripts,
)
from wallet.book.snapshots import COMMITTED_BETWEEN
from wallet.db import connection
from wallet.lease import Lease, lease

__all__ = ["CURSOR", "LOCK", "follow", "rebuild", "reseat", "seat_from", "seat_row"]

CURSOR = "lb:cursor"
LOCK = "lb:lock"
BATCH = 1000  # one MULTI per batch: small enough not to hold Valkey long, large enough to sum

SEAT_COLUMNS = """h.city, h.district, h.community, (h.show_on_public_leaderboards AND h.status = 'active') AS public,
    h.created_at, m.team, m.department, x.holder IS NOT NULL AS excluded"""
SEAT_JOINS = """LEFT JOIN team_member m ON m.holder = h.id AND m.left_at IS NULL
    LEFT JOIN competition_exclusion x ON x.holder = h.id"""


def seat_from(row: Any) -> Seat:
    return Seat(row["city"], row["district"], row["community"], row["team"], row["department"],
                bool(row["public"]) and not row["excluded"], bool(row["excluded"]),
                row["created_at"] + timedelta(days=NEWCOMER_DAYS))


_NEW_ENTRIES = f"""
SELECT e.id, e.txid::text AS txid, e.holder, e.reduction_mg, e.occurred_at, e.recorded_at, {SEAT_COLUMNS}
FROM book_entry e JOIN holder h ON h.id = e.holder {SEAT_JOINS}
WHERE {COMMITTED_BETWEEN} AND (e.txid, e.id) > ($3::text::xid8, $4::bigint)
ORDER BY e.txid, e.id LIMIT $5
"""  # noqa: S608 - constant fragments


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def follow(redis: Redis, tz: ZoneInfo, *, batch: int = BATCH) -> int | None:
    """One step: apply what the book gained since the last. None when there is no cursor yet (run `rebuild`)
    or another step, rebuild or reseat holds the lock."""
    async with lease(redis, LOCK, wait=0.05) as held:
        if not held or not await redis.hexists(CURSOR, "done"):
            return None
        return await _step(redis, tz, held, start=True, batch=batch)


async def _step(redis: Redis, tz: ZoneInfo, held: Lease, *, start: bool, batch: int = BATCH) -> int:
    """Under the lease: finish the step in progress (after a crash), or with `start` take a new target. A lease
    lost on the way stops the step as a crash would: the cursor says how far it got, for the next holder."""
    state = {_text(k): _text(v) for k, v in (await redis.hgetall(CURSOR)).items()}
    target = state.get("target") or ""
    after = (state.get("after_txid") or "0", int(state.get("after_id") or 0))
    applied = 0
    async with connection() as conn:
        if not target:
            if not start:
                return 0
            target = await conn.fetchval("SELECT pg_current_snapshot()::text")
            after = ("0", 0)
            await redis.hset(CURSOR, mapping={"target": target, "after_txid": "0", "after_id": "0"})
        while True:
            if not held:
                raise TimeoutError("the leaderboards' lease was lost mid-step; the next step finishes it")
            rows = await conn.fetch(_NEW_ENTRIES, state["done"], target, after[0], after[1], batch)
            if rows:
                after = (rows[-1]["txid"], rows[-1]["id"])
                await _apply_rows(redis, rows, tz, {"after_txid": after[0], "after_id": str(after[1])})
                applied += len(rows)
            if len(rows) < batch:
                break
    await redis.hset(CURSOR, mapping={"done": target, "target": "", "after_txid": "0", "after_id": "0"})
    return applied


async def _apply_rows(redis: Redis, rows: list[asyncpg.Record], tz: ZoneInfo, cursor: dict[str, str]) -> None:
    """Each entry counts where its resident competes as the boards know it (the seat stored with their last
    entry or move); a move takes effect when its event reseats them, which moves everything at once. A
    resident's first entry seats them where PostgreSQL says. A batch's entries are summed per resident and
    period first (sums and latest times commute), so a busy resident costs one script per batch, not one per
    entry."""
    apply = scripts(redis)["apply"]
    holders = sorted({str(r["holder"]) for r in rows})
    stored = dict(zip(holders, await redis.hmget(SEATS, holders), strict=True))
    now = datetime.now(UTC)
    seats: dict[str, Seat] = {}
    sums: dict[str, dict[tuple[str, bool], list[Any]]] = {}
    for row in rows:
        entry = Entry(str(row["holder"]), row["reduction_mg"], row["occurred_at"], row["recorded_at"])
        raw = stored.get(entry.holder)
        seat = seats.setdefault(entry.holder, Seat.unpack(raw) if raw is not None else seat_from(row))
        mine = sums.setdefault(entry.holder, {})
        for part in entry_parts(entry, seat, tz, now):
            for newcomer in (False, True) if part.newcomer else (False,):
                slot = mine.setdefault((part.period.key, newcomer), [part.period, 0, part.recorded_at])
                slot[1] += part.mg
                slot[2] = max(slot[2], part.recorded_at)
    async with redis.pipeline(transaction=True) as pipe:
        for holder, parts in sums.items():
            combined = [Part(period, mg, at, not newcomer, newcomer)
                        for (_, newcomer), (period, mg, at) in parts.items()]
            keys, args = apply_commands(holder, seats[holder], combined)
            await apply(keys=keys, args=args, client=pipe)
        pipe.hset(CURSOR, mapping=cursor)
        await pipe.execute()


# -- rebuild --------------------------------------------------------------------------------------------


def _totals_sql(periods: list[Period], *, one_holder: bool = False) -> str:
    """Per resident: their seat, and per current period the sum, latest recording time and count of their
    entries, overall and within their newcomer days. Parameters: each bounded period's start and end, then
    the snapshot whose entries count, then (with `one_holder`) the resident."""
    parts, n = [], 0
    for period in periods:
        inside = "true"
        if period.start is not None:
            inside = f"e.occurred_at >= ${n + 1} AND e.occurred_at < ${n + 2}"
            n += 2
        young = f"({inside}) AND e.occurred_at < h.created_at + interval '{NEWCOMER_DAYS} days'"
        for tag, cond in ((period.name, inside), (f"new_{period.name}", young)):
            parts.append(f"sum(e.reduction_mg) FILTER (WHERE {cond})::bigint AS {tag}_mg, "
                         f"max(e.recorded_at) FILTER (WHERE {cond}) AS {tag}_at, "
                         f"count(*) FILTER (WHERE {cond}) AS {tag}_n")
    holder = f" AND e.holder = ${n + 2}" if one_holder else ""
    return f"""
SELECT e.holder, {", ".join(parts)}, {SEAT_COLUMNS}
FROM book_entry e JOIN holder h ON h.id = e.holder {SEAT_JOINS}
WHERE pg_visible_in_snapshot(e.txid, ${n + 1}::text::pg_snapshot){holder}
GROUP BY e.holder, h.id, m.team, m.department, x.holder"""  # noqa: S608 - generated from constants


def _bounds(periods: list[Period]) -> list[Any]:
    out: list[Any] = []
    for period in periods:
        if period.start is not None:
            out += [period.start, period.end]
    return out


def _parts(row: Any, periods: list[Period], now: datetime) -> list[Part]:
    parts = []
    newcomer = now < row["created_at"] + timedelta(days=NEWCOMER_DAYS)  # the league is for the first 30 days
    for period in periods:
        if row[f"{period.name}_n"]:
            parts.append(Part(period, row[f"{period.name}_mg"], row[f"{period.name}_at"], True, False))
        if newcomer and row[f"new_{period.name}_n"]:
            parts.append(Part(period, row[f"new_{period.name}_mg"], row[f"new_{period.name}_at"], False, True))
    return parts


async def rebuild(redis: Redis, tz: ZoneInfo, *, now: datetime | None = None) -> dict[str, int]:
    """Recreate every current board (today, this week, this month, all time, every scope) from the book."""
    now = now or datetime.now(UTC)
    periods = current_periods(tz, now)
    async with lease(redis, LOCK, wait=120) as held:
        if not held:
            raise TimeoutError("the leaderboards are locked by another rebuild")
        async with connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_current_snapshot()::text")
            rows = await conn.fetch(_totals_sql(periods), *_bounds(periods), snapshot)
        prefix = f"lbtmp:{uuid.uuid4().hex}:"
        written = await _write_temp(redis, prefix, rows, periods, now)
        if not held:
            await redis.delete(prefix + GENERATION, *(prefix + key for key in written))
            raise TimeoutError("the leaderboards' lease was lost during the rebuild; nothing was swapped in")
        await _swap(redis, prefix, written, periods, snapshot)
        return {"residents": len(rows), "boards": len([k for k in written if k.startswith("lb:")])}


async def _write_temp(redis: Redis, prefix: str, rows: list[asyncpg.Record], periods: list[Period],
                      now: datetime) -> set[str]:
    """Write every board under `prefix`; returns the live names written. Uses the same APPLY as the
    follower, so a rebuilt board is byte for byte what following the book produces."""
    apply = scripts(redis)["apply"]
    written: set[str] = set()
    for start in range(0, len(rows), 500):
        async with redis.pipeline(transaction=False) as pipe:
            for row in rows[start:start + 500]:
                seat = seat_from(row)
                keys, args = apply_commands(str(row["holder"]), seat, _parts(row, periods, now))
                written.update(k for k in keys if k != GENERATION)
                await apply(keys=[prefix + k for k in keys], args=args, client=pipe)
            await pipe.execute()
    return written


async def _swap(redis: Redis, prefix: str, written: set[str], periods: list[Period], snapshot: str) -> None:
    live: set[str] = {SEATS}
    for period in periods:
        for pattern in (f"lb:*:{period.key}", f"lb:*:{period.key}:v", f"lbpc:*:{period.key}*"):
            live.update([_text(k) async for k in redis.scan_iter(match=pattern, count=1000)])
    names = sorted(written)
    async with redis.pipeline(transaction=False) as pipe:
        for key in names:
            pipe.exists(prefix + key)
        present = [key for key, there in zip(names, await pipe.execute(), strict=True) if there]
    async with redis.pipeline(transaction=True) as pipe:
        for key in live - set(present):
            pipe.delete(key)
        for key in present:  # a board whose residents all keep out of view has a total hash but no sorted set
            pipe.rename(prefix + key, key)
        pipe.delete(prefix + GENERATION)
        pipe.set(GENERATION, time.time_ns() // 1000, nx=True)
        pipe.incr(GENERATION)
        pipe.hset(CURSOR, mapping={"done": snapshot, "target": "", "after_txid": "0", "after_id": "0"})
        await pipe.execute()


# -- reseat ---------------------------------------------------------------------------------------------

_ONE = f"""
SELECT h.id, x.reason, {SEAT_COLUMNS} FROM holder h {SEAT_JOINS} WHERE h.id = $1
"""  # noqa: S608 - constant fragments


async def seat_row(conn: asyncpg.Connection, holder_id: uuid.UUID) -> asyncpg.Record | None:
    """Where a resident competes now, and why not if they are excluded (`reason`)."""
    return await conn.fetchrow(_ONE, holder_id)


async def reseat(redis: Redis, holder_id: uuid.UUID, tz: ZoneInfo, *, now: datetime | None = None) -> bool:
    """Put a resident on the boards of where they compete now. Their totals come from the entries the cursor
    has applied (visible in `done`), so the follower adds the rest once, on the new boards."""
    now = now or datetime.now(UTC)
    periods = current_periods(tz, now)
    async with lease(redis, LOCK, wait=30) as held:
        if not held:
            raise TimeoutError("the leaderboards are busy; the event will be retried")
        # A step a crash left half done has entries on the boards beyond `done`: finish it, so `done` is
        # exactly what the boards hold.
        await _step(redis, tz, held, start=False)
        done = _text(await redis.hget(CURSOR, "done") or b"")
        old_raw = await redis.hget(SEATS, str(holder_id))
        async with connection() as conn:
            row = await seat_row(conn, holder_id)
            if row is None:
                return False
            new = seat_from(row)
            if old_raw is not None and Seat.unpack(old_raw) == new:
                return False
            totals = await conn.fetchrow(
                _totals_sql(periods, one_holder=True), *_bounds(periods), done, holder_id
            ) if done else None
        scripts_ = scripts(redis)
        async with redis.pipeline(transaction=True) as pipe:
            if old_raw is not None:
                old = Seat.unpack(old_raw)
                for period in periods:
                    keys, args = remove_commands(str(holder_id), old, period)
                    await scripts_["remove"](keys=keys, args=args, client=pipe)
            keys, args = apply_commands(str(holder_id), new, _parts(totals, periods, now) if totals else [])
            await scripts_["apply"](keys=keys, args=args, client=pipe)
            await pipe.execute()
        return True
