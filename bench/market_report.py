"""The records and report of bench/market.py: a timed call as measured (wall time, CPU per process group from /proc,
and its parts: the wall time of each SQL round trip, labelled by the product's own statement constants, and the own
time of the Python functions named in PY_PARTS, by timing wrappers patched in for the call's duration), the tables,
the interpretation computed from the figures, and where the section goes in bench/RESULTS.md (after the community
section; earlier runs under "Carbon market — history" at the end of the file)."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import os
import re
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.community_report import END as COMMUNITY_END
from bench.energy_report import END as ENERGY_END
from bench.intake import END as INTAKE_END
from bench.leaderboards_report import END as LEADERBOARDS_END
from bench.load import LoadSpec, cpu_pct, cpu_snapshot
from bench.notifications_report import END as NOTIFICATIONS_END
from bench.run import HISTORY as RUN_HISTORY
from bench.run import RESULTS

START, END = "<!-- market:start -->", "<!-- market:end -->"
HISTORY, LATEST = "## Carbon market — history", "## Carbon market — latest run:"
BEHAVIOUR = "clothes_recycling"
SETTLE_DAYS = 7
PRICE_PER_TONNE_FEN = 6_000  # ¥60 a tonne
BENEFIT_PPM = 50_000  # 5 % to the public-benefit project
PICK = "_NEXT: pick the next eligible entries (all batches)"
INSERT_ITEMS = "_INSERT_ITEMS: insert the items (unnest)"
PICK_PY = "_pick: collect the batches' rows (Python)"
RENDER = "manifest: render JSON + SHA-256 (Python, in a thread)"
COMMIT = "COMMIT (deferred FK checks, WAL flush)"
OTHER = "other (Python around the calls, pool, event loop)"


# -- timed calls ------------------------------------------------------------------------------------------------


@dataclass
class Step:
    """One timed call: wall seconds, CPU per process group (percent of one core) from /proc, rows it handled."""

    name: str
    rows: int = 0
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    parts: list[tuple[str, str, float, int]] = field(default_factory=list)  # (part, kind, seconds, round trips)
    each: dict[str, list[float]] = field(default_factory=dict)  # SQL part -> seconds of each of its round trips

    def cpu_s(self, group: str) -> float:
        return self.cpu.get(group, 0.0) / 100 * self.seconds

    @property
    def per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else math.nan

    def part(self, name: str) -> float:
        return sum(s for p, _, s, _ in self.parts if p == name)

    def trips(self, name: str) -> int:
        return sum(c for p, _, _, c in self.parts if p == name)


@contextlib.contextmanager
def stepping(spec: LoadSpec, name: str, rows: int = 0) -> Iterator[Step]:
    step = Step(name, rows)
    before, started = cpu_snapshot(spec, os.getpid()), time.perf_counter()
    yield step
    step.seconds = time.perf_counter() - started
    step.cpu = cpu_pct(before, cpu_snapshot(spec, os.getpid()), step.seconds)


def _flat(sql: str) -> str:
    return " ".join(sql.split())


def _labels() -> list[tuple[str, str]]:
    """Flattened SQL -> part name; the first match names a statement. The ledger's checks first (their texts contain
    the tables the market's statements touch), then the statements the product keeps in constants (taken from its
    modules, so they follow the code; `_NEXT` before `_ELIGIBLE`, which it extends), then fragments of inline ones."""
    from wallet.ledger.check import _CHECKS
    from wallet.market.check import MARKET_CHECKS

    labels = [(_flat(sql), f"check {name}") for name, sql in {**_CHECKS, **MARKET_CHECKS}.items()]
    for module, constant, name in (
        ("wallet.market.lots", "_NEXT", PICK), ("wallet.market.lots", "_INSERT_ITEMS", INSERT_ITEMS),
        ("wallet.market.lots", "_HOLD_HEADS", "_HOLD_HEADS: contributors' book heads FOR SHARE"),
        ("wallet.market.lots", "_REVERSED", "_REVERSED: reversed grams"),
        ("wallet.market.lots", "_CONTRIBUTORS", "_CONTRIBUTORS: aggregate + insert"),
        ("wallet.market.lots", "_ELIGIBLE", "eligible_summary query"),
        ("wallet.market.manifest", "_ENTRIES", "manifest SQL: entries"),
        ("wallet.market.manifest", "_CONTRIBUTORS", "manifest SQL: contributors"),
        ("wallet.market.sales", "_ACCOUNTS", "_ACCOUNTS: create fen accounts"),
        ("wallet.market.sales", "_LOCK", "_LOCK: lock fen accounts"),
        ("wallet.ledger.service", "_POST", "ledger.post: transfers + balances (_POST)"),
    ):
        if isinstance(sql := getattr(importlib.import_module(module), constant, None), str):
            labels.append((_flat(sql), name))
    return [*labels, *((_flat(k), v) for k, v in (
        ("pg_advisory_xact_lock", "advisory lock"), ("l.idempotency_key = $2", "Idempotency-Key lookup"),
        ("nextval(pg_get_serial_sequence('market_lot'", "lot id (nextval)"),
        ("INSERT INTO market_lot (", "insert the lot row"),
        ("WHERE l.id = $1", "read (or lock) the lot"), ("FROM market_programme", "read the programme"),
        ("FROM market_sale WHERE exchange_ref", "exchange_ref lookup"), ("INSERT INTO market_sale", "insert the sale"),
        ("UPDATE market_lot SET state", "lot state"), ("FROM market_sale WHERE id = $1", "read (or lock) the sale"),
        ("FROM market_lot_holder WHERE lot = $1 ORDER BY first_entry", "read contributors"),
        ("WHERE code = $1 AND holder IS NULL", "system account id"), ("INSERT INTO market_payout", "insert payouts"),
        ("UPDATE market_sale SET state", "settle the sale row"), ("outbox_event", "outbox event"),
        ("FROM market_lot ORDER BY id", "recompute: list lots"),
        ("LEFT JOIN market_payout po ON po.sale = $2", "recompute: contributors + payouts"),
        ("JOIN market_programme p ON p.id = l.programme WHERE s.state = 'settled'", "recompute: settled sales"),
    ))]


# Functions timed by name in the modules that call them -> the part their own time (minus SQL and timed callees) is.
# `_render` runs in a thread (asyncio.to_thread copies the context, so its time still counts against its caller).
PY_PARTS = (
    ("wallet.market.manifest", "_render", RENDER),
    ("wallet.market.lots", "_pick", PICK_PY),
    ("wallet.market.sales", "split_proceeds", "split_proceeds: largest remainder (Python)"),
    ("wallet.market.sales", "post", "ledger.post: transfer arrays + JSON refs (Python)"),
    ("wallet.ledger.check", "recomputed_manifests", "recomputed_manifests (Python)"),
    ("wallet.ledger.check", "recomputed_splits", "recomputed_splits (Python)"),
)
_active: ContextVar[tuple[str, ...]] = ContextVar("bench-market-timed", default=())


@dataclass
class _Clock:
    labels: list[tuple[str, str]]
    sql: Counter[str] = field(default_factory=Counter)  # part -> ns
    calls: Counter[str] = field(default_factory=Counter)
    each: dict[str, list[int]] = field(default_factory=dict)
    total: Counter[str] = field(default_factory=Counter)  # timed function part -> ns, all of it
    inner: Counter[str] = field(default_factory=Counter)  # ... of which in SQL or timed callees

    def label(self, query: str) -> str:
        flat = _flat(query)
        for word in ("BEGIN", "COMMIT", "ROLLBACK"):
            if flat.startswith(word):
                return COMMIT if word == "COMMIT" else word
        return next((name for pattern, name in self.labels if pattern in flat), "other statements")


@contextlib.contextmanager
def instrumented(clock: _Clock) -> Iterator[None]:
    """Timing wrappers in asyncpg's Connection (pool proxies look methods up on it at call time) and around the
    PY_PARTS functions, put back afterwards."""

    def sql_timed(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(self: Any, query: str, *args: Any, **kw: Any) -> Any:
            started = time.perf_counter_ns()
            try:
                return await fn(self, query, *args, **kw)
            finally:
                spent, label = time.perf_counter_ns() - started, clock.label(query)
                clock.sql[label] += spent
                clock.calls[label] += 1
                clock.each.setdefault(label, []).append(spent)
                if stack := _active.get():
                    clock.inner[stack[-1]] += spent
        return wrapper

    def py_timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @contextlib.contextmanager
        def own_time() -> Iterator[None]:
            token, started = _active.set((*_active.get(), name)), time.perf_counter_ns()
            try:
                yield
            finally:
                spent = time.perf_counter_ns() - started
                clock.total[name] += spent
                if len(stack := _active.get()) > 1:
                    clock.inner[stack[-2]] += spent
                _active.reset(token)

        async def async_wrapper(*args: Any, **kw: Any) -> Any:
            with own_time():
                return await fn(*args, **kw)

        def wrapper(*args: Any, **kw: Any) -> Any:
            with own_time():
                return fn(*args, **kw)
        return async_wrapper if inspect.iscoroutinefunction(fn) else wrapper

    conn_cls = asyncpg.connection.Connection
    targets: list[tuple[Any, str, Callable[..., Any]]] = [
        (conn_cls, m, sql_timed(getattr(conn_cls, m))) for m in ("execute", "fetch", "fetchrow", "fetchval")]
    for module, attr, name in PY_PARTS:
        owner = importlib.import_module(module)
        if callable(fn := getattr(owner, attr, None)):
            targets.append((owner, attr, py_timed(name, fn)))
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in targets]
    try:
        for owner, attr, wrapper in targets:
            setattr(owner, attr, wrapper)
        yield
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


async def timed_call(spec: LoadSpec, name: str, rows: int, call: Callable[[], Awaitable[Any]]) -> tuple[Step, Any]:
    """`call()` with CPU from /proc and its parts: each SQL part (wall time of its round trips), each Python part
    (own time), and the rest."""
    clock = _Clock(_labels())
    with stepping(spec, name, rows) as step, instrumented(clock):
        result = await call()
    python = Counter({p: clock.total[p] - clock.inner[p] for p in clock.total})
    parts = [(p, "SQL", ns / 1e9, clock.calls[p]) for p, ns in clock.sql.items()]
    parts += [(p, "Python", ns / 1e9, 0) for p, ns in python.items()]
    rest = int(step.seconds * 1e9) - sum(clock.sql.values()) - sum(python.values())
    step.parts = sorted([*parts, (OTHER, "Python", max(0, rest) / 1e9, 0)], key=lambda p: -p[2])
    step.each = {p: [ns / 1e9 for ns in times] for p, times in clock.each.items()}
    return step, result


# -- records --------------------------------------------------------------------------------------------------------


@dataclass
class Book:
    holders: int
    entries: int
    total_mg: int
    first_day: date
    last_day: date
    steps: list[Step]
    verified: str
    sizes: dict[str, int]


@dataclass
class LotRow:
    size: int  # entries asked for
    pooled_before: int  # entries already in live lots of the same days when it was made
    lot: dict[str, Any]
    create: Step
    raw: Step


@dataclass
class Export:
    size: int
    path: str  # "in-process" or "HTTP"
    fmt: str
    runs: list[float]
    nbytes: int
    hash_ok: bool
    api_cpu_s: float = math.nan
    step: Step | None = None  # in-process: the parts of the last run

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


@dataclass
class Measured:
    book: Book
    programme: str
    summaries: list[tuple[Step, dict[str, Any]]]  # the runs over the whole pool, then one with the lots made
    lots: list[LotRow]
    sale_size: int
    exports: list[Export]
    sha_s: float
    sale: list[Step]  # record, settle, settle replayed
    sale_raw: Step
    contributors: int
    transfers: int
    sale_fen: dict[str, int]
    check: Step
    check_ok: str
    plans: dict[str, str]
    next_plans: str  # how the pool's connections planned `_NEXT`: custom and generic plans each
    settings: dict[str, str]
    load_end: str
    code: str = "unknown"


# -- tables ---------------------------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _x(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b and not math.isnan(a) and not math.isnan(b) else "—"


def _cpu(step: Step) -> str:
    return (f"{_f(step.cpu_s('postgres'), 1)} | {_f(step.cpu_s('generator'), 1)} | {_f(step.cpu_s('server'), 1)} "
            f"| {step.cpu.get('other', 0):.0f} %")


CPU_HEAD = "PG CPU s | bench CPU s | API CPU s | other CPU"


def seed_table(book: Book) -> str:
    lines = [f"| seeding step | rows | seconds | rows/s | {CPU_HEAD} |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
    lines += [f"| {s.name} | {s.rows:,} | {_f(s.seconds, 1)} | {_f(s.per_s, 0) if s.rows else '—'} | {_cpu(s)} |"
              for s in book.steps]
    return "\n".join(lines)


def main_table(m: Measured) -> str:
    lines = [f"| operation | entries | contributors | wall s | entries/s | {CPU_HEAD} | raw baseline s | vs raw |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for s, row in m.summaries:
        lines.append(f"| {s.name} | {row['entries']:,} | {row['holders']:,} | {_f(s.seconds)} | {_f(s.per_s, 0)} "
                     f"| {_cpu(s)} | — | — |")
    for r in m.lots:
        c = r.create
        lines.append(f"| {c.name} | {r.lot['entries']:,} | {r.lot['holders']:,} | {_f(c.seconds)} | {_f(c.per_s, 0)} "
                     f"| {_cpu(c)} | {_f(r.raw.seconds)} | {_x(c.seconds, r.raw.seconds)} |")
    record, settle, replay = m.sale
    for s in (record, settle, replay):
        raw = m.sale_raw if s is settle else None
        lines.append(f"| {s.name} | {m.sale_size:,} | {m.contributors:,} | {_f(s.seconds, 3 if s is replay else 2)} "
                     f"| — | {_cpu(s)} | {_f(raw.seconds) if raw else '—'} "
                     f"| {_x(s.seconds, raw.seconds) if raw else '—'} |")
    c = m.check
    lines.append(f"| {c.name} | {m.book.entries:,} | — | {_f(c.seconds)} | — | {_cpu(c)} | — | — |")
    return "\n".join(lines)


def parts_table(steps: Sequence[Step], top: int = 12) -> str:
    """Parts side by side, in the order of the last step's; seconds (round trips of SQL parts) and share of each
    step's wall time."""
    names = list(dict.fromkeys(p for s in reversed(steps) for p, _, sec, _ in s.parts if sec >= 0.0005))[:top]
    kinds = {p: k for s in steps for p, k, _, _ in s.parts}
    lines = ["| part | kind | " + " | ".join(f"{s.name}: s (round trips) | share" for s in steps) + " |",
             "|---|---|" + "--:|--:|" * len(steps)]
    for name in names:
        cells = " | ".join(f"{_f(s.part(name), 3)}{f' ({s.trips(name):,})' if s.trips(name) else ''} "
                           f"| {100 * s.part(name) / s.seconds:.1f} %" for s in steps)
        lines.append(f"| {name} | {kinds[name]} | {cells} |")
    rest = [sum(sec for p, _, sec, _ in s.parts if p not in names) for s in steps]
    if any(r >= 0.0005 for r in rest):
        lines.append("| everything else | | " + " | ".join(f"{_f(r, 3)} | {100 * r / s.seconds:.1f} %"
                                                         for r, s in zip(rest, steps, strict=True)) + " |")
    return "\n".join(lines)


def export_table(m: Measured) -> str:
    lines = ["| lot entries | path | format | runs | median s | min s | MB | MB/s (median) | API CPU s "
             "| min vs in-process min | hash |", "|--:|---|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    base = {(e.size, e.fmt): min(e.runs) for e in m.exports if e.path == "in-process"}
    for e in m.exports:
        lines.append(f"| {e.size:,} | {e.path} | {e.fmt} | {len(e.runs)} | {_f(e.median)} | {_f(min(e.runs))} "
                     f"| {_f(e.nbytes / 1e6, 1)} | {_f(e.nbytes / 1e6 / e.median, 1)} | {_f(e.api_cpu_s, 2)} "
                     f"| {_x(min(e.runs), base[(e.size, e.fmt)]) if e.path == 'HTTP' else '—'} "
                     f"| {'ok' if e.hash_ok else '**wrong**'} |")
    return "\n".join(lines)


# -- interpretation -------------------------------------------------------------------------------------------------


def _market_check_s(step: Step) -> float:
    from wallet.market.check import MARKET_CHECKS

    market = {f"check {n}" for n in MARKET_CHECKS} | {
        "recompute: list lots", "recompute: contributors + payouts", "recompute: settled sales",
        "manifest SQL: entries", "manifest SQL: contributors", RENDER, "recomputed_manifests (Python)",
        "recomputed_splits (Python)", "read the programme"}
    return sum(s for p, _, s, _ in step.parts if p in market)


def next_plan_title(generic: bool, size: int, pooled: int) -> str:
    from wallet.market.lots import LAST_BATCH

    return (f"one `_NEXT` batch of {LAST_BATCH:,} rows from the start of the period, before the {size:,}-entry lot "
            f"({pooled:,} entries already pooled), " + ("as a generic plan" if generic else "planned for its values"))


def _exec_s(plan: str) -> float:
    found = re.search(r"Execution Time: ([\d.]+) ms", plan)
    return float(found[1]) / 1000 if found else math.nan


def plan_facts(title: str, plan: str) -> str:
    """What the plan below says about where the statement's time goes (each fact only if the plan shows it)."""
    facts = [f"{_f(_exec_s(plan))} s executing"]
    if found := re.search(r"(Parallel )?Seq Scan on book_entry e .*?rows=(\d+) .*?\(actual time=\S+ "
                          r"rows=([\d.]+) loops=(\d+)", plan):
        facts.append(f"a sequential scan of book_entry estimated at {int(found[2]):,} rows"
                     + (" per process" if found[1] else "") + f", finding {float(found[3]) * int(found[4]):,.0f} "
                     "(the expression `behaviour || '@' || behaviour_version = ANY(…)` gets a default selectivity of "
                     "0.5 %, and the conditions multiply)")
    if found := re.search(r"Index Scan using (\S+) on book_entry e .*?\(actual time=\S+ rows=([\d.]+) loops=(\d+)",
                          plan):
        facts.append(f"an index walk of {found[1]} in (local_day, id) order reading "
                     f"{float(found[2]) * int(found[3]):,.0f} credits")
    if found := re.search(r"(\S+) Scan(?: using \S+)? on market_lot_item i .*?\(actual time=\S+ rows=([\d.]+) "
                          r"loops=(\d+)", plan):
        rows, loops = float(found[2]), int(found[3])
        facts.append(f"the live items read whole ({rows:,.0f} rows, by each of {loops} processes) into a hash anti-join"
                     if found[1] == "Seq" and loops <= 3 else f"{loops:,} probes of the live items finding about "
                     f"{rows * loops:,.0f} pooled")
    for index, table in (("holder_pkey", "holder"), ("market_consent_pkey", "market_consent")):
        if found := re.search(rf"Index Scan using {index} .*?actual time=\S+ rows=\S+ loops=(\d+)", plan):
            facts.append(f"a nested loop probing {table} once per row ({int(found[1]):,} loops)")
    if found := re.search(r"Sort Key: e\.local_day, e\.id\n\s*Sort Method: ([^\n]+)", plan):
        facts.append(f"a sort by (local_day, id): {found[1].strip()}")
    return f"Plan of {title}: " + "; ".join(facts) + "."


def _lot_notes(m: Measured) -> list[str]:
    from wallet.market.lots import FIRST_BATCH, LAST_BATCH

    custom = next((p for t, p in m.plans.items() if t.endswith("planned for its values")), "")
    generic = next((p for t, p in m.plans.items() if t.endswith("as a generic plan")), "")
    notes = [
        "create_lot: " + "; ".join(
            f"{r.size:,} entries in {_f(r.create.seconds)} s ({_f(r.create.per_s, 0)} entries/s, "
            f"{_x(r.create.seconds, r.raw.seconds)} the raw INSERT … SELECT of the same rows, {_f(r.raw.seconds)} s)"
            for r in m.lots) + ".",
        f"The selection (`_pick`: `_NEXT` from the start of the period in batches of {FIRST_BATCH:,} doubling to "
        f"{LAST_BATCH:,}, until the target) took " + "; ".join(
            f"{_f(r.create.part(PICK))} s for {r.size:,} entries ({r.pooled_before:,} already pooled) in "
            f"{r.create.trips(PICK)} batch{'es' if r.create.trips(PICK) != 1 else ''} of "
            f"{', '.join(_f(t) for t in r.create.each.get(PICK, []))} s"
            for r in m.lots)
        + f"; collecting their rows in Python {', '.join(_f(r.create.part(PICK_PY), 3) for r in m.lots)} s, "
          "inserting the chosen ids (`_INSERT_ITEMS`, one unnest) "
          f"{', '.join(_f(r.create.part(INSERT_ITEMS)) for r in m.lots)} s, against "
          f"{', '.join(_f(r.raw.seconds) for r in m.lots)} s for the raw INSERT … SELECT of the same rows into a copy "
          "with the same indexes but no foreign keys (each item's entry and holder are checked as it is inserted). "
          "The pool's connections planned `_NEXT` "
          f"{m.next_plans or 'an unknown number of'} times (pg_prepared_statements)."]
    if custom and generic:
        notes.append(
            f"Why the walk forces the generic plan (`plan_cache_mode`): one batch of {LAST_BATCH:,} planned for its "
            f"values took {_f(_exec_s(custom))} s, as the generic plan {_f(_exec_s(generic))} s; both plans are below. "
            + ("The custom plan scans every credit of the period and sorts them all before its LIMIT: it expects the "
               "eligibility filter to keep a few thousand rows (see its plan), so any batch near that size looks "
               "like most of them: planned for its values, such a batch would cost a scan of the whole pool, as "
               "ranking the pool did before. " if "Seq Scan on book_entry e" in custom
               else "")
            + ("The generic plan walks book_entry_credit_day in order and stops at its LIMIT, so it costs what the "
               "batch holds plus the pooled entries it steps over. " if "book_entry_credit_day" in generic
               and "Sort Key: e.local_day" not in generic else "")
            + ("The generic plan reads the period's credits through book_entry_credit_day but still sorts them all "
               "before its LIMIT. " if "book_entry_credit_day" in generic and "Sort Key: e.local_day" in generic
               else ""))
    sale_lot = next(r for r in m.lots if r.size == m.sale_size)
    c = sale_lot.create
    sql = c.part("manifest SQL: entries") + c.part("manifest SQL: contributors")
    manifest = sql + c.part(RENDER)
    notes.append(
        f"The manifest inside create_lot ({sale_lot.size:,} entries): {_f(manifest)} s of {_f(c.seconds)} s "
        f"({100 * manifest / c.seconds:.0f} %): reading items and contributors {_f(sql)} s, rendering the canonical "
        f"JSON and hashing it (in a worker thread, so the event loop stays free meanwhile) {_f(c.part(RENDER))} s, "
        f"of which SHA-256 itself is only {_f(1000 * m.sha_s, 0)} ms (measured apart on the same bytes): the time is "
        f"per-entry dicts and msgspec encoding, not hashing. COMMIT ({_f(c.part(COMMIT))} s) runs the deferred "
        "foreign-key checks of every item and contributor row.")
    return notes


def interpretation(m: Measured) -> list[str]:
    whole, after = [s for s, _ in m.summaries[:-1]], m.summaries[-1]
    notes = [
        f"`eligible_summary` over the whole pool ({m.book.entries:,} eligible entries of {m.book.holders:,} opted-in "
        f"holders) took {_f(statistics.median(s.seconds for s in whole))} s (median of {len(whole)}: "
        f"{', '.join(_f(s.seconds) for s in whole)} s), and {_f(after[0].seconds)} s with the lots made "
        f"({after[1]['entries']:,} entries left; its NOT EXISTS probes the live items). It reads every credit in the "
        "programme's days whatever is asked: see its plan below."]
    if m.lots:
        notes += _lot_notes(m)
    if http := [e for e in m.exports if e.path == "HTTP"]:
        size, largest = http[0].size, max(m.lots, key=lambda r: r.size).size
        by = {(e.path, e.fmt): e for e in m.exports if e.size == size}
        notes.append(
            f"Export of the {size:,}-entry lot: " + "; ".join(
                f"{fmt} {_f(by['in-process', fmt].nbytes / 1e6, 1)} MB in {_f(by['in-process', fmt].median)} s "
                f"in-process, {_f(by['HTTP', fmt].median)} s over HTTP (medians; best runs "
                f"{_x(min(by['HTTP', fmt].runs), min(by['in-process', fmt].runs))}, the API process busy "
                f"{_f(by['HTTP', fmt].api_cpu_s)} CPU s)" for fmt in ("JSON", "CSV") if ("HTTP", fmt) in by)
            + f". The API builds the whole body in memory before sending it (the {largest:,}-entry lot: "
              f"{_f(max(e.nbytes for e in m.exports if e.fmt == 'JSON') / 1e6, 0)} MB of JSON, besides its records), "
              "and the request holds a pool connection in a REPEATABLE READ transaction while it reads; the JSON is "
              "rendered in a worker thread, the CSV (`manifest_csv`) on the event loop. Every hash matched the one "
              "recorded at creation: " + ("yes." if all(e.hash_ok for e in m.exports) else "**no**."))
    record, settle, replay = m.sale
    biggest = settle.parts[0]
    notes.append(
        f"settle_sale paid {m.contributors:,} contributors ({m.transfers:,} fen transfers with the benefit share) in "
        f"{_f(settle.seconds)} s: {_f(m.contributors / settle.seconds, 0)} contributors/s, "
        f"{_x(settle.seconds, m.sale_raw.seconds)} the raw batched INSERTs of their account, transfer and payout rows "
        f"({_f(m.sale_raw.seconds)} s, into empty scratch tables without foreign keys). The largest part: {biggest[0]} "
        f"({_f(biggest[2])} s). One transaction holds every contributor's fen account locked meanwhile. "
        f"record_sale took {_f(record.seconds, 3)} s; a replayed settle {_f(replay.seconds, 3)} s (a no-op). "
        f"Gross {m.sale_fen['gross_fen']:,} fen at {PRICE_PER_TONNE_FEN:,} fen/t, benefit "
        f"{m.sale_fen['benefit_fen']:,}, residents {m.sale_fen['residents_fen']:,}.")
    market = _market_check_s(m.check)
    notes.append(
        f"check_ledger() with {len(m.lots)} lots ({sum(r.size for r in m.lots):,} items) and one settled sale: "
        f"{_f(m.check.seconds, 1)} s, of which the market's checks and recomputations {_f(market, 1)} s "
        f"({100 * market / m.check.seconds:.0f} %); recomputing every manifest re-reads and re-renders all of them, so "
        f"it grows with every lot ever made (cancelled and sold ones too). Outcome on the seeded data: {m.check_ok}.")
    notes += [plan_facts(title, plan) for title, plan in m.plans.items()]
    notes.append(f"Seeded chains: {m.book.verified}.")
    return notes


# -- the section ----------------------------------------------------------------------------------------------------


def render(when: datetime, info: dict[str, str], m: Measured, args: Any) -> str:
    sizes = ", ".join(f"{t} {v / 2**20:,.0f} MiB" for t, v in m.book.sizes.items())
    settings = (
        f"{m.book.holders:,} opted-in holders × {args.per_holder} credits on distinct local days over {args.days} days "
        f"({m.book.first_day} to {m.book.last_day}, Asia/Shanghai), {m.book.entries:,} entries, "
        f"{m.book.total_mg / 1e9:,.1f} t CO2e; programme `{m.programme}` (`{BEHAVIOUR}@1`, verified, settle_days "
        f"{SETTLE_DAYS}, payout fen, benefit {BENEFIT_PPM / 1e4:g} %); lots made in the order "
        f"{', '.join(f'{n:,}' for n in args.lots)} entries, each target the exact grams of the next entries in "
        f"selection order; the sale of the {args.sale_lot:,}-entry lot at {PRICE_PER_TONNE_FEN:,} fen/t; exports: "
        f"{args.repeats} runs of the sale's lot, one request at a time; raw baselines: scratch copies of "
        f"`market_lot_item`, `ledger_account`, `ledger_transfer`, `market_payout` (LIKE … INCLUDING ALL: indexes and "
        f"CHECKs, no FKs or triggers), batches of {args.batch:,}; tables after seeding: {sizes}; PostgreSQL "
        + ", ".join(f"{k} {v}" for k, v in m.settings.items()) + "; uvicorn 1 worker, --no-access-log; no worker, "
        "followers or outbox relay running")
    plans = [line for title, plan in m.plans.items() for line in (
        f"<details><summary>EXPLAIN (ANALYZE, BUFFERS) — {title}</summary>", "", "```text", plan, "```", "",
        "</details>", "")]
    return "\n".join([
        f"{LATEST} {when:%Y-%m-%d %H:%M} UTC", "",
        f"Issue 9's benchmark: the carbon market on a book of {m.book.entries:,} credited entries — the eligible "
        f"pool's summary, lots of {', '.join(f'{r.size:,}' for r in m.lots)} entries with their manifests, manifest "
        f"exports, the sale of the {m.sale_size:,}-entry lot settled to its {m.contributors:,} contributors, and the "
        "ledger check — against raw INSERTs of the same rows in the same run. Written by `python -m bench.market` (its "
        "docstring says how the book is seeded).", "",
        *(f"- **{k}**: {v}" for k, v in info.items()), f"- **load average at end (1/5/15 min)**: {m.load_end}",
        f"- **code**: {m.code}", f"- **settings**: {settings}", "",
        "**Seeding** (bulk, in the shape intake writes; not part of what is measured)", "", seed_table(m.book), "",
        "**The market's operations** (one call at a time, in-process as the admin API calls them; CPU seconds from "
        "/proc over the call; *other* = the rest of the machine as percent of one core: other tenants, and "
        "PostgreSQL's parallel workers, which exit before the call ends and so are not counted under PG)", "",
        main_table(m), "",
        "**Where create_lot's time goes** (wall time of each SQL part with its round trips, own time of Python parts)",
        "", parts_table([r.create for r in m.lots], top=14), "",
        "**Manifest export** (in-process: `lot_manifest` (+ `manifest_csv`); HTTP: `GET /v1/admin/market/lots/{id}/"
        "manifest.json|csv` through one API process, time to the last byte; hash: the body's SHA-256 and the "
        "`Manifest-SHA256` header against the hash recorded at creation)", "",
        export_table(m), "",
        parts_table([e.step for e in m.exports if e.step is not None], top=8), "",
        "**Where the sale's time goes**", "", parts_table(m.sale[:2], top=14), "",
        "**Where check_ledger()'s time goes**", "", parts_table([m.check], top=40), "",
        "**Interpretation** (generated from the figures above)", "", *(f"- {n}" for n in interpretation(m)),
        f"- Shared {len(os.sched_getaffinity(0))}-core machine: wall times include waiting for a core (see *other "
        "CPU*); compare ratios and CPU seconds, not absolute figures.", "",
        *plans,
    ]).rstrip() + "\n"


def write_results(report: str, path: Path = RESULTS) -> None:
    """Our latest run sits after the community section (or the last of the others present, or before bench.run's
    History); the previous one moves to the top of our own history at the end of the file. Other sections are kept."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block, previous = f"{START}\n{report.strip()}\n{END}", ""
    after = next((e for e in (COMMUNITY_END, NOTIFICATIONS_END, LEADERBOARDS_END, ENERGY_END, INTAKE_END)
                  if e in text), None)
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
    if previous := previous.strip().replace(LATEST, "### Carbon market run:", 1):
        head, found, tail = text.partition(HISTORY)
        text = (f"{head.rstrip()}\n\n{HISTORY}\n\n{previous}\n" + (f"\n{tail.strip()}\n" if tail.strip() else "")
                if found else f"{text.rstrip()}\n\n{HISTORY}\n\n{previous}\n")
    path.write_text(text)
