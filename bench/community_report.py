"""The records and report of bench/community.py: the public page's reads at a fixed rate (client latency from when each
request was due, the API's own time from its Prometheus histogram, CPU per process from /proc), its cold renders,
the community follower against raw INSERTs of the same aggregate rows, the ledger's lag behind the book during
ingestion, the interpretation computed from the figures, and where the section goes in bench/RESULTS.md (after the
notifications section; earlier runs under "Community pages and ledgers — history" at the end of the file)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from api.pages.controllers import PAGE_STALE_S, PAGE_TTL_S
from bench.energy_report import END as ENERGY_END
from bench.intake import END as INTAKE_END
from bench.leaderboards_report import END as LEADERBOARDS_END
from bench.leaderboards_report import Lag
from bench.notifications_report import END as NOTIFICATIONS_END
from bench.openloop import OpenResult
from bench.run import HISTORY as RUN_HISTORY
from bench.run import RESULTS

START, END = "<!-- community:start -->", "<!-- community:end -->"
HISTORY, LATEST = "## Community pages and ledgers — history", "## Community pages and ledgers — latest run:"
TARGET_P99_MS, TARGET_LAG_S = 50.0, 10.0  # issue 8's quality bar
HELLO, BOARD, PAGE, PAGE_EN, PAGE_304, PAGE_SCALE = (
    "hello-world GET /", "JSON board GET /v1/leaderboards/city/week", "page GET /c/<city>",
    "page GET /c/<city>?lang=en", "page GET /c/<city> + If-None-Match (304)",
    "page GET /c/<city>, participation at scale")
PAGES = (PAGE, PAGE_EN, PAGE_304, PAGE_SCALE)
RAW, STEP = "raw INSERT of the same aggregate rows", "community follower step()"
COLD, COLD_SCALE = "city page, fresh caches", "city page, fresh caches, participation at scale"
PARTS = ("summary", "board", "challenges", "children", "per-capita", "template", "other")


@dataclass
class Hist:
    """The API's own time for the requests of one row: the delta of `cw_http_request_duration_seconds` (from the
    ASGI wrapper's entry to the response sent; HTTP parsing and waiting for the event loop are not in it)."""

    count: int
    sum_s: float
    buckets: list[tuple[float, int]]  # (le in seconds, cumulative count), ascending; +Inf last

    @property
    def mean_ms(self) -> float:
        return 1000 * self.sum_s / self.count if self.count else math.nan

    def share_le(self, seconds: float) -> float:
        return next((n / self.count for le, n in self.buckets if le >= seconds), math.nan) if self.count else math.nan

    def bound_ms(self, q: float) -> float:
        """The smallest bucket bound holding at least q of the requests: the q-quantile is at most this."""
        return next((1000 * le for le, n in self.buckets if n >= q * self.count), math.nan) if self.count else math.nan


@dataclass
class PageRow:
    name: str
    result: OpenResult
    server: Hist | None
    body_bytes: int


@dataclass
class ColdRow:
    name: str
    where: str  # "HTTP" (client latency, one request at a time) or "in-process"
    samples_ms: list[float]  # sorted
    server: Hist | None = None
    parts: dict[str, list[float]] = field(default_factory=dict)  # in-process: ms per sample, PARTS
    tables: tuple[int, int] | None = None  # in-process: rows of community_day and community_member

    def p(self, q: float) -> float:
        s = self.samples_ms
        return s[max(1, math.ceil(q / 100 * len(s))) - 1] if s else math.nan


@dataclass
class Timed:
    """The follower's backlog row or its raw baseline: `entries` book entries (their aggregate rows) in `seconds`."""

    name: str
    entries: int
    seconds: float
    cpu: dict[str, float]
    day_rows: int
    participant_rows: int
    members: int  # (scope, resident) pairs the entries come from; the new ones raise the scopes' counters
    baseline: str | None = None

    @property
    def per_s(self) -> float:
        return self.entries / self.seconds if self.seconds else math.nan

    def us(self, group: str) -> float:
        return self.cpu.get(group, 0.0) / 100 * self.seconds * 1e6 / self.entries if self.entries else math.nan


@dataclass
class Measured:
    warm: list[PageRow]
    cold: list[ColdRow]
    follower: list[Timed]
    lag: Lag | None
    city: str
    members: int
    real: int  # real residents on the city's week board
    residents: int  # real residents of the city
    leaders: int
    populate_per_s: float
    populate_valkey_us: float
    participation: int  # synthetic community_participant rows added before the "at scale" rows
    participation_s: float
    consistency: str
    setup_s: float
    code: str = "unknown"


def _f(value: float, digits: int = 2) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.1f} %"


def _us(r: OpenResult, group: str) -> float:
    """CPU µs of one group per answer inside the window."""
    rps = r.answered_per_s
    return r.result.cpu_pct.get(group, 0.0) * 1e4 / rps if rps else math.nan


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and not math.isnan(a) and not math.isnan(b) else ""


def warm_table(rows: list[PageRow]) -> str:
    by = {r.name: r.result for r in rows}
    hello, board = by.get(HELLO), by.get(BOARD)
    lines = [
        "| request | target/s | answered/s | p50 ms | p90 ms | p99 ms | max ms | errors | API mean ms | API ≤ 50 ms "
        "| API p99 ≤ ms | body bytes | API CPU | PG CPU | Valkey CPU | bench CPU | other CPU | app µs CPU/req "
        "| PG µs CPU/req | p99 vs hello | app CPU vs hello | app CPU vs JSON board |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        r, c, h = row.result, row.result.result.cpu_pct, row.server
        lines.append(
            f"| {row.name} | {r.rate:,.0f} | {r.answered_per_s:,.0f} | {_f(r.result.p50_ms)} | {_f(r.result.p90_ms)} "
            f"| {_f(r.result.p99_ms)} | {_f(r.result.max_ms)} | {r.result.errors} "
            f"| {_f(h.mean_ms) if h else '—'} | {_pct(h.share_le(0.05)) if h else '—'} "
            f"| {_f(h.bound_ms(0.99), 1) if h else '—'} | {row.body_bytes:,} "
            f"| {c.get('server', 0):.0f} % | {c.get('postgres', 0):.0f} % | {c.get('valkey', 0):.0f} % "
            f"| {c.get('generator', 0):.0f} % | {c.get('other', 0):.0f} % | {_f(_us(r, 'server'), 0)} "
            f"| {_f(_us(r, 'postgres'), 0)} | {_ratio(r.result.p99_ms, hello.result.p99_ms) if hello else ''} "
            f"| {_ratio(_us(r, 'server'), _us(hello, 'server')) if hello else ''} "
            f"| {_ratio(_us(r, 'server'), _us(board, 'server')) if board and row.name in PAGES else ''} |")
    return "\n".join(lines)


def cold_table(rows: list[ColdRow]) -> str:
    lines = ["| render | where | samples | p50 ms | p90 ms | p99 ms | max ms | API mean ms | community_day rows "
             "| community_member rows |", "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    lines += [f"| {r.name} | {r.where} | {len(r.samples_ms)} | {_f(r.p(50))} | {_f(r.p(90))} | {_f(r.p(99))} "
              f"| {_f(r.samples_ms[-1] if r.samples_ms else math.nan)} | {_f(r.server.mean_ms) if r.server else '—'} "
              f"| {f'{r.tables[0]:,}' if r.tables else '—'} | {f'{r.tables[1]:,}' if r.tables else '—'} |"
              for r in rows]
    return "\n".join(lines)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _q(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[max(1, math.ceil(q / 100 * len(s))) - 1] if s else math.nan


def parts_table(rows: list[ColdRow]) -> str:
    split = [r for r in rows if r.parts]
    if not split:
        return "(not measured)"
    head = "| part of a cold render | " + " | ".join(f"{r.name}: mean ms | p99 ms | share" for r in split) + " |"
    lines = [head, "|---|" + "--:|--:|--:|" * len(split)]
    for part in PARTS:
        cells = []
        for r in split:
            total = _mean(r.samples_ms)
            xs = r.parts.get(part, [])
            cells.append(f"{_f(_mean(xs))} | {_f(_q(xs, 99))} | {_pct(_mean(xs) / total if total else math.nan)}")
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def follower_table(rows: list[Timed]) -> str:
    by = {r.name: r for r in rows}
    lines = ["| path | book entries | community_day rows | participations | members | seconds | entries/s "
             "| PG µs CPU/entry | bench µs CPU/entry | entries/s vs raw INSERT |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        base = by.get(r.baseline or "")
        lines.append(f"| {r.name} | {r.entries:,} | {r.day_rows:,} | {r.participant_rows:,} | {r.members:,} "
                     f"| {_f(r.seconds, 3)} "
                     f"| {_f(r.per_s, 0)} | {_f(r.us('postgres'), 1)} | {_f(r.us('generator'), 1)} "
                     f"| {_ratio(r.per_s, base.per_s) if base else ''} |")
    return "\n".join(lines)


def lag_table(lag: Lag | None) -> str:
    if lag is None:
        return "(not measured)"
    i = lag.ingestion
    return "\n".join([
        "| ingestion (HTTP, batches) | activities/s | credited | entries in window | lag p50 s | lag p90 s | lag p99 s "
        "| lag max s | not counted | follower steps | step mean s | step max s | follower CPU | API CPU | PG CPU "
        "| other CPU | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        f"| batches of {lag.batch} | {i.rps * lag.batch:,.0f} | {lag.credited:.1%} | {len(lag.lags_s):,} "
        f"| {_f(lag.p(50))} | {_f(lag.p(90))} | {_f(lag.p(99))} | {_f(lag.lags_s[-1] if lag.lags_s else math.nan)} "
        f"| {lag.unapplied:,} | {lag.steps} ({lag.skipped} idle) | {_f(lag.step_mean_s)} | {_f(lag.step_max_s)} "
        f"| {lag.follower_cpu_pct:.0f} % | {i.cpu_pct.get('server', 0):.0f} % | {i.cpu_pct.get('postgres', 0):.0f} % "
        f"| {i.cpu_pct.get('other', 0):.0f} % | {i.errors} |",
    ])


# -- interpretation ---------------------------------------------------------------------------------------------


def _kept(r: OpenResult) -> bool:
    return r.answered_per_s >= 0.97 * r.rate and r.result.errors == 0


def _target(row: PageRow) -> str:
    r, h, kept = row.result, row.server, _kept(row.result)
    server_ok = h is not None and h.share_le(TARGET_P99_MS / 1000) >= 0.99
    met = kept and r.result.p99_ms <= TARGET_P99_MS and server_ok
    return (f"Target warm page p99 < {TARGET_P99_MS:g} ms server-side ({row.name}): **{'met' if met else 'missed'}** "
            f"— sent at {r.rate:,.0f}/s open loop, {r.answered_per_s:,.0f}/s answered, client p50 "
            f"{_f(r.result.p50_ms)} ms, p99 {_f(r.result.p99_ms)} ms, max {_f(r.result.max_ms)} ms on loopback "
            f"(from when each request was due); the API's own histogram: mean {_f(h.mean_ms) if h else '—'} ms, "
            f"{_pct(h.share_le(0.05)) if h else '—'} of {h.count if h else 0:,} requests within 50 ms, p99 at most "
            f"{_f(h.bound_ms(0.99), 1) if h else '—'} ms (its bucket bound)"
            + ("" if kept else "; the API did not keep up with the rate") + ".")


def _warm_notes(m: Measured) -> list[str]:
    by = {r.name: r for r in m.warm}
    notes = [_target(by[n]) for n in (PAGE, PAGE_EN, PAGE_SCALE) if n in by]
    page, board, hello, nm = by.get(PAGE), by.get(BOARD), by.get(HELLO), by.get(PAGE_304)
    if page and board and hello:
        p, b, h = page.result, board.result, hello.result
        notes.append(
            f"A warm page is a lookup in the API process's page cache (api/pages/cache.py): {_f(_us(p, 'server'), 0)} "
            f"µs of API CPU per request for {page.body_bytes:,} bytes of HTML, against {_f(_us(b, 'server'), 0)} µs "
            f"for the city's JSON board ({board.body_bytes:,} bytes; the READ script and the nicknames lookup on every "
            f"request) and {_f(_us(h, 'server'), 0)} µs for hello-world (bare Litestar, another process): the rest is "
            f"the app's middleware, routing, language choice and headers. At that cost one API process could serve at "
            f"most ~{_f(1e6 / _us(p, 'server'), 0)} warm pages/s on a core of its own. PostgreSQL spent "
            f"{_f(_us(p, 'postgres'), 0)} µs per page request (the background refreshes every {PAGE_TTL_S:g} s, "
            f"spread over the requests). Client p50: page {_f(p.result.p50_ms)} ms, JSON board "
            f"{_f(b.result.p50_ms)} ms, hello-world {_f(h.result.p50_ms)} ms.")
    if nm and page:
        notes.append(
            f"Revalidation (If-None-Match with the page's ETag): {nm.result.result.requests:,} answers were 304 "
            f"without a body ({nm.result.result.errors} were not), p50 {_f(nm.result.result.p50_ms)} ms, "
            f"{_f(_us(nm.result, 'server'), 0)} µs of API CPU per request against {_f(_us(page.result, 'server'), 0)} "
            f"µs for the full page: it saves the bytes on the wire, not the server's work (the page is looked up "
            f"either way).")
    return notes


def _cold_notes(m: Measured) -> list[str]:
    notes = []
    by = {r.name: r for r in m.cold}
    http = [r for r in m.cold if r.where == "HTTP"]
    if http:
        notes.append("Cold renders over HTTP (one request at a time, nothing else running): " + "; ".join(
            f"{r.name}: {len(r.samples_ms)} sample{'s' if len(r.samples_ms) != 1 else ''}, p50 {_f(r.p(50))} ms, "
            f"max {_f(r.samples_ms[-1] if r.samples_ms else math.nan)} ms" for r in http)
            + ". A distinct query string does not miss the cache (keys are the normalised place, period and language; "
              f"unknown parameters are ignored), and an expired page is served stale for {PAGE_STALE_S:g} s more while "
              f"one task re-renders it, so over HTTP only a page nobody asked for in {PAGE_TTL_S + PAGE_STALE_S:g} s "
              "(or one of the 16 period and language "
              "variants asked for the first time) is rendered while a reader waits: hence the in-process rows.")
    for r in (x for x in m.cold if x.parts):
        total = _mean(r.samples_ms)
        worst = max(PARTS, key=lambda part: _mean(r.parts.get(part, [])) if r.parts.get(part) else -1.0)
        notes.append(
            f"{r.name}: p50 {_f(r.p(50))} ms, p99 {_f(r.p(99))} ms over {len(r.samples_ms)} renders with every cache "
            f"emptied first (pages, data, the cached top N and nicknames); the largest part is {worst} "
            f"({_f(_mean(r.parts[worst]))} ms of {_f(total)} ms on average).")
    scale, base = by.get(COLD_SCALE), by.get(COLD)
    if scale and base and m.participation:
        grew = max(PARTS, key=lambda part: _mean(scale.parts.get(part, [0.0])) - _mean(base.parts.get(part, [0.0])))
        ratio = scale.p(50) / base.p(50) if base.p(50) else math.nan
        notes.append(
            f"With the aggregates of {m.participation:,} more residents in the city (synthetic member and "
            f"participation rows in the city and `all`, and the `community_scope` counters raised to match; added in "
            f"{_f(m.participation_s, 1)} s) a cold render goes from p50 {_f(base.p(50))} ms to {_f(scale.p(50))} ms "
            f"({_f(ratio)}x), p99 {_f(base.p(99))} → {_f(scale.p(99))} ms; the part that grew most is {grew} "
            f"({_f(_mean(base.parts[grew]))} → {_f(_mean(scale.parts[grew]))} ms on average)"
            + (": the page's cost does not depend on how many residents took part (the summary reads the counter the "
               "step keeps)." if ratio < 1.3 else
               ". Readers of a warm page do not wait for it (the stale page is served meanwhile), but PostgreSQL pays "
               f"it once per refresh, and a reader of a page nobody asked for in {PAGE_TTL_S + PAGE_STALE_S:g} s pays "
               "it in full."))
    return notes


def _follower_notes(m: Measured) -> list[str]:
    by = {r.name: r for r in m.follower}
    step, raw, notes = by.get(STEP), by.get(RAW), []
    if step and raw:
        notes.append(
            f"The follower counted a backlog of {step.entries:,} book entries in {_f(step.seconds, 2)} s "
            f"({_f(step.per_s, 0)} entries/s: {step.day_rows:,} community_day rows, {step.participant_rows:,} "
            f"participations and the members and participant counters of {step.members:,} (scope, resident) pairs, "
            f"from one statement that reads the book since the cursor's snapshot, joins residents and teams and "
            f"aggregates every scope); writing the same rows with bare INSERT … unnest … ON CONFLICT into copies of "
            f"the four tables (checked afterwards to hold what the step wrote) took {_f(raw.seconds, 3)} s "
            f"({_f(raw.per_s, 0)} entries/s): the step runs "
            f"at {_f(step.per_s / raw.per_s)}x the raw write, {_f(step.us('postgres'), 0)} µs of PostgreSQL CPU per "
            f"entry against {_f(raw.us('postgres'), 0)} µs.")
    lag = m.lag
    if lag is None:
        return notes
    rate = lag.ingestion.rps * lag.batch * lag.credited
    met = lag.lags_s and lag.p(99) <= TARGET_LAG_S and not lag.unapplied
    keeps = ""
    if step is not None and rate:
        keeps = (f" The follower's backlog throughput ({_f(step.per_s, 0)} entries/s) is {_f(step.per_s / rate)}x "
                 f"the rate entries were credited here ({_f(rate, 0)}/s)"
                 + (": it keeps up, so the lag stays near a step's length plus the wait for the next second."
                    if step.per_s > rate else ": it cannot keep up, and the lag grows with the length of the run."))
    most = lag.lags_s[-1] if lag.lags_s else math.nan
    notes.append(
        f"Target city ledger ≤ {TARGET_LAG_S:g} s behind the book during ingestion: **{'met' if met else 'missed'}** "
        f"— partner intake over HTTP at {lag.ingestion.rps * lag.batch:,.0f} activities/s while a follower process "
        f"stepped every second: {len(lag.lags_s):,} entries, lag p50 {_f(lag.p(50))} s, p99 {_f(lag.p(99))} s, "
        f"max {_f(most)} s" + (f", {lag.unapplied:,} never counted" if lag.unapplied else "")
        + f"; steps took {_f(lag.step_mean_s)} s on average, {_f(lag.step_max_s)} s at most. Lag is the end of the "
          f"step that counted an entry minus its recorded_at (set before the book's write commits: over- rather "
          f"than under-stated)." + keeps)
    return notes


def interpretation(m: Measured) -> list[str]:
    errors = sum(r.result.result.errors for r in m.warm) + (m.lag.ingestion.errors if m.lag else 0)
    kinds = "; ".join(f"{r.name}: {r.result.result.error_kinds}" for r in m.warm if r.result.result.errors)
    if m.lag and m.lag.ingestion.errors:
        kinds += f"; ingestion: {m.lag.ingestion.error_kinds}"
    return [
        *_warm_notes(m), *_cold_notes(m), *_follower_notes(m),
        f"The board: the city's week board has {m.members:,} members, {m.real:,} of them real residents (of the "
        f"city's {m.residents:,}; the top {m.leaders} are real leaders, the page shows 20); the synthetic ones were "
        f"written by APPLY at {_f(m.populate_per_s, 0)} members/s ({_f(m.populate_valkey_us, 1)} µs of Valkey CPU "
        f"each, two boards). Consistency check after the run: {m.consistency}.",
        f"Errors across all rows: {errors}" + (f" ({kinds.strip('; ')})" if errors else "") + ".",
    ]


def render(when: datetime, info: dict[str, str], settings: str, synthetic: str, m: Measured) -> str:
    return "\n".join([
        f"{LATEST} {when:%Y-%m-%d %H:%M} UTC", "",
        f"Issue 8's benchmark: the public city page of a city whose week board has {m.members:,} members, warm (at a "
        "fixed rate, with and without revalidation) and cold, against hello-world and the city's JSON board in the "
        "same run; the community follower against raw INSERTs of the same aggregate rows, and how far the city ledger "
        "trails the book during partner ingestion. Written by `python -m bench.community` (see bench/README.md).", "",
        *(f"- **{k}**: {v}" for k, v in info.items()), f"- **code**: {m.code}", f"- **settings**: {settings}",
        f"- **what is synthetic**: {synthetic}", "",
        "**Warm reads** (open loop: sent at a fixed rate, latency from when each request was due, on loopback; *API* "
        "columns: the API's own `cw_http_request_duration_seconds` histogram for the measured window, whose buckets "
        "bound p99 from above)", "",
        warm_table(m.warm), "",
        "**Cold renders** (HTTP: client latency of one request at a time; in-process: `Views.scope_page` + the "
        "template, as the API's cache miss runs them, in the bench process with every cache emptied first)", "",
        cold_table(m.cold), "", parts_table(m.cold), "",
        "**Community follower** (a backlog of credited entries, counted by one step, against bare INSERTs of the rows "
        "it writes)", "",
        follower_table(m.follower), "",
        "**City ledger lag behind the book during ingestion**", "",
        lag_table(m.lag), "",
        "**Interpretation** (generated from the figures above)", "",
        *(f"- {n}" for n in interpretation(m)),
        f"- Shared {len(os.sched_getaffinity(0))}-core machine: the generator, API, PostgreSQL and Valkey share the "
        "cores; compare ratios and CPU per request across machines, not absolute figures.",
    ]) + "\n"


def write_results(report: str, path: Path = RESULTS) -> None:
    """Our latest run sits after the notifications section (or the last of the others present, or before
    bench.run's History); the previous one moves to the top of our own history at the end of the file. Other
    sections are kept."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block, previous = f"{START}\n{report.strip()}\n{END}", ""
    after = next((e for e in (NOTIFICATIONS_END, LEADERBOARDS_END, ENERGY_END, INTAKE_END) if e in text), None)
    if START in text and END in text:
        head, rest = text.split(START, 1)
        previous, tail = rest.split(END, 1)
        text = head + block + tail
    elif after:
        head, tail = text.split(after, 1)
        text = f"{head}{after}\n\n{block}\n\n{tail.lstrip()}"
    else:
        head, _, tail = text.partition(RUN_HISTORY)
        text = f"{head.rstrip()}\n\n{block}\n\n{RUN_HISTORY}" + (tail or "\n\n(none yet)\n")
    if previous := previous.strip().replace(LATEST, "### Community pages and ledgers run:", 1):
        head, found, tail = text.partition(HISTORY)
        text = (f"{head.rstrip()}\n\n{HISTORY}\n\n{previous}\n" + (f"\n{tail.strip()}\n" if tail.strip() else "")
                if found else f"{text.rstrip()}\n\n{HISTORY}\n\n{previous}\n")
    path.write_text(text)
