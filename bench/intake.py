"""`python -m bench.intake`: partner activity intake (`POST /v1/partner/activities`), the write path partners hit
hardest, against two baselines measured in the same run on the same machine: the service's own unnest INSERT
straight through asyncpg (what PostgreSQL sustains) and `receive_activities` in-process (what the service adds
without HTTP), so the HTTP rows show what auth, limits, JSON and uvicorn cost on top.

Starts the stores and one API process like bench/run.py, links residents to a partner through the real browser
flow, measures, and writes the report under its own heading in bench/RESULTS.md. Everything started here is
stopped here, also on Ctrl-C, SIGTERM or error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import math
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import msgspec

from bench.load import HOST, LoadResult, LoadSpec, cpu_pct, cpu_snapshot, summarise
from bench.run import HISTORY as RUN_HISTORY
from bench.run import PASSWORD, RESULTS, ROOT, Server, machine, pid_file, prepare, raise_interrupt

BEHAVIOUR = "no_disposable_cutlery"
REDIRECT_URI = "https://bench.example/oauth/callback"
PATH = "/v1/partner/activities"
BATCHES = (1, 100, 1000)
MAX_BASELINE_BATCHES = 10_000  # caps batches of 1, so each baseline row stays a few seconds
START, END, HISTORY = "<!-- intake:start -->", "<!-- intake:end -->", "## Partner intake — history"
Work = Callable[[int], Awaitable[str | None]]  # unit (one batch) number -> None, or what went wrong


@dataclass(frozen=True)
class Linked:
    holder_id: uuid.UUID
    sub_account_id: uuid.UUID
    token: str


@dataclass
class Row:
    path: str  # "raw PG", "service", "HTTP" or "HTTP replay"
    batch: int
    conns: int
    result: LoadResult

    @property
    def per_s(self) -> float:
        return self.result.rps * self.batch


class _Status(msgspec.Struct):
    status: str


class _Receipts(msgspec.Struct):
    receipts: list[_Status]


# -- setup: an operator, the partner, linked residents -----------------------------------------------------


async def _call(http: httpx.AsyncClient, method: str, url: str, status: int, **kw: Any) -> httpx.Response:
    r = await http.request(method, url, **kw)
    if r.status_code != status:
        raise RuntimeError(f"{method} {url.split('?')[0]}: {r.status_code} {r.text[:500]}")
    return r


def _field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    if match is None:
        raise RuntimeError(f"no {name} field in the page")
    return match.group(1)


async def create_partner(http: httpx.AsyncClient, stamp: str) -> tuple[dict[str, Any], str]:
    """An operator (role granted in-process, as the CLI does) registers the partner through the admin API, with
    limits so high that neither the per-minute limit nor the daily quota ever refuses a benchmark request."""
    from wallet.holders.roles import grant_role

    body = {"email": f"bench-operator-{stamp}@example.com", "password": PASSWORD, "device_name": "bench"}
    operator = (await _call(http, "POST", "/v1/auth/register", 201, json=body)).json()
    await grant_role(uuid.UUID(operator["holder_id"]), "operator")
    created = (await _call(http, "POST", "/v1/admin/partners", 201, json={
        "name": f"Bench partner {stamp}", "kind": "food_delivery", "redirect_uris": [REDIRECT_URI],
        "allowed_scopes": ["activities:write"], "allowed_behaviours": [BEHAVIOUR],
        "rate_limit_per_minute": 10_000_000, "daily_quota": 10_000_000,
    }, headers={"Authorization": f"Bearer {operator['access_token']}"})).json()
    return created["partner"], created["client_secret"]


async def link_resident(base_url: str, client_id: str, client_secret: str, email: str) -> Linked:
    """Sign up, link the way a phone's web view does (log in, approve the consent page), then exchange the code
    as the partner's server would (confidential client, PKCE S256)."""
    verifier = secrets.token_urlsafe(48)[:64]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    authorize = "/oauth/authorize?" + str(httpx.QueryParams({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": "activities:write",
        "state": "bench", "code_challenge": challenge, "code_challenge_method": "S256",
    }))
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as web:  # the resident's own cookie jar
        body = {"email": email, "password": PASSWORD, "device_name": "bench"}
        holder_id = (await _call(web, "POST", "/v1/auth/register", 201, json=body)).json()["holder_id"]
        page = await _call(web, "GET", "/oauth/login", 200, params={"next": authorize})
        form = {"login": email, "password": PASSWORD, "csrf": _field(page.text, "csrf"), "next": authorize}
        logged = await _call(web, "POST", "/oauth/login", 303, data=form)
        consent = await _call(web, "GET", logged.headers["location"], 200)
        form = {"consent_token": _field(consent.text, "consent_token"), "decision": "approve"}
        decided = await _call(web, "POST", "/oauth/authorize", 303, data=form)
        code = parse_qs(urlsplit(decided.headers["location"]).query)["code"][0]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier}
        token = (await _call(web, "POST", "/oauth/token", 200, data=form, auth=(client_id, client_secret))).json()
    return Linked(uuid.UUID(holder_id), uuid.UUID(token["sub_account_id"]), token["access_token"])


# -- work units and the closed-loop driver -----------------------------------------------------------------


def raw_work(residents: list[Linked], partner: uuid.UUID, batch: int, units: int, tag: str, at: datetime) -> Work:
    """The service's own INSERT … SELECT FROM unnest, arguments built beforehand: asyncpg and PostgreSQL only."""
    from wallet.db import connection
    from wallet.intake.service import _INSERT  # the very statement the service runs, so the two cannot drift

    args = []
    for n in range(units):
        r, ids = residents[n % len(residents)], [f"{tag}-{n:010d}-{i}" for i in range(batch)]
        args.append((r.holder_id, r.sub_account_id, partner, "token", [uuid.uuid4() for _ in ids], ids,
                     [BEHAVIOUR] * batch, [1] * batch, [at] * batch, [None] * batch, ["{}"] * batch,
                     ["0" * 64] * batch))

    async def work(n: int) -> str | None:
        async with connection() as conn:
            return None if len(await conn.fetch(_INSERT, *args[n])) == batch else "rows not inserted"
    return work


def service_work(residents: list[Linked], partner: uuid.UUID, batch: int, units: int, tag: str, at: datetime) -> Work:
    """`receive_activities` on Reports built beforehand: validation, digests, the same INSERT, the receipts."""
    from wallet.intake.service import Report, Source, receive_activities

    sources = [Source(r.holder_id, r.sub_account_id, partner, "token", frozenset({BEHAVIOUR})) for r in residents]
    reports = [[Report(f"{tag}-{n:010d}-{i}", BEHAVIOUR, 1, at) for i in range(batch)] for n in range(units)]

    async def work(n: int) -> str | None:
        receipts = await receive_activities(sources[n % len(sources)], reports[n])
        return None if all(r.status == "accepted" for r in receipts) else "receipts not all accepted"
    return work


def build_requests(port: int, tokens: list[str], batch: int, tag: str, at: datetime) -> Callable[[int], bytes]:
    """Request bytes for unit n: resident n mod residents, event ids carrying n. Built once per row, so a request
    costs one bytes.replace and the generator leaves the cores to the server."""
    when = at.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    items = ",".join(f'{{"event_id":"{tag}-##########-{i}","behaviour":"{BEHAVIOUR}","quantity":1,'
                     f'"occurred_at":"{when}"}}' for i in range(batch))
    body = f'{{"activities":[{items}]}}'.encode()
    heads = [(f"POST {PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {t}\r\n"
              f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() for t in tokens]
    return lambda n: heads[n % len(heads)] + body.replace(b"##########", b"%010d" % n)


class Poster:
    """One keep-alive connection; a unit is one POST whose receipts must all have the `expect` status."""

    def __init__(self, port: int, build: Callable[[int], bytes], batch: int, expect: str = "accepted") -> None:
        self.port, self.build, self.batch, self.expect = port, build, batch, expect
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __call__(self, n: int) -> str | None:
        try:
            self.conn = self.conn or await asyncio.open_connection(HOST, self.port)
            self.conn[1].write(self.build(n))
            head = (await self.conn[0].readuntil(b"\r\n\r\n")).lower()
            at = head.index(b"\r\ncontent-length:") + 17
            body = await self.conn[0].readexactly(int(head[at : head.index(b"\r\n", at)]))
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.close()
            return f"io: {type(exc).__name__}"
        if (status := int(head[9:12])) != 200:
            return f"HTTP {status}"
        receipts = msgspec.json.decode(body, type=_Receipts).receipts
        ok = len(receipts) == self.batch and all(r.status == self.expect for r in receipts)
        return None if ok else f"receipts not all {self.expect}"

    def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None


async def drive(workers: Sequence[Work], spec: LoadSpec, units: int | None = None) -> LoadResult:
    """Closed loop, one task per worker. With `units`: until that many are done, all of it measured; otherwise a
    discarded warm-up, then `spec.duration_s`. CPU from /proc over exactly the measured window."""
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
            if started >= window and (done := time.perf_counter_ns()) <= end:
                if problem:
                    errors[problem] += 1
                else:
                    latencies.append(done - started)

    tasks = [asyncio.create_task(loop(w)) for w in workers]
    try:
        await asyncio.sleep(max(0.0, (window - time.perf_counter_ns()) / 1e9))
        before, t0 = cpu_snapshot(spec, os.getpid()), time.perf_counter()
        await (asyncio.gather(*tasks) if units else asyncio.sleep(max(0.0, (end - time.perf_counter_ns()) / 1e9)))
        seconds, after = time.perf_counter() - t0, cpu_snapshot(spec, os.getpid())
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    finally:
        for task in tasks:
            task.cancel()
    return summarise(latencies, seconds, dict(errors), cpu_pct(before, after, seconds))


# -- the run -------------------------------------------------------------------------------------------------


async def measure_all(api: Server, spec: LoadSpec, args: argparse.Namespace) -> list[Row]:
    from wallet.db import close_pool, start_pool

    low, stamp, rows = min(args.concurrency), f"{int(time.time())}-{secrets.token_hex(3)}", list[Row]()
    await start_pool(os.environ["DATABASE_URL"], size_min=1, size_max=low)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
            partner, secret = await create_partner(http, stamp)
        residents = [await link_resident(api.base_url, partner["client_id"], secret, f"bench-{stamp}-{i}@example.com")
                     for i in range(args.residents)]
        pid, tokens = uuid.UUID(partner["id"]), [r.token for r in residents]
        at = datetime.now(UTC) - timedelta(minutes=10)
        print(f"partner and {len(residents)} linked residents ready", flush=True)

        async def row(path: str, batch: int, conns: int, workers: Sequence[Work], units: int | None = None) -> None:
            rows.append(r := Row(path, batch, conns, await drive(workers, replace(spec, concurrency=conns), units)))
            for worker in workers:
                if isinstance(worker, Poster):
                    worker.close()
            print(f"  {path:<11} batch {batch:<5} c={conns:<3} {r.per_s:>9,.0f} activities/s  "
                  f"p50 {r.result.p50_ms:7.1f} ms  errors {r.result.errors}", flush=True)

        for batch in BATCHES:  # the same rows, batches and concurrency for both baselines
            units = min(math.ceil(args.rows / batch), MAX_BASELINE_BATCHES)
            warm = max(1, units // 10)
            for path, make in (("raw PG", raw_work), ("service", service_work)):
                tag = f"{stamp}-{path[0]}{batch}"
                await drive([make(residents, pid, batch, warm, tag + "w", at)] * low, spec, warm)  # discarded
                await row(path, batch, low, [make(residents, pid, batch, units, tag, at)] * low, units)
        for conns in args.concurrency:  # interleaved, so drift of a noisy machine hits every batch size alike
            for batch in BATCHES:
                build = build_requests(api.port, tokens, batch, f"{stamp}-h{batch}c{conns}", at)
                await row("HTTP", batch, conns, [Poster(api.port, build, batch) for _ in range(conns)])
        build = build_requests(api.port, tokens, 100, f"{stamp}-dup", at)
        first = Poster(api.port, build, 100)  # each resident's batch accepted once, then replayed over and over
        if any([await first(n) for n in range(len(tokens))]):
            raise RuntimeError("the batches to replay were not all accepted")
        first.close()
        replay = [Poster(api.port, lambda n: build(n % len(tokens)), 100, "duplicate") for _ in range(low)]
        await row("HTTP replay", 100, low, replay)
        return rows
    finally:
        await close_pool()


# -- report --------------------------------------------------------------------------------------------------


def _f(value: float, digits: int = 2) -> str:
    return "—" if math.isnan(value) else f"{value:,.{digits}f}"


def _us(row: Row, group: str | None = None) -> float:
    """CPU µs per activity of a group; by default where the intake code ran: the API process over HTTP, this
    bench process for the baselines."""
    group = group or ("server" if row.path.startswith("HTTP") else "generator")
    return row.result.cpu_pct.get(group, 0.0) * 1e4 / row.per_s if row.per_s else math.nan


def table(rows: list[Row]) -> str:
    base = {(r.path, r.batch): r.per_s for r in rows if not r.path.startswith("HTTP")}
    lines = ["| path | batch | conc | req/s | activities/s | p50 ms | p90 ms | p99 ms | errors | vs raw PG "
             "| vs service | API CPU | PG CPU | bench CPU | other CPU | app µs CPU/activity | PG µs CPU/activity |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for row in rows:
        r, cpu = row.result, {k: f"{v:.0f} %" for k, v in row.result.cpu_pct.items()}
        vs = [row.per_s / base[(b, row.batch)] if row.path != "HTTP replay" and base.get((b, row.batch)) else math.nan
              for b in ("raw PG", "service")]
        lines.append(f"| {row.path} | {row.batch:,} | {row.conns} | {r.rps:,.0f} | {row.per_s:,.0f} | {_f(r.p50_ms)} "
                     f"| {_f(r.p90_ms)} | {_f(r.p99_ms)} | {r.errors} | {_f(vs[0])} | {_f(vs[1])} | {cpu['server']} "
                     f"| {cpu['postgres']} | {cpu['generator']} | {cpu['other']} | {_f(_us(row), 1)} "
                     f"| {_f(_us(row, 'postgres'), 1)} |")
    return "\n".join(lines)


def interpretation(rows: list[Row]) -> list[str]:
    """Sentences computed from the figures, so the text cannot drift from the table."""
    notes, get = [], {(r.path, r.batch): r for r in reversed(rows)}  # the first row of each path and batch
    for b in BATCHES:
        raw, svc = get.get(("raw PG", b)), get.get(("service", b))
        http = max((r for r in rows if r.path == "HTTP" and r.batch == b), key=lambda r: r.per_s, default=None)
        if raw and svc and http and raw.per_s and svc.per_s:
            notes.append(
                f"Batches of {b:,}: raw PostgreSQL {raw.per_s:,.0f} rows/s, the service in-process {svc.per_s:,.0f} "
                f"({svc.per_s / raw.per_s:.0%} of raw), HTTP at best {http.per_s:,.0f} activities/s at {http.conns} "
                f"connections ({http.per_s / raw.per_s:.0%} of raw, {http.per_s / svc.per_s:.0%} of the service). CPU "
                f"per activity: API process {_us(http):,.1f} µs vs the service alone {_us(svc):,.1f} µs; PostgreSQL "
                f"{_us(http, 'postgres'):,.1f} µs over HTTP vs {_us(raw, 'postgres'):,.1f} µs raw."
            )
    if http_rows := [r for r in rows if r.path == "HTTP"]:
        top = max(http_rows, key=lambda r: r.per_s)
        c, cores = top.result.cpu_pct, 100 * len(os.sched_getaffinity(0))
        verdict = "neither the API worker nor the cores were saturated, so waits (commits, Valkey) set the pace"
        if c["server"] >= 85:
            verdict = "the single API worker is the bottleneck"
        elif c["machine"] >= 0.85 * cores:
            verdict = "the cores are (nearly) saturated: API, PostgreSQL and generator share them"
        notes.append(
            f"The best HTTP row (batch {top.batch:,}, {top.conns} connections) used {c['server']:.0f} % of a core "
            f"in the API process, {c['postgres']:.0f} % in PostgreSQL, {c['valkey']:.0f} % in Valkey, "
            f"{c['generator']:.0f} % in this generator and {c['other']:.0f} % in other tenants (machine busy "
            f"{c['machine']:.0f} % of {cores} %): {verdict}."
        )
    replay = get.get(("HTTP replay", 100))
    fresh = next((r for r in rows if r.path == "HTTP" and r.batch == 100 and replay and r.conns == replay.conns), None)
    if replay and fresh and fresh.per_s:
        notes.append(f"Replaying accepted batches of 100 (all `duplicate`: the INSERT conflicts, then the stored "
                     f"digests are read) ran at {replay.per_s:,.0f} activities/s, {replay.per_s / fresh.per_s:.0%} of "
                     f"fresh batches of 100 at the same concurrency.")
    errors = sum(r.result.errors for r in rows)
    kinds = "; ".join(f"{r.path} {r.batch}@{r.conns}: {r.result.error_kinds}" for r in rows if r.result.errors)
    return [*notes, f"Errors across all rows: {errors}." + (f" Kinds: {kinds}" if errors else "")]


def render(when: datetime, settings: str, rows: list[Row]) -> str:
    return "\n".join([
        f"## Partner intake — latest run: {when:%Y-%m-%d %H:%M} UTC", "",
        "`POST /v1/partner/activities` against the same unnest INSERT through asyncpg (raw PG) and "
        "`receive_activities` in-process (service); written by `python -m bench.intake` (see bench/README.md).", "",
        *(f"- **{k}**: {v}" for k, v in machine().items()), f"- **settings**: {settings}", "",
        table(rows), "",
        "req/s counts batches (HTTP: requests); the ratios compare activities/s with the baseline of the same batch "
        "size. *bench CPU* is this process (the generator, or the baselines' client code); *app µs CPU/activity* is "
        "the API process for HTTP rows and this process for the baselines, where the intake code ran.", "",
        "**Interpretation** (generated from the figures above)", "",
        *(f"- {n}" for n in interpretation(rows)),
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.intake", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per HTTP row (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="discarded seconds before each (default 2)")
    parser.add_argument("--concurrency", default="8,32", help="comma-separated HTTP connections (default 8,32)")
    parser.add_argument("--residents", type=int, default=20, help="linked residents the requests rotate over")
    parser.add_argument("--rows", type=int, default=100_000, help="rows per baseline row (default 100000)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    if not (args.concurrency and 1 <= min(args.concurrency) <= max(args.concurrency) <= 256 and 0.5 <= args.duration
            <= 120 and 0 <= args.warmup <= 60 and 1 <= args.residents <= 200 and 1_000 <= args.rows <= 1_000_000):
        parser.error("--concurrency 1–256, --duration 0.5–120, --warmup 0–60, --residents 1–200, --rows 1000–1000000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    work = Path(tempfile.mkdtemp(prefix="cw-bench-intake-"))
    data_dir = work / "data"
    from api.local.servers import LocalServers

    servers, running, started = LocalServers(data_dir, ephemeral=True), list[Server](), time.perf_counter()
    try:
        api = Server("api", ["--factory", "api.app:create_app"], prepare(servers, data_dir), work, "/ready")
        running.append(api)
        api.start()
        spec = LoadSpec(port=api.port, path=PATH, concurrency=1, duration_s=args.duration, warmup_s=args.warmup,
                        server_pid=api.proc.pid if api.proc else None,
                        postgres_pid=pid_file(data_dir / "pg" / "postmaster.pid"),
                        valkey_pid=pid_file(data_dir / "valkey" / "server.pid"))
        rows = asyncio.run(measure_all(api, spec, args))
        report = render(datetime.now(UTC), (
            f"uvicorn 1 worker, --no-access-log; HTTP rows: {args.warmup:g} s warm-up + {args.duration:g} s measured, "
            f"new event ids in every request, rotating over {args.residents} linked residents' tokens; baselines: "
            f"{args.rows:,} rows per row (at most {MAX_BASELINE_BATCHES:,} batches) after a discarded tenth, "
            f"{min(args.concurrency)} concurrent tasks on a pool of as many connections; generator: this process's "
            f"raw-socket keep-alive client, on the same cores as the API, PostgreSQL and Valkey"), rows)
        print("\n" + report)
        if not args.no_write:
            write_results(report)
            print(f"written to {RESULTS.relative_to(ROOT)} ({time.perf_counter() - started:.0f}s in all)")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        return 130
    except Exception:
        for server in running:
            print(f"--- {server.name} log tail ---\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish cleaning up even if Ctrl-C is pressed again
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in reversed(running):
            server.stop()
        servers.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
