"""`python -m bench.energy`: issue 5's benchmark, redemptions/s under contention and energy crediting as part of
ingestion, each against baselines measured in the same run on the same machine.

Redemptions (`POST /v1/me/redemptions`, an Idempotency-Key per request, a voucher code issued in the request):
(a) many wallets and a reward with unlimited stock, (b) many wallets and one reward whose finite stock every
redemption decrements (one hot row), (c) one wallet redeemed concurrently (its accounts serialize the requests);
each against `reserve` + `fulfil` in-process and raw SQL writing the same rows. Intake: partner batches of 100
whose credits grow energy balls in the same statement, against bench/intake.py's raw PostgreSQL insert of the
activities and against the same in-process intake with the energy CTEs left out of the statement (in this process
only); pg_stat_statements says what share of the write statement the energy takes. Collect-all on wallets with
ripe balls, over HTTP and in-process.

Starts the stores and one API process like bench/run.py and writes its report under its own heading in
bench/RESULTS.md ("Energy and the mall"). Everything started here is stopped here, also on Ctrl-C, SIGTERM or error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import secrets
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec

from bench.energy_report import INTAKE_BATCH, WORKLOADS, Measured, Row, render, write_results
from bench.energy_setup import (
    BALLS,
    PRICE,
    RAW_ROWS,
    STOCK,
    Wallet,
    bench_rewards,
    energetic,
    energy_off,
    entries_and_balls,
    fund,
    grow_ripe_balls,
    raw_redeem,
    wallets,
    write_times,
)
from bench.intake import (
    MAX_BASELINE_BATCHES,
    RAW_RESIDENTS,
    Caller,
    Poster,
    Work,
    build_requests,
    code_state,
    drive,
    raw_work,
    service_work,
    sources,
)
from bench.intake_breakdown import enable_statement_stats, statement_times
from bench.intake_setup import Item, Resident, create_partner, headroom, item_pool, link_in_process
from bench.load import HOST, LoadSpec
from bench.run import RESULTS, ROOT, Server, pid_file, prepare, session

REDEEM_PATH, COLLECT_PATH = "/v1/me/redemptions", "/v1/me/energy/balls/collect"
ANALYZE = ("ANALYZE activity, book_entry, book_head, outbox_event, ledger_transfer, ledger_account, redemption, "
           "reward, energy_ball")


# -- work units --------------------------------------------------------------------------------------------------


def post_requests(port: int, path: str, tokens: Sequence[str], body: bytes,
                  key_tag: str | None) -> Callable[[int], bytes]:
    """Request bytes for unit n: resident n mod residents, with `key_tag` an Idempotency-Key carrying n."""
    heads = [(f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {t}\r\nContent-Type: "
              f"application/json\r\nContent-Length: {len(body)}\r\n").encode() for t in tokens]
    if key_tag is None:
        return lambda n: heads[n % len(heads)] + b"\r\n" + body
    tag = key_tag.encode()
    return lambda n: heads[n % len(heads)] + b"Idempotency-Key: %s-%010d\r\n\r\n" % (tag, n) + body


class _State(msgspec.Struct):
    state: str = ""


class _Problem(msgspec.Struct):
    code: str = ""


class _Collected(msgspec.Struct):
    balls: list[int] = []


def _problem(status: int, body: bytes) -> str:
    try:
        return f"HTTP {status} {msgspec.json.decode(body, type=_Problem).code}".rstrip()
    except msgspec.DecodeError:
        return f"HTTP {status}"


def redeemed(status: int, body: bytes) -> str | None:
    """201 with the redemption fulfilled (a voucher code issued in the request); 409s are refusals, counted."""
    if status != 201:
        return _problem(status, body)
    state = msgspec.json.decode(body, type=_State).state
    return None if state == "fulfilled" else f"201 but {state}"


def collected(status: int, body: bytes) -> str | None:
    if status != 200:
        return _problem(status, body)
    balls = len(msgspec.json.decode(body, type=_Collected).balls)
    return None if balls == BALLS else f"collected {balls} balls"


def service_redeem(holders: Sequence[Wallet], reward_id: int, tag: str) -> Work:
    """What the endpoint calls, in-process: `reserve` under the holder's lock, then `fulfil` (voucher code issued)."""
    from wallet.errors import DomainError
    from wallet.mall.redeem import fulfil, reserve

    async def work(n: int) -> str | None:
        try:
            redemption, created = await reserve(holders[n % len(holders)].holder_id, reward_id,
                                                idempotency_key=f"{tag}-{n:010d}")
            if not created:
                return "replayed"
            done = await fulfil(redemption["id"], None)
        except DomainError as exc:
            return f"{exc.code}"
        return None if done["state"] == "fulfilled" else f"state {done['state']}"
    return work


def raw_redeem_work(holders: Sequence[Wallet], mall: int, reward_id: int, stocked: bool, tag: str) -> Work:
    async def work(n: int) -> str | None:
        return await raw_redeem(holders[n % len(holders)], mall, reward_id, stocked, f"{tag}-{n:010d}")
    return work


def service_collect(holders: Sequence[Wallet]) -> Work:
    """`collect` in-process, every ripe ball of wallet n (each wallet once)."""
    from wallet.energy.balls import collect

    async def work(n: int) -> str | None:
        balls = len((await collect(holders[n].holder_id))["balls"])
        return None if balls == BALLS else f"collected {balls} balls"
    return work


def _close(workers: Sequence[Any]) -> None:
    for worker in workers:
        if isinstance(worker, Caller):
            worker.close()


# -- the run -----------------------------------------------------------------------------------------------------


@dataclass
class Setup:
    partner: dict[str, Any]
    many: list[Wallet]  # funded wallets (a) and (b) rotate over
    solo: list[Wallet]  # the one wallet of (c)
    rewards: tuple[int, int]  # unlimited, finite stock
    mall: int  # the energy:mall account, for raw PG's posting transfer
    collectors: dict[str, list[Wallet]]  # path -> wallets with ripe balls, warm-up ones first
    intake: dict[str, list[Resident]]  # path -> residents judged by that path only
    raw: list[Resident]  # raw PG intake's residents
    pool: list[Item]  # bench/intake.py's activity pool
    residents: int
    seconds: float


async def set_up(api: Server, env: dict[str, str], args: argparse.Namespace, stamp: str) -> Setup:
    from wallet.db import connection
    from wallet.ledger.service import system_account

    started, counter = time.perf_counter(), itertools.count()

    def emails(n: int) -> list[str]:
        return [f"bench-{stamp}-{next(counter)}@example.com" for _ in range(n)]

    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
        partner, _ = await create_partner(http, stamp)
    many, solo = await wallets(env, partner, emails(args.wallets)), await wallets(env, partner, emails(1))
    collectors = {path: await wallets(env, partner, emails(args.warm + args.collect_wallets), tokens=path == "HTTP")
                  for path in ("service", "HTTP")}
    intake = {path: await link_in_process(env, partner, emails(args.intake_residents), tokens=path == "HTTP")
              for path in ("service", "service, energy off", "HTTP")}
    raw = await link_in_process(env, partner, emails(RAW_RESIDENTS), tokens=False)
    await fund([*many, *solo])
    rewards = await bench_rewards(stamp)
    pool = item_pool(datetime.now(UTC).replace(microsecond=0))
    for i, holders in enumerate(collectors.values()):
        as_residents = [Resident(w.holder_id, w.sub_account_id, w.token) for w in holders]
        await grow_ripe_balls(sources(as_residents, partner), energetic(pool), f"{stamp}-g{i}")
    async with connection() as conn:
        mall = await system_account(conn, "energy:mall")
    return Setup(partner, many, solo, rewards, mall, collectors, intake, raw, pool, next(counter),
                 time.perf_counter() - started)


@dataclass
class Rows:
    """Measures rows one after another: ANALYZE, the closed loop, pg_stat_statements over the window."""

    spec: LoadSpec
    stats: bool
    rows: list[Row] = field(default_factory=list)

    async def row(self, key: str, path: str, workers: Sequence[Any], units: int | None = None, batch: int = 1,
                  verdicts: Counter[str] | None = None) -> None:
        from wallet.db import connection

        async with connection() as conn:  # fresh planner statistics for tables that grow during the run
            await conn.execute(ANALYZE)
        reset = (lambda: statement_times(reset=True)) if self.stats else None
        result = await drive(workers, replace(self.spec, concurrency=len(workers)), units, reset)
        _close(workers)
        self.rows.append(r := Row(key, path, len(workers), result, batch, await write_times() if self.stats else {},
                                  verdicts if verdicts is not None else Counter()))
        print(f"  {WORKLOADS[key][1]:<56} {path:<19} c={r.conns:<3} {r.per_s:>9,.0f} {WORKLOADS[key][0]}/s  "
              f"p50 {r.result.p50_ms:7.1f} ms  p99 {r.result.p99_ms:7.1f} ms  errors {r.result.errors}"
              + (f" {r.result.error_kinds}" if r.result.errors else ""), flush=True)


async def redemption_rows(m: Rows, s: Setup, port: int, conns: int, stamp: str) -> None:
    """(a), (b), (c), each scenario's baselines right before its HTTP row."""
    unlimited, stocked = s.rewards
    for key, (holders, reward, hot) in {"a": (s.many, unlimited, False), "b": (s.many, stocked, True),
                                        "c": (s.solo, unlimited, False)}.items():
        await m.row(key, "raw PG", [raw_redeem_work(holders, s.mall, reward, hot, f"{stamp}-{key}r")] * conns)
        await m.row(key, "service", [service_redeem(holders, reward, f"{stamp}-{key}s")] * conns)
        build = post_requests(port, REDEEM_PATH, [w.token for w in holders], b'{"reward_id":%d}' % reward,
                              f"{stamp}-{key}h")
        await m.row(key, "HTTP", [Caller(port, build, redeemed) for _ in range(conns)])


async def intake_rows(m: Rows, s: Setup, port: int, args: argparse.Namespace, tag: str) -> None:
    """Intake with energy against raw PG's activity inserts (bench/intake.py's baseline, after a discarded tenth)
    and against itself without the energy CTEs; each path judges for residents of its own, whose books start empty."""
    conns, units = args.intake_conns, min(math.ceil(args.rows / INTAKE_BATCH), MAX_BASELINE_BATCHES)
    pid, first = uuid.UUID(s.partner["id"]), max(1, units // 10)
    await drive([raw_work(s.raw, pid, s.pool, INTAKE_BATCH, first, tag + "rw")] * conns, m.spec, first)
    await m.row("intake", "raw PG", [raw_work(s.raw, pid, s.pool, INTAKE_BATCH, units, tag + "r")] * conns, units,
                INTAKE_BATCH)
    for i, path in enumerate(("service", "service, energy off")):
        srcs, verdicts = sources(s.intake[path], s.partner), Counter[str]()
        with energy_off() if path.endswith("off") else contextlib.nullcontext():
            await m.row("intake", path, [service_work(srcs, s.pool, INTAKE_BATCH, f"{tag}s{i}", verdicts)] * conns,
                        batch=INTAKE_BATCH, verdicts=verdicts)
    verdicts = Counter[str]()
    build = build_requests(port, [r.token for r in s.intake["HTTP"]], s.pool, INTAKE_BATCH, f"{tag}h")
    await m.row("intake", "HTTP", [Poster(port, build, INTAKE_BATCH, verdicts) for _ in range(conns)],
                batch=INTAKE_BATCH, verdicts=verdicts)


async def collect_rows(m: Rows, s: Setup, port: int, conns: int, warm: int) -> None:
    """Collect-all, each wallet once; the first `warm` wallets of each path are a discarded warm-up."""
    for path, holders in s.collectors.items():
        def workers(part: list[Wallet], path: str = path) -> list[Any]:
            if path == "service":
                return [service_collect(part)] * conns
            build = post_requests(port, COLLECT_PATH, [w.token for w in part], b"", None)
            return [Caller(port, build, collected) for _ in range(conns)]

        warmers = workers(holders[:warm])
        await drive(warmers, replace(m.spec, concurrency=conns), warm)
        _close(warmers)
        await m.row("collect", path, workers(holders[warm:]), units=len(holders) - warm)


async def ledger_verdict(off: int) -> str:
    """`check_ledger()` after the run; `every-credit-grew-its-ball` must fail by exactly the `off` credits with
    energy the energy-off row wrote without their ball."""
    from wallet.ledger.check import check_ledger

    started = time.perf_counter()
    report = await check_ledger()

    def why(name: str, offenders: int) -> str:
        if name != "every-credit-grew-its-ball":
            return ""
        return (", exactly the energy-off row's credits with energy, on purpose" if offenders == off
                else f"; the energy-off row explains {off:,} of them")

    failed = [f"{f.name} ({f.offenders:,} offenders{why(f.name, f.offenders)})" for f in report.findings if not f.ok]
    return (f"{len(report.findings) - len(failed)} of {len(report.findings)} checks pass"
            + (f"; failing: {', '.join(failed)}" if failed else "") + f" ({time.perf_counter() - started:.1f} s)")


async def measure_all(api: Server, spec: LoadSpec, env: dict[str, str], args: argparse.Namespace,
                      stats: bool) -> Measured:
    from wallet.db import start_pool

    stamp = f"{int(time.time())}-{secrets.token_hex(3)}"
    await start_pool(os.environ["DATABASE_URL"], size_min=1, size_max=max(args.conns, args.intake_conns) + 1)
    try:
        s = await set_up(api, env, args, stamp)
        print(f"partner, {len(s.many)} + 1 funded wallets, {2 * (args.warm + args.collect_wallets)} collect-all "
              f"wallets with {BALLS} ripe balls each, {3 * args.intake_residents} + {RAW_RESIDENTS} intake residents "
              f"ready in {s.seconds:.1f}s", flush=True)
        m = Rows(spec, stats)
        await redemption_rows(m, s, api.port, args.conns, stamp)
        await intake_rows(m, s, api.port, args, f"{stamp}-i")
        await collect_rows(m, s, api.port, args.conns, args.warm)
        balls = {path: await entries_and_balls([r.holder_id for r in holders]) for path, holders in s.intake.items()}
        return Measured(m.rows, s.seconds, s.residents, balls, await ledger_verdict(balls["service, energy off"][1]))
    finally:
        await close_pool_in_time()


async def close_pool_in_time(seconds: float = 10) -> None:
    """Close this process's pool; after an interrupt a cancelled worker can leave a connection checked out, which
    would make asyncpg's graceful close wait for ever, so after `seconds` the pool is terminated instead."""
    from wallet.db import close_pool, engine

    try:
        await asyncio.wait_for(close_pool(), seconds)
    except TimeoutError:  # asyncpg terminates the pool when its close is cancelled; make sure of it
        if (pool := engine().pool) is not None:
            pool.terminate()


# -- main --------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.energy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per timed row (default 6)")
    parser.add_argument("--warmup", type=float, default=2.0, help="discarded seconds before each (default 2)")
    parser.add_argument("--conns", type=int, default=16,
                        help="connections (HTTP) or tasks (baselines) for redemptions and collects (default 16)")
    parser.add_argument("--intake-conns", type=int, default=8,
                        help="connections or tasks for intake batches, as bench.intake (default 8)")
    parser.add_argument("--wallets", type=int, default=200, help="funded wallets (a) and (b) rotate over (default 200)")
    parser.add_argument("--intake-residents", type=int, default=150,
                        help="residents per intake path (service, energy off, HTTP; default 150)")
    parser.add_argument("--rows", type=int, default=50_000, help="rows for the raw PG intake row (default 50000)")
    parser.add_argument("--collect-wallets", type=int, default=500,
                        help=f"wallets with {BALLS} ripe balls per collect row, plus a tenth to warm up (default 500)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    if not (0.5 <= args.duration <= 120 and 0 <= args.warmup <= 60 and 1 <= args.conns <= 64
            and 1 <= args.intake_conns <= 64 and 1 <= args.wallets <= 5000 and 20 <= args.intake_residents <= 2000
            and 1_000 <= args.rows <= 1_000_000 and 20 <= args.collect_wallets <= 20_000):
        parser.error("--duration 0.5–120, --warmup 0–60, --conns and --intake-conns 1–64, --wallets 1–5000, "
                     "--intake-residents 20–2000, --rows 1000–1000000, --collect-wallets 20–20000")
    args.warm = max(10, args.collect_wallets // 10)  # collect-all wallets to warm up with, per path
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    headroom()  # refuses an intake mix that caps or plausibility would not credit
    with session("cw-bench-energy-") as bench:
        env = prepare(bench.servers, bench.data_dir)
        stats = enable_statement_stats(bench.servers)  # before any pool connects: it restarts PostgreSQL
        api = Server("api", ["--factory", "api.app:create_app"], env, bench.work, "/ready")
        bench.running.append(api)
        api.start()
        code = code_state()  # what the API just imported
        spec = LoadSpec(port=api.port, path=REDEEM_PATH, concurrency=1, duration_s=args.duration,
                        warmup_s=args.warmup, server_pid=api.proc.pid if api.proc else None,
                        postgres_pid=pid_file(bench.data_dir / "pg" / "postmaster.pid"),
                        valkey_pid=pid_file(bench.data_dir / "valkey" / "server.pid"))
        run: Callable[..., Measured] = asyncio.run
        with contextlib.suppress(ImportError):
            import uvloop  # the API runs on uvloop; so do the in-process baselines, for a fair comparison

            run = uvloop.run
        measured = replace(run(measure_all(api, spec, env, args, stats)), code=code)
        report = render(datetime.now(UTC), (
            f"uvicorn 1 worker, --no-access-log; timed rows: {args.warmup:g} s warm-up + {args.duration:g} s "
            f"measured; redemptions and collects over {args.conns} connections (HTTP) or tasks with a pool of as many "
            f"connections (in-process, raw PG); every redemption a fresh Idempotency-Key, price {PRICE}, (a)/(b) "
            f"rotating over {args.wallets} wallets funded with one operator award each, (b) from a stock of "
            f"{STOCK:,}, (c) one wallet; raw PG writes a redemption's {RAW_ROWS[False]} rows ({RAW_ROWS[True]} with "
            f"stock) in its two commits, one statement each; intake: {args.intake_conns} connections or tasks, "
            f"batches of {INTAKE_BATCH} from bench/intake.py's workload, {args.intake_residents} residents of its own "
            f"per path, raw PG {args.rows:,} activity rows after a discarded tenth (at most {MAX_BASELINE_BATCHES:,} "
            f"batches); energy off = this process's copy of the intake write statement without the `grow_sql` CTEs "
            f"(the API untouched); collect-all: {args.collect_wallets:,} wallets each with {BALLS} ripe balls grown "
            f"through intake, each collected once, after {args.warm:,} to warm up; "
            f"{measured.residents:,} residents set up in-process in {measured.setup_s:.0f} s; generator: this "
            f"process's raw-socket keep-alive client on the same cores; no worker or outbox relay running"), measured)
        print("\n" + report)
        if not args.no_write:
            write_results(report)
            print(f"written to {RESULTS.relative_to(ROOT)} ({time.perf_counter() - bench.started:.0f}s in all)")
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
