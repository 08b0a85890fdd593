"""The report of bench/leaderboards.py: what it measured, the three tables (reads at a fixed rate, update costs,
lag behind the book), the interpretation computed from the figures, and where the section goes in bench/RESULTS.md
(after the energy section; earlier runs under "Leaderboards — history" at the end of the file)."""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.energy_report import END as ENERGY_END
from bench.intake import END as INTAKE_END
from bench.load import LoadResult
from bench.openloop import OpenResult
from bench.run import HISTORY as RUN_HISTORY
from bench.run import RESULTS, machine

START, END, HISTORY = "<!-- leaderboards:start -->", "<!-- leaderboards:end -->", "## Leaderboards — history"
LATEST = "## Leaderboards — latest run:"
TARGET_P99_MS, TARGET_RATE, TARGET_LAG_S = 15.0, 1_000, 5.0  # issue 6's quality bar
FOLLOW = "follow(): book → boards"
HELLO, RAW, SCRIPT, API, API2 = ("hello-world GET /", "Redis raw commands", "Redis READ script",
                                 "API GET /v1/me/leaderboards/global/all", "the same, API with 2 workers")
QUIET = frozenset({"evalsha", "eval", "info", "script", "multi", "exec", "ping", "client", "hello", "select"})


@dataclass
class ReadRow:
    name: str
    result: OpenResult


@dataclass
class Timed:
    """One timed update path: `entries` written in `seconds`, CPU per group over exactly that time (percent of a
    core, bench.load's groups), and the Redis commands Valkey executed meanwhile (INFO commandstats, the commands
    scripts ran included)."""

    name: str
    entries: int
    seconds: float
    cpu: dict[str, float]
    commands: Counter[str]
    zsets: float = math.nan  # sorted sets written per entry
    baseline: str | None = None  # the row this one is compared with

    @property
    def per_s(self) -> float:
        return self.entries / self.seconds if self.seconds else math.nan

    def us(self, group: str | None = None) -> float:
        """Wall µs per entry, or CPU µs per entry of one group."""
        if not self.entries:
            return math.nan
        if group is None:
            return self.seconds * 1e6 / self.entries
        return self.cpu.get(group, 0.0) / 100 * self.seconds * 1e6 / self.entries

    @property
    def data_commands(self) -> int:
        return sum(n for name, n in self.commands.items() if name not in QUIET)

    @property
    def round_trips_per_entry(self) -> float:
        return self.commands.get("evalsha", 0) / self.entries if self.entries else math.nan


@dataclass
class Lag:
    ingestion: LoadResult  # HTTP batches of 100 (closed loop)
    batch: int
    credited: float  # share of activities credited
    lags_s: list[float]  # sorted: entries recorded inside the window, step end - recorded_at
    unapplied: int  # entries recorded inside the window that no step applied
    steps: int
    step_mean_s: float
    step_max_s: float
    skipped: int  # steps that found the lock taken or no cursor
    follower_cpu_pct: float

    def p(self, q: float) -> float:
        return self.lags_s[max(1, math.ceil(q / 100 * len(self.lags_s))) - 1] if self.lags_s else math.nan


@dataclass
class Measured:
    reads: list[ReadRow]
    updates: list[Timed]
    lag: Lag | None
    members: int
    real: int
    leaders: int
    readers: int
    reader_ranks: list[int]  # sorted
    threshold_g: int
    exact: str
    setup_s: float
    code: str = "unknown"
    notes: list[str] = field(default_factory=list)


def _f(value: float, digits: int = 2) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _us_per_req(r: OpenResult, group: str) -> float:
    """CPU µs of one group per answer inside the window (answers, not requests due: a server falling behind
    answers fewer than were sent)."""
    rps = r.answered_per_s
    return r.result.cpu_pct.get(group, 0.0) * 1e4 / rps if rps else math.nan


def reads_table(rows: list[ReadRow]) -> str:
    lines = [
        "| read | target/s | answered/s | p50 ms | p90 ms | p99 ms | max ms | errors | dispatch lag p99 ms "
        "| backlog max | API/app CPU | PG CPU | Valkey CPU | bench CPU | other CPU | app µs CPU/req | PG µs CPU/req "
        "| Valkey µs CPU/req |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        r, c = row.result, row.result.result.cpu_pct
        app = "generator" if row.name.startswith("Redis") else "server"
        lines.append(
            f"| {row.name} | {r.rate:,.0f} | {r.answered_per_s:,.0f} | {_f(r.result.p50_ms)} | {_f(r.result.p90_ms)} "
            f"| {_f(r.result.p99_ms)} | {_f(r.result.max_ms)} | {r.result.errors} | {_f(r.dispatch_lag_p99_ms)} "
            f"| {r.backlog_max:,} "
            f"| {c.get(app, 0):.0f} % | {c.get('postgres', 0):.0f} % | {c.get('valkey', 0):.0f} % "
            f"| {c.get('generator', 0):.0f} % | {c.get('other', 0):.0f} % | {_f(_us_per_req(r, app), 0)} "
            f"| {_f(_us_per_req(r, 'postgres'), 0)} | {_f(_us_per_req(r, 'valkey'), 0)} |"
        )
    return "\n".join(lines)


def updates_table(rows: list[Timed]) -> str:
    by = {r.name: r for r in rows}
    lines = [
        "| update | entries | entries/s | wall µs/entry | sorted sets/entry | EVALSHA/entry | Redis commands/entry "
        "| Redis commands/s | Valkey µs CPU/entry | PG µs CPU/entry | bench µs CPU/entry | entries/s vs raw ZADD "
        "| Valkey CPU vs raw ZADD |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        base = by.get(r.baseline or "")
        lines.append(
            f"| {r.name} | {r.entries:,} | {_f(r.per_s, 0)} | {_f(r.us(), 1)} | {_f(r.zsets, 0)} "
            f"| {_f(r.round_trips_per_entry, 2)} | {_f(r.data_commands / r.entries if r.entries else math.nan, 1)} "
            f"| {_f(r.data_commands / r.seconds if r.seconds else math.nan, 0)} | {_f(r.us('valkey'), 1)} "
            f"| {_f(r.us('postgres'), 1)} | {_f(r.us('generator'), 1)} "
            f"| {_f(r.per_s / base.per_s, 2) + 'x' if base and base.per_s else ''} "
            f"| {_f(r.us('valkey') / base.us('valkey'), 2) + 'x' if base and base.us('valkey') else ''} |"
        )
    return "\n".join(lines)


def lag_table(lag: Lag | None) -> str:
    if lag is None:
        return "(not measured)"
    i = lag.ingestion
    return "\n".join([
        "| ingestion (HTTP, batches) | activities/s | credited | entries in window | lag p50 s | lag p90 s | lag p99 s "
        "| lag max s | not applied | follower steps | step mean s | step max s | follower CPU | API CPU | PG CPU "
        "| Valkey CPU | other CPU | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        f"| batches of {lag.batch} | {i.rps * lag.batch:,.0f} | {lag.credited:.1%} | {len(lag.lags_s):,} "
        f"| {_f(lag.p(50))} | {_f(lag.p(90))} | {_f(lag.p(99))} | {_f(lag.lags_s[-1] if lag.lags_s else math.nan)} "
        f"| {lag.unapplied:,} | {lag.steps} ({lag.skipped} skipped) | {_f(lag.step_mean_s)} | {_f(lag.step_max_s)} "
        f"| {lag.follower_cpu_pct:.0f} % | {i.cpu_pct.get('server', 0):.0f} % | {i.cpu_pct.get('postgres', 0):.0f} % "
        f"| {i.cpu_pct.get('valkey', 0):.0f} % | {i.cpu_pct.get('other', 0):.0f} % | {i.errors} |",
    ])


# -- interpretation ---------------------------------------------------------------------------------------------


def _kept(r: OpenResult) -> bool:
    """The server kept up: answered (nearly) as fast as requests were sent, none failed."""
    return r.answered_per_s >= 0.97 * r.rate and r.result.errors == 0


def _target_note(row: OpenResult, workers: int) -> str:
    r, kept = row.result, _kept(row)
    verdict = "met" if r.p99_ms <= TARGET_P99_MS and kept else "missed"
    if row.rate < TARGET_RATE:
        verdict = f"not tested (this run sent {row.rate:,.0f}/s)"
    return (
        f"Target API p99 ≤ {TARGET_P99_MS:g} ms at {TARGET_RATE:,} requests/s with {workers} uvicorn "
        f"worker{'s' if workers > 1 else ''}: **{verdict}** — "
        f"`GET /v1/me/leaderboards/global/all?limit=100&around=2` sent at {row.rate:,.0f}/s (open loop), "
        f"{row.answered_per_s:,.0f}/s answered, p50 {_f(r.p50_ms)} ms, p99 {_f(r.p99_ms)} ms, max "
        f"{_f(r.max_ms)} ms, {r.errors} errors" + ("" if kept else " (the API did not keep up with the rate)")
        + f"; latency counts from when each request was due, so waiting for a free connection counts (at most "
        f"{row.backlog_max:,} requests waited at once; the generator's own dispatch lag, p99 "
        f"{_f(row.dispatch_lag_p99_ms)} ms, is included too).")


def _read_notes(m: Measured) -> list[str]:
    by = {r.name: r.result for r in m.reads}
    api, notes = by.get(API), []
    notes += [_target_note(row, workers) for row, workers in ((api, 1), (by.get(API2), 2)) if row]
    script, raw, hello = by.get(SCRIPT), by.get(RAW), by.get(HELLO)
    if api and script:
        notes.append(
            f"At the same rate the same read straight from Redis takes p50 {_f(script.result.p50_ms)} ms / p99 "
            f"{_f(script.result.p99_ms)} ms with the READ script as the API calls it (one round trip: count, my total, "
            f"rank and neighbours, and the top 100 with exact totals only when the boards' generation moved since "
            f"this process last read it)" + (f" and p50 {_f(raw.result.p50_ms)} ms / p99 {_f(raw.result.p99_ms)} "
                                                f"ms as raw commands (ZREVRANGE 0 99 WITHSCORES + ZREVRANK, then "
                                                f"ZREVRANGE around: two round trips)" if raw else "")
            + (f"; the API adds {_f(api.result.p50_ms - script.result.p50_ms)} ms at p50 (HTTP, JWT and session, "
               f"the seat query, neighbours' nicknames, JSON of ~105 rows)" if _kept(api) else
               "; the API fell behind the rate, so its latencies are mostly queueing")
            + (f", hello-world alone answers in p50 {_f(hello.result.p50_ms)} ms" if hello else "") + ".")
        notes.append(
            f"CPU per read: API process {_f(_us_per_req(api, 'server'), 0)} µs, PostgreSQL "
            f"{_f(_us_per_req(api, 'postgres'), 0)} µs, Valkey {_f(_us_per_req(api, 'valkey'), 0)} µs (the READ "
            f"script alone: Valkey {_f(_us_per_req(script, 'valkey'), 0)} µs). At {api.rate:,.0f}/s the API "
            f"process was {api.result.cpu_pct.get('server', 0):.0f} % of a core busy and the machine "
            f"{api.result.cpu_pct.get('machine', 0):.0f} % of {100 * len(os.sched_getaffinity(0))} %.")
    return notes


def _update_notes(m: Measured) -> list[str]:
    by, notes = {r.name: r for r in m.updates}, []
    one = next((r for r in m.updates if r.name.startswith("APPLY") and "one at a time" in r.name), None)
    piped = next((r for r in m.updates if r.name.startswith("APPLY") and "pipelined" in r.name), None)
    if one and piped:
        base = by.get(piped.baseline or "")
        notes.append(
            f"Update cost per book entry: one EVALSHA ({_f(one.round_trips_per_entry)} per entry measured) that runs "
            f"{_f(one.data_commands / one.entries, 0)} Redis commands on {_f(one.zsets, 0)} sorted sets (every "
            f"scope and period of a fully seated resident, group boards included): {_f(one.us(), 0)} µs per entry "
            f"one round trip at a time, {_f(piped.us(), 1)} µs ({_f(piped.per_s, 0)} entries/s, "
            f"{_f(piped.data_commands / piped.seconds, 0)} Redis commands/s) pipelined 2,000 per round trip, "
            f"{_f(piped.us('valkey'), 1)} µs of Valkey CPU per entry"
            + (f"; raw ZADDs of the same sorted sets pipelined: {_f(base.us(), 1)} µs per entry "
               f"({_f(base.us('valkey'), 1)} µs Valkey CPU): APPLY costs {_f(piped.us('valkey') / base.us('valkey'))}x "
               f"the bare ZADDs in Valkey CPU, for the exact totals, ticks, expiries and group boards"
               if base and base.us("valkey") else "") + ".")
    pops = [r for r in m.updates if r.name.startswith("populate")]
    if len(pops) >= 2:
        first, last = pops[0], pops[-1]
        span = [r.name.rsplit("(", 1)[-1].removesuffix(" members)") for r in (first, last)]
        notes.append(
            f"O(log N): APPLY on the global all-time board alone cost {_f(first.us('valkey'), 1)} µs of Valkey CPU "
            f"per entry while the board grew from {span[0]} members and {_f(last.us('valkey'), 1)} µs from "
            f"{span[1]}: {_f(last.us('valkey') / first.us('valkey'))}x.")
    follow = by.get(FOLLOW)
    if follow:
        base = by.get(follow.baseline or "")
        batch_ms = follow.us("valkey") * 2000 / 1000
        notes.append(
            f"The follower applied {follow.entries:,} book entries in {_f(follow.seconds)} s ({_f(follow.per_s, 0)} "
            f"entries/s: the snapshot query, seats, apply_commands and one MULTI of EVALSHAs per 2,000)"
            + (f", against {_f(base.per_s, 0)} entries/s for raw ZADDs of the same sorted sets "
               f"({_f(follow.per_s / base.per_s)}x)" if base else "")
            + f"; a batch of 2,000 keeps Valkey busy for ~{_f(batch_ms, 0)} ms (reads wait behind it).")
    return notes


def _lag_note(lag: Lag | None, follow: Timed | None) -> str | None:
    if lag is None:
        return None
    rate = lag.ingestion.rps * lag.batch * lag.credited
    keeps = "" if follow is None or not rate else (
        f" The follower's throughput measured above ({_f(follow.per_s, 0)} entries/s) is "
        f"{_f(follow.per_s / rate)}x the rate entries were credited here ({_f(rate, 0)}/s): "
        + ("it keeps up, so lag stays near a step's length plus the wait for the next second." if follow.per_s > rate
           else "it cannot keep up, so lag grows for as long as ingestion lasts; a longer run shows a larger lag."))
    met = lag.p(99) <= TARGET_LAG_S and not lag.unapplied and lag.lags_s
    return (f"Target leaderboard lag ≤ {TARGET_LAG_S:g} s at p99 during ingestion: **{'met' if met else 'missed'}** — "
            f"partner intake over HTTP at {lag.ingestion.rps * lag.batch:,.0f} activities/s while the follower ran "
            f"every second in its own process: {len(lag.lags_s):,} entries, lag p50 {_f(lag.p(50))} s, p99 "
            f"{_f(lag.p(99))} s, max {_f(lag.lags_s[-1] if lag.lags_s else math.nan)} s"
            + (f", {lag.unapplied:,} never applied" if lag.unapplied else "")
            + f". Lag is the end of the step that applied an entry minus its recorded_at (set before the book's "
            f"write commits, so it over- rather than under-states); steps took {_f(lag.step_mean_s)} s on average, "
            f"{_f(lag.step_max_s)} s at most." + keeps)


def interpretation(m: Measured) -> list[str]:
    notes = _read_notes(m) + _update_notes(m)
    if lag := _lag_note(m.lag, next((r for r in m.updates if r.name == FOLLOW), None)):
        notes.append(lag)
    ranks = m.reader_ranks
    notes.append(
        f"The board: {m.members:,} members, of which {m.real:,} real residents and {m.members - m.real:,} synthetic "
        f"(see *what is synthetic*); the top {m.leaders} are real (every synthetic total is below the last leader's "
        f"{m.threshold_g:,} g), and the {m.readers} readers the requests rotate over sit at ranks {ranks[0]:,} to "
        f"{ranks[-1]:,} (median {ranks[len(ranks) // 2]:,}), each with two real neighbours on either side. After the "
        f"run: {m.exact}." if ranks else "No readers.")
    errors = sum(r.result.result.errors for r in m.reads) + (m.lag.ingestion.errors if m.lag else 0)
    kinds = "; ".join(f"{r.name}: {r.result.result.error_kinds}" for r in m.reads if r.result.result.errors)
    if m.lag and m.lag.ingestion.errors:
        kinds += f"; ingestion: {m.lag.ingestion.error_kinds}"
    notes.append(f"Errors across all rows: {errors}" + (f" ({kinds.strip('; ')})" if errors else "") + ".")
    return [*notes, *m.notes]


def render(when: datetime, settings: str, synthetic: str, m: Measured) -> str:
    return "\n".join([
        f"{LATEST} {when:%Y-%m-%d %H:%M} UTC", "",
        "Issue 6's benchmark: leaderboard reads (top 100, my rank, two neighbours each side) on a board of "
        f"{m.members:,} members at a fixed rate against the same read straight from Redis, the cost of one update, the "
        "follower's throughput against raw ZADDs, and how far the boards trail the book during partner ingestion. "
        "Written by `python -m bench.leaderboards` (see bench/README.md).", "",
        *(f"- **{k}**: {v}" for k, v in machine().items()), f"- **code**: {m.code}", f"- **settings**: {settings}",
        f"- **what is synthetic**: {synthetic}", "",
        "**Reads** (open loop: sent at a fixed rate, latency from when each request was due)", "",
        reads_table(m.reads), "",
        "**Updates** (each row against the Valkey holding the board; *vs raw ZADD* compares entries/s with the row "
        "writing the same sorted sets with bare ZADDs)", "",
        updates_table(m.updates), "",
        "**Lag behind the book during ingestion**", "",
        lag_table(m.lag), "",
        "**Interpretation** (generated from the figures above)", "",
        *(f"- {n}" for n in interpretation(m)),
        "- Shared 2-core machine: the generator, API, PostgreSQL and Valkey share the cores; compare ratios and CPU "
        "per request or entry across machines, not absolute figures.",
    ]) + "\n"


def write_results(report: str, path: Path = RESULTS) -> None:
    """Our latest run sits after the energy section (or intake's, or before bench.run's History); the previous one
    moves to the top of our own history at the end of the file. The other scripts' sections are kept."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block, previous = f"{START}\n{report.strip()}\n{END}", ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        previous, tail = rest.split(END, 1)
        text = head + block + tail
    elif (after := ENERGY_END if ENERGY_END in text else INTAKE_END) in text:
        head, tail = text.split(after, 1)
        text = f"{head}{after}\n\n{block}\n\n{tail.lstrip()}"
    else:
        head, _, tail = text.partition(RUN_HISTORY)
        text = f"{head.rstrip()}\n\n{block}\n\n{RUN_HISTORY}" + (tail or "\n\n(none yet)\n")
    if previous := previous.strip().replace(LATEST, "### Leaderboards run:", 1):
        head, found, tail = text.partition(HISTORY)
        text = (f"{head.rstrip()}\n\n{HISTORY}\n\n{previous}\n" + (f"\n{tail.strip()}\n" if tail.strip() else "")
                if found else f"{text.rstrip()}\n\n{HISTORY}\n\n{previous}\n")
    path.write_text(text)
