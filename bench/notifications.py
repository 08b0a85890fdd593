"""`python -m bench.notifications`: issue 7's benchmark, notifications fanned out per second for a burst — a challenge
of 100,000 participants ending — against the raw job queue and raw PostgreSQL, measured in the same run.

Setup is set-based SQL: `--participants` residents, one push device each (half FCM, half APNs), in two challenges.
A burst records `challenge.finished` and runs, in this process as the worker would, the fan-out (`handle_event` with
api.events' handlers: `tell_challenge_finished` writes an inbox message and plans a live and a push delivery per
participant) and the delivery (`Sender.step()` until nothing is due, as `deliver_notifications` does): live events
PUBLISHed to Valkey (nobody subscribed), pushes to tests/push_support.py's fake FCM and APNs in a process of their
own (burst 1) or to the log channel, silenced (burst 2). Baselines: the same rows by one raw INSERT, arq
(`enqueue_job`, an in-process burst `Worker` running a no-op job), raw Redis LPUSH/RPOP. The report, its records and
its place in bench/RESULTS.md ("Notifications"): bench/notifications_report.py.

Starts the stores like bench/run.py (no API process: nothing here goes through HTTP); everything started here is
stopped here, also on Ctrl-C, SIGTERM or error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis.asyncio import Redis

from bench.energy import close_pool_in_time
from bench.intake import code_state
from bench.intake_breakdown import enable_statement_stats
from bench.load import LoadSpec, cpu_pct, die_with_parent
from bench.notifications_report import (
    Burst,
    Measured,
    Meter,
    Phase,
    TimedSender,
    combine,
    render,
    statements,
    write_results,
)
from bench.run import RESULTS, ROOT, pid_file, prepare, session

ENQUEUE_TASKS = 32  # concurrent enqueue_job calls (each is WATCH, EXISTS, MULTI/EXEC on its own connection)
PIPELINE = 1_000  # raw Redis commands per round trip
PRODUCT_SAMPLE = 2_000  # jobs the arq worker with the product's settings drains (~200/s: its poll caps it)
TUNED = {"max_jobs": 200, "poll_delay": 0.0, "queue_read_limit": 2_000}
POOL = 10  # connections, as the worker's pool
TITLE = ("全城绿色出行月", "City green-travel month")


# -- setup ----------------------------------------------------------------------------------------------------------


async def analyze() -> None:
    from wallet.db import connection

    async with connection() as conn:
        await conn.execute("ANALYZE holder, device, challenge, challenge_participant, inbox_message, delivery, "
                           "outbox_event, notification_preference, notification_settings")


@dataclass
class Population:
    holders: list[uuid.UUID]
    devices: list[int]  # each holder's device, in the same order
    challenges: list[int]
    seconds: float
    ledger_accounts: int


async def populate(n: int, stamp: str) -> Population:
    """Residents, their devices and two challenges they all take part in, with set-based SQL (the holder trigger
    opens each resident's three energy accounts, as at registration)."""
    from wallet.db import connection

    started, like = time.perf_counter(), f"bench-{stamp}-%@example.com"
    async with connection() as conn:
        await conn.execute(
            """INSERT INTO holder (id, status, email, password_hash, nickname, time_zone, language,
                                   show_on_public_leaderboards, created_at, updated_at, password_changed_at)
               SELECT gen_random_uuid(), 'active', 'bench-' || $1 || '-' || g || '@example.com',
                      '$argon2id$v=19$m=65536,t=3,p=4$bench$not-a-login', '居民' || g,
                      (ARRAY['Asia/Shanghai', 'Asia/Shanghai', 'Asia/Urumqi', 'Europe/London'])[1 + g % 4],
                      CASE WHEN g % 3 = 0 THEN 'en' ELSE 'zh-CN' END, false, now(), now(), now()
               FROM generate_series(1, $2::int) AS g""", stamp, n)
        await conn.execute(  # FCM registration tokens ~160 characters; APNs device tokens 64 hex digits
            """INSERT INTO device (holder, session, platform, token, app_version, created_at, last_seen_at)
               SELECT h.id, NULL, CASE WHEN h.n % 2 = 0 THEN 'fcm' ELSE 'apns' END,
                      CASE WHEN h.n % 2 = 0
                           THEN substr(md5(h.id::text || 'i'), 1, 22) || ':APA91b' || md5(h.id::text)
                                || md5(h.id::text || 'a') || md5(h.id::text || 'b') || md5(h.id::text || 'c')
                           ELSE md5(h.id::text) || md5(h.id::text || 'apns') END, '3.2.0', now(), now()
               FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM holder WHERE email LIKE $1) AS h""", like)
        challenges = [await conn.fetchval(
            """INSERT INTO challenge (code, title_zh, title_en, scope, scope_id, goal_kind, goal, starts_at, ends_at,
                                      participants, progress)
               VALUES ($1, $2, $3, 'global', '-', 'grams', 1000000000, now() - interval '30 days',
                       now() - interval '1 second', $4, $5) RETURNING id""",
            f"bench-{stamp}-{i}", f"{TITLE[0]}（{i}）", f"{TITLE[1]} ({i})", n, 1_234_567 * (i + 1)) for i in (1, 2)]
        for cid in challenges:
            await conn.execute(
                """INSERT INTO challenge_participant (challenge, holder, joined_at, amount)
                   SELECT $1, id, now() - interval '20 days', 12345 FROM holder WHERE email LIKE $2""", cid, like)
        rows = await conn.fetch("SELECT d.holder, d.id FROM device d JOIN holder h ON h.id = d.holder "
                                "WHERE h.email LIKE $1 ORDER BY d.holder", like)
        accounts = await conn.fetchval("SELECT count(*) FROM ledger_account a JOIN holder h ON h.id = a.holder "
                                       "WHERE h.email LIKE $1", like)
    await analyze()
    return Population([r["holder"] for r in rows], [r["id"] for r in rows], challenges,
                      time.perf_counter() - started, accounts)


# -- fake providers -----------------------------------------------------------------------------------------------


def _serve_providers(out: Any, stop: Any) -> None:
    """The child process: tests/push_support.py's fakes on a wall clock, until told to stop; then what they saw.
    Plain asyncio: the fake APNs server wants the standard library's transports (uvloop's are not)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_providers(out, stop))


async def _providers(out: Any, stop: Any) -> None:
    from tests.push_support import FakeApns, FakeClock, FakeGoogle

    class Wall(FakeClock):
        def __call__(self) -> float:
            return float(int(time.time()))

    google, apns = await FakeGoogle(Wall()).start(), await FakeApns(Wall()).start()
    out.put((google.config(), apns.config()))
    await asyncio.to_thread(stop.wait)
    problems = google.problems + apns.problems
    out.put({"fcm": len(google.sends), "tokens": len(google.token_requests), "apns": len(apns.requests),
             "connections": apns.connections, "problems": len(problems), "first": problems[:2]})
    await google.close()
    await apns.close()


class Providers:
    """The fakes in a process of their own (spawned, dies with us), so their CPU shows apart from the sender's."""

    def __enter__(self) -> Providers:
        ctx = multiprocessing.get_context("spawn")
        self._out, self._stop = ctx.Queue(), ctx.Event()
        self.proc = ctx.Process(target=_serve_providers, args=(self._out, self._stop), daemon=True)
        self.proc.start()
        self.fcm, self.apns = self._out.get(timeout=60)
        return self

    def seen(self) -> dict[str, Any]:
        self._stop.set()
        return self._out.get(timeout=30)

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


# -- a burst ------------------------------------------------------------------------------------------------------


async def deliver(meter: Meter, sender: TimedSender, i: int, push_label: str) -> tuple[Phase, Phase, Phase]:
    """Steps until one finds nothing due; each step timed and its CPU read, then classed by the channel most of its
    deliveries took (live and push deliveries of a message are planned apart, so steps are rarely mixed)."""
    if meter.stats:
        await statements(reset=True)
    steps: dict[str, list[Phase]] = {"live": [], "push": []}
    before, t0 = meter.snapshot(), time.perf_counter()
    while True:
        sender.reset()
        done = await sender.step()
        after, t1 = meter.snapshot(), time.perf_counter()
        if not done.claimed:
            break
        read = (sender.first or t1) - t0
        split = {"read": read, "record": sender.record_s, "send": t1 - t0 - read - sender.record_s}
        kind = "live" if 2 * sender.counts["live"] > done.claimed else "push"
        steps[kind].append(Phase(kind, "", "", done.claimed, t1 - t0, cpu_pct(before, after, t1 - t0), split=split,
                                 steps=1, detail=str(sender.counts["live"])))
        before, t0 = after, t1
    live = combine(f"live{i}", "delivery: steps of live events (PUBLISH)", "deliveries", None, steps["live"])
    push = combine(f"push{i}", f"delivery: steps of pushes ({push_label})", "deliveries", None, steps["push"])
    everything = combine(f"delivery{i}", "delivery: all steps", "deliveries", None, steps["live"] + steps["push"])
    mixed = sum(1 for p in steps["live"] + steps["push"] if 0 < int(p.detail) < p.count)
    everything.detail = f"{mixed} mixed steps"
    everything.statements = await statements() if meter.stats else {}
    return live, push, everything


async def burst(meter: Meter, i: int, pop: Population, result: str, channels: dict[str, Any], label: str,
                redis: Redis) -> Burst:
    """The challenge ends (its result and the event in one transaction, as the challenge step records them), the
    handler fans out, the sender delivers; then the rows are checked."""
    from api.events import EVENT_HANDLERS
    from wallet.db import connection, engine
    from wallet.outbox.service import handle_event, record_events

    n, cid = len(pop.holders), pop.challenges[i - 1]
    async with engine().transaction(), connection() as conn:
        progress = await conn.fetchval("UPDATE challenge SET result = $2, final_progress = progress, finished_at = "
                                       "now() WHERE id = $1 RETURNING progress", cid, result)
        [event_id] = await record_events([("challenge.finished", {"challenge_id": cid, "result": result,
                                                                  "progress": progress}, None)])
    fan = await meter.run(f"fanout{i}", "fan-out: `handle_event` → `tell_challenge_finished`", "messages",
                          lambda: handle_event(event_id, EVENT_HANDLERS))
    async with connection() as conn:
        made = await conn.fetchrow(
            """SELECT count(DISTINCT m.id) AS messages, count(*) FILTER (WHERE d.channel = 'live') AS live,
                      count(*) FILTER (WHERE d.channel = 'push') AS push
               FROM inbox_message m LEFT JOIN delivery d ON d.message = m.id WHERE m.event_id = $1""", event_id)
    if (made["messages"], made["live"], made["push"]) != (n, n, n):
        raise RuntimeError(f"fan-out wrote {dict(made)}, not {n:,} messages with a live and a push delivery each")
    fan = replace(fan, count=n)
    await analyze()  # not timed: the tables just grew by 3N rows; production statistics would be current
    published = (await redis.info("commandstats")).get("cmdstat_publish", {}).get("calls", 0)
    live, push, delivery = await deliver(meter, TimedSender(channels, redis), i, label)
    published = (await redis.info("commandstats")).get("cmdstat_publish", {}).get("calls", 0) - published
    async with connection() as conn:
        outcomes = {f"{r['channel']} {r['state']}": r["n"] for r in await conn.fetch(
            "SELECT d.channel, d.state, count(*) AS n FROM delivery d JOIN inbox_message m ON m.id = d.message "
            "WHERE m.event_id = $1 GROUP BY 1, 2", event_id)}
    total = combine(f"total{i}", "total: event → last delivery recorded", "residents told", n, [fan, delivery])
    print(f"  burst {i} ({label}): fan-out {fan.per_s:,.0f} messages/s, delivery {delivery.per_s:,.0f}/s "
          f"(live {live.per_s:,.0f}/s, push {push.per_s:,.0f}/s), total {total.per_s:,.0f} residents/s; "
          f"{outcomes}", flush=True)
    return Burst(label, [fan, live, push, delivery, total], outcomes, published)


# -- baselines ----------------------------------------------------------------------------------------------------


RAW_MESSAGES = """INSERT INTO bench_inbox (holder_id, event_id, kind, params, created_at, trigger, link)
  SELECT t.holder, $2, 'challenge_met', t.params::jsonb, now(), 'challenge_finished', t.link
  FROM unnest($1::uuid[], $3::text[], $4::text[]) AS t(holder, params, link)"""
RAW_SAME = f"""WITH msg AS ({RAW_MESSAGES} RETURNING id, holder_id)
INSERT INTO bench_delivery (message, holder, channel, device, state, attempts, due_at)
  SELECT m.id, m.holder_id, c.channel, CASE WHEN c.channel = 'push' THEN v.device END, 'pending', 0, now()
  FROM msg m JOIN unnest($1::uuid[], $5::bigint[]) AS v(holder, device) ON v.holder = m.holder_id
  CROSS JOIN (VALUES ('live'), ('push')) AS c(channel)"""


async def raw_pg_rows(meter: Meter, pop: Population) -> list[Phase]:
    """Copies of inbox_message and delivery (columns, defaults, checks, indexes; no foreign keys), written by one
    statement each: the messages alone, then messages and both deliveries, as the fan-out writes them."""
    from notifications.catalogue import link_for
    from wallet.db import connection

    n = len(pop.holders)  # the params and link `tell_challenge_finished` writes (the same for every resident)
    params = {"challenge_id": pop.challenges[0], "challenge": TITLE[0], "challenge_en": TITLE[1],
              "progress": "1,234.6 千克减排", "progress_en": "1,234.6 kg CO2e avoided"}
    args = (pop.holders, uuid.uuid4(), [msgspec.json.encode(params).decode()] * n,
            [link_for("challenge_met", params)] * n)
    async with connection() as conn:
        await conn.execute("CREATE TABLE bench_inbox (LIKE inbox_message INCLUDING ALL); "
                           "CREATE TABLE bench_delivery (LIKE delivery INCLUDING ALL)")
        try:
            only = await meter.run("raw_messages", "raw PG: inbox rows, one INSERT … unnest", "messages",
                                   lambda: conn.execute(RAW_MESSAGES, *args))
            await conn.execute("TRUNCATE bench_inbox, bench_delivery")
            same = await meter.run("raw_same", "raw PG: the fan-out's rows (messages + 2 deliveries each), one "
                                   "statement", "messages", lambda: conn.execute(RAW_SAME, *args, pop.devices))
        finally:
            await conn.execute("DROP TABLE IF EXISTS bench_inbox, bench_delivery")
    return [replace(only, count=n), replace(same, count=n)]


async def bench_job(ctx: dict[str, Any], holder: str, challenge: int) -> None:
    """The job-queue baseline's job: nothing, so what is measured is the queue."""


async def queue_rows(meter: Meter, redis: Redis, pop: Population) -> list[Phase]:
    """arq as the product configures it (api/worker.py: msgspec JSON, max_jobs, timeouts, results kept), a job per
    resident: enqueued from 32 tasks, drained by an in-process burst Worker with the product's settings (a sample)
    and tuned; then raw Redis LPUSH and RPOP of the same payloads, pipelined."""
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    from api.worker import WorkerSettings as product

    logging.getLogger("arq").setLevel(logging.WARNING)  # arq logs every job at INFO
    n, cid, holders = len(pop.holders), pop.challenges[0], [str(h) for h in pop.holders]
    codec = {"job_serializer": product.job_serializer, "job_deserializer": product.job_deserializer}
    pool = await create_pool(RedisSettings.from_dsn(os.environ["REDIS_URL"]), **codec)

    async def enqueue(queue: str, ids: list[str]) -> int:
        async def part(k: int) -> None:
            for h in ids[k::ENQUEUE_TASKS]:
                await pool.enqueue_job("bench_job", h, cid, _queue_name=queue)
        await asyncio.gather(*(part(k) for k in range(ENQUEUE_TASKS)))
        return len(ids)

    async def drain(queue: str, **tuning: Any) -> int:
        worker = Worker([func(bench_job, name="bench_job")], queue_name=queue, redis_pool=pool, burst=True,
                        handle_signals=False, job_timeout=product.job_timeout, keep_result=product.keep_result,
                        log_results=False, **codec, **tuning)
        await worker.async_run()
        if worker.jobs_failed or await pool.zcard(queue):
            raise RuntimeError(f"arq drain of {queue}: {worker.jobs_failed} failed, {await pool.zcard(queue)} left")
        return worker.jobs_complete

    try:
        sample = holders[:min(n, PRODUCT_SAMPLE)]
        enq = await meter.run("arq_enqueue", f"arq: `enqueue_job` ×{n:,} ({ENQUEUE_TASKS} tasks)", "jobs",
                              lambda: enqueue("bench:tuned", holders))
        tuned = await meter.run("arq_drain_tuned", "arq: burst Worker, no-op job, tuned (max_jobs 200, poll_delay 0, "
                                "queue_read_limit 2,000)", "jobs", lambda: drain("bench:tuned", **TUNED))
        await enqueue("bench:product", sample)
        reads = max(5 * product.max_jobs, 100)  # arq's queue_read_limit default: job ids taken per poll
        own = await meter.run("arq_drain_product", f"arq: burst Worker, no-op job, the product's settings (max_jobs "
                              f"{product.max_jobs}, poll_delay 0.5 s; {len(sample):,} jobs)", "jobs",
                              lambda: drain("bench:product", max_jobs=product.max_jobs))
        own.detail = (f"The product's worker takes at most {reads} job ids per poll (arq: 5 × max_jobs, at least "
                      f"100) and polls every 0.5 s: a ceiling of {reads / 0.5:,.0f} jobs/s whatever the jobs do")
    finally:
        await pool.aclose()
    best = max((tuned, own), key=lambda p: p.per_s)
    total = combine("arq_total", "arq: enqueue + drain (the better worker)", "jobs", n,
                    [replace(p, seconds=p.seconds * n / p.count) for p in (enq, best)])
    payloads = [msgspec.json.encode([h, cid]) for h in holders]

    async def lpush() -> int:
        for lo in range(0, n, PIPELINE):
            async with redis.pipeline(transaction=False) as pipe:
                for p in payloads[lo:lo + PIPELINE]:
                    pipe.lpush("bench:list", p)
                await pipe.execute()
        return n

    async def rpop() -> int:
        popped = 0
        for lo in range(0, n, PIPELINE):
            async with redis.pipeline(transaction=False) as pipe:
                for _ in range(min(PIPELINE, n - lo)):
                    pipe.rpop("bench:list")
                popped += sum(r is not None for r in await pipe.execute())
        return popped

    rows = [enq, tuned, own, total,
            await meter.run("redis_lpush", f"Redis: LPUSH, {PIPELINE:,} per round trip", "payloads", lpush),
            await meter.run("redis_rpop", f"Redis: RPOP, {PIPELINE:,} per round trip", "payloads", rpop)]
    print("  " + ", ".join(f"{r.key} {r.per_s:,.0f}/s" for r in rows), flush=True)
    return rows


# -- the run ------------------------------------------------------------------------------------------------------


async def measure_all(spec: LoadSpec, stats: bool, n: int) -> Measured:
    from notifications.channels.apns import ApnsChannel
    from notifications.channels.fcm import FcmChannel
    from notifications.channels.log import LogChannel
    from wallet.db import start_pool

    stamp = f"{int(time.time())}{secrets.token_hex(3)}"
    await start_pool(os.environ["DATABASE_URL"], size_min=1, size_max=POOL)
    redis = Redis.from_url(os.environ["REDIS_URL"], socket_timeout=120)
    meter = Meter(spec, stats)
    try:
        pop = await populate(n, stamp)
        print(f"set up {n:,} residents with devices in 2 challenges in {pop.seconds:.1f} s", flush=True)
        baselines = await raw_pg_rows(meter, pop)
        baselines += await queue_rows(meter, redis, pop)
        with Providers() as fakes:
            channels = {"fcm": FcmChannel(fakes.fcm), "apns": ApnsChannel(fakes.apns), "log": LogChannel()}
            try:
                first = await burst(replace(meter, spec=replace(spec, server_pid=fakes.proc.pid)), 1, pop, "met",
                                    channels, "fake FCM + APNs", redis)
            finally:
                for channel in channels.values():
                    await channel.aclose()
            first.providers = fakes.seen()
        push_log = logging.getLogger("notifications.push")
        level = push_log.level
        push_log.setLevel(logging.WARNING)  # silenced: one INFO line per push otherwise
        try:
            second = await burst(meter, 2, pop, "missed", {"log": LogChannel()}, "log channel, silenced", redis)
        finally:
            push_log.setLevel(level)
        return Measured(n, pop.ledger_accounts, pop.seconds, [first, second], baselines)
    finally:
        await redis.aclose()
        await close_pool_in_time()


def _code() -> str:
    """bench.intake's account of the code measured, plus uncommitted changes under notifications/."""
    try:
        changed = subprocess.run(["git", "status", "--porcelain", "--", "notifications"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        changed = ""
    files = [line[3:] for line in changed.splitlines() if line.strip()]
    return code_state() + (f"; uncommitted under notifications/: {', '.join(files)}" if files else "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.notifications", description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=100_000,
                        help="residents in the challenge that ends, each with one push device (default 100000)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    if not 1_000 <= args.participants <= 1_000_000:
        parser.error("--participants 1000–1000000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with session("cw-bench-notifications-") as bench:
        prepare(bench.servers, bench.data_dir)
        stats = enable_statement_stats(bench.servers)  # before any pool connects: it restarts PostgreSQL
        code = _code()
        spec = LoadSpec(port=0, path="", concurrency=1, duration_s=0, warmup_s=0,
                        postgres_pid=pid_file(bench.data_dir / "pg" / "postmaster.pid"),
                        valkey_pid=pid_file(bench.data_dir / "valkey" / "server.pid"))
        run: Callable[..., Measured] = asyncio.run
        with contextlib.suppress(ImportError):
            import uvloop  # the worker runs on uvloop too

            run = uvloop.run
        m = replace(run(measure_all(spec, stats, args.participants)), code=code)
        report = render(datetime.now(UTC), m, POOL)
        print("\n" + report)
        if not args.no_write:
            write_results(report)
            print(f"written to {RESULTS.relative_to(ROOT)} ({time.perf_counter() - bench.started:.0f}s in all)")
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
