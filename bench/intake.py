"""`python -m bench.intake`: partner intake end to end through HTTP (batches on `POST /v1/partner/activities`,
single reports on `POST /v1/partner/activity`), every activity judged (dedupe, plausibility, caps), written with
its verdict, credited into the hash-chained book and announced in the outbox, against two baselines measured in
the same run on the same machine: raw PostgreSQL batched inserts of the same activity rows (what the database
sustains) and `record_reports` in-process (what judging and the book cost without HTTP). Issue 4's targets:
batches >= 5,000 activities/s, single reports >= 800/s on the 2-core machine.

Starts the stores and one API process like bench/run.py, links hundreds of residents to a bench partner,
measures, times the parts of `record_reports` in-process (bench/intake_breakdown.py), and writes the report
under its own heading in bench/RESULTS.md. Everything started here is stopped here, also on Ctrl-C, SIGTERM or
error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec

from bench.intake_breakdown import Breakdown, enable_statement_stats, statement_times
from bench.intake_breakdown import measure as measure_parts
from bench.intake_setup import (
    MIX,
    SPREAD,
    ZONE,
    Item,
    Resident,
    create_partner,
    headroom,
    item_pool,
    link_in_browser,
    link_in_process,
)
from bench.load import HOST, LoadResult, LoadSpec, cpu_pct, cpu_snapshot, summarise
from bench.run import HISTORY as RUN_HISTORY
from bench.run import RESULTS, ROOT, Server, machine, pid_file, prepare, session

BATCH_PATH, SINGLE_PATH = "/v1/partner/activities", "/v1/partner/activity"
BATCHES = (1, 100, 1000)  # the baselines' batch sizes; 1 is the single reports' baseline
HTTP_BATCHES = (100, 1000)
TARGET = {"batch": 5_000, "single": 800}  # activities/s, issue 4's quality bar
MAX_BASELINE_BATCHES = 10_000  # caps raw PG's batches of 1, so each raw row stays a few seconds
RAW_RESIDENTS = 20  # raw PG writes for residents of its own: its rows never join a judged resident's context
START, END, HISTORY = "<!-- intake:start -->", "<!-- intake:end -->", "## Partner intake — history"
Work = Callable[[int], Awaitable[str | None]]  # unit (one request or batch) number -> None, or what went wrong


@dataclass
class Row:
    path: str  # "raw PG", "service", "HTTP batch" or "HTTP single"
    batch: int
    conns: int
    result: LoadResult
    verdicts: Counter[str] = field(default_factory=Counter)  # every unit of the row, warm-up included
    book: float = math.nan  # activities per judged resident when the row ended
    statements: dict[str, tuple[int, float, float]] = field(default_factory=dict)  # measured window: calls, ms

    @property
    def per_s(self) -> float:
        return self.result.rps * self.batch


class _Verdict(msgspec.Struct):
    verdict: str | None = None
    code: str = ""


class _Receipts(msgspec.Struct):
    receipts: list[_Verdict]


def _items(pool: Sequence[Item], batch: int, n: int) -> list[Item]:
    return [pool[(n * batch + i) % len(pool)] for i in range(batch)]


def _prime_at_least(n: int) -> int:
    while n > 2 and any(n % d == 0 for d in range(2, math.isqrt(n) + 1)):
        n += 1
    return n


# -- work units and the closed-loop driver -----------------------------------------------------------------


def activity_insert() -> str:
    """The judge's own activity INSERT (imported, so the baseline cannot drift from it): `$1`–`$5` holder,
    sub-account, partner, via, release; `$6`–`$21` the column arrays; `RETURNING id`. It has lived alone as
    `_INSERT` and as `_ACTIVITIES` inside the one write statement."""
    from wallet.intake import judge

    for name in ("_ACTIVITIES", "_INSERT"):
        if isinstance(sql := getattr(judge, name, None), str) and sql.lstrip().startswith("INSERT INTO activity"):
            return sql
    raise RuntimeError("no activity INSERT found in wallet/intake/judge.py: update bench/intake.py's raw PG row")


def raw_work(residents: list[Resident], partner: uuid.UUID, pool: list[Item], batch: int, units: int,
             tag: str) -> Work:
    """The judge's activity INSERT with the columns a credited activity gets, built beforehand: asyncpg and
    PostgreSQL only; no judging, book entries or outbox events."""
    from wallet.db import connection
    from wallet.methodology.catalogue import CURRENT_RELEASE, current_version, reduction_mg

    insert = activity_insert()

    args = []
    for n in range(units):
        r, items = residents[n % len(residents)], _items(pool, batch, n)
        versions = [current_version(it.behaviour) for it in items]
        args.append((
            r.holder_id, r.sub_account_id, partner, "token", CURRENT_RELEASE, [uuid.uuid4() for _ in items],
            [f"{tag}-{n:010d}-{i}" for i in range(batch)], [it.behaviour for it in items],
            [it.quantity for it in items], [it.occurred_at for it in items], [None] * batch, ["{}"] * batch,
            ["0" * 64] * batch, ["credited"] * batch, ["credited"] * batch, ["{}"] * batch, [None] * batch,
            [v.version for v in versions], [it.occurred_at.astimezone(ZONE).date() for it in items],
            [it.quantity for it in items],
            [reduction_mg(v, it.quantity) for v, it in zip(versions, items, strict=True)],
        ))

    async def work(n: int) -> str | None:
        async with connection() as conn:
            return None if len(await conn.fetch(insert, *args[n])) == batch else "rows not inserted"
    return work


def sources(residents: list[Resident], partner: dict[str, Any]) -> list[Any]:
    """What the API's partner auth hands `record_reports` for each resident's token."""
    from wallet.intake.reports import Source

    names = (partner["name"], partner.get("name_en") or partner["name"])
    return [Source(r.holder_id, r.sub_account_id, uuid.UUID(partner["id"]), "token", "verified", names,
                   frozenset(MIX)) for r in residents]


def service_work(srcs: list[Any], pool: list[Item], batch: int, tag: str, verdicts: Counter[str]) -> Work:
    """`record_reports` in-process, as the API calls it: one holder's reports judged and written in one
    transaction. Reports are built per unit from the pool (as the API builds them from the body)."""
    from wallet.intake.judge import record_reports
    from wallet.intake.reports import Report

    async def work(n: int) -> str | None:
        reports = [Report(f"{tag}-{n:010d}-{i}", it.behaviour, it.quantity, it.occurred_at)
                   for i, it in enumerate(_items(pool, batch, n))]
        receipts = await record_reports(srcs[n % len(srcs)], reports)
        verdicts.update(r.verdict or r.code for r in receipts)
        return next((r.code for r in receipts if r.verdict is None), None)
    return work


def build_requests(port: int, tokens: list[str], pool: list[Item], batch: int, tag: str) -> Callable[[int], bytes]:
    """Request bytes for unit n: resident n mod residents, one of a prime number of bodies drawn from the pool (so
    a resident gets different activities each time), event ids carrying n. Built once per row, so a request
    costs one bytes.replace and the generator leaves the cores to the server. batch 0: one activity."""
    single, when = batch == 0, "%Y-%m-%dT%H:%M:%S+00:00"

    def item(it: Item, event_id: str) -> str:
        return (f'{{"event_id":"{event_id}","behaviour":"{it.behaviour}","quantity":{it.quantity},'
                f'"occurred_at":"{it.occurred_at.astimezone(UTC).strftime(when)}"}}')

    if single:
        bodies = [item(it, f"{tag}-##########").encode() for it in pool]
    else:
        variants = _prime_at_least(max(1, 20_000 // batch))
        bodies = [('{"activities":[' + ",".join(item(it, f"{tag}-##########-{i}") for i, it in
                                                enumerate(_items(pool, batch, v))) + "]}").encode()
                  for v in range(variants)]
    path = SINGLE_PATH if single else BATCH_PATH
    heads = [(f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {t}\r\n"
              f"Content-Type: application/json\r\n").encode() for t in tokens]
    lengths = [b"Content-Length: %d\r\n\r\n" % len(b) for b in bodies]
    return lambda n: heads[n % len(heads)] + lengths[n % len(bodies)] + bodies[n % len(bodies)].replace(
        b"##########", b"%010d" % n)


class Caller:
    """One keep-alive connection: sends `build(n)`, reads the response (Content-Length bodies), and lets `check`
    say what went wrong with it, if anything. The energy benchmark uses it as it is."""

    def __init__(self, port: int, build: Callable[[int], bytes], check: Callable[[int, bytes], str | None]) -> None:
        self.port, self.build, self.check = port, build, check
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __call__(self, n: int) -> str | None:
        try:
            self.conn = self.conn or await asyncio.open_connection(HOST, self.port, limit=1 << 20)
            self.conn[1].write(self.build(n))
            head = (await self.conn[0].readuntil(b"\r\n\r\n")).lower()
            at = head.index(b"\r\ncontent-length:") + 17
            body = await self.conn[0].readexactly(int(head[at : head.index(b"\r\n", at)]))
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.close()
            return f"io: {type(exc).__name__}"
        return self.check(int(head[9:12]), body)

    def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None


class Poster(Caller):
    """A partner's report: a batch succeeds with a 200 and a verdict on every receipt; a single report with a
    201 (or 200, a replay) and a verdict. `event-id-reused` (no verdict) is an error."""

    def __init__(self, port: int, build: Callable[[int], bytes], batch: int, verdicts: Counter[str]) -> None:
        super().__init__(port, build, self._receipts)
        self.batch, self.verdicts = batch, verdicts

    def _receipts(self, status: int, body: bytes) -> str | None:
        if status not in ((200, 201) if self.batch == 0 else (200,)):
            return f"HTTP {status}"
        receipts = ([msgspec.json.decode(body, type=_Verdict)] if self.batch == 0
                    else msgspec.json.decode(body, type=_Receipts).receipts)
        self.verdicts.update(r.verdict or r.code for r in receipts)
        if len(receipts) != max(1, self.batch):
            return "receipts missing"
        return next((r.code for r in receipts if r.verdict is None), None)


async def drive(workers: Sequence[Work], spec: LoadSpec, units: int | None = None,
                on_window: Callable[[], Awaitable[Any]] | None = None) -> LoadResult:
    """Closed loop, one task per worker. With `units`: until that many are done, all of it measured; otherwise a
    discarded warm-up, then `spec.duration_s`, counting the units that complete inside the window (whenever they
    started: a batch of 1,000 can take seconds, and counting only those started inside would undercount). CPU
    from /proc over exactly the measured window; `on_window` runs as it opens."""
    now = time.perf_counter_ns()
    window = now if units else now + int(spec.warmup_s * 1e9)
    end = now + int(600e9) if units else window + int(spec.duration_s * 1e9)
    limit, issued, latencies, errors = units or spec.max_requests, 0, list[int](), Counter[str]()

    async def loop(work: Work) -> None:
        nonlocal issued
        while issued < limit and (started := time.perf_counter_ns()) < end:
            n, issued = issued, issued + 1
            try:
                problem = await work(n)
            except Exception as exc:  # counted like any other failure; the run goes on
                problem = f"{type(exc).__name__}: {str(exc)[:80]}"
            if window <= (done := time.perf_counter_ns()) <= end:
                if problem:
                    errors[problem] += 1
                else:
                    latencies.append(done - started)

    tasks = [asyncio.create_task(loop(w)) for w in workers]
    try:
        await asyncio.sleep(max(0.0, (window - time.perf_counter_ns()) / 1e9))
        if on_window:
            await on_window()
        before, t0 = cpu_snapshot(spec, os.getpid()), time.perf_counter()
        await (asyncio.gather(*tasks) if units else asyncio.sleep(max(0.0, (end - time.perf_counter_ns()) / 1e9)))
        seconds, after = time.perf_counter() - t0, cpu_snapshot(spec, os.getpid())
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    finally:
        for task in tasks:
            task.cancel()
    return summarise(latencies, seconds, dict(errors), cpu_pct(before, after, seconds))


# -- the run -------------------------------------------------------------------------------------------------


@dataclass
class Measured:
    rows: list[Row]
    parts: list[Breakdown]
    residents: int
    setup_s: float
    code: str = "unknown"


def code_state() -> str:
    """Which code was measured: the commit, and the product files that differ from it (uncommitted work in the
    tree is what the API imported, so it is what the figures describe)."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout

    try:
        sha, changed = git("rev-parse", "--short", "HEAD").strip(), git("status", "--porcelain", "--", "api", "wallet")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    files = [line[3:] for line in changed.splitlines() if line.strip()]
    return (sha or "unknown") + (f" with uncommitted changes to {', '.join(files)}" if files else "")


async def _setup(api: Server, env: dict[str, str], args: argparse.Namespace,
                 stamp: str) -> tuple[dict[str, Any], list[Resident], list[Resident]]:
    """The partner, the residents requests rotate over, and raw PG's own residents."""
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
        partner, secret = await create_partner(http, stamp)
    emails = [f"bench-{stamp}-{i}@example.com" for i in range(args.residents + RAW_RESIDENTS)]
    residents = [await link_in_browser(api.base_url, partner["client_id"], secret, e) for e in emails[: args.browser]]
    residents += await link_in_process(env, partner, emails[args.browser : args.residents])
    return partner, residents, await link_in_process(env, partner, emails[args.residents :], tokens=False)


async def _breakdowns(srcs: list[Any], pool: list[Item], stamp: str, args: argparse.Namespace) -> list[Breakdown]:
    """`record_reports` of 1,000 and of 1, one call at a time, on residents whose books the rows have filled."""
    from wallet.intake.judge import record_reports
    from wallet.intake.reports import Report

    parts = []
    for batch, units in ((1000, args.profile_batches), (1, args.profile_singles)):
        async def call(n: int, batch: int = batch) -> None:
            reports = [Report(f"{stamp}-p{batch}-{n:010d}-{i}", it.behaviour, it.quantity, it.occurred_at)
                       for i, it in enumerate(_items(pool, batch, n + 7))]
            receipts = await record_reports(srcs[(n * 37 + 11) % len(srcs)], reports)
            if any(r.verdict is None for r in receipts):
                raise RuntimeError("event-id-reused in the breakdown")
        parts.append(await measure_parts(batch, units, call))
        print(f"  breakdown: {units} x record_reports of {batch:,}", flush=True)
    return parts


async def measure_all(api: Server, spec: LoadSpec, env: dict[str, str], args: argparse.Namespace,
                      stats: bool) -> Measured:
    from wallet.db import close_pool, connection, start_pool

    conns, stamp, rows = args.batch_conns, f"{int(time.time())}-{secrets.token_hex(3)}", list[Row]()
    await start_pool(os.environ["DATABASE_URL"], size_min=1, size_max=conns)
    try:
        started = time.perf_counter()
        partner, residents, raw_residents = await _setup(api, env, args, stamp)
        setup_s, pid, tokens = time.perf_counter() - started, uuid.UUID(partner["id"]), [r.token for r in residents]
        srcs, pool = sources(residents, partner), item_pool(datetime.now(UTC).replace(microsecond=0))
        print(f"partner, {len(residents)} linked residents ({args.browser} through the browser flow) and "
              f"{RAW_RESIDENTS} for raw PG ready in {setup_s:.1f}s", flush=True)
        sent = 0  # activities judged so far, for the residents' average book size

        async def row(path: str, batch: int, n_conns: int, workers: Sequence[Work], verdicts: Counter[str],
                      units: int | None = None) -> None:
            nonlocal sent
            async with connection() as conn:  # fresh planner statistics, as autovacuum keeps them on a table
                await conn.execute("ANALYZE activity, book_entry, book_head, outbox_event")  # not growing from 0
            reset = (lambda: statement_times(reset=True)) if stats else None
            result = await drive(workers, replace(spec, concurrency=n_conns), units, reset)
            sent += verdicts.total()
            rows.append(r := Row(path, batch, n_conns, result, verdicts,
                                 sent / len(residents) if verdicts else math.nan,
                                 await statement_times() if stats else {}))
            for worker in workers:
                if isinstance(worker, Caller):
                    worker.close()
            print(f"  {path:<11} batch {batch:<5} c={n_conns:<3} {r.per_s:>9,.0f} activities/s  "
                  f"p50 {r.result.p50_ms:8.1f} ms  errors {r.result.errors}  {_mix(verdicts)}", flush=True)

        for batch in BATCHES:  # the baselines, batch for batch
            units = min(math.ceil(args.rows / batch), MAX_BASELINE_BATCHES)
            warm, tag = max(1, units // 10), f"{stamp}-r{batch}"
            await drive([raw_work(raw_residents, pid, pool, batch, warm, tag + "w")] * conns, spec, warm)  # discarded
            await row("raw PG", batch, conns, [raw_work(raw_residents, pid, pool, batch, units, tag)] * conns,
                      Counter(), units)
        # Each HTTP shape right after its in-process baseline, so both judge against books of about the same size.
        for batch in (*HTTP_BATCHES, 1):
            verdicts = Counter[str]()
            await row("service", batch, conns, [service_work(srcs, pool, batch, f"{stamp}-s{batch}", verdicts)] * conns,
                      verdicts)
            if batch > 1:
                build, verdicts = build_requests(api.port, tokens, pool, batch, f"{stamp}-h{batch}"), Counter[str]()
                await row("HTTP batch", batch, conns, [Poster(api.port, build, batch, verdicts) for _ in range(conns)],
                          verdicts)
        for n_conns in args.single_conns:
            build, verdicts = build_requests(api.port, tokens, pool, 0, f"{stamp}-h1c{n_conns}"), Counter[str]()
            await row("HTTP single", 1, n_conns, [Poster(api.port, build, 0, verdicts) for _ in range(n_conns)],
                      verdicts)
        return Measured(rows, await _breakdowns(srcs, pool, stamp, args), len(residents), setup_s)
    finally:
        await close_pool()


# -- report --------------------------------------------------------------------------------------------------


def _f(value: float, digits: int = 2) -> str:
    return "—" if math.isnan(value) else f"{value:,.{digits}f}"


def _mix(verdicts: Counter[str]) -> str:
    """Share credited, then anything else by share: `100.0 %` or `97.5 % (partially_credited 2.5 %)`."""
    total = verdicts.total()
    if not total:
        return "—"
    rest = ", ".join(f"{k} {v / total:.1%}" for k, v in verdicts.most_common() if k != "credited")
    return f"{verdicts['credited'] / total:.1%}" + (f" ({rest})" if rest else "")


def _us(row: Row, group: str | None = None, per: str = "activity") -> float:
    """CPU µs per activity (or request) of a group; by default where the intake code ran: the API process over
    HTTP, this bench process for the baselines."""
    group = group or ("server" if row.path.startswith("HTTP") else "generator")
    rate = row.per_s if per == "activity" else row.result.rps
    return row.result.cpu_pct.get(group, 0.0) * 1e4 / rate if rate else math.nan


def _base(rows: list[Row], path: str, batch: int) -> Row | None:
    return next((r for r in rows if r.path == path and r.batch == batch), None)


def table(rows: list[Row]) -> str:
    lines = ["| path | batch | conns | req/s | activities/s | p50 ms | p90 ms | p99 ms | errors | credited "
             "| vs raw PG | vs service | API CPU | PG CPU | bench CPU | other CPU | app µs CPU/activity "
             "| PG µs CPU/activity | book/resident |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for row in rows:
        r, cpu = row.result, {k: f"{v:.0f} %" for k, v in row.result.cpu_pct.items()}
        vs = [row.per_s / b.per_s if row.path != path and (b := _base(rows, path, row.batch)) and b.per_s
              else math.nan for path in ("raw PG", "service")]
        lines.append(f"| {row.path} | {row.batch:,} | {row.conns} | {r.rps:,.0f} | {row.per_s:,.0f} | {_f(r.p50_ms)} "
                     f"| {_f(r.p90_ms)} | {_f(r.p99_ms)} | {r.errors} | {_mix(row.verdicts)} | {_f(vs[0])} "
                     f"| {_f(vs[1])} | {cpu['server']} | {cpu['postgres']} | {cpu['generator']} | {cpu['other']} "
                     f"| {_f(_us(row), 1)} | {_f(_us(row, 'postgres'), 1)} | {_f(row.book, 0)} |")
    return "\n".join(lines)


def _twin(rows: list[Row], batch: int) -> Row | None:
    """The HTTP row of an in-process breakdown's shape: batches of its size, or single reports at the fewest
    connections (the first single row)."""
    return next((r for r in rows if r.path == ("HTTP single" if batch == 1 else "HTTP batch") and r.batch == batch),
                None)


def _pg_share(row: Row | None, name: str | None, planning: bool = False) -> float:
    """A statement's share (None: all statements') of PostgreSQL's planning + executor time in a row, or with
    `planning` of the planning part alone (pg_stat_statements, measured window). Shares, not µs: these are wall
    times, and on two shared cores a backend waiting for a core inflates them."""
    total = sum(run + plan for _, run, plan in row.statements.values()) if row else 0.0
    if not row or not total or (name is not None and name not in row.statements):
        return math.nan
    parts = [v for k, v in row.statements.items() if name in (None, k)]
    return sum(plan + (0 if planning else run) for _, run, plan in parts) / total


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.0%}"


def parts_table(parts: list[Breakdown], rows: list[Row]) -> str:
    """One line per part, in the order of the largest batch's costs; beside each in-process breakdown, what
    PostgreSQL's executor spent on the same statements in the HTTP row of the same shape, under load."""
    by, twins = [{p.name: p for p in b.parts} for b in parts], [_twin(rows, b.batch) for b in parts]
    head = " | ".join(f"batch {b.batch:,}: µs/activity | share | PG share under load" for b in parts)
    names = [p.name for p in parts[0].parts] + [n for b in by[1:] for n in b if n not in by[0]]
    names += sorted({n for t in twins if t for n in t.statements} - set(names))
    lines = [f"| part | kind | {head} |", "|---|---|" + "--:|--:|--:|" * len(parts)]
    for name in names:
        kind = next((b[name].kind for b in by if name in b), "SQL")
        cells = []
        for b, named, twin in zip(parts, by, twins, strict=True):
            p = named.get(name)
            calls = f" ({p.calls / b.calls:g}×)" if p and p.kind == "SQL" else ""
            mine = f"{_f(b.us_per_activity(p.ns), 1)}{calls} | {p.ns / b.total_ns:.0%}" if p else "— | —"
            cells.append(f"{mine} | {_pct(_pg_share(twin, name)) if kind == 'SQL' else ''}")
        lines.append(f"| {name} | {kind} | {' | '.join(cells)} |")
    totals = [f"**{_f(b.us_per_activity(b.total_ns), 1)}** | 100% | "
              + (f"100% of {_f(_us(t, 'postgres'), 1)} µs PG CPU" if t and t.statements else "—")
              for b, t in zip(parts, twins, strict=True)]
    lines.append(f"| **total** | | {' | '.join(totals)} |")
    return "\n".join(lines)


def _target(rows: list[Row], path: str, goal: int, what: str) -> str:
    """Each request shape of a path against the goal, best connection count for each."""
    best: dict[int, Row] = {}
    for r in rows:
        if r.path == path and (r.batch not in best or r.per_s > best[r.batch].per_s):
            best[r.batch] = r
    shapes = [f"{'batches of ' + format(b, ',') if path == 'HTTP batch' else 'one per request'} {r.per_s:,.0f}/s "
              f"at {r.conns} connections, " + ("**met**" if r.per_s >= goal else f"**missed** ({r.per_s / goal:.0%})")
              for b, r in sorted(best.items())]
    return f"{what} ≥ {goal:,}/s: " + ("; ".join(shapes) if shapes else "not measured")


def _split(b: Breakdown) -> str:
    sql = sum(p.ns for p in b.parts if p.kind == "SQL")
    top = ", ".join(f"{p.name} {p.ns / b.total_ns:.0%}" for p in b.parts[:4])
    trips = sum(p.calls for p in b.parts if p.kind == "SQL") / b.calls
    per = b.us_per_activity(b.total_ns)
    return (f"{per * b.batch / 1e3:,.2f} ms per call ({per:,.1f} µs per activity), {trips:g} SQL round trips "
            f"taking {sql / b.total_ns:.0%} of it and Python {1 - sql / b.total_ns:.0%}; largest: {top}")


def _pg_note(row: Row) -> str:
    """The statements with the largest shares of PostgreSQL's statement time, with the PostgreSQL CPU per activity
    that share would stand for, and how much of it was planning (a custom plan is made anew for every call)."""
    if not row.statements:
        return ""
    top, cpu = sorted(row.statements, key=lambda k: -_pg_share(row, k))[:3], _us(row, "postgres")
    return (" PostgreSQL's statement time (planning and executing) went to " + ", ".join(
        f"{k} {_pg_share(row, k):.0%} (~{_f(_pg_share(row, k) * cpu, 0)} µs CPU per activity)" for k in top)
        + f"; planning took {_pg_share(row, None, planning=True):.0%} of it.")


def interpretation(m: Measured) -> list[str]:
    """Sentences computed from the figures, so the text cannot drift from the tables."""
    rows, notes = m.rows, [
        "Targets: " + " — ".join([_target(m.rows, "HTTP batch", TARGET["batch"], "batched ingestion"),
                                 _target(m.rows, "HTTP single", TARGET["single"], "single reports")]) + "."
    ]
    for b in BATCHES:
        raw, svc = _base(rows, "raw PG", b), _base(rows, "service", b)
        path = "HTTP single" if b == 1 else "HTTP batch"
        http = max((r for r in rows if r.path == path and r.batch == b), key=lambda r: r.per_s, default=None)
        if raw and svc and http and raw.per_s and svc.per_s:
            notes.append(
                f"{'Single reports' if b == 1 else f'Batches of {b:,}'}: raw PostgreSQL inserts {raw.per_s:,.0f} "
                f"rows/s, `record_reports` in-process {svc.per_s:,.0f} ({svc.per_s / raw.per_s:.0%} of raw), HTTP "
                f"{http.per_s:,.0f} activities/s ({http.per_s / raw.per_s:.0%} of raw, {http.per_s / svc.per_s:.0%} "
                f"of the service). CPU per activity: API process {_f(_us(http), 1)} µs against {_f(_us(svc), 1)} µs "
                f"for the service alone (HTTP, auth, limits and JSON add {_f(_us(http) - _us(svc), 1)} µs); "
                f"PostgreSQL {_f(_us(http, 'postgres'), 1)} µs over HTTP, {_f(_us(svc, 'postgres'), 1)} µs for the "
                f"service, {_f(_us(raw, 'postgres'), 1)} µs for the bare INSERT."
            )
    cores = 100 * len(os.sched_getaffinity(0))
    for path in ("HTTP batch", "HTTP single"):
        top = max((r for r in rows if r.path == path), key=lambda r: r.per_s, default=None)
        if top is None:
            continue
        c = top.result.cpu_pct
        verdict = "neither the API worker nor the cores were saturated, so waits (locks, commits) set the pace"
        if c["server"] >= 85:
            verdict = "the single API worker is the bottleneck"
        elif c["machine"] >= 0.85 * cores:
            verdict = "the cores are (nearly) saturated: API, PostgreSQL and generator share them"
        notes.append(
            f"Best {path} row ({top.batch:,} per request, {top.conns} connections): per request "
            f"{_f(_us(top, per='r'), 0)} µs of API CPU and {_f(_us(top, 'postgres', 'r'), 0)} µs of PostgreSQL CPU; "
            f"the API process used {c['server']:.0f} % of a core, PostgreSQL {c['postgres']:.0f} %, Valkey "
            f"{c['valkey']:.0f} %, this generator {c['generator']:.0f} %, other tenants {c['other']:.0f} % "
            f"(machine busy {c['machine']:.0f} % of {cores} %): {verdict}." + _pg_note(top)
        )
    for b in m.parts:
        notes.append(f"In-process, `record_reports` with {b.batch:,} {'activity' if b.batch == 1 else 'activities'} "
                     f"(mean of {b.calls:,} calls, books of ~{m.rows[-1].book:,.0f} activities): {_split(b)}.")
    judged = sum((r.verdicts for r in rows), Counter[str]())
    notes.append(f"Verdicts over all {judged.total():,} judged activities: {_mix(judged)} credited; residents' books "
                 f"grew to ~{m.rows[-1].book:,.0f} activities each over the run (the context query reads a "
                 f"resident's claims around the reported days, so later rows judge against larger books).")
    errors = sum(r.result.errors for r in rows)
    kinds = "; ".join(f"{r.path} {r.batch}@{r.conns}: {r.result.error_kinds}" for r in rows if r.result.errors)
    return [*notes, f"Errors across all rows: {errors}." + (f" Kinds: {kinds}" if errors else "")]


def render(when: datetime, settings: str, m: Measured) -> str:
    return "\n".join([
        f"## Partner intake — latest run: {when:%Y-%m-%d %H:%M} UTC", "",
        "Partner intake end to end through HTTP (`POST /v1/partner/activities` batches, `POST /v1/partner/activity` "
        "single reports: judged with dedupe, plausibility and caps, credited into the hash-chained book, outbox "
        "events recorded) against raw PostgreSQL inserts of the same activity rows and `record_reports` "
        "in-process; written by `python -m bench.intake` (see bench/README.md).", "",
        *(f"- **{k}**: {v}" for k, v in machine().items()), f"- **code**: {m.code}", f"- **settings**: {settings}", "",
        table(m.rows), "",
        "req/s counts requests (baselines: batches); the ratios compare activities/s with the baseline of the same "
        "batch size (single reports with batches of 1). *credited* is the verdict mix of everything the row sent, "
        "warm-up included. *bench CPU* is this process (the generator, or the baselines' code); *app µs "
        "CPU/activity* is the API process for HTTP rows and this process for the baselines, where the intake code "
        "ran. *book/resident*: activities per judged resident when the row ended.", "",
        "**Where the time goes**: `record_reports` in-process, one call at a time, parts timed by wrappers "
        "(bench/intake_breakdown.py); SQL parts are round-trip wall time (PostgreSQL, loopback, asyncpg), with "
        "round trips per call in brackets; Python parts are CPU of the bench process. *PG share under load*: the "
        "statement's share of PostgreSQL's planning + executing time (pg_stat_statements) during the HTTP row of "
        "the same shape (batches of 1,000; single reports at the fewest connections), beside that row's "
        "PostgreSQL CPU per activity from /proc (which also holds protocol work, commits and WAL, and background "
        "workers; a COMMIT's WAL flush is not statement time).", "",
        parts_table(m.parts, m.rows), "",
        "**Interpretation** (generated from the figures above)", "",
        *(f"- {n}" for n in interpretation(m)),
        "- Closed-loop load on shared cores: latency under overload is queueing; compare ratios and CPU per activity, "
        "not absolute figures across machines; differences under ~10 % between runs are noise.",
    ]) + "\n"


def write_results(report: str) -> None:
    """Our latest run sits between bench.run's latest section and its History (bench.run keeps it there); the
    previous one moves to the top of our own history at the end of the file."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block, previous = f"{START}\n{report.strip()}\n{END}", ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        previous, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        head, _, tail = text.partition(RUN_HISTORY)  # bench.run's History comes next, made here if missing
        text = f"{head.rstrip()}\n\n{block}\n\n{RUN_HISTORY}" + (tail or "\n\n(none yet)\n")
    if previous := previous.strip().replace("## Partner intake — latest run:", "### Partner intake run:", 1):
        head, _, tail = text.partition(HISTORY)
        text = f"{head.rstrip()}\n\n{HISTORY}\n\n{previous}\n" + (f"\n{tail.strip()}\n" if tail.strip() else "")
    RESULTS.write_text(text)


# -- main ----------------------------------------------------------------------------------------------------


def _ints(raw: str) -> list[int]:
    return [int(c) for c in str(raw).split(",") if c.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.intake", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per timed row (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="discarded seconds before each (default 2)")
    parser.add_argument("--batch-conns", type=int, default=8,
                        help="connections for HTTP batches, tasks for the baselines (default 8)")
    parser.add_argument("--single-conns", type=_ints, default=[8, 32],
                        help="comma-separated connections for single reports (default 8,32)")
    parser.add_argument("--residents", type=int, default=500,
                        help="linked residents requests rotate over (default 500)")
    parser.add_argument("--browser", type=int, default=2, help="of them, linked through the browser flow (default 2)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows per raw PG row (default 100000)")
    parser.add_argument("--profile-batches", type=int, default=5,
                        help="breakdown: calls with 1,000 activities (default 5)")
    parser.add_argument("--profile-singles", type=int, default=400,
                        help="breakdown: calls with one activity (default 400)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    if not (1 <= args.batch_conns <= 64 and args.single_conns and 1 <= min(args.single_conns)
            and max(args.single_conns) <= 256 and 0.5 <= args.duration <= 120 and 0 <= args.warmup <= 60
            and 20 <= args.residents <= 5000 and 0 <= args.browser <= min(10, args.residents)
            and 1_000 <= args.rows <= 1_000_000 and 1 <= args.profile_batches <= 100
            and 1 <= args.profile_singles <= 10_000):
        parser.error("--batch-conns 1–64, --single-conns 1–256, --duration 0.5–120, --warmup 0–60, --residents "
                     "20–5000, --browser 0–10, --rows 1000–1000000, --profile-batches 1–100, --profile-singles "
                     "1–10000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    room = headroom()  # refuses a mix that caps or plausibility would not credit
    with session("cw-bench-intake-") as bench:
        work, data_dir, servers, running, started = (
            bench.work, bench.data_dir, bench.servers, bench.running, bench.started
        )
        env = prepare(servers, data_dir)
        stats = enable_statement_stats(servers)  # before any pool connects: it restarts PostgreSQL
        api = Server("api", ["--factory", "api.app:create_app"], env, work, "/ready")
        running.append(api)
        api.start()
        code = code_state()  # what the API just imported
        spec = LoadSpec(port=api.port, path=BATCH_PATH, concurrency=1, duration_s=args.duration,
                        warmup_s=args.warmup, server_pid=api.proc.pid if api.proc else None,
                        postgres_pid=pid_file(data_dir / "pg" / "postmaster.pid"),
                        valkey_pid=pid_file(data_dir / "valkey" / "server.pid"))
        run: Callable[..., Measured] = asyncio.run
        with contextlib.suppress(ImportError):
            import uvloop  # the API runs on uvloop; so do the in-process baselines, for a fair comparison

            run = uvloop.run
        measured = replace(run(measure_all(api, spec, env, args, stats)), code=code)
        day, month = min(d for d, _ in room.values()), min(mo for _, mo in room.values())
        report = render(datetime.now(UTC), (
            f"uvicorn 1 worker, --no-access-log; timed rows (service, HTTP): {args.warmup:g} s warm-up + "
            f"{args.duration:g} s measured; raw PG: {args.rows:,} rows per row (at most {MAX_BASELINE_BATCHES:,} "
            f"batches) after a discarded tenth, for {RAW_RESIDENTS} residents of its own; {args.batch_conns} "
            f"concurrent tasks (baselines, pool of as many connections) or connections (HTTP batches), "
            f"{'/'.join(map(str, args.single_conns))} for single reports; requests rotate over {measured.residents} "
            f"residents ({args.browser} linked through the browser flow, the rest in-process, {measured.setup_s:.0f} "
            f"s in all), each activity a fresh event id, one of {len(MIX)} non-transport behaviours with "
            f"occurred_at spread over the last {SPREAD.days} days, quantities leaving room for ≥ {day:,} a day and "
            f"≥ {month:,} a month per behaviour and resident before a cap; generator: this process's raw-socket "
            f"keep-alive client, on the same cores as the API, PostgreSQL and Valkey; outbox relay not running "
            f"(events are recorded, not dispatched)"), measured)
        print("\n" + report)
        if not args.no_write:
            write_results(report)
            print(f"written to {RESULTS.relative_to(ROOT)} ({time.perf_counter() - started:.0f}s in all)")
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
