"""`python -m bench.leaderboards`: issue 6's benchmark, leaderboard reads on a board of a million members at a fixed
rate, the cost of one update, the follower's throughput and the boards' lag behind the book during ingestion, each
against a raw Redis baseline measured in the same run. Targets on the 2-core machine: API p99 <= 15 ms at 1,000
requests/s; lag <= 5 s at p99 during ingestion.

Reads: `GET /v1/me/leaderboards/global/all?limit=100&around=2` (top 100 with nicknames, my rank and total, two
neighbours each side) sent open loop at `--rate` over residents' tokens, against the same read straight from Redis
(the READ script the API runs; raw ZREVRANGE + ZREVRANK + ZREVRANGE) and hello-world at the same rate. Updates: one
APPLY per book entry (one EVALSHA over all its boards) one at a time and pipelined, against raw ZADDs of the same
sorted sets; the follower (`follow`) applying a backlog, against raw ZADDs. Lag: partner batches over HTTP while a
follower process steps every second, as the worker's cron does. The board is set up by bench/leaderboards_setup.py
(real residents where names are shown, synthetic members elsewhere; the report says which), the update and lag rows
are in bench/leaderboards_updates.py, the report in bench/leaderboards_report.py, the open-loop generator in
bench/openloop.py.

Starts the stores, the API and hello-world like bench/run.py and writes its report under its own heading in
bench/RESULTS.md ("Leaderboards"). Everything started here is stopped here, also on Ctrl-C, SIGTERM or error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
from redis.asyncio import Redis

from bench.energy import close_pool_in_time
from bench.intake import Caller, code_state
from bench.intake_setup import MIX, create_partner, headroom, item_pool
from bench.leaderboards_report import (
    API,
    API2,
    HELLO,
    RAW,
    SCRIPT,
    Measured,
    ReadRow,
    render,
    write_results,
)
from bench.leaderboards_setup import (
    AROUND,
    CLUSTER,
    LEADERS,
    SYNTHETIC,
    choose_readers,
    credit,
    exactness,
    populate,
    residents,
    totals,
)
from bench.leaderboards_updates import BATCH, apply_rows, close_callers, follower_rows, lag_row
from bench.load import HOST, LoadSpec
from bench.openloop import Work, open_loop
from bench.run import RESULTS, ROOT, Server, pid_file, prepare, session

LIMIT = 100
SEATS = {"full": "each with a city, district, community, team and department: every scope's boards",
         "global": "with no places or team: the global and newcomer boards only"}
PATH = f"/v1/me/leaderboards/global/all?limit={LIMIT}&around={AROUND}"


# -- reads ---------------------------------------------------------------------------------------------------------


class _Row(msgspec.Struct):
    rank: int
    nickname: str = ""


class _Me(msgspec.Struct):
    rank: int | None = None


class _Board(msgspec.Struct):
    residents: int
    top: list[_Row]
    neighbours: list[_Row] = []
    me: _Me | None = None


def get_requests(port: int, path: str, tokens: Sequence[str]) -> Callable[[int], bytes]:
    head = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: cw-bench\r\n"
    built = [(head + f"Authorization: Bearer {t}\r\n\r\n").encode() for t in tokens] or [(head + "\r\n").encode()]
    return lambda n: built[n % len(built)]


def answered(status: int, _body: bytes) -> str | None:
    return None if status == 200 else f"HTTP {status}"


def board_read(status: int, body: bytes) -> str | None:
    """200 with the full top (every row named: real residents), my rank, and my two neighbours each side."""
    if status != 200:
        return f"HTTP {status}"
    board = msgspec.json.decode(body, type=_Board)
    if len(board.top) != LIMIT or board.me is None or board.me.rank is None or len(board.neighbours) != CLUSTER:
        return "incomplete board"
    return None if all(r.nickname for r in board.top + board.neighbours) else "a shown row has no nickname"


def script_read(redis: Redis, key: str, holders: Sequence[str]) -> Work:
    """What the API asks Valkey: the READ script (`read_board`), one round trip."""
    from gamification.leaderboards.store import read_board

    async def work(n: int) -> str | None:
        read = await read_board(redis, key, holder=holders[n % len(holders)], limit=LIMIT, around=AROUND)
        return None if len(read.top) == LIMIT and read.me and len(read.neighbours) == CLUSTER else "incomplete read"
    return work


def raw_read(redis: Redis, key: str, holders: Sequence[str]) -> Work:
    """The bare sorted-set reads: ZREVRANGE 0 99 WITHSCORES + ZREVRANK (one round trip), then the neighbours."""
    async def work(n: int) -> str | None:
        holder = holders[n % len(holders)]
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(key, 0, LIMIT - 1, withscores=True)
            pipe.zrevrank(key, holder)
            top, rank = await pipe.execute()
        if rank is None:
            return "not ranked"
        near = await redis.zrevrange(key, max(0, rank - AROUND), rank + AROUND, withscores=True)
        return None if len(top) == LIMIT and len(near) == CLUSTER else "incomplete read"
    return work


async def read_rows(spec: LoadSpec, args: argparse.Namespace, hello: Server, apis: tuple[Server, Server],
                    redis: Redis, key: str, readers: Sequence[Any]) -> list[ReadRow]:
    holders, tokens, conns = [str(w.holder_id) for w in readers], [w.token for w in readers], args.conns
    plans: list[tuple[str, Server | None, Callable[[], list[Any]]]] = [
        (HELLO, hello, lambda: [Caller(hello.port, get_requests(hello.port, "/", []), answered) for _ in range(conns)]),
        (RAW, None, lambda: [raw_read(redis, key, holders)] * conns),
        (SCRIPT, None, lambda: [script_read(redis, key, holders)] * conns),
        *[(name, api, lambda api=api: [Caller(api.port, get_requests(api.port, PATH, tokens), board_read)
                                      for _ in range(conns)]) for name, api in zip((API, API2), apis, strict=True)],
    ]
    rows = []
    for name, server, make in plans:
        workers = make()
        pid = server.proc.pid if server and server.proc else None
        result = await open_loop(workers, args.rate, replace(spec, server_pid=pid, concurrency=conns))
        close_callers(workers)
        rows.append(ReadRow(name, result))
        r = result.result
        print(f"  {name:<40} {result.answered_per_s:>7,.0f}/s  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:7.2f} ms  "
              f"max {r.max_ms:7.2f} ms  errors {r.errors}" + (f" {r.error_kinds}" if r.errors else ""), flush=True)
    return rows


# -- the run -------------------------------------------------------------------------------------------------------


async def measure_all(servers: tuple[Server, Server, Server], spec: LoadSpec, env: dict[str, str],
                      args: argparse.Namespace) -> Measured:
    from api.settings import load_settings
    from gamification.leaderboards.boards import board_key, period_of
    from gamification.leaderboards.follow import rebuild
    from wallet.db import start_pool

    hello, api, api2 = servers
    settings = load_settings(env)
    tz, stamp, started = settings.leaderboard_zone, f"{int(time.time())}-{secrets.token_hex(3)}", time.perf_counter()
    key = board_key("global", "-", period_of("all", datetime.now(UTC), tz))
    await start_pool(os.environ["DATABASE_URL"], size_min=1, size_max=args.intake_conns + 2)
    redis = Redis.from_url(os.environ["REDIS_URL"], socket_timeout=120)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
            partner, _ = await create_partner(http, stamp)
        real = await residents(env, partner, stamp, args.real, args.intake_residents, seated=args.seats == "full")
        pool = item_pool(datetime.now(UTC).replace(microsecond=0))
        credited = await credit(real, partner, pool, f"{stamp}-lb")
        built = await rebuild(redis, tz)
        board = [str(w.holder_id) for w in real.on_board]
        have = await totals(redis, key, board)
        leaders = [have[str(w.holder_id)][0] // 1000 for w in real.leaders]
        clusters = {have[str(w.holder_id)][0] // 1000 for c in real.clusters for w in c}
        if len(have) != len(board) or max(clusters) >= min(leaders):
            raise RuntimeError("rebuild did not put every real resident on the board above their clusters")
        print(f"{len(board):,} real residents credited {credited:,} activities and rebuilt onto {built['boards']} "
              f"boards, {len(real.intake)} intake residents linked ({time.perf_counter() - started:.0f} s); "
              f"populating {args.members - len(board):,} synthetic members", flush=True)
        populated = await populate(redis, tz, key, args.members - len(board), clusters, min(leaders), spec, len(board))
        if (members := await redis.zcard(key)) != args.members:
            raise RuntimeError(f"the board has {members:,} members, not {args.members:,}")
        readers, ranks = await choose_readers(redis, key, real.clusters, set(board))
        setup_s = time.perf_counter() - started
        print(f"board of {members:,} members ready in {setup_s:.0f} s; {len(readers)} readers at ranks "
              f"{ranks[0]:,}–{ranks[-1]:,}", flush=True)
        reads = await read_rows(spec, args, hello, (api, api2), redis, key, readers)
        updates = [*populated, *await apply_rows(spec, redis, tz, args.members - len(board), args.apply_entries),
                   *await follower_rows(spec, redis, tz, real, partner, pool, args, f"{stamp}-f")]
        lag = await lag_row(spec, api, redis, settings.leaderboard_time_zone, real, pool, args, f"{stamp}-h")
        print(f"  lag during ingestion: {lag.ingestion.rps * BATCH:,.0f} activities/s, p50 {lag.p(50):.2f} s, "
              f"p99 {lag.p(99):.2f} s over {len(lag.lags_s):,} entries", flush=True)
        exact = await exactness(redis, key, [w.holder_id for w in real.on_board] + [r.holder_id for r in real.intake])
        return Measured(reads, updates, lag, members, len(board), LEADERS, len(readers), ranks, min(leaders), exact,
                        setup_s)
    finally:
        await redis.aclose()
        await close_pool_in_time()


def _code() -> str:
    """bench.intake's account of the code measured, plus uncommitted changes under gamification/."""
    try:
        changed = subprocess.run(["git", "status", "--porcelain", "--", "gamification"], cwd=ROOT, capture_output=True,
                                 text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        changed = ""
    files = [line[3:] for line in changed.splitlines() if line.strip()]
    return code_state() + (f"; uncommitted under gamification/: {', '.join(files)}" if files else "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.leaderboards", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0,
                        help="measured seconds per read row and of the ingestion window (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="discarded seconds before each (default 2)")
    parser.add_argument("--members", type=int, default=1_000_000,
                        help="members of the global all-time board (default 1000000)")
    parser.add_argument("--rate", type=float, default=1_000.0, help="reads sent per second, open loop (default 1000)")
    parser.add_argument("--conns", type=int, default=32,
                        help="keep-alive connections (Redis: pooled connections) reads go out on (default 32)")
    parser.add_argument("--real", type=int, default=2_000,
                        help=f"real residents on the board: {LEADERS} leaders, the rest in clusters of {CLUSTER} "
                             f"(default 2000)")
    parser.add_argument("--intake-residents", type=int, default=200,
                        help="partner-linked residents the follower and lag rows ingest for (default 200)")
    parser.add_argument("--intake-conns", type=int, default=8,
                        help="connections or tasks for intake batches of 100, as bench.intake (default 8)")
    parser.add_argument("--apply-entries", type=int, default=20_000,
                        help="entries for the pipelined APPLY row (one at a time: up to 2,000; default 20000)")
    parser.add_argument("--follow-entries", type=int, default=20_000,
                        help="book entries in the follower's backlog (default 20000)")
    parser.add_argument("--seats", choices=("full", "global"), default="full",
                        help="intake residents (follower and lag rows): full = a city, district, community, team and "
                             "department, so an entry touches 36 sorted sets; global = none of them, 8 (default full)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    if not (0.5 <= args.duration <= 120 and 0 <= args.warmup <= 60 and 10 <= args.rate <= 20_000
            and 1 <= args.conns <= 256 and LEADERS + 2 * CLUSTER <= args.real <= 20_000
            and 20 <= args.intake_residents <= 2_000 and 1 <= args.intake_conns <= 64
            and 1_000 <= args.apply_entries <= 200_000 and 1_000 <= args.follow_entries <= 200_000
            and args.real + 2 * (args.apply_entries + 2_000) <= args.members <= 5_000_000):
        parser.error(f"--duration 0.5–120, --warmup 0–60, --rate 10–20000, --conns 1–256, "
                     f"--real {LEADERS + 2 * CLUSTER}–20000, --intake-residents 20–2000, --intake-conns 1–64, "
                     "--apply-entries and --follow-entries "
                     "1000–200000, --members at most 5000000 and at least --real + 2 × (--apply-entries + 2000)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    headroom()  # refuses an intake mix that caps or plausibility would not credit
    with session("cw-bench-leaderboards-") as bench:
        env = prepare(bench.servers, bench.data_dir)
        hello = Server("hello", ["bench.hello:app"], env, bench.work, "/")
        api = Server("api", ["--factory", "api.app:create_app"], env, bench.work, "/ready")
        api2 = Server("api2", ["--factory", "api.app:create_app"], env, bench.work, "/ready", workers=2)
        for server in (hello, api, api2):
            bench.running.append(server)
            server.start()
        code = _code()  # what the API just imported
        spec = LoadSpec(port=api.port, path=PATH, concurrency=1, duration_s=args.duration, warmup_s=args.warmup,
                        postgres_pid=pid_file(bench.data_dir / "pg" / "postmaster.pid"),
                        valkey_pid=pid_file(bench.data_dir / "valkey" / "server.pid"))
        run: Callable[..., Measured] = asyncio.run
        with contextlib.suppress(ImportError):
            import uvloop  # the API runs on uvloop; so do the generator and the in-process baselines

            run = uvloop.run
        m = replace(run(measure_all((hello, api, api2), spec, env, args)), code=code)
        settings = (
            f"uvicorn 1 worker (the last read row: 2), --no-access-log; reads: {args.warmup:g} s warm-up + "
            f"{args.duration:g} s measured per row, sent open loop at {args.rate:,.0f}/s over {args.conns} keep-alive "
            f"connections (Redis rows: a pool of as many), rotating over {m.readers} readers' access tokens; "
            f"updates: APPLY of a fully seated "
            f"resident {min(2_000, args.apply_entries):,} one at a time and {args.apply_entries:,} pipelined; "
            f"follower and lag rows: {args.intake_residents} intake residents ({SEATS[args.seats]}); follower: a "
            f"backlog of {args.follow_entries:,} entries from `record_reports` in-process; lag: partner batches of "
            f"{BATCH} ({len(MIX)} behaviours, bench/intake.py's workload) over {args.intake_conns} connections, "
            f"{args.warmup:g} s warm-up + {args.duration:g} s measured, the follower in its own process stepping at "
            f"every whole second (arq's scheduler polls every "
            f"0.5 s, so the worker's cron may start a step up to ~0.5 s later); setup {m.setup_s:.0f} s; generator: "
            f"this process (uvloop) on the same cores; no worker or outbox relay running")
        synthetic = (
            f"{m.members - m.real:,} of the board's {m.members:,} members are synthetic ids `{SYNTHETIC}<n>` with no "
            f"holder row, written straight into Valkey by the product's APPLY script (`apply_commands` with a seat of "
            f"no places: the global all-time board, its totals hash and the seats hash only), with totals drawn around "
            f"the real clusters' totals and never equal to one; the {m.real:,} real residents ({m.leaders} leaders, "
            f"the rest in clusters of {CLUSTER} sharing one total) are registered holders with partner links and app "
            f"sessions set up in-process, credited through `record_reports` and put on the boards by `rebuild`; the "
            f"top {LIMIT} and every reader with its neighbours are real. The full-seat APPLY rows write synthetic "
            f"seats (cities, teams) for existing synthetic members, Redis only. The follower and lag rows are real "
            f"throughout (book entries from intake, `follow`)")
        report = render(datetime.now(UTC), settings, synthetic, m)
        print("\n" + report)
        if not args.no_write:
            write_results(report)
            print(f"written to {RESULTS.relative_to(ROOT)} ({time.perf_counter() - bench.started:.0f}s in all)")
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
