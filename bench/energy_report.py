"""The report of bench/energy.py: its rows, the table, the interpretation computed from the figures, and where
the section goes in bench/RESULTS.md (after the intake section; earlier runs under "Energy and the mall — history")."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.energy_setup import BALLS, RAW_ROWS, Statements
from bench.intake import END as INTAKE_END
from bench.load import LoadResult
from bench.run import HISTORY as RUN_HISTORY
from bench.run import RESULTS, machine

INTAKE_BATCH = 100
START, END, HISTORY = "<!-- energy:start -->", "<!-- energy:end -->", "## Energy and the mall — history"
LATEST = "## Energy and the mall — latest run:"
WORKLOADS = {  # key -> (unit, what the rows of this key isolate)
    "a": ("redemptions", "redeem: many wallets, unlimited stock"),
    "b": ("redemptions", "redeem: many wallets, one finite-stock reward (hot row)"),
    "c": ("redemptions", "redeem: one wallet, concurrent"),
    "intake": ("activities", "partner intake, batches of 100, balls grown"),
    "collect": ("collects", f"collect all, {BALLS} ripe balls per wallet"),
}


@dataclass
class Row:
    key: str  # a WORKLOADS key
    path: str  # "raw PG", "service", "service, energy off" or "HTTP"
    conns: int
    result: LoadResult
    batch: int = 1  # units per request (activities per intake batch)
    statements: dict[str, Statements] = field(default_factory=dict)  # intake's write statement, measured window
    verdicts: Counter[str] = field(default_factory=Counter)  # intake rows: every activity sent, warm-up included

    @property
    def per_s(self) -> float:
        return self.result.rps * self.batch


@dataclass
class Measured:
    rows: list[Row]
    setup_s: float
    residents: int
    balls: dict[str, tuple[int, int, int, int]]  # intake set -> credit entries, with energy, balls, energy grown
    ledger: str  # the ledger check's verdict after the run
    code: str = "unknown"


# -- report ------------------------------------------------------------------------------------------------------


def _f(value: float, digits: int = 2) -> str:
    return "—" if math.isnan(value) else f"{value:,.{digits}f}"


def _find(rows: list[Row], key: str, path: str) -> Row | None:
    return next((r for r in rows if r.key == key and r.path == path), None)


def _vs(row: Row | None, base: Row | None) -> float:
    return row.per_s / base.per_s if row and base and base is not row and base.per_s else math.nan


def _us(row: Row | None, group: str | None = None) -> float:
    """CPU µs per unit of a group; by default where the code ran: the API process over HTTP, this process
    otherwise (the in-process baselines)."""
    if row is None or not row.per_s:
        return math.nan
    group = group or ("server" if row.path == "HTTP" else "generator")
    return row.result.cpu_pct.get(group, 0.0) * 1e4 / row.per_s


def table(rows: list[Row]) -> str:
    lines = ["| workload | path | conns | per second | p50 ms | p99 ms | errors | vs raw PG | vs service | vs (a) "
             "| API CPU | PG CPU | bench CPU | other CPU | app µs CPU/unit | PG µs CPU/unit |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        c = r.result.cpu_pct
        vs_a = _vs(r, _find(rows, "a", r.path)) if r.key in ("b", "c") else math.nan
        service = _find(rows, r.key, "service") if r.path != "raw PG" else None
        lines.append(
            f"| {WORKLOADS[r.key][1]} | {r.path} | {r.conns} | {r.per_s:,.0f} {WORKLOADS[r.key][0]}/s "
            f"| {_f(r.result.p50_ms)} | {_f(r.result.p99_ms)} | {r.result.errors} "
            f"| {_f(_vs(r, _find(rows, r.key, 'raw PG')))} | {_f(_vs(r, service))} | {_f(vs_a)} "
            f"| {c.get('server', 0):.0f} % | {c.get('postgres', 0):.0f} % | {c.get('generator', 0):.0f} % "
            f"| {c.get('other', 0):.0f} % | {_f(_us(r), 0)} | {_f(_us(r, 'postgres'), 0)} |")
    return "\n".join(lines)


def _redemption_notes(rows: list[Row]) -> list[str]:
    raw, svc, http = ({k: _find(rows, k, p) for k in "abc"} for p in ("raw PG", "service", "HTTP"))
    notes = []
    a, sa, ra = http["a"], svc["a"], raw["a"]
    if a and sa and ra:
        notes.append(
            f"Redemptions, many wallets and unlimited stock: HTTP {a.per_s:,.0f}/s, {_vs(a, sa):.0%} of `reserve` + "
            f"`fulfil` in-process ({sa.per_s:,.0f}/s) and {_vs(a, ra):.0%} of raw SQL writing the same "
            f"{RAW_ROWS[False]} rows in the same two commits ({ra.per_s:,.0f}/s). Per redemption over HTTP: "
            f"{_f(_us(a), 0)} µs of API CPU and {_f(_us(a, 'postgres'), 0)} µs of PostgreSQL CPU, against "
            f"{_f(_us(ra, 'postgres'), 0)} µs of PostgreSQL CPU for the raw writes (the rest is reads, locks and round "
            f"trips: the holder's lock, limits, the guarded post, the voucher).")
    for key, what in (("b", "One finite-stock reward (every redemption decrements the same reward row, locked until "
                            "the reserve commits)"),
                      ("c", "One wallet redeemed over all connections at once (the holder's accounts are locked in the "
                            "reserve and again in the post transaction)")):
        if http[key] and http["a"]:
            notes.append(
                f"{what}: HTTP {http[key].per_s:,.0f}/s = {_vs(http[key], http['a']):.2f}× (a), in-process "
                f"{_f(_vs(svc[key], svc['a']))}×, raw SQL {_f(_vs(raw[key], raw['a']))}× its (a); p50 "
                f"{_f(http[key].result.p50_ms, 1)} ms and p99 {_f(http[key].result.p99_ms, 1)} ms against "
                f"{_f(http['a'].result.p50_ms, 1)} / {_f(http['a'].result.p99_ms, 1)} ms for (a), "
                f"{http[key].result.errors} errors or refusals.")
    return notes


def _intake_note(m: Measured) -> str | None:
    raw, svc, off, http = (_find(m.rows, "intake", p) for p in ("raw PG", "service", "service, energy off", "HTTP"))
    if not (raw and svc and off and http):
        return None
    on = svc.statements.get("write with energy", Statements())
    no = off.statements.get("write without energy", Statements())
    write, total = http.statements.get("write with energy", Statements()), http.statements.get("all", Statements())
    stats = ""
    if on.calls and no.calls and on.ms and on.wal_bytes and total.ms:
        on_ms, no_ms = on.per_call("ms"), no.per_call("ms")
        on_wal, no_wal = on.per_call("wal_bytes"), no.per_call("wal_bytes")
        stats = (f" pg_stat_statements: the write statement took {on_ms:,.2f} ms and {on_wal / 1024:,.0f} kB of WAL "
                 f"per batch with energy, {no_ms:,.2f} ms and {no_wal / 1024:,.0f} kB without: the energy CTEs (balls, "
                 f"their transfers, the `balls` balance) take ≈{1 - no_ms / on_ms:.0%} of its time "
                 f"(~{(on_ms - no_ms) * 1e3 / INTAKE_BATCH:,.0f} µs per activity) and {1 - no_wal / on_wal:.0%} of its "
                 f"WAL; over HTTP the write statement was {write.ms / total.ms:.0%} of PostgreSQL's statement time.")
    entries, energetic_n, grown, energy = (sum(v[i] for k, v in m.balls.items() if not k.endswith("off"))
                                           for i in range(4))
    carry = energetic_n / entries if entries else math.nan
    return (f"Partner intake, batches of {INTAKE_BATCH} with energy: HTTP {http.per_s:,.0f} activities/s, "
            f"{_vs(http, raw):.0%} of raw PostgreSQL inserting the activities ({raw.per_s:,.0f} rows/s) and "
            f"{_vs(http, svc):.0%} of the service. In-process, intake with energy ran at {_vs(svc, off):.2f}× the "
            f"throughput without ({svc.per_s:,.0f} against {off.per_s:,.0f} activities/s) and cost "
            f"{_f(_us(svc, 'postgres'), 0)} against {_f(_us(off, 'postgres'), 0)} µs of PostgreSQL CPU per activity."
            f"{stats} {grown:,} of {energetic_n:,} credits with energy grew their ball ({carry:.0%} of {entries:,} "
            f"credits carry energy; {energy / grown if grown else math.nan:,.0f} energy per ball on average).")


def interpretation(m: Measured) -> list[str]:
    """Sentences computed from the figures, so the text cannot drift from the table."""
    notes = _redemption_notes(m.rows)
    if note := _intake_note(m):
        notes.append(note)
    svc, http = _find(m.rows, "collect", "service"), _find(m.rows, "collect", "HTTP")
    if svc and http:
        notes.append(f"Collect-all on wallets with {BALLS} ripe balls: HTTP {http.per_s:,.0f} collects/s "
                     f"({http.per_s * BALLS:,.0f} balls/s), {_vs(http, svc):.0%} of `collect` in-process "
                     f"({svc.per_s:,.0f}/s).")
    errors = sum(r.result.errors for r in m.rows)
    kinds = "; ".join(f"{r.key} {r.path}: {r.result.error_kinds}" for r in m.rows if r.result.errors)
    credited = sum((r.verdicts for r in m.rows), Counter[str]())
    mix = f"{credited['credited'] / credited.total():.1%} credited" if credited.total() else "none judged"
    notes.append(f"Errors and refusals (anything but a fulfilled 201, a 200 collect of every ball, a judged batch) "
                 f"across all rows: {errors}" + (f" ({kinds})" if errors else "") + f". Intake verdicts: {mix}. "
                 f"Ledger check after the run: {m.ledger}.")
    return notes


def render(when: datetime, settings: str, m: Measured) -> str:
    return "\n".join([
        f"{LATEST} {when:%Y-%m-%d %H:%M} UTC", "",
        "Issue 5's benchmark: redemptions through `POST /v1/me/redemptions` under three kinds of contention, partner "
        "intake whose credits grow energy balls in the same statement, and collect-all; each against baselines "
        "measured in this run (raw SQL writing the same rows, the service in-process, bench/intake.py's raw "
        "activity inserts). Written by `python -m bench.energy` (see bench/README.md).", "",
        *(f"- **{k}**: {v}" for k, v in machine().items()), f"- **code**: {m.code}", f"- **settings**: {settings}", "",
        table(m.rows), "",
        "*per second* counts units completed in the measured window (intake: activities, batches × 100); *vs raw PG* "
        "and *vs service* compare with the same workload's baselines, *vs (a)* with the same path of (a). *app µs "
        "CPU/unit* is the API process for HTTP rows and this process for the others, where the code ran; *bench CPU* "
        "is this process (generator or in-process code).", "",
        "**Interpretation** (generated from the figures above)", "",
        *(f"- {n}" for n in interpretation(m)),
        "- Closed-loop load on shared cores: latency under overload is queueing; compare ratios and CPU per unit, not "
        "absolute figures across machines; differences under ~10 % between runs are noise.",
    ]) + "\n"


def write_results(report: str, path: Path = RESULTS) -> None:
    """Our latest run sits after the intake section (before bench.run's History, which both other scripts keep);
    the previous one moves to the top of our own history section at the end of the file."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block, previous = f"{START}\n{report.strip()}\n{END}", ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        previous, tail = rest.split(END, 1)
        text = head + block + tail
    elif INTAKE_END in text:
        head, tail = text.split(INTAKE_END, 1)
        text = f"{head}{INTAKE_END}\n\n{block}\n\n{tail.lstrip()}"
    else:
        head, _, tail = text.partition(RUN_HISTORY)
        text = f"{head.rstrip()}\n\n{block}\n\n{RUN_HISTORY}" + (tail or "\n\n(none yet)\n")
    if previous := previous.strip().replace(LATEST, "### Energy and the mall run:", 1):
        head, found, tail = text.partition(HISTORY)
        text = (f"{head.rstrip()}\n\n{HISTORY}\n\n{previous}\n" + (f"\n{tail.strip()}\n" if tail.strip() else "")
                if found else f"{text.rstrip()}\n\n{HISTORY}\n\n{previous}\n")
    path.write_text(text)
