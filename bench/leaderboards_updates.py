"""The update rows of bench/leaderboards.py: one APPLY per book entry against raw ZADDs of the same sorted sets, the
follower applying a backlog against raw ZADDs, and the boards' lag behind the book while partners ingest over HTTP
with a follower process stepping every second, as the worker's cron does."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import queue
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from bench.intake import Caller, Poster, build_requests, drive, service_work, sources
from bench.leaderboards_report import FOLLOW, Lag, Timed
from bench.leaderboards_setup import PIPELINE, Real, synthetic_id, timed
from bench.load import LoadSpec, die_with_parent
from bench.run import Server

BATCH = 100  # partner activities per request, as bench.intake's batches


def close_callers(workers: Sequence[Any]) -> None:
    for worker in workers:
        if isinstance(worker, Caller):
            worker.close()


# -- updates -------------------------------------------------------------------------------------------------------


async def apply_rows(spec: LoadSpec, redis: Redis, tz: ZoneInfo, synthetic: int, entries: int) -> list[Timed]:
    """One book entry of a fully seated resident (city, district, community, team, department, newcomer: 7 boards
    and 2 group boards, each for 4 periods) as one APPLY, one at a time and pipelined; before each, raw ZADDs of
    the same sorted sets as its baseline (APPLY then rewrites those scores from the exact totals). The residents
    are synthetic members (existing ones, so the big board keeps its size) given synthetic seats: Redis only."""
    from gamification.leaderboards.boards import PERIODS, Seat, encode, period_of
    from gamification.leaderboards.store import Part, apply_commands, boards_of, scripts

    apply, rng, now = scripts(redis)["apply"], random.Random(5), datetime.now(UTC)
    periods = [period_of(p, now, tz) for p in PERIODS]
    single = min(2_000, entries)
    stride = max(1, synthetic // (single + entries))

    def plan(n: int) -> tuple[list[str], list[Any], list[tuple[str, int, str]]]:
        holder = synthetic_id(n * stride)
        seat = Seat(f"基准市{n % 8}", f"基准区{n % 5}", f"基准社区{n % 20}", 1 + n % 50, 1000 + n % 200, True, False,
                    now + timedelta(days=30))
        parts = [Part(p, rng.randint(1_000, 50_000), now, True, True) for p in periods]
        keys, argv = apply_commands(holder, seat, parts)
        zadds: list[tuple[str, int, str]] = []
        for part in parts:
            score = encode(part.mg, part.period.tick(now))
            boards, groups = boards_of(seat, part.period)
            zadds += [(k, score, holder) for k in boards] + [(z, score, group) for z, _, _, group in groups]
        return keys, argv, zadds

    one, many = [plan(n) for n in range(single)], [plan(n) for n in range(single, single + entries)]
    zsets = len(one[0][2])

    async def zadd_each() -> int:
        for _, _, zadds in one:
            async with redis.pipeline(transaction=False) as pipe:
                for key, score, member in zadds:
                    pipe.zadd(key, {member: score})
                await pipe.execute()
        return len(one)

    async def apply_each() -> int:
        for keys, argv, _ in one:
            await apply(keys=keys, args=argv)
        return len(one)

    async def zadd_piped() -> int:
        for lo in range(0, len(many), PIPELINE):
            async with redis.pipeline(transaction=False) as pipe:
                for _, _, zadds in many[lo:lo + PIPELINE]:
                    for key, score, member in zadds:
                        pipe.zadd(key, {member: score})
                await pipe.execute()
        return len(many)

    async def apply_piped() -> int:
        for lo in range(0, len(many), PIPELINE):
            async with redis.pipeline(transaction=False) as pipe:
                for keys, argv, _ in many[lo:lo + PIPELINE]:
                    await apply(keys=keys, args=argv, client=pipe)
                await pipe.execute()
        return len(many)

    raw1 = f"raw ZADD ×{zsets}, one round trip per entry, one at a time"
    raw2 = f"raw ZADD ×{zsets} per entry, pipelined {PIPELINE:,} entries per round trip"
    rows = [await timed(raw1, spec, redis, zadd_each, zsets=zsets),
            await timed("APPLY, full seat, one at a time", spec, redis, apply_each, zsets=zsets, baseline=raw1),
            await timed(raw2, spec, redis, zadd_piped, zsets=zsets),
            await timed(f"APPLY, full seat, pipelined {PIPELINE:,} per round trip", spec, redis, apply_piped,
                        zsets=zsets, baseline=raw2)]
    for r in rows:
        print(f"  {r.name:<62} {r.per_s:>9,.0f} entries/s  {r.us():7.1f} µs/entry", flush=True)
    return rows


async def follower_rows(spec: LoadSpec, redis: Redis, tz: ZoneInfo, real: Real, partner: dict[str, Any],
                        pool: list[Any], args: argparse.Namespace, tag: str) -> list[Timed]:
    """A backlog of credited entries through `record_reports` (the follower not running), then raw ZADDs of the
    sorted sets each entry touches (one MULTI per 2,000 entries), then one `follow` step applying the backlog
    (which leaves every score exact again)."""
    from gamification.leaderboards.boards import encode
    from gamification.leaderboards.follow import SEAT_COLUMNS, SEAT_JOINS, follow, seat_from
    from gamification.leaderboards.store import Entry, boards_of, entry_parts
    from wallet.db import connection

    verdicts = Counter[str]()
    units = math.ceil(args.follow_entries / BATCH)
    work = service_work(sources(real.intake, partner), pool, BATCH, tag, verdicts)
    backlog = await drive([work] * args.intake_conns, spec, units)
    if backlog.errors:
        raise RuntimeError(f"writing the follower's backlog failed: {backlog.error_kinds}")
    async with connection() as conn:
        rows = await conn.fetch(
            f"""SELECT e.holder, e.reduction_mg, e.occurred_at, e.recorded_at, {SEAT_COLUMNS}
                FROM book_entry e JOIN holder h ON h.id = e.holder {SEAT_JOINS}
                WHERE e.holder = ANY($1::uuid[]) ORDER BY e.id""",
            [r.holder_id for r in real.intake])
    zadds: list[list[tuple[str, int, str]]] = []
    now = datetime.now(UTC)
    for row in rows:
        seat = seat_from(row)
        entry = Entry(str(row["holder"]), row["reduction_mg"], row["occurred_at"], row["recorded_at"])
        mine = []
        for part in entry_parts(entry, seat, tz, now):
            score = encode(part.mg, part.period.tick(part.recorded_at))
            boards, groups = boards_of(seat, part.period, regular=part.regular, newcomer=part.newcomer)
            mine += [(key, score, entry.holder) for key in boards] + [(z, score, g) for z, _, _, g in groups]
        zadds.append(mine)

    async def zadd_batches() -> int:
        for lo in range(0, len(zadds), PIPELINE):
            async with redis.pipeline(transaction=True) as pipe:
                for entry_zadds in zadds[lo:lo + PIPELINE]:
                    for key, score, member in entry_zadds:
                        pipe.zadd(key, {member: score})
                await pipe.execute()
        return len(zadds)

    async def step() -> int:
        applied = await follow(redis, tz)
        if applied != len(rows):
            raise RuntimeError(f"follow applied {applied} entries, the backlog has {len(rows)}")
        return applied

    per = sum(map(len, zadds)) / len(zadds) if zadds else math.nan
    raw = f"raw ZADD ×{per:.0f} per entry, MULTI per {PIPELINE:,} entries"
    out = [await timed(raw, spec, redis, zadd_batches, zsets=per),
           await timed(FOLLOW, spec, redis, step, zsets=per, baseline=raw)]
    for r in out:
        print(f"  {r.name:<62} {r.per_s:>9,.0f} entries/s  ({r.entries:,} entries)", flush=True)
    return out


# -- lag behind the book -------------------------------------------------------------------------------------------


def follower_process(zone: str, finish: Any, out: Any) -> None:
    """A follower stepping at every whole second, as the worker's `follow_book` cron (second=0..59, unique) does;
    reports each step (start, end, entries applied or None, CPU seconds, the cursor's snapshot after it)."""
    die_with_parent()
    run: Callable[..., Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    try:
        out.put(("steps", run(_follow_every_second(ZoneInfo(zone), finish, out))))
    except KeyboardInterrupt:
        return
    except BaseException:
        out.put(("error", traceback.format_exc()))


Step = tuple[float, float, int | None, float, str]  # start, end, applied (None: skipped), CPU s, cursor after


async def _follow_every_second(tz: ZoneInfo, finish: Any, out: Any) -> list[Step]:
    from gamification.leaderboards.follow import CURSOR, follow
    from wallet.db import close_pool, start_pool

    await start_pool(os.environ["DATABASE_URL"], size_min=1, size_max=2)
    redis = Redis.from_url(os.environ["REDIS_URL"], socket_timeout=120)
    steps: list[Step] = []
    out.put(("ready", None))
    try:
        deadline = time.time() + 1800
        while time.time() < deadline:
            now = time.time()
            await asyncio.sleep(math.floor(now) + 1 - now)
            t0, c0 = time.time(), time.process_time()
            applied = await follow(redis, tz)
            t1, c1 = time.time(), time.process_time()
            done = await redis.hget(CURSOR, "done")
            steps.append((t0, t1, applied, c1 - c0, done.decode() if isinstance(done, bytes) else str(done)))
            if finish.value and t0 > finish.value:
                break
    finally:
        await redis.aclose()
        await close_pool()
    return steps


async def _message(out: Any, proc: Any, kind: str, wait_s: float) -> Any:
    """The follower process's next message, polled (no thread left blocking on the queue after an interrupt)."""
    deadline = time.monotonic() + wait_s
    while True:
        with contextlib.suppress(queue.Empty):
            got, value = out.get_nowait()
            break
        if not proc.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the follower process {'exited' if not proc.is_alive() else 'is silent'} "
                               f"(exit code {proc.exitcode}) while we waited for {kind!r}")
        await asyncio.sleep(0.05)
    if got == "error":
        raise RuntimeError(f"the follower process failed:\n{value}")
    if got != kind:
        raise RuntimeError(f"the follower process said {got!r}, expected {kind!r}")
    return value


async def lag_row(spec: LoadSpec, api: Server, redis: Redis, zone: str, real: Real, pool: list[Any],
                  args: argparse.Namespace, tag: str) -> Lag:
    """Partner batches over HTTP (bench.intake's workload, closed loop) for warm-up + duration while the follower
    process steps every second; lag of each entry recorded in the window = end of the step that applied it minus
    its recorded_at, from the cursor's snapshots before and after each step."""
    from gamification.leaderboards.follow import CURSOR
    from wallet.db import connection

    context = multiprocessing.get_context("spawn")
    out, finish = context.Queue(), context.Value("d", 0.0)
    before = (await redis.hget(CURSOR, "done") or b"").decode()
    proc = context.Process(target=follower_process, args=(zone, finish, out), name="cw-bench-follower", daemon=True)
    proc.start()
    try:
        await _message(out, proc, "ready", 120)
        verdicts, window = Counter[str](), {}
        build = build_requests(api.port, [r.token for r in real.intake], pool, BATCH, tag)
        workers = [Poster(api.port, build, BATCH, verdicts) for _ in range(args.intake_conns)]

        async def opened() -> None:
            window["start"] = time.time()

        result = await drive(workers, replace(spec, server_pid=api.proc.pid if api.proc else None), on_window=opened)
        close_callers(workers)
        finish.value = time.time()
        steps = await _message(out, proc, "steps", 600)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
    start, end = window["start"], window["start"] + spec.duration_s
    lags: list[float] = []
    async with connection() as conn:
        for _, t1, applied, _, done in steps:
            if applied is not None and done != before:
                recorded = await conn.fetch(
                    """SELECT extract(epoch FROM recorded_at)::float8 AS at FROM book_entry
                       WHERE txid >= pg_snapshot_xmin($1::text::pg_snapshot)
                         AND NOT pg_visible_in_snapshot(txid, $1::text::pg_snapshot)
                         AND pg_visible_in_snapshot(txid, $2::text::pg_snapshot)""", before, done)
                lags += [t1 - r["at"] for r in recorded if start <= r["at"] <= end]
                before = done
        in_window = await conn.fetchval(
            "SELECT count(*) FROM book_entry WHERE recorded_at BETWEEN to_timestamp($1) AND to_timestamp($2)",
            start, end)
    timed_steps = [s for s in steps if start <= s[0] <= end]
    durations = [t1 - t0 for t0, t1, *_ in timed_steps]
    lags.sort()
    return Lag(result, BATCH, verdicts["credited"] / verdicts.total() if verdicts.total() else math.nan, lags,
               max(0, in_window - len(lags)), len(timed_steps),
               sum(durations) / len(durations) if durations else math.nan, max(durations, default=math.nan),
               sum(1 for s in timed_steps if s[2] is None), 100 * sum(s[3] for s in timed_steps) / spec.duration_s)
