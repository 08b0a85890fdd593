"""`make bench`: the real API against a hello-world Litestar baseline, measured in the same run on the same
machine, so the ratios stay meaningful when absolute figures move from machine to machine.

Starts ephemeral embedded PostgreSQL and Valkey (unless DATABASE_URL / REDIS_URL are set), migrates,
serves both apps with uvicorn (one worker, no access log), registers residents, then measures
`GET /` (hello), `GET /health` and `GET /v1/me` at each concurrency. Results go to stdout and to the top
of bench/RESULTS.md; the previous latest run moves under "History". Every process started here is stopped
here, also on Ctrl-C, SIGTERM or error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING

import httpx

from bench.load import HOST, LoadResult, LoadSpec, die_with_parent, generator_name, measure

if TYPE_CHECKING:
    from api.local.servers import LocalServers

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
LATEST_START = "<!-- latest:start -->"
LATEST_END = "<!-- latest:end -->"
HISTORY = "## History"
PASSWORD = "bench horse battery staple"


@dataclass(frozen=True)
class Target:
    """One thing to measure: which server, which path, whether it needs residents' tokens."""

    name: str
    server: str
    path: str
    authenticated: bool = False


TARGETS = (
    Target("hello-world GET /", "hello", "/"),
    Target("API GET /health", "api", "/health"),
    Target("API GET /v1/me", "api", "/v1/me", authenticated=True),
)


@dataclass
class Row:
    target: Target
    concurrency: int
    result: LoadResult


# -- processes -------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class Server:
    """A uvicorn process with the same flags for every app: one worker unless told, no access log, loopback
    only (with several workers, their CPU counts as the server's: they are its children)."""

    def __init__(self, name: str, app: list[str], env: dict[str, str], log_dir: Path, probe: str, *,
                 workers: int = 1) -> None:
        self.name = name
        self.port = _free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        self._argv = [
            sys.executable, "-m", "uvicorn", *app, "--host", HOST, "--port", str(self.port),
            "--workers", str(workers), "--no-access-log", "--timeout-graceful-shutdown", "5",
        ]
        self._env = env
        self._probe = probe
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> Server:
        self._log = open(self.log_path, "wb")  # closed in stop()
        # Its own session: a terminal Ctrl-C reaches only us, and we stop the servers in order.
        self.proc = subprocess.Popen(
            self._argv, cwd=ROOT, env=self._env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + self._probe, timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def pid_file(path: Path) -> int | None:
    """First line of a pid file (PostgreSQL's postmaster.pid, our Valkey's server.pid); None when the
    server is external (DATABASE_URL / REDIS_URL set), whose CPU we then cannot see."""
    try:
        return int(path.read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return None


def raise_interrupt(signum: int, _frame: object) -> None:
    """SIGTERM takes the same clean-up path as Ctrl-C."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def prepare(servers: LocalServers, data_dir: Path) -> dict[str, str]:
    """Start the stores (or take DATABASE_URL / REDIS_URL), migrate, and return the environment every uvicorn
    process gets: test settings and sign-up/login limits high enough to register many residents."""
    urls = servers.start()
    os.environ.update(urls)  # piccolo_conf reads DATABASE_URL when first imported, by migrate
    from api.migrate import migrate

    asyncio.run(migrate(urls["DATABASE_URL"]))
    return {
        **os.environ, **urls,
        "CW_ENV": "test",
        "CW_ACCESS_LOG": "false",
        "CW_DATA_DIR": str(data_dir),
        "CW_REGISTER_LIMIT_PER_IP": "100000/3600",
        "CW_LOGIN_LIMIT_PER_IP": "100000/300",
        "CW_LOGIN_LIMIT_PER_ACCOUNT": "100000/300",
    }


# -- residents -------------------------------------------------------------------------------------------


def register_residents(base_url: str, count: int) -> list[str]:
    """Register `count` residents and return their access tokens; checks that one works on /v1/me."""
    tokens: list[str] = []
    stamp = f"{int(time.time())}-{os.getpid()}"
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for i in range(count):
            r = client.post(
                "/v1/auth/register",
                json={"email": f"bench-{stamp}-{i}@example.com", "password": PASSWORD, "device_name": "bench"},
            )
            if r.status_code != 201:
                raise RuntimeError(f"register failed: {r.status_code} {r.text[:500]}")
            tokens.append(r.json()["access_token"])
        me = client.get("/v1/me", headers={"Authorization": f"Bearer {tokens[0]}"})
        if me.status_code != 200:
            raise RuntimeError(f"GET /v1/me failed: {me.status_code} {me.text[:500]}")
    return tokens


# -- report ----------------------------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "memory": memory,
        "load average at start (1/5/15 min)": load,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": ", ".join(
            f"{p} {_version(p)}" for p in ("litestar", "uvicorn", "uvloop", "httptools", "asyncpg", "msgspec")
        ),
    }


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def _per_req(result: LoadResult, group: str) -> float:
    """CPU microseconds one group spent per successful request (CPU % x 10^4 / req/s)."""
    return result.cpu_pct.get(group, 0.0) * 1e4 / result.rps if result.rps else math.nan


def table(rows: list[Row]) -> str:
    """Markdown table; ratios are against hello-world at the same concurrency in this run."""
    base = {r.concurrency: r.result for r in rows if r.target.server == "hello"}
    lines = [
        "| target | conns | req/s | p50 ms | p90 ms | p99 ms | errors | req/s vs hello | p50 vs hello "
        "| p99 vs hello | API/app CPU | PG CPU | gen CPU | other CPU | app µs CPU/req | PG µs CPU/req |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        r, b = row.result, base.get(row.concurrency)
        cpu = r.cpu_pct
        per_req = {g: _per_req(r, g) for g in ("server", "postgres")}
        lines.append(
            f"| {row.target.name} | {row.concurrency} | {r.rps:,.0f} | {_fmt(r.p50_ms)} | {_fmt(r.p90_ms)} "
            f"| {_fmt(r.p99_ms)} | {r.errors} "
            f"| {_fmt(_ratio(r.rps, b.rps) if b else math.nan)} "
            f"| {_fmt(_ratio(r.p50_ms, b.p50_ms) if b else math.nan)} "
            f"| {_fmt(_ratio(r.p99_ms, b.p99_ms) if b else math.nan)} "
            f"| {cpu.get('server', 0):.0f} % | {cpu.get('postgres', 0):.0f} % | {cpu.get('generator', 0):.0f} % "
            f"| {cpu.get('other', 0):.0f} % "
            f"| {_fmt(per_req['server'], 0)} | {_fmt(per_req['postgres'], 0)} |"
        )
    return "\n".join(lines)


def interpretation(rows: list[Row]) -> list[str]:
    """A few sentences computed from the figures, so the text cannot drift from the table."""
    notes: list[str] = []
    by = {(r.target.path if r.target.server == "api" else "hello", r.concurrency): r.result for r in rows}
    for conns in sorted({r.concurrency for r in rows}):
        hello, health, me = by.get(("hello", conns)), by.get(("/health", conns)), by.get(("/v1/me", conns))
        if not hello:
            continue
        parts = [f"At {conns} connections hello-world served {hello.rps:,.0f} req/s"]
        if health:
            parts.append(f"`/health` {health.rps:,.0f} req/s ({health.rps / hello.rps:.0%} of it)")
        if me:
            parts.append(f"`/v1/me` {me.rps:,.0f} req/s ({me.rps / hello.rps:.0%})")
        notes.append(", ".join(parts) + ".")
    top = max((r.concurrency for r in rows), default=0)
    hello, health, me = by.get(("hello", top)), by.get(("/health", top)), by.get(("/v1/me", top))
    if hello and health and me and hello.rps and health.rps and me.rps:
        us = {k: 1e6 / v.rps for k, v in (("hello", hello), ("health", health), ("me", me))}
        notes.append(
            f"Per request at {top} connections (wall time of the whole box, 1e6 / req/s): hello {us['hello']:.0f} µs, "
            f"`/health` {us['health']:.0f} µs (+{us['health'] - us['hello']:.0f} µs: the real app's framework "
            f"setup and middleware — request id, Prometheus metrics, the auth middleware's exclusion check), "
            f"`/v1/me` {us['me']:.0f} µs "
            f"(+{us['me'] - us['health']:.0f} µs: JWT verification, the session lookup and the profile query)."
        )
        cores = 100 * len(os.sched_getaffinity(0))
        c = me.cpu_pct
        busy = c.get("machine", 0.0)
        notes.append(
            f"During `/v1/me` at {top} connections the API process used {c.get('server', 0):.0f} % of a core, "
            f"PostgreSQL {c.get('postgres', 0):.0f} %, Valkey {c.get('valkey', 0):.0f} %, the generator "
            f"{c.get('generator', 0):.0f} % and other tenants of this machine {c.get('other', 0):.0f} % "
            f"(machine busy {busy:.0f} % of {cores} %). Server-side cost per request is steadier than req/s on a "
            f"shared box: /v1/me costs {_per_req(me, 'server'):.0f} µs of API CPU and "
            f"{_per_req(me, 'postgres'):.0f} µs of PostgreSQL CPU, against {_per_req(health, 'server'):.0f} µs "
            f"for /health and {_per_req(hello, 'server'):.0f} µs for hello-world."
        )
    errors = sum(r.result.errors for r in rows)
    notes.append(f"Errors across all runs: {errors}." + (
        " Kinds: " + "; ".join(
            f"{r.target.name}@{r.concurrency}: {r.result.error_kinds}" for r in rows if r.result.errors
        ) if errors else ""
    ))
    return notes


def render(when: datetime, info: dict[str, str], generator: str, settings: str, rows: list[Row]) -> str:
    lines = [
        f"## Latest run: {when:%Y-%m-%d %H:%M} UTC",
        "",
        *(f"- **{k}**: {v}" for k, v in info.items()),
        f"- **generator**: {generator}; it runs on the same {info['nproc']} cores as the server, PostgreSQL "
        "and Valkey, so every figure includes that contention",
        f"- **settings**: {settings}",
        "",
        table(rows),
        "",
        "**Interpretation** (generated from the figures above)",
        "",
        *(f"- {n}" for n in interpretation(rows)),
        "- Closed-loop load (each connection waits for its answer before sending again): latencies under "
        "overload are queueing time, and req/s is what the box sustains with generator and server sharing it. "
        "Compare ratios, not absolute figures, across machines; this machine is noisy, so differences "
        "under ~10 % between runs are not meaningful.",
    ]
    return "\n".join(lines) + "\n"


def write_results(latest: str) -> None:
    """Overwrite the latest section; the previous latest goes to the top of History, older runs stay. Whatever
    lies between the latest section and History (other benchmarks' latest runs, bench/intake.py) is kept."""
    old = RESULTS.read_text() if RESULTS.exists() else ""
    previous, history = "", ""
    if LATEST_START in old and LATEST_END in old:
        previous = old.split(LATEST_START, 1)[1].split(LATEST_END, 1)[0].strip()
    head = old.split(HISTORY, 1)[0]
    head = head.split(LATEST_END, 1)[1] if LATEST_END in head else head
    between = head[head.find("<!-- ") :].strip() if "<!-- " in head else ""  # from the next marked section on
    if HISTORY in old:
        history = old.split(HISTORY, 1)[1].strip().removeprefix("(none yet)").strip()
    if previous:
        previous = previous.replace("## Latest run:", "### Run:", 1)
        history = previous + ("\n\n" + history if history else "")
    middle = f"{between}\n\n" if between else ""
    RESULTS.write_text(
        "# Benchmark results\n\n"
        "Written by `make bench` (see bench/README.md). The latest run is on top; earlier runs are under History.\n\n"
        f"{LATEST_START}\n{latest.strip()}\n{LATEST_END}\n\n{middle}{HISTORY}\n\n{history or '(none yet)'}\n"
    )


# -- main ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per target (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="discarded seconds before each (default 2)")
    parser.add_argument("--connections", default="32,64", help="comma-separated concurrencies (default 32,64)")
    parser.add_argument("--residents", type=int, default=50, help="residents whose tokens /v1/me rotates over")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    args.connections = [int(c) for c in str(args.connections).split(",") if c.strip()]
    if not args.connections or min(args.connections) < 1 or max(args.connections) > 1024:
        parser.error("--connections must be between 1 and 1024")
    if not 0.5 <= args.duration <= 120 or not 0 <= args.warmup <= 60 or not 1 <= args.residents <= 1000:
        parser.error("--duration 0.5–120, --warmup 0–60, --residents 1–1000")
    return args


@dataclass
class Session:
    """What one benchmark run starts: its scratch folder, the embedded servers and the uvicorn processes."""

    work: Path
    data_dir: Path
    servers: LocalServers
    running: list[Server]
    started: float


@contextlib.contextmanager
def session(prefix: str) -> Iterator[Session]:
    """Everything a run starts is stopped again, also on Ctrl-C, SIGTERM or an error (then with each server's
    log tail). An interrupt is swallowed here; the caller returns 130 after the `with`."""
    from api.local.servers import LocalServers

    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    work = Path(tempfile.mkdtemp(prefix=prefix))
    s = Session(work, work / "data", LocalServers(work / "data", ephemeral=True), [], time.perf_counter())
    try:
        yield s
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
    except Exception:
        for server in s.running:
            print(f"--- {server.name} log tail ---\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish cleaning up even if Ctrl-C is pressed again
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in reversed(s.running):
            server.stop()
        s.servers.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with session("cw-bench-") as run:
        work, data_dir, servers, running, started = run.work, run.data_dir, run.servers, run.running, run.started
        env = prepare(servers, data_dir)
        hello = Server("hello", ["bench.hello:app"], env, work, "/")
        api = Server("api", ["--factory", "api.app:create_app"], env, work, "/ready")
        for server in (hello, api):
            running.append(server)
            server.start()
        tokens = register_residents(api.base_url, args.residents)
        print(f"servers ready and {len(tokens)} residents registered in {time.perf_counter() - started:.1f}s; "
              f"generator: {generator_name()}", flush=True)

        rows: list[Row] = []
        # Interleave targets per concurrency so slow drift of a noisy machine hits all of them alike.
        for conns in args.connections:
            for target in TARGETS:
                server = hello if target.server == "hello" else api
                spec = LoadSpec(
                    port=server.port, path=target.path, concurrency=conns, duration_s=args.duration,
                    warmup_s=args.warmup, bearer_tokens=tuple(tokens) if target.authenticated else (),
                    server_pid=server.proc.pid if server.proc else None,
                    postgres_pid=pid_file(data_dir / "pg" / "postmaster.pid"),
                    valkey_pid=pid_file(data_dir / "valkey" / "server.pid"),
                )
                result = measure(spec)
                rows.append(Row(target, conns, result))
                print(f"  {target.name:<22} c={conns:<4} {result.rps:>9,.0f} req/s  p50 {_fmt(result.p50_ms)} ms  "
                      f"p99 {_fmt(result.p99_ms)} ms  errors {result.errors}", flush=True)

        settings = (f"uvicorn 1 worker, --no-access-log; {args.warmup:g} s warm-up + {args.duration:g} s measured "
                    f"per target; /v1/me rotates over {len(tokens)} residents' access tokens")
        report = render(datetime.now(UTC), machine(), generator_name(), settings, rows)
        print("\n" + report)
        if not args.no_write:
            write_results(report)
            print(f"written to {RESULTS.relative_to(ROOT)} ({time.perf_counter() - started:.0f}s in all)")
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
