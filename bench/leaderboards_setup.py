"""Setup for bench/leaderboards.py: a global all-time board of a million members, honestly made.

Real residents (holder rows, partner links, app sessions and access tokens, set up in-process as bench/energy_setup.py
does) opt in to public boards through `update_profile`, are credited through the real intake path
(`record_reports`), and are put on the boards by `rebuild` (which also starts the follower's cursor). They are the
only members whose names are shown: 100 *leaders* credited the pool's 60 largest activities plus five more each
(so nobody else can reach them), and *clusters* of five residents each credited identical activities, so the five
share one total in grams that no synthetic member is given: a cluster's block is contiguous on the board, and its
middle member (the *reader*) has two real neighbours on each side.

The rest of the board is synthetic: members with ids `5be7c0de-0000-4000-8000-<n>` (no holder row), written with
the product's own APPLY script (`apply_commands`, the global all-time board only, a seat with no places), totals
drawn around the clusters' totals (so readers' ranks spread over the whole board) and never equal to one of them.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from bench.energy_setup import Wallet, wallets
from bench.intake import sources
from bench.intake_setup import Item, Resident, link_in_process
from bench.leaderboards_report import Timed
from bench.load import LoadSpec, cpu_pct, cpu_snapshot

LEADERS = 100  # the top of the board: real, and out of every synthetic member's reach
AROUND = 2  # neighbours each side a read asks for
CLUSTER = 2 * AROUND + 1  # residents sharing one total: a reader in the middle, real neighbours around
TOP_ITEMS = 60  # leaders are credited the pool's 60 largest activities...
EXTRA = 5  # ...and five more each
CLUSTER_ITEMS = 40  # a cluster is credited 1 to 40 activities from below the largest 60
SYNTHETIC = "5be7c0de-0000-4000-8000-"  # + 12 hex digits: a valid UUID no real holder has
PIPELINE = 2_000  # APPLYs per round trip while populating (as the follower's batches)
TEAMS = 5  # bench teams (three departments each) seated intake residents join


def synthetic_id(n: int) -> str:
    return f"{SYNTHETIC}{n:012x}"


@dataclass
class Real:
    leaders: list[Wallet]
    clusters: list[list[Wallet]]
    intake: list[Resident]  # partner-linked residents for the update and lag rows (no entries yet)

    @property
    def on_board(self) -> list[Wallet]:
        return [*self.leaders, *itertools.chain.from_iterable(self.clusters)]


async def residents(env: dict[str, str], partner: dict[str, Any], stamp: str, real: int, intake: int, *,
                    seated: bool) -> Real:
    """Leaders and clusters (with resident access tokens) and the intake residents (with partner tokens), all
    opted in to public boards through the product's profile update. `seated`: the intake residents also get a city,
    district and community (the same update) and join a bench team's department (`join_team` with its join code),
    so each of their book entries touches every scope's boards, the newcomer league and both per-capita boards."""
    from gamification.teams.service import create_team, join_team
    from wallet.holders.service import update_profile

    clusters = (real - LEADERS) // CLUSTER
    counter = itertools.count()

    def emails(n: int) -> list[str]:
        return [f"bench-lb-{stamp}-{next(counter)}@example.com" for _ in range(n)]

    board = await wallets(env, partner, emails(LEADERS + clusters * CLUSTER))
    ingest = await link_in_process(env, partner, emails(intake))
    teams = [await create_team({
        "code": f"bench-{stamp}-{t}", "kind": "company", "name_zh": f"基准公司{t}", "name_en": f"Bench company {t}",
        "departments": [{"code": f"d{d}", "name_zh": f"部门{d}", "name_en": f"Department {d}"} for d in range(3)],
    }) for t in range(TEAMS if seated else 0)]
    gate = asyncio.Semaphore(8)

    async def opt_in(i: int, holder_id: uuid.UUID, places: bool) -> None:
        changes: dict[str, Any] = {"show_on_public_leaderboards": True}
        if places:
            changes.update(city=f"基准市{i % 4}", district=f"基准区{i % 3}", community=f"基准社区{i % 5}")
        async with gate:
            await update_profile(holder_id, changes)
            if places:
                await join_team(holder_id, teams[i % TEAMS]["join_code"], f"d{i % 3}")

    await asyncio.gather(*(opt_in(i, w.holder_id, False) for i, w in enumerate(board)),
                         *(opt_in(i, r.holder_id, seated) for i, r in enumerate(ingest)))
    rest = board[LEADERS:]
    return Real(board[:LEADERS], [rest[i * CLUSTER:(i + 1) * CLUSTER] for i in range(clusters)], ingest)


def _by_reduction(pool: Sequence[Item]) -> list[Item]:
    from wallet.methodology.catalogue import current_version, reduction_mg

    return sorted(pool, key=lambda it: -reduction_mg(current_version(it.behaviour), it.quantity))


async def credit(real: Real, partner: dict[str, Any], pool: Sequence[Item], tag: str, parallel: int = 8) -> int:
    """Every leader and cluster member's activities through `record_reports` (one call each); all must be
    credited. Returns how many were."""
    from wallet.intake.judge import record_reports
    from wallet.intake.reports import Report

    ranked = _by_reduction(pool)
    if len(ranked) < TOP_ITEMS + EXTRA * LEADERS + CLUSTER_ITEMS:
        raise ValueError("the intake pool is too small for the leaderboard bench")
    plans: list[tuple[Wallet, list[Item]]] = []
    for j, w in enumerate(real.leaders):
        plans.append((w, ranked[:TOP_ITEMS] + ranked[TOP_ITEMS + EXTRA * j:TOP_ITEMS + EXTRA * (j + 1)]))
    below = ranked[TOP_ITEMS:]
    for c, members in enumerate(real.clusters):
        items = random.Random(c).sample(below, 1 + (c * 37) % CLUSTER_ITEMS)
        plans += [(w, items) for w in members]
    srcs = sources([Resident(w.holder_id, w.sub_account_id, w.token) for w, _ in plans], partner)
    gate, credited = asyncio.Semaphore(parallel), Counter[str]()

    async def one(i: int, src: Any, items: list[Item]) -> None:
        reports = [Report(f"{tag}-{i:06d}-{k}", it.behaviour, it.quantity, it.occurred_at)
                   for k, it in enumerate(items)]
        async with gate:
            receipts = await record_reports(src, reports)
        credited.update(r.verdict or r.code for r in receipts)

    await asyncio.gather(*(one(i, s, items) for i, (s, (_, items)) in enumerate(zip(srcs, plans, strict=True))))
    if set(credited) != {"credited"}:
        raise RuntimeError(f"not every activity of the board's residents was credited: {dict(credited)}")
    return credited["credited"]


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


async def totals(redis: Redis, key: str, holders: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Exact (mg, tick) of members from the board's hash."""
    values = await redis.hmget(key + ":v", list(holders))
    return {h: tuple(int(x) for x in _text(v).split(":")) for h, v in zip(holders, values, strict=True) if v}


async def timed(name: str, spec: LoadSpec, redis: Redis, run: Callable[[], Awaitable[int]], *, zsets: float = 0,
                baseline: str | None = None) -> Timed:
    """Run `run` (returns the entries it wrote) with CPU from /proc and Valkey's command counts around it."""
    stats = await redis.info("commandstats")
    before, t0 = cpu_snapshot(spec, os.getpid()), time.perf_counter()
    entries = await run()
    seconds = time.perf_counter() - t0
    after, now = cpu_snapshot(spec, os.getpid()), await redis.info("commandstats")
    commands = Counter({k.removeprefix("cmdstat_"): v["calls"] - stats.get(k, {}).get("calls", 0)
                        for k, v in now.items()})
    commands["info"] -= 1  # our own second INFO
    return Timed(name, entries, seconds, cpu_pct(before, after, seconds), +commands, zsets or float("nan"), baseline)


async def populate(redis: Redis, tz: ZoneInfo, key: str, count: int, reserved: set[int], ceiling: int,
                   spec: LoadSpec, start_members: int) -> list[Timed]:
    """`count` synthetic members through APPLY, pipelined 2,000 per round trip on two connections; timed in three
    phases (the board's first tenth, the middle, the last tenth) so the cost of one APPLY can be compared at the
    board's smallest and largest. Totals: a reserved cluster total, scaled by 0.5–1.5, never reserved, below
    `ceiling` grams; ticks: the last 30 days."""
    from gamification.leaderboards.boards import Seat, period_of
    from gamification.leaderboards.store import Part, apply_commands, scripts

    if ceiling <= len(reserved) + 1:
        raise ValueError("the leaders' total leaves no room for synthetic members")
    apply, rng, now = scripts(redis)["apply"], random.Random(11), datetime.now(UTC).replace(second=0, microsecond=0)
    period, values = period_of("all", now, tz), sorted(reserved)
    seat = Seat(None, None, None, None, None, True, False, datetime(2026, 1, 1, tzinfo=UTC))
    minutes = [timedelta(minutes=m) for m in range(30 * 24 * 60)]

    def grams() -> int:
        g = min(ceiling - 1, int(values[rng.randrange(len(values))] * (0.5 + rng.random())))
        while g in reserved:
            g = (g + 1) % ceiling
        return g

    async def chunk(lo: int, hi: int) -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(lo, hi):
                part = Part(period, grams() * 1000 + rng.randrange(1000), now - rng.choice(minutes))
                keys, args = apply_commands(synthetic_id(n), seat, [part])
                await apply(keys=keys, args=args, client=pipe)
            await pipe.execute()

    async def phase(lo: int, hi: int) -> int:
        gate = asyncio.Semaphore(2)

        async def gated(a: int) -> None:
            async with gate:
                await chunk(a, min(hi, a + PIPELINE))

        await asyncio.gather(*(gated(a) for a in range(lo, hi, PIPELINE)))
        return hi - lo

    cuts = [0, count // 10, count - count // 10, count]
    rows = []
    for lo, hi in itertools.pairwise(cuts):
        label = f"populate: APPLY, 1 board, pipelined ({start_members + lo:,} → {start_members + hi:,} members)"
        rows.append(await timed(label, spec, redis, lambda lo=lo, hi=hi: phase(lo, hi), zsets=1))
        print(f"  {label}: {rows[-1].per_s:,.0f} entries/s", flush=True)
    return rows


async def choose_readers(redis: Redis, key: str, clusters: Sequence[Sequence[Wallet]],
                         real: set[str]) -> tuple[list[Wallet], list[int]]:
    """The middle member (by rank) of each cluster, checked to have AROUND real residents on each side."""
    async with redis.pipeline(transaction=False) as pipe:
        for members in clusters:
            for w in members:
                pipe.zrevrank(key, str(w.holder_id))
        ranks = await pipe.execute()
    readers, at = [], []
    for i, members in enumerate(clusters):
        placed = sorted(zip(ranks[i * CLUSTER:(i + 1) * CLUSTER], members, strict=True), key=lambda p: p[0])
        rank, reader = placed[CLUSTER // 2]
        around = await redis.zrevrange(key, rank - AROUND, rank + AROUND) if rank >= AROUND else []
        if len(around) != CLUSTER or not all(_text(m) in real for m in around):
            raise RuntimeError(f"cluster {i}: the reader at rank {rank + 1} has synthetic neighbours")
        readers.append(reader)
        at.append(rank + 1)
    return readers, sorted(at)


async def exactness(redis: Redis, key: str, holders: Sequence[uuid.UUID]) -> str:
    """Every real resident's total on the board against the book (sum of their entries), and their sorted-set
    score against that total: proof that the benchmark's writes left the boards exact."""
    from gamification.leaderboards.boards import encode
    from wallet.db import connection

    async with connection() as conn:
        rows = await conn.fetch("SELECT holder, sum(reduction_mg)::bigint AS mg FROM book_entry "
                                "WHERE holder = ANY($1::uuid[]) GROUP BY holder", list(holders))
    book = {str(r["holder"]): r["mg"] for r in rows}
    names = sorted(book)
    board = await totals(redis, key, names)
    scores = await redis.zmscore(key, names)
    wrong = [h for h, s in zip(names, scores, strict=True)
             if h not in board or board[h][0] != book[h] or s is None or int(s) != encode(*board[h])]
    return (f"{len(names) - len(wrong):,} of {len(names):,} real residents' all-time totals and scores match the "
            f"book exactly" + (f" (first mismatches: {', '.join(wrong[:3])})" if wrong else ""))
