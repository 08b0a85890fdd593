"""The ledger rows of bench/community.py: the community follower counting a backlog against bare INSERTs of the same
aggregate rows, and the city ledger's lag behind the book while partners ingest over HTTP with a follower process
stepping every second, as the worker's `count_community` cron does."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import queue
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from bench.community_report import RAW, STEP, Timed
from bench.community_setup import City
from bench.intake import Poster, build_requests, drive, service_work, sources
from bench.leaderboards_report import Lag
from bench.leaderboards_updates import BATCH, close_callers
from bench.load import LoadSpec, cpu_pct, cpu_snapshot, die_with_parent
from bench.run import Server


def _new_entries_cte() -> str:
    """The step's own `new` CTE (which entries, which scopes), taken from its statement so the baseline writes
    exactly the rows the step writes: `$1` the cursor's snapshot, `$2` the snapshot to count up to."""
    from gamification.community import follow

    text = getattr(follow, "_STEP", "")
    head, found, _ = text.partition("),\ndays AS (")
    if not found or "WITH new AS (" not in head:
        raise RuntimeError("gamification/community/follow.py's step statement changed: "
                           "update bench/community_ledger.py")
    return head + ")"


TABLES = ("community_day", "community_participant", "community_member", "community_scope")  # what a step writes
RAW_WRITES = (
    """INSERT INTO bench_community_day (scope, behaviour, category, day, reduction_mg, credits, reversals)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::bigint[], $6::int[], $7::int[])
       ON CONFLICT (scope, behaviour, day) DO UPDATE SET
         reduction_mg = bench_community_day.reduction_mg + EXCLUDED.reduction_mg,
         credits = bench_community_day.credits + EXCLUDED.credits,
         reversals = bench_community_day.reversals + EXCLUDED.reversals""",
    """INSERT INTO bench_community_participant (scope, day, holder)
       SELECT * FROM unnest($1::text[], $2::date[], $3::uuid[]) ON CONFLICT (scope, day, holder) DO NOTHING""",
    """INSERT INTO bench_community_member (scope, holder)
       SELECT * FROM unnest($1::text[], $2::uuid[]) ON CONFLICT (scope, holder) DO NOTHING""",
    """INSERT INTO bench_community_scope (scope, participants) SELECT * FROM unnest($1::text[], $2::bigint[])
       ON CONFLICT (scope) DO UPDATE SET participants = bench_community_scope.participants + EXCLUDED.participants""",
)
SAME = (  # after the step: the copies the raw writes went to hold what the step wrote
    "SELECT count(*) FROM (SELECT scope, behaviour, category, day, reduction_mg, credits, reversals FROM "
    "community_day EXCEPT SELECT scope, behaviour, category, day, reduction_mg, credits, reversals FROM "
    "bench_community_day) AS differ",
    "SELECT (SELECT count(*) FROM community_participant) - (SELECT count(*) FROM bench_community_participant)",
    "SELECT (SELECT count(*) FROM community_member) - (SELECT count(*) FROM bench_community_member)",
    "SELECT count(*) FROM (SELECT scope, participants FROM community_scope EXCEPT "
    "SELECT scope, participants FROM bench_community_scope) AS differ",
)


async def _rows(conn: Any, before: str, target: str) -> tuple[list[list[list[Any]]], int]:
    """Column arrays for each of RAW_WRITES (the rows the step will write), and the entries they come from."""
    new = _new_entries_cte()
    queries = (
        """SELECT scope, behaviour, min(category), day, sum(reduction_mg)::bigint,
                  count(*) FILTER (WHERE kind = 'credit')::int, count(*) FILTER (WHERE kind = 'reversal')::int
           FROM new GROUP BY scope, behaviour, day""",
        "SELECT DISTINCT scope, day, holder FROM new WHERE kind = 'credit'",
        "SELECT DISTINCT scope, holder FROM new WHERE kind = 'credit'",
        """SELECT m.scope, count(*) FROM (SELECT DISTINCT scope, holder FROM new WHERE kind = 'credit') AS m
           WHERE NOT EXISTS (SELECT 1 FROM community_member c WHERE c.scope = m.scope AND c.holder = m.holder)
           GROUP BY m.scope""",
    )
    out = []
    for query in queries:
        rows = await conn.fetch(f"{new} {query}", before, target)
        out.append([list(column) for column in zip(*rows, strict=True)])
    return out, await conn.fetchval(f"{new} SELECT count(*) FROM new WHERE scope = 'all'", before, target)


async def follower_rows(spec: LoadSpec, city: City, partner: dict[str, Any], pool: list[Any],
                        args: argparse.Namespace, tag: str) -> list[Timed]:
    """A backlog of credited entries through `record_reports` (no follower running); its aggregate rows written by
    bare INSERTs into copies of the four tables a step writes (same contents and indexes), in one transaction; then
    one `step` counting it; then the copies are checked to hold what the step wrote."""
    from gamification.community.follow import step
    from wallet.db import connection

    verdicts = Counter[str]()
    work = service_work(sources(city.intake, partner), pool, BATCH, tag, verdicts)
    backlog = await drive([work] * args.intake_conns, spec, math.ceil(args.follow_entries / BATCH))
    if backlog.errors:
        raise RuntimeError(f"writing the follower's backlog failed: {backlog.error_kinds}")
    async with connection() as conn:
        before = await conn.fetchval("SELECT snapshot FROM community_cursor WHERE id = 1")
        target = await conn.fetchval("SELECT pg_current_snapshot()::text")
        columns, entries = await _rows(conn, before, target)
        await conn.execute("; ".join(f"CREATE TABLE bench_{t} (LIKE {t} INCLUDING ALL); INSERT INTO bench_{t} "
                                     f"SELECT * FROM {t}; ANALYZE bench_{t}, {t}" for t in TABLES))
        await conn.execute("ANALYZE book_entry")
        try:
            snap, t0 = cpu_snapshot(spec, os.getpid()), time.perf_counter()
            async with conn.transaction():
                for sql, args_ in zip(RAW_WRITES, columns, strict=True):
                    await conn.execute(sql, *args_)
            seconds = time.perf_counter() - t0
            sizes = [len(c[0]) if c else 0 for c in columns]
            raw = Timed(RAW, entries, seconds, cpu_pct(snap, cpu_snapshot(spec, os.getpid()), seconds), sizes[0],
                        sizes[1], sizes[2])
            snap, t0 = cpu_snapshot(spec, os.getpid()), time.perf_counter()
            done = await step(wait=True)
            seconds = time.perf_counter() - t0
            counted = Timed(STEP, done.entries, seconds, cpu_pct(snap, cpu_snapshot(spec, os.getpid()), seconds),
                            done.rows, sizes[1], sizes[2], RAW)
            differ = [await conn.fetchval(sql) for sql in SAME]
        finally:
            await conn.execute("DROP TABLE IF EXISTS " + ", ".join(f"bench_{t}" for t in TABLES))
    if done.entries != entries or any(differ):
        raise RuntimeError(f"the step counted {done} and the raw writes differ from its tables by {differ} rows "
                           f"(day rows, participations, members, counters) for {entries} entries: did something else "
                           f"write the book meanwhile?")
    for r in (raw, counted):
        print(f"  {r.name:<40} {r.per_s:>9,.0f} entries/s  ({r.entries:,} entries, {r.day_rows:,} day rows, "
              f"{r.participant_rows:,} participations, {r.members:,} members)", flush=True)
    return [raw, counted]


# -- lag behind the book -------------------------------------------------------------------------------------------


Step = tuple[float, float, int, float, str]  # start, end, entries counted, CPU s, the cursor's snapshot after


def follower_process(finish: Any, out: Any) -> None:
    """Community steps at every whole second, as the worker's `count_community` cron (second=0..59, unique)."""
    die_with_parent()
    run: Callable[..., Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    try:
        out.put(("steps", run(_count_every_second(finish, out))))
    except KeyboardInterrupt:
        return
    except BaseException:
        out.put(("error", traceback.format_exc()))


async def _count_every_second(finish: Any, out: Any) -> list[Step]:
    from gamification.community.follow import step
    from wallet.db import close_pool, connection, start_pool

    await start_pool(os.environ["DATABASE_URL"], size_min=1, size_max=2)
    steps: list[Step] = []
    out.put(("ready", None))
    try:
        deadline = time.time() + 1800
        while time.time() < deadline:
            now = time.time()
            await asyncio.sleep(math.floor(now) + 1 - now)
            t0, c0 = time.time(), time.process_time()
            done = await step()
            t1, c1 = time.time(), time.process_time()
            async with connection() as conn:
                snapshot = await conn.fetchval("SELECT snapshot FROM community_cursor WHERE id = 1")
            steps.append((t0, t1, done.entries, c1 - c0, snapshot))
            if finish.value and t0 > finish.value:
                break
    finally:
        await close_pool()
    return steps


async def _message(out: Any, proc: Any, kind: str, wait_s: float) -> Any:
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


async def lag_row(spec: LoadSpec, api: Server, residents: Sequence[Any], pool: list[Any], args: argparse.Namespace,
                  tag: str) -> Lag:
    """Partner batches over HTTP (bench.intake's workload, closed loop) for warm-up + duration while the follower
    process steps every second; the lag of each entry recorded in the window is the end of the step that counted
    it minus its recorded_at, from the cursor's snapshots before and after each step."""
    from wallet.db import connection

    context = multiprocessing.get_context("spawn")
    out, finish = context.Queue(), context.Value("d", 0.0)
    async with connection() as conn:
        before = await conn.fetchval("SELECT snapshot FROM community_cursor WHERE id = 1")
    proc = context.Process(target=follower_process, args=(finish, out), name="cw-bench-community", daemon=True)
    proc.start()
    try:
        await _message(out, proc, "ready", 120)
        verdicts, window = Counter[str](), {}
        build = build_requests(api.port, [r.token for r in residents], pool, BATCH, tag)
        workers = [Poster(api.port, build, BATCH, verdicts) for _ in range(args.intake_conns)]

        async def opened() -> None:
            window["start"] = time.time()

        result = await drive(workers, replace(spec, server_pid=api.proc.pid if api.proc else None), on_window=opened)
        close_callers(workers)
        finish.value = time.time()
        steps: list[Step] = await _message(out, proc, "steps", 600)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
    start, end = window["start"], window["start"] + spec.duration_s
    lags: list[float] = []
    async with connection() as conn:
        for _, t1, _, _, done in steps:
            if done != before:
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
    timed = [s for s in steps if start <= s[0] <= end]
    durations = [t1 - t0 for t0, t1, *_ in timed]
    lags.sort()
    return Lag(result, BATCH, verdicts["credited"] / verdicts.total() if verdicts.total() else math.nan, lags,
               max(0, in_window - len(lags)), len(timed), sum(durations) / len(durations) if durations else math.nan,
               max(durations, default=math.nan), sum(1 for s in timed if not s[2]),
               100 * sum(s[3] for s in timed) / spec.duration_s)
