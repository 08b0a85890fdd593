"""The records and report of bench/notifications.py: a phase as measured (CPU per process group from /proc, PostgreSQL's
executor time per statement from pg_stat_statements), the table with ratios to the baselines measured in the same run,
the interpretation computed from the figures, and where the section goes in bench/RESULTS.md (after the leaderboards
section; earlier runs under "Notifications — history" at the end of the file)."""

from __future__ import annotations

import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.energy_report import END as ENERGY_END
from bench.intake import END as INTAKE_END
from bench.leaderboards_report import END as LEADERBOARDS_END
from bench.load import LoadSpec, cpu_pct, cpu_snapshot
from bench.run import HISTORY as RUN_HISTORY
from bench.run import RESULTS, machine
from notifications.delivery.send import Policy, Sender

START, END, HISTORY = "<!-- notifications:start -->", "<!-- notifications:end -->", "## Notifications — history"
LATEST = "## Notifications — latest run:"
CONCURRENCY = Policy().concurrency  # residents a step sends to at once
SPLIT = ("read", "send", "record")  # a delivery step: claim + context queries, sending, recording the outcomes
LABELS = (  # pg_stat_statements text -> label; the first pattern found wins
    ("INSERT INTO inbox_message", "notify (messages + deliveries)"), ("FROM challenge_participant", "participants"),
    ("claimed_until = $1 + make_interval", "claim"), ("LEFT JOIN device v", "context"),
    ("count(DISTINCT d.message)", "daily cap (pushed today)"), ("read_at IS NULL", "unread counts"),
    ("SET state = r.state", "record outcomes"), ("outbox_", "outbox bookkeeping"), ("bench_inbox", "raw insert"),
)


@dataclass
class Phase:
    """One timed phase: `count` units in `seconds`, CPU per group over exactly that time (percent of one core; bench
    is this process, the worker-equivalent; providers is the fake FCM/APNs process), PostgreSQL's executor time per
    statement (pg_stat_statements: label -> (calls, ms)), and for delivery rows the wall split of their steps."""

    key: str
    name: str
    unit: str
    count: int
    seconds: float
    cpu: dict[str, float]
    statements: dict[str, tuple[int, float]] = field(default_factory=dict)
    split: dict[str, float] = field(default_factory=dict)  # SPLIT -> seconds
    steps: int = 0
    detail: str = ""

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds else math.nan

    def us(self, group: str | None = None) -> float:
        """Wall µs per unit, or CPU µs per unit of one group."""
        if not self.count:
            return math.nan
        if group is None:
            return self.seconds * 1e6 / self.count
        return self.cpu.get(group, 0.0) / 100 * self.seconds * 1e6 / self.count

    @property
    def pg_ms(self) -> float:
        return sum(ms for _, ms in self.statements.values())


@dataclass
class Burst:
    """One challenge ending: fan-out, delivery (live steps, push steps, all), the total, and the checks after it."""

    label: str  # "fake providers" or "log channel"
    phases: list[Phase]
    outcomes: dict[str, int]  # "channel state" -> deliveries, after the burst
    published: int  # PUBLISH calls Valkey counted during delivery
    providers: dict[str, Any] = field(default_factory=dict)  # what the fake providers saw


@dataclass
class Measured:
    participants: int
    ledger_accounts: int  # opened by the holder trigger during setup
    setup_s: float
    bursts: list[Burst]
    baselines: list[Phase]
    code: str = "unknown"
    notes: list[str] = field(default_factory=list)

    def find(self, key: str) -> Phase | None:
        return next((p for p in [*self.baselines, *(p for b in self.bursts for p in b.phases)] if p.key == key), None)


def combine(key: str, name: str, unit: str, count: int | None, parts: list[Phase]) -> Phase:
    """Phases run back to back as one: seconds add up (units too, unless `count` is given), CPU is weighted by each
    part's seconds."""
    seconds = sum(p.seconds for p in parts)
    groups = {g for p in parts for g in p.cpu}
    cpu = {g: sum(p.cpu.get(g, 0.0) * p.seconds for p in parts) / seconds if seconds else 0.0 for g in groups}
    statements: dict[str, tuple[int, float]] = {}
    for p in parts:
        for label, (calls, ms) in p.statements.items():
            c, t = statements.get(label, (0, 0.0))
            statements[label] = (c + calls, t + ms)
    split = {s: sum(p.split.get(s, 0.0) for p in parts) for s in SPLIT if any(s in p.split for p in parts)}
    return Phase(key, name, unit, sum(p.count for p in parts) if count is None else count, seconds, cpu, statements,
                 split, sum(p.steps for p in parts))


def label(query: str) -> str:
    flat = " ".join(query.split())
    if flat.startswith(("BEGIN", "COMMIT")):
        return "BEGIN/COMMIT"
    return next((name for pattern, name in LABELS if pattern in flat), "other")


async def statements(reset: bool = False) -> dict[str, tuple[int, float]]:
    """Label -> (calls, executor ms) since the last reset."""
    from wallet.db import connection

    async with connection() as conn:
        if reset:
            await conn.execute("SELECT pg_stat_statements_reset()")
            return {}
        rows = await conn.fetch("SELECT query, calls, total_exec_time FROM pg_stat_statements")
    out: dict[str, tuple[int, float]] = {}
    for r in rows:
        if "pg_stat_statements" not in r["query"]:
            calls, ms = out.get(name := label(r["query"]), (0, 0.0))
            out[name] = (calls + r["calls"], ms + r["total_exec_time"])
    return out


@dataclass
class Meter:
    spec: LoadSpec  # server_pid: the fake providers' process while it runs
    stats: bool  # pg_stat_statements loaded (not for an external DATABASE_URL)

    def snapshot(self) -> dict[str, dict[int, int]]:
        return cpu_snapshot(self.spec, os.getpid())

    async def run(self, key: str, name: str, unit: str, work: Callable[[], Awaitable[object]]) -> Phase:
        """Time `work` with CPU and statement times around it; the count is set by the caller when work's result
        is not an int of units."""
        if self.stats:
            await statements(reset=True)
        before, t0 = self.snapshot(), time.perf_counter()
        count = await work()
        seconds = time.perf_counter() - t0
        cpu = cpu_pct(before, self.snapshot(), seconds)
        return Phase(key, name, unit, count if isinstance(count, int) else 0, seconds, cpu,
                     await statements() if self.stats else {})


@dataclass
class TimedSender(Sender):
    """The product's Sender with each step's wall time split: read (claim and context queries, until the first
    resident is settled), record (the outcome updates), send (the rest: rendering, PUBLISH, the channels)."""

    first: float | None = None
    record_s: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)

    def reset(self) -> None:
        self.first, self.record_s, self.counts = None, 0.0, Counter()

    async def _resident(self, holder: uuid.UUID, rows: list[Any], now: datetime, unread: int, pushed: int) -> Any:
        if self.first is None:
            self.first = time.perf_counter()
        self.counts.update("live" if r["channel"] == "live" else "push" for r in rows)
        return await super()._resident(holder, rows, now, unread, pushed)

    async def _record(self, results: list[Any]) -> None:
        t0 = time.perf_counter()
        try:
            await super()._record(results)
        finally:
            self.record_s += time.perf_counter() - t0


# -- table --------------------------------------------------------------------------------------------------------


def _f(value: float, digits: int = 2) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _x(a: Phase | None, b: Phase | None) -> str:
    return f"{a.per_s / b.per_s:.2f}x" if a and b and b.per_s and not math.isnan(a.per_s) else ""


def best_drain(m: Measured) -> Phase | None:
    return max((p for p in m.baselines if p.key.startswith("arq_drain")), key=lambda p: p.per_s, default=None)


def _job_queue(m: Measured, key: str) -> Phase | None:
    """The job-queue baseline a product row compares with: fan-out ↔ enqueueing a job per notification, delivery ↔
    draining them (the better of the two arq workers), total ↔ both."""
    kind = key.rstrip("0123456789")
    return m.find(kind_key) if (kind_key := {"fanout": "arq_enqueue", "total": "arq_total"}.get(kind)) else \
        best_drain(m)


def table(m: Measured) -> str:
    lines = [
        "| phase | count | seconds | per second | vs job queue | vs raw PG | bench CPU | providers CPU | PG CPU "
        "| Valkey CPU | other CPU | bench µs CPU/unit | PG µs CPU/unit | Valkey µs CPU/unit |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]

    def row(p: Phase, queue: Phase | None, raw: Phase | None) -> str:
        c = p.cpu
        return (f"| {p.name} | {p.count:,} {p.unit} | {_f(p.seconds)} | {_f(p.per_s, 0)} | {_x(p, queue)} "
                f"| {_x(p, raw)} | {c.get('generator', 0):.0f} % | {c.get('server', 0):.0f} % "
                f"| {c.get('postgres', 0):.0f} % | {c.get('valkey', 0):.0f} % | {c.get('other', 0):.0f} % "
                f"| {_f(p.us('generator'), 0)} | {_f(p.us('postgres'), 0)} | {_f(p.us('valkey'), 1)} |")

    raw = m.find("raw_same")
    for b in m.bursts:
        lines.append(f"| ***burst: {b.label}*** | | | | | | | | | | | | | |")
        lines += [row(p, _job_queue(m, p.key), raw if p.key.startswith("fanout") else None) for p in b.phases]
    lines.append("| ***baselines*** | | | | | | | | | | | | | |")
    lines += [row(p, None, None) for p in m.baselines]
    return "\n".join(lines)


# -- interpretation -----------------------------------------------------------------------------------------------


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole else "—"


def _statements(p: Phase, top: int = 4) -> str:
    ranked = sorted(p.statements.items(), key=lambda kv: -kv[1][1])[:top]
    return ", ".join(f"{label} {_f(ms / 1000)} s over {calls:,} calls" for label, (calls, ms) in ranked)


def _fanout_note(m: Measured, b: Burst, f: Phase) -> str:
    raw, queue = m.find("raw_same"), m.find("arq_enqueue")
    notify = f.statements.get("notify (messages + deliveries)", (0, 0.0))
    return (
        f"Fan-out ({b.label}): `handle_event` ran `tell_challenge_finished`, which wrote {f.count:,} inbox messages "
        f"and planned {2 * f.count:,} deliveries in {_f(f.seconds)} s, one transaction ({_f(f.per_s, 0)} messages/s, "
        f"{_f(2 * f.per_s, 0)} deliveries/s). PostgreSQL executed the notify statement "
        f"{notify[0]:,} time{'s' if notify[0] != 1 else ''} "
        f"({f.count / max(notify[0], 1):,.0f} residents each) for {_f(notify[1] / 1000)} s "
        f"({_share(notify[1] / 1000, f.seconds)} of the wall time; its CPU {f.cpu.get('postgres', 0):.0f} % of a "
        f"core, {_f(f.us('postgres'), 0)} µs per message), this process {f.cpu.get('generator', 0):.0f} % "
        f"({_f(f.us('generator'), 0)} µs per message: the participants query's rows, each resident's params and link "
        f"encoded)" + (f". The same rows written raw (one statement, no holder join, conflict check, preferences "
                       f"or device join) take {_f(raw.seconds)} s: the fan-out runs at {_x(f, raw)} of that"
                       if raw else "")
        + (f"; enqueueing one arq job per resident instead would run at {_f(queue.per_s, 0)}/s "
           f"(the fan-out is {_x(f, queue)} that)" if queue else "") + ".")


def _delivery_note(b: Burst, d: Phase, live: Phase | None, push: Phase | None) -> str:
    split = ", ".join(f"{s} {_share(d.split.get(s, 0.0), d.seconds)}" for s in SPLIT)
    rates = [f"{p.name.split(': ', 1)[-1]} {_f(p.per_s, 0)}/s ({_f(p.us('generator'), 0)} µs of this process's CPU "
             f"each)" for p in (live, push) if p and p.count]
    return (
        f"Delivery ({b.label}): {d.count:,} deliveries in {d.steps:,} steps of up to 1,000 ({d.detail}: a step "
        f"counts under the channel most of its deliveries took), {_f(d.seconds)} s ({_f(d.per_s, 0)}/s): "
        + "; ".join(rates) + f". Wall time of the steps: {split} (read = claim, context, unread and daily-cap "
        f"queries; send = rendering, PUBLISH or the push channel, per resident, {CONCURRENCY} at a time; record = the "
        f"outcome UPDATEs). This process was {d.cpu.get('generator', 0):.0f} % busy, "
        f"PostgreSQL {d.cpu.get('postgres', 0):.0f} %, Valkey {d.cpu.get('valkey', 0):.0f} %"
        + (f", the fake providers {d.cpu.get('server', 0):.0f} %" if d.cpu.get("server") else "")
        + f"; PostgreSQL's heaviest statements: {_statements(d)}. Valkey counted {b.published:,} PUBLISH calls "
        f"(nobody subscribed). Outcomes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(b.outcomes.items()))
        + (f" — **not every delivery was sent** ({unsent:,}): this row does not describe a complete delivery"
           if (unsent := sum(v for k, v in b.outcomes.items() if not k.endswith(" sent"))) else "") + ".")


def _limit_note(b: Burst, d: Phase, live: Phase | None, push: Phase | None, lpush: Phase | None) -> str:
    """Where delivery's ceiling is, from CPU per delivery: one Python process settles every delivery of a step."""
    bench, pg, other = (d.cpu.get(g, 0.0) for g in ("generator", "postgres", "other"))
    cores = 100 * len(os.sched_getaffinity(0))
    if bench >= 85:
        state = f"this process ({bench:.0f} % of a core busy): one Python process settles every delivery"
    elif other >= 40:
        state = (f"the shared machine: other tenants took {other:.0f} % of {cores} % meanwhile, leaving this process "
                 f"{bench:.0f} %")
    else:
        state = f"round trips: no process saturated (this process {bench:.0f} %, PostgreSQL {pg:.0f} %)"
    ceilings = [f"{p.name.split('(', 1)[-1].rstrip(')')} ~{1e6 / p.us('generator'):,.0f}/s" for p in (live, push)
                if p and p.count and p.us("generator") > 0]
    per = d.us("generator")
    return (f"What limits delivery ({b.label}): {state}. CPU per delivery: this process {_f(per, 0)} µs, PostgreSQL "
            f"{_f(d.us('postgres'), 0)} µs, Valkey {_f(d.us('valkey'), 1)} µs; so one sending process on a whole "
            f"core would reach at most " + ", ".join(ceilings) + (
                ", and the sending process, not the database, sets the ceiling" if per > d.us("postgres") else "")
            + (f". A live delivery is one PUBLISH round trip per resident ({_f(live.us('generator'), 0)} µs of this "
               f"process each, with its context and record share), where pipelined raw commands cost "
               f"{_f(lpush.us('generator'), 0)} µs (LPUSH row)" if live and live.count and lpush else "") + ".")


def interpretation(m: Measured) -> list[str]:
    notes: list[str] = []
    by = {p.key: p for p in m.baselines}
    for i, b in enumerate(m.bursts, 1):
        ph = {p.key: p for p in b.phases}
        f, d, t = ph.get(f"fanout{i}"), ph.get(f"delivery{i}"), ph.get(f"total{i}")
        if f:
            notes.append(_fanout_note(m, b, f))
        if d:
            notes.append(_delivery_note(b, d, ph.get(f"live{i}"), ph.get(f"push{i}")))
            notes.append(_limit_note(b, d, ph.get(f"live{i}"), ph.get(f"push{i}"), by.get("redis_lpush")))
        if s := b.providers:
            notes.append(
                f"The fake providers (tests/push_support.py, own process) accepted {s['fcm']:,} FCM sends after "
                f"{s['tokens']} OAuth token request(s) and {s['apns']:,} APNs requests over {s['connections']} HTTP/2 "
                f"connection(s), checking each as the real provider would (signatures, headers, body): "
                f"{s['problems']} problems" + (f", e.g. {s['first']}" if s["problems"] else "") + ".")
        if t and f and d:
            queue = m.find("arq_total")
            notes.append(
                f"End to end ({b.label}): from the event to the last delivery recorded, {t.count:,} residents told in "
                f"{_f(t.seconds)} s ({_f(t.per_s, 0)} residents/s); the fan-out is {_share(f.seconds, t.seconds)} of "
                f"it, delivery {_share(d.seconds, t.seconds)}" + (
                    f". One no-op arq job per resident, enqueued and drained by the better arq worker below, would "
                    f"take {_f(queue.seconds)} s: we run at {_x(t, queue)} of the bare job queue while writing the "
                    f"inbox, planning and settling 2 deliveries per resident" if queue else "") + ".")
    f1, p1, p2 = m.find("fanout1"), m.find("push1"), m.find("push2")
    f2 = m.find("fanout2")
    if f1 and f2:
        notes.append(f"The second fan-out wrote into tables already holding the first burst's rows: {_f(f2.per_s, 0)} "
                     f"messages/s against {_f(f1.per_s, 0)} ({_x(f2, f1)}).")
    if p1 and p2 and p1.count and p2.count:
        extra = p1.us() - p2.us()
        notes.append(
            f"Push through the FCM and APNs channels (httpx to local fakes, HTTP/1.1 and HTTP/2) ran at "
            f"{_f(p1.per_s, 0)}/s, through the log channel at {_f(p2.per_s, 0)}/s: the provider clients cost "
            f"{_f(extra, 0)} µs of wall time per push ({_f(p1.us('generator') - p2.us('generator'), 0)} µs of this "
            f"process's CPU) on top of the sender's own work. Against real providers the round trip adds a bound of "
            f"its own: a step sends to {CONCURRENCY} residents at once and waits for the slowest before the next "
            f"{CONCURRENCY}, so at most {CONCURRENCY} pushes per round trip ({CONCURRENCY * 1000 // 50:,}/s at 50 ms, "
            f"{CONCURRENCY * 1000 // 200:,}/s at 200 ms).")
    drains = [p for k, p in by.items() if k.startswith("arq_drain")]
    if drains and (enq := by.get("arq_enqueue")):
        job = min(p.us("generator") for p in drains)
        lp, rp = by.get("redis_lpush"), by.get("redis_rpop")
        notes.append(
            "The job queue: `enqueue_job` " + f"{_f(enq.per_s, 0)} jobs/s (three round trips each: WATCH, EXISTS, "
            "MULTI/EXEC); " + "; ".join(f"{p.name.removeprefix('arq: ')} {_f(p.per_s, 0)} jobs/s" for p in drains)
            + (f"; raw Redis LPUSH {_f(lp.per_s, 0)}/s and RPOP {_f(rp.per_s, 0)}/s pipelined 1,000 per round trip"
               if lp and rp else "") + "."
            + "".join(f" {p.detail}." for p in drains if p.detail)
            + f" Running a job that does nothing costs arq ~{_f(job, 0)} µs of worker CPU and "
            f"~{_f(min(p.us('valkey') for p in drains), 0)} µs of Valkey CPU"
            + (f", {job / own:.1f}x what the sender spends on a whole delivery of its own (log channel burst: "
               f"{_f(own, 0)} µs): a job per delivery would cost more than the delivery itself"
               if (d2 := m.find("delivery2")) and (own := d2.us("generator")) and job > own else "") + ".")
    return [*notes, *m.notes]


def render(when: datetime, m: Measured, pool: int) -> str:
    n = m.participants
    settings = (
        f"one challenge of {n:,} participants per burst; this process plays the arq worker (uvloop, a pool of {pool} "
        f"connections like the worker's): the outbox handler called directly (the relay and the job hop before it "
        f"are skipped), then `Sender.step()` with the product's Policy (1,000 deliveries claimed per step, 100 "
        f"residents sent to at once) back to back until nothing is due, as `deliver_notifications` does; ANALYZE "
        f"before each fan-out and each delivery, not timed (the tables grow by 3 rows per participant at once), nor "
        f"are the checks after each; nobody subscribed to the live channels; burst 1 pushes to the fakes over "
        f"loopback, burst 2 to the log channel with its logger at WARNING; no API process")
    setup = (f"{n:,} residents (`holder` rows, active, a third in English, four time zones; the holder trigger opened "
             f"their {m.ledger_accounts:,} energy accounts), one push device each (`device`: {n // 2:,} FCM, "
             f"{(n + 1) // 2:,} APNs, valid-looking tokens), two global challenges (`challenge`) with all of them as "
             f"participants (`challenge_participant`), no notification settings or preferences (defaults: push on, "
             f"no quiet hours, cap 10 a day); then ANALYZE")
    return "\n".join([
        f"{LATEST} {when:%Y-%m-%d %H:%M} UTC", "",
        f"Issue 7's benchmark: a burst of notifications — a challenge of {m.participants:,} participants ending — "
        "fanned out (inbox message + a live and a push delivery each), delivered (live stream PUBLISH, push through "
        "the channels) and timed end to end, against the raw job queue (arq, Redis) and raw PostgreSQL measured in "
        "the same run. Written by `python -m bench.notifications`.", "",
        *(f"- **{k}**: {v}" for k, v in machine().items()), f"- **code**: {m.code}", f"- **settings**: {settings}",
        f"- **set up by SQL**: {setup} ({_f(m.setup_s, 1)} s)", "",
        table(m), "",
        "*vs job queue*: fan-out against `enqueue_job` of one arq job per resident, delivery rows against draining "
        "those jobs (the better of the two arq workers), totals against both; *vs raw PG*: the fan-out against the "
        "same rows (messages and deliveries) inserted by one raw statement. *bench* is this process, which plays the "
        "worker (the outbox handler and the sender run in it), *providers* the fake FCM/APNs process; CPU is percent "
        "of one core over the phase.", "",
        "**Interpretation** (generated from the figures above)", "",
        *(f"- {n}" for n in interpretation(m)),
        "- Shared 2-core machine: PostgreSQL, Valkey, this process and the fakes share the cores; compare ratios and "
        "CPU per unit across machines, not absolute figures.",
    ]) + "\n"


def write_results(report: str, path: Path = RESULTS) -> None:
    """Our latest run sits after the leaderboards section (or energy's, or intake's, or before bench.run's History);
    the previous one moves to the top of our own history at the end of the file. Other sections are kept."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block, previous = f"{START}\n{report.strip()}\n{END}", ""
    after = next((e for e in (LEADERBOARDS_END, ENERGY_END, INTAKE_END) if e in text), None)
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
    if previous := previous.strip().replace(LATEST, "### Notifications run:", 1):
        head, found, tail = text.partition(HISTORY)
        text = (f"{head.rstrip()}\n\n{HISTORY}\n\n{previous}\n" + (f"\n{tail.strip()}\n" if tail.strip() else "")
                if found else f"{text.rstrip()}\n\n{HISTORY}\n\n{previous}\n")
    path.write_text(text)
