"""An open-loop load generator: requests are sent at a fixed rate whatever the server does, and each latency is
measured from the time its request was *due*, not from when a connection got round to sending it. A closed loop
(bench/load.py, `drive` in bench/intake.py) sends the next request only after the last answer, so a server that
stalls simply receives fewer requests and the stall hides from the percentiles (coordinated omission); here a stall
shows as the queue of due requests it caused.

Request i is due at start + i / rate. A dispatcher hands due requests to a shared queue that `workers` (one per
keep-alive connection, or tasks sharing a client pool) take from; a request waiting for a free worker keeps
counting. Everything runs on this process's event loop, so it is bounded by deadlines and a request count.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bench.load import LoadResult, LoadSpec, cpu_pct, cpu_snapshot, summarise

__all__ = ["OpenResult", "open_loop"]

Work = Callable[[int], Awaitable[str | None]]  # request number -> None, or what went wrong
GRACE_S = 10.0  # how long after the window requests due inside it may still be answered


@dataclass
class OpenResult:
    """`result` holds the requests *due* inside the measured window that succeeded (latency from due time) and
    everything else as errors; `answered_per_s` counts answers that arrived inside the window (the throughput
    the server kept up with); `dispatch_lag_*` is how late the dispatcher handed requests out (the generator's own
    jitter, part of every latency); `backlog_max` the most due requests waiting for a free worker at once (a server
    falling behind)."""

    rate: float
    result: LoadResult
    answered_per_s: float
    dispatch_lag_p50_ms: float
    dispatch_lag_p99_ms: float
    backlog_max: int


def _ms(sorted_ns: list[int], p: float) -> float:
    if not sorted_ns:
        return math.nan
    return sorted_ns[max(1, math.ceil(p / 100 * len(sorted_ns))) - 1] / 1e6


async def open_loop(workers: Sequence[Work], rate: float, spec: LoadSpec) -> OpenResult:
    """`spec.warmup_s` discarded, then `spec.duration_s` measured, at `rate` requests/s over `workers`. CPU from
    /proc over the measured window (`spec`'s pids; the generator is this process)."""
    if rate <= 0 or not workers:
        raise ValueError("open_loop needs a positive rate and at least one worker")
    step = 1e9 / rate
    start = time.perf_counter_ns() + 50_000_000
    window = start + int(spec.warmup_s * 1e9)
    end = window + int(spec.duration_s * 1e9)
    total = min(spec.max_requests, math.ceil((end - start) / step))
    queue: asyncio.Queue[tuple[int, int, int] | None] = asyncio.Queue()
    latencies: list[int] = []
    lags: list[int] = []
    errors: Counter[str] = Counter()
    answered = backlog_max = 0

    async def dispatch() -> None:
        nonlocal backlog_max
        for i in range(total):
            due = start + int(i * step)
            if (wait := due - time.perf_counter_ns()) > 0:
                await asyncio.sleep(wait / 1e9)
            queue.put_nowait((i, due, time.perf_counter_ns()))
            backlog_max = max(backlog_max, queue.qsize())
        for _ in workers:
            queue.put_nowait(None)

    async def serve(work: Work) -> None:
        nonlocal answered
        while (item := await queue.get()) is not None:
            n, due, handed = item
            try:
                problem = await work(n)
            except Exception as exc:  # counted like any other failure; the run goes on
                problem = f"{type(exc).__name__}: {str(exc)[:80]}"
            done = time.perf_counter_ns()
            answered += window <= done <= end
            if window <= due < end:
                lags.append(handed - due)
                if problem:
                    errors[problem] += 1
                else:
                    latencies.append(done - due)

    tasks = [asyncio.create_task(serve(w)) for w in workers]
    feeder = asyncio.create_task(dispatch())
    try:
        await asyncio.sleep(max(0.0, (window - time.perf_counter_ns()) / 1e9))
        before, t0 = cpu_snapshot(spec, os.getpid()), time.perf_counter()
        await asyncio.sleep(max(0.0, (end - time.perf_counter_ns()) / 1e9))
        seconds, after = time.perf_counter() - t0, cpu_snapshot(spec, os.getpid())
        await feeder
        _, pending = await asyncio.wait(tasks, timeout=GRACE_S)
        if pending:  # due inside the window and still unanswered (or never sent) GRACE_S after it
            due_in_window = math.ceil((end - start) / step) - math.ceil((window - start) / step)
            if missing := due_in_window - len(latencies) - errors.total():
                errors[f"unanswered {GRACE_S:g} s after the window"] += missing
    finally:
        feeder.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(feeder, *tasks, return_exceptions=True)
    lags.sort()
    result = summarise(latencies, spec.duration_s, dict(errors), cpu_pct(before, after, seconds))
    return OpenResult(rate, result, answered / spec.duration_s, _ms(lags, 50), _ms(lags, 99), backlog_max)
