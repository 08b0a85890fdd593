"""`python -m bench.community`: issue 8's benchmark, the public page of a city whose week board has a million members,
and the city ledger's lag behind the book, each against baselines measured in the same run. Targets on the 2-core
machine: a warm page under 50 ms p99 server-side; the city ledger at most 10 s behind the book.

Page: `GET /c/<city>` (zh-CN and `?lang=en`, and revalidated with If-None-Match: 304) sent open loop at `--rate`
against hello-world and the city's JSON board (`GET /v1/leaderboards/city/week?scope_id=<city>`) at the same rate;
the API's own time from its Prometheus latency histogram (the app has no Server-Timing header and the bench runs
without access log); cold renders over HTTP (the first request of each page variant) and in-process with every
cache emptied (`Views.scope_page` + the template, timed per part); then the same page with the city's participation
table at the size a million residents would give it. Ledger: the community follower counting a backlog against bare
INSERTs of the same aggregate rows, and partner batches over HTTP while a follower process steps every second.
The city is set up by bench/community_setup.py (real residents where names are shown, synthetic board members
elsewhere; the report says which), cold renders and HTTP plumbing are in bench/community_cold.py, the ledger rows in
bench/community_ledger.py, the report in bench/community_report.py, the open-loop generator in bench/openloop.py.

Starts the stores, the API and hello-world like bench/run.py and writes its report under its own heading in
bench/RESULTS.md ("Community pages and ledgers"). Everything started here is stopped here, also on Ctrl-C, SIGTERM
or error.
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
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
from redis.asyncio import Redis

from bench.community_cold import (
    Check,
    Getter,
    city_path,
    delta,
    get,
    http_cold,
    inprocess_cold,
    not_modified,
    ok,
    page_ok,
    scrape,
)
from bench.community_ledger import follower_rows, lag_row
from bench.community_report import (
    BOARD,
    COLD,
    COLD_SCALE,
    HELLO,
    PAGE,
    PAGE_304,
    PAGE_EN,
    PAGE_SCALE,
    Measured,
    PageRow,
    render,
    write_results,
)
from bench.community_setup import LEADERS, SYNTHETIC, City, participation, populate, set_up_city
from bench.energy import close_pool_in_time
from bench.intake import code_state
from bench.intake_setup import MIX, create_partner, headroom, item_pool
from bench.leaderboards_updates import BATCH
from bench.load import LoadSpec
from bench.openloop import open_loop
from bench.run import RESULTS, ROOT, Server, machine, pid_file, prepare, session


async def warm_row(name: str, server: Server, path: str, headers: dict[str, str], check: Check, spec: LoadSpec,
                   args: argparse.Namespace, *, histogram: bool = True) -> PageRow:
    """`args.rate` requests/s open loop over `args.conns` connections; the API's histogram is read as the measured
    window opens and after the last answer."""
    workers = [Getter(server.port, get(server.port, path, headers), check) for _ in range(args.conns)]

    async def at_window() -> dict[str, tuple[int, float, dict[float, int]]]:
        await asyncio.sleep(0.05 + spec.warmup_s)
        return await scrape(server.port)

    opened = asyncio.create_task(at_window()) if histogram else None
    pid = server.proc.pid if server.proc else None
    result = await open_loop(workers, args.rate, replace(spec, server_pid=pid, concurrency=args.conns))
    hist = delta(await opened, await scrape(server.port)) if opened else None
    for w in workers:
        w.close()
    r = result.result
    print(f"  {name:<48} {result.answered_per_s:>6,.0f}/s  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:7.2f} ms  "
          f"max {r.max_ms:7.2f} ms  API mean {hist.mean_ms if hist else float('nan'):5.2f} ms  errors {r.errors}"
          + (f" {r.error_kinds}" if r.errors else ""), flush=True)
    return PageRow(name, result, hist, max(w.last_bytes for w in workers))


async def warm_rows(servers: tuple[Server, Server], city: City, spec: LoadSpec,
                    args: argparse.Namespace) -> list[PageRow]:
    hello, api = servers
    page = city_path(city)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
        etag = (await http.get(page)).headers["etag"]
    board = f"/v1/leaderboards/city/week?scope_id={quote(city.name, safe='')}"
    return [await warm_row(HELLO, hello, "/", {}, ok, spec, args, histogram=False),
            await warm_row(BOARD, api, board, {}, ok, spec, args),
            await warm_row(PAGE, api, page, {}, page_ok, spec, args),
            await warm_row(PAGE_EN, api, city_path(city, query="?lang=en"), {}, page_ok, spec, args),
            await warm_row(PAGE_304, api, page, {"If-None-Match": etag}, not_modified, spec, args)]


async def measure_all(servers: tuple[Server, Server], spec: LoadSpec, env: dict[str, str],
                      args: argparse.Namespace) -> Measured:
    from api.settings import load_settings
    from gamification.community.reads import consistency
    from wallet.db import start_pool

    hello, api = servers
    tz, stamp, started = load_settings(env).leaderboard_zone, f"{int(time.time())}-{secrets.token_hex(3)}", \
        time.perf_counter()
    await start_pool(os.environ["DATABASE_URL"], size_min=1, size_max=args.intake_conns + 2)
    redis = Redis.from_url(os.environ["REDIS_URL"], socket_timeout=120)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
            partner, _ = await create_partner(http, stamp)
        pool = item_pool(datetime.now(UTC).replace(microsecond=0))
        city = await set_up_city(env, partner, redis, tz, stamp, args.real, args.intake_residents, pool)
        on_board = await redis.zcard(city.week_key)  # the real residents with an activity this week
        print(f"{len(city.real):,} real residents of {city.name} credited {city.credited:,} activities, counted and "
              f"on the boards, {on_board:,} on the city's week board ({time.perf_counter() - started:.0f} s); "
              f"populating {args.members - on_board:,} synthetic members", flush=True)
        filled = await populate(redis, tz, city, args.members - on_board, spec)
        if (members := await redis.zcard(city.week_key)) != args.members:
            raise RuntimeError(f"the city's week board has {members:,} members, not {args.members:,}")
        setup_s = time.perf_counter() - started
        print(f"board of {members:,} members ready in {setup_s:.0f} s ({filled.members / filled.seconds:,.0f} "
              f"APPLYs/s)", flush=True)
        cold = await http_cold(api.port, city)
        for row in cold:
            print(f"  {row.name:<60} {len(row.samples_ms):>3} × p50 {row.p(50):7.2f} ms  max "
                  f"{row.samples_ms[-1]:7.2f} ms", flush=True)
        warm = await warm_rows((hello, api), city, spec, args)
        cold.append(await inprocess_cold(env, redis, tz, city, args.cold_samples, COLD))
        print(f"  in-process cold render: p50 {cold[-1].p(50):.2f} ms, p99 {cold[-1].p(99):.2f} ms", flush=True)
        extra, extra_s = filled.members if args.at_scale else 0, 0.0
        if extra:
            extra_s = await participation(city, extra, str(tz))
            print(f"  {extra:,} synthetic participation rows in {extra_s:.1f} s", flush=True)
            warm.append(await warm_row(PAGE_SCALE, api, city_path(city), {}, page_ok, spec, args))
            cold.append(await inprocess_cold(env, redis, tz, city, max(5, args.cold_samples // 5), COLD_SCALE))
            print(f"  in-process cold render at scale: p50 {cold[-1].p(50):.2f} ms", flush=True)
        follower = await follower_rows(spec, city, partner, pool, args, f"{stamp}-f")
        lag = await lag_row(spec, api, city.intake, pool, args, f"{stamp}-h")
        print(f"  lag during ingestion: {lag.ingestion.rps * BATCH:,.0f} activities/s, p50 {lag.p(50):.2f} s, "
              f"p99 {lag.p(99):.2f} s over {len(lag.lags_s):,} entries", flush=True)
        check = await consistency()
        verdict = (f"{'ok' if check.ok else 'NOT OK'} — book {check.resident_mg:,} mg over {check.entries:,} entries, "
                   f"all {check.all_mg:,}, cities {check.city_mg:,}, partners {check.enterprise_mg:,}")
        return Measured(warm, cold, follower, lag, city.name, members, on_board, len(city.real), LEADERS,
                        filled.members / filled.seconds, filled.us("valkey"), extra, extra_s, verdict, setup_s)
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
    parser = argparse.ArgumentParser(prog="python -m bench.community", description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000,
                        help="members of the city's week board (default 1000000)")
    parser.add_argument("--rate", type=float, default=200.0, help="page reads sent per second, open loop (default 200)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="measured seconds per read row and of the ingestion window (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="discarded seconds before each (default 2)")
    parser.add_argument("--conns", type=int, default=32, help="keep-alive connections reads go out on (default 32)")
    parser.add_argument("--real", type=int, default=1_000,
                        help=f"real residents of the city, the first {LEADERS} of them leaders (default 1000)")
    parser.add_argument("--cold-samples", type=int, default=100,
                        help="in-process cold renders (a fifth of them, at least 5, at scale; default 100)")
    parser.add_argument("--intake-residents", type=int, default=200,
                        help="partner-linked residents the follower and lag rows ingest for (default 200)")
    parser.add_argument("--intake-conns", type=int, default=8,
                        help="connections or tasks for intake batches of 100, as bench.intake (default 8)")
    parser.add_argument("--follow-entries", type=int, default=20_000,
                        help="book entries in the follower's backlog (default 20000)")
    parser.add_argument("--no-at-scale", dest="at_scale", action="store_false",
                        help="skip the rows with the city's participation table at the board's size")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    if not (0.5 <= args.duration <= 120 and 0 <= args.warmup <= 60 and 10 <= args.rate <= 20_000
            and 1 <= args.conns <= 256 and LEADERS + 20 <= args.real <= 20_000 and 1 <= args.cold_samples <= 10_000
            and 20 <= args.intake_residents <= 2_000 and 1 <= args.intake_conns <= 64
            and 1_000 <= args.follow_entries <= 200_000 and args.real < args.members <= 5_000_000):
        parser.error(f"--duration 0.5–120, --warmup 0–60, --rate 10–20000, --conns 1–256, --real {LEADERS + 20}–20000, "
                     "--cold-samples 1–10000, --intake-residents 20–2000, --intake-conns 1–64, --follow-entries "
                     "1000–200000, --members above --real and at most 5000000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    headroom()  # refuses an intake mix that caps or plausibility would not credit
    info = machine()  # the load average before we add to it
    with session("cw-bench-community-") as bench:
        env = prepare(bench.servers, bench.data_dir)
        hello = Server("hello", ["bench.hello:app"], env, bench.work, "/")
        api = Server("api", ["--factory", "api.app:create_app"], env, bench.work, "/ready")
        for server in (hello, api):
            bench.running.append(server)
            server.start()
        code = _code()  # what the API just imported
        spec = LoadSpec(port=api.port, path="/", concurrency=1, duration_s=args.duration, warmup_s=args.warmup,
                        postgres_pid=pid_file(bench.data_dir / "pg" / "postmaster.pid"),
                        valkey_pid=pid_file(bench.data_dir / "valkey" / "server.pid"))
        run: Callable[..., Measured] = asyncio.run
        with contextlib.suppress(ImportError):
            import uvloop  # the API runs on uvloop; so do the generator and the in-process rows

            run = uvloop.run
        m = replace(run(measure_all((hello, api), spec, env, args)), code=code)
        from api.pages.controllers import PAGE_STALE_S, PAGE_TTL_S

        settings = (
            f"uvicorn 1 worker, --no-access-log; reads: {args.warmup:g} s warm-up + {args.duration:g} s measured "
            f"per row, sent open loop at {args.rate:,.0f}/s over {args.conns} keep-alive connections; the page "
            f"cache keeps a page {PAGE_TTL_S:g} s and serves it {PAGE_STALE_S:g} s more while one task re-renders "
            f"it, so every warm row spans at least one background refresh; in-process cold renders: "
            f"{args.cold_samples} (a fifth at scale), alternating zh-CN and en; follower: a backlog of "
            f"{args.follow_entries:,} entries from `record_reports` in-process for {args.intake_residents} intake "
            f"residents (each with the city, a district, community and team: 6 scopes per entry); lag: partner "
            f"batches of {BATCH} ({len(MIX)} behaviours, bench/intake.py's workload) over {args.intake_conns} "
            f"connections, {args.warmup:g} s warm-up + {args.duration:g} s measured, the follower in its own process "
            f"stepping at every whole second (arq's scheduler polls every 0.5 s, so the worker's cron may start a "
            f"step up to ~0.5 s later); setup {m.setup_s:.0f} s; generator: this process (uvloop) on the same cores; "
            f"no worker, leaderboard follower or outbox relay running")
        synthetic = (
            f"{m.members - m.real:,} of the city week board's {m.members:,} members are synthetic ids "
            f"`{SYNTHETIC}<n>` with no holder row, written straight into Valkey by the product's APPLY script "
            f"(`apply_commands` with a seat of the city only: the global and city week boards, the totals hashes and "
            f"the seats hash), totals below the last leader's; the {m.residents:,} real residents of the city "
            f"({m.real:,} of them on its week board: holders with partner links, in districts and communities, opted "
            f"in) are credited through `record_reports`, put on the boards by `rebuild` and counted by the community "
            f"follower, so the page's aggregates, challenge, districts and per-capita board are real; the top "
            f"{m.leaders} of the board are real. Only the city's week board is large (the other periods' boards hold "
            f"the real residents). The rows *at scale* (and the follower and lag rows after them) add the aggregates "
            f"of {m.participation:,} more residents: bench-only `community_member` and `community_participant` rows "
            f"for every synthetic member in the city and in `all` (one day each in the last 30), the "
            f"`community_scope` counters raised to match (no book entries or reductions behind them)")
        report = render(datetime.now(UTC), info, settings, synthetic, m)
        print("\n" + report)
        if not args.no_write:
            write_results(report)
            print(f"written to {RESULTS.relative_to(ROOT)} ({time.perf_counter() - bench.started:.0f}s in all)")
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
