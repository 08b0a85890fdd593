"""Load generators: `wrk` when it is installed, otherwise a closed-loop HTTP/1.1 keep-alive client on raw
asyncio sockets running in its own process, so server and generator are separate processes (as with wrk)
and the CPU each one burns can be read from /proc.

Both generators only ever connect to 127.0.0.1, and every loop is bounded by a deadline and a request count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import queue as queue_module
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "LoadResult", "LoadSpec", "cpu_pct", "cpu_snapshot", "die_with_parent", "generator_name", "measure", "summarise",
]

HOST = "127.0.0.1"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_MAX_BODY = 1 << 20


def die_with_parent() -> None:
    """Linux: SIGTERM us when our parent dies, so even a SIGKILLed bench leaves no orphans. Kept here
    rather than imported from api.local.run so the bench's own plumbing does not depend on app code."""
    if sys.platform != "linux":
        return
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


@dataclass(frozen=True)
class LoadSpec:
    """One measurement: `concurrency` keep-alive connections hammering `path` for `duration_s` after a
    discarded warm-up; `bearer_tokens` are rotated request by request to spread load across residents."""

    port: int
    path: str
    concurrency: int
    duration_s: float
    warmup_s: float
    bearer_tokens: tuple[str, ...] = ()
    server_pid: int | None = None
    postgres_pid: int | None = None
    valkey_pid: int | None = None
    max_requests: int = 5_000_000


@dataclass
class LoadResult:
    """Successful (2xx) requests inside the measured window; everything else is counted in `errors`."""

    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    error_kinds: dict[str, int] = field(default_factory=dict)
    cpu_pct: dict[str, float] = field(default_factory=dict)


def generator_name() -> str:
    """Which generator `measure` will use, for the report."""
    wrk = shutil.which("wrk")
    return f"wrk ({wrk}, 1 thread)" if wrk else "built-in asyncio generator (bench/load.py, 1 process, uvloop)"


def measure(spec: LoadSpec) -> LoadResult:
    """Run one measurement with the best available generator."""
    if shutil.which("wrk"):
        return _measure_wrk(spec)
    return _measure_python(spec)


# -- CPU accounting --------------------------------------------------------------------------------------


def _proc_stat(pid: str) -> tuple[int, int] | None:
    """(parent pid, utime + stime in clock ticks) of one process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _machine_busy_ticks() -> int:
    """Busy ticks of all CPUs together (everything but idle and iowait), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4]


def cpu_snapshot(spec: LoadSpec, generator_pid: int) -> dict[str, dict[int, int]]:
    """Ticks per process, grouped: the server under test, the generator, our PostgreSQL (postmaster and
    the backends it forks, which come and go, hence the scan) and our Valkey; `machine` is the whole box,
    so the report can show how much CPU other tenants took."""
    roots = {
        "server": spec.server_pid, "generator": generator_pid,
        "postgres": spec.postgres_pid, "valkey": spec.valkey_pid,
    }
    by_pid = {pid: group for group, pid in roots.items() if pid is not None}
    groups: dict[str, dict[int, int]] = {group: {} for group in roots}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        info = _proc_stat(entry.name)
        if info is None:
            continue
        pid = int(entry.name)
        group = by_pid.get(pid) or by_pid.get(info[0])
        if group is not None:
            groups[group][pid] = info[1]
    groups["machine"] = {0: _machine_busy_ticks()}
    return groups


def cpu_pct(before: dict[str, dict[int, int]], after: dict[str, dict[int, int]], seconds: float) -> dict[str, float]:
    """Percent of one core per group over the window (200 % = both cores of a 2-core machine)."""
    out: dict[str, float] = {}
    for group, now in after.items():
        ticks = sum(t - before[group].get(pid, 0) for pid, t in now.items())
        out[group] = round(100 * ticks / _CLK_TCK / seconds, 1)
    return _with_other(out)


def _with_other(cpu: dict[str, float]) -> dict[str, float]:
    """CPU the machine spent on anything that is not ours: other tenants of a shared box."""
    ours = sum(v for k, v in cpu.items() if k not in ("machine", "other"))
    return {**cpu, "other": round(max(0.0, cpu.get("machine", 0.0) - ours), 1)}


# -- percentiles -----------------------------------------------------------------------------------------


def _percentile(sorted_ns: list[int], p: float) -> float:
    """Nearest-rank percentile in milliseconds (no interpolation: every reported value was observed)."""
    if not sorted_ns:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1e6


# -- built-in asyncio generator --------------------------------------------------------------------------


def _requests(spec: LoadSpec) -> list[bytes]:
    """Pre-built request bytes, one per token, so the hot loop only writes."""
    base = f"GET {spec.path} HTTP/1.1\r\nHost: {HOST}:{spec.port}\r\nUser-Agent: cw-bench\r\nAccept: */*\r\n"
    if not spec.bearer_tokens:
        return [(base + "\r\n").encode()]
    return [(base + f"Authorization: Bearer {t}\r\n\r\n").encode() for t in spec.bearer_tokens]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; returns (status, connection stays open). Handles Content-Length and chunked."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    keep = b"\r\nconnection: close" not in lower
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
        if length > _MAX_BODY:
            raise ValueError("response body too large")
        if length:
            await reader.readexactly(length)
    elif b"\r\ntransfer-encoding: chunked" in lower:
        for _ in range(100_000):
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif not (status < 200 or status in (204, 304)):
        keep = False
        await reader.read(_MAX_BODY)
    return status, keep


class _Run:
    """Shared state of one run: the clock, counters and latencies of successful requests in the window."""

    def __init__(self, spec: LoadSpec) -> None:
        now = time.perf_counter_ns()
        self.window_start = now + int(spec.warmup_s * 1e9)
        self.end = self.window_start + int(spec.duration_s * 1e9)
        self.max_requests = spec.max_requests
        self.sent = 0
        self.latencies: list[int] = []
        self.errors: Counter[str] = Counter()

    def in_window(self, started: int, done: int) -> bool:
        return started >= self.window_start and done <= self.end


async def _connection(run: _Run, port: int, requests: list[bytes], index: int, stride: int) -> None:
    """One keep-alive connection issuing requests back to back (closed loop) until the deadline."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while run.sent < run.max_requests:
            started = time.perf_counter_ns()
            if started >= run.end:
                break
            if writer is None or reader is None:
                try:
                    reader, writer = await asyncio.open_connection(HOST, port)
                except OSError as exc:
                    run.errors[f"connect: {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.05)
                    continue
                started = time.perf_counter_ns()
            request = requests[index % len(requests)]
            index += stride
            run.sent += 1
            try:
                writer.write(request)
                status, keep = await _read_response(reader)
            except (OSError, EOFError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                if started >= run.window_start:
                    run.errors[f"io: {type(exc).__name__}"] += 1
                writer.close()
                reader = writer = None
                continue
            done = time.perf_counter_ns()
            if run.in_window(started, done):
                if 200 <= status < 300:
                    run.latencies.append(done - started)
                else:
                    run.errors[f"HTTP {status}"] += 1
            if not keep:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def _drive(spec: LoadSpec) -> LoadResult:
    run = _Run(spec)
    requests = _requests(spec)
    tasks = [
        asyncio.create_task(_connection(run, spec.port, requests, i, spec.concurrency))
        for i in range(spec.concurrency)
    ]
    await asyncio.sleep(max(0.0, (run.window_start - time.perf_counter_ns()) / 1e9))
    before = cpu_snapshot(spec, os.getpid())
    t0 = time.perf_counter()
    _done, pending = await asyncio.wait(tasks, timeout=spec.duration_s + 10)
    for task in pending:
        task.cancel()
        run.errors["timeout: still waiting at the deadline"] += 1
    after = cpu_snapshot(spec, os.getpid())
    cpu_window = time.perf_counter() - t0
    return summarise(run.latencies, spec.duration_s, dict(run.errors), cpu_pct(before, after, cpu_window))


def summarise(latencies: list[int], duration_s: float, errors: dict[str, int], cpu: dict[str, float]) -> LoadResult:
    latencies.sort()
    return LoadResult(
        requests=len(latencies), duration_s=duration_s, rps=len(latencies) / duration_s,
        p50_ms=_percentile(latencies, 50), p90_ms=_percentile(latencies, 90), p99_ms=_percentile(latencies, 99),
        max_ms=latencies[-1] / 1e6 if latencies else math.nan,
        errors=sum(errors.values()), error_kinds=errors, cpu_pct=cpu,
    )


def _child(spec: LoadSpec, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Generator process entry point: uvloop when available (uvicorn uses it too), result on the queue."""
    die_with_parent()
    try:
        import uvloop

        result = uvloop.run(_drive(spec))
    except ImportError:
        result = asyncio.run(_drive(spec))
    except KeyboardInterrupt:
        return
    out.put(result)


def _measure_python(spec: LoadSpec) -> LoadResult:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(spec, queue), name="cw-bench-load", daemon=True)
    process.start()
    deadline = time.monotonic() + spec.warmup_s + spec.duration_s + 60
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(queue_module.Empty):
                return queue.get(timeout=0.5)
            if not process.is_alive():
                raise RuntimeError(f"the load generator exited with {process.exitcode} (see its traceback above)")
        raise RuntimeError("the load generator did not report in time")
    finally:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)


# -- wrk -------------------------------------------------------------------------------------------------

_LUA = r"""
local tokens = {%TOKENS%}
local counter = 0
request = function()
  counter = counter + 1
  if #tokens == 0 then return wrk.format("GET", "%PATH%") end
  return wrk.format("GET", "%PATH%", {["Authorization"] = "Bearer " .. tokens[(counter % #tokens) + 1]})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'CWBENCH {"requests":%d,"duration_us":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def _wrk(spec: LoadSpec, script: Path, seconds: float) -> tuple[dict[str, int], dict[str, float]]:
    """One wrk run; returns its summary and the CPU used by each group while it ran."""
    command = [
        shutil.which("wrk") or "wrk", "-t1", f"-c{spec.concurrency}", f"-d{max(1, round(seconds))}s",
        "--timeout", "10s", "-s", str(script), f"http://{HOST}:{spec.port}{spec.path}",
    ]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    before = cpu_snapshot(spec, process.pid)
    t0 = time.perf_counter()
    try:
        output, _ = process.communicate(timeout=seconds + 30)
    except BaseException:
        process.kill()
        process.wait()
        raise
    window = time.perf_counter() - t0
    after = cpu_snapshot(spec, process.pid)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = re.search(r"^CWBENCH (\{.*\})$", output, re.MULTILINE)
    if process.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{output[-2000:]}")
    # wrk has exited by now, so /proc no longer has it; the kernel's account of reaped children does.
    cpu = cpu_pct(before, after, window)
    used = (children_after.ru_utime + children_after.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
    cpu = _with_other({**cpu, "generator": round(100 * used / window, 1)})
    return json.loads(match.group(1)), cpu


def _measure_wrk(spec: LoadSpec) -> LoadResult:
    tokens = ", ".join(json.dumps(t) for t in spec.bearer_tokens)
    with tempfile.TemporaryDirectory(prefix="cw-bench-wrk-") as folder:
        script = Path(folder) / "bench.lua"
        script.write_text(_LUA.replace("%TOKENS%", tokens).replace("%PATH%", spec.path))
        if spec.warmup_s > 0:
            _wrk(spec, script, spec.warmup_s)
        summary, cpu = _wrk(spec, script, spec.duration_s)
    errors = {k: summary[k] for k in ("connect", "read", "write", "status", "timeout") if summary[k]}
    ok = summary["requests"] - summary["status"]
    duration_s = summary["duration_us"] / 1e6
    return LoadResult(
        requests=ok, duration_s=duration_s, rps=ok / duration_s,
        p50_ms=summary["p50"] / 1e3, p90_ms=summary["p90"] / 1e3, p99_ms=summary["p99"] / 1e3,
        max_ms=summary["max"] / 1e3, errors=sum(errors.values()), error_kinds=errors, cpu_pct=cpu,
    )

