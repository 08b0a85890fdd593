"""Setup for bench/community.py: a city whose week board has a million members, honestly made.

Real residents (holder rows and partner links set up in-process, as bench/intake_setup.py's `link_in_process`) live
in the bench city, spread over its districts and communities, opt in to public boards through `update_profile`,
are credited through the real intake path (`record_reports`), put on the boards by `rebuild` and counted into the
community aggregates by the follower (`gamification.community.follow.step`) until it has caught up. They are the
only members whose names a page shows: the *leaders* are credited the pool's largest activities dated this week
(plus a few more each, so none tie), the rest 1 to 20 activities from below those, dated over the last 25 days (the
city's 30-day chart and category breakdown). The leaders join an active city challenge (`join`, which counts what
they did in its window). The *intake* residents (with partner tokens) get a district, a community and a team too;
they report during the ledger rows.

The rest of the board is synthetic: members `c0ffee00-0000-4000-8000-<n>` (no holder row) written with the
product's APPLY script (`apply_commands` for a seat with the city only and this week's period: the global and the
city week boards), pipelined 2,000 per round trip, totals below the last leader's (so the top of the board is real)."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from bench.intake import sources
from bench.intake_setup import Item, Resident, link_in_process
from bench.load import LoadSpec, cpu_pct, cpu_snapshot

LEADERS = 50  # real, credited this week more than anyone else: the page's top 20 and beyond
TOP_ITEMS = 60  # leaders are credited the pool's 60 largest activities (moved into this week)...
EXTRA = 5  # ...and five more each
OTHER_ITEMS = 20  # everyone else: 1 to 20 activities from below the leaders' ones, dated over the last 25 days
DISTRICTS, COMMUNITIES, TEAMS = 4, 5, 5  # communities per district
SYNTHETIC = "c0ffee00-0000-4000-8000-"  # + 12 hex digits: a valid UUID no real holder has
PIPELINE = 2_000  # APPLYs per round trip while populating (as the follower's batches)


def synthetic_id(n: int) -> str:
    return f"{SYNTHETIC}{n:012x}"


@dataclass
class City:
    name: str
    districts: list[str]
    communities: list[tuple[str, str]]  # (district, community)
    leaders: list[Resident]
    others: list[Resident]
    intake: list[Resident]  # partner-linked, seated (district, community, team), no entries yet
    credited: int
    challenge_id: int
    week_key: str  # the city's week board, as the page reads it
    week_start: datetime
    leader_floor_g: int  # the last leader's week total: every synthetic member is below it

    @property
    def real(self) -> list[Resident]:
        return [*self.leaders, *self.others]


def place(i: int) -> tuple[int, int]:
    return i % DISTRICTS, (i // DISTRICTS) % COMMUNITIES


async def _residents(env: dict[str, str], partner: dict[str, Any], stamp: str, city: str, real: int,
                     intake: int) -> tuple[list[Resident], list[Resident]]:
    """Residents of the city in its districts and communities, opted in to public boards (the product's profile
    update); the intake residents also join a bench team's department."""
    from gamification.teams.service import create_team, join_team
    from wallet.holders.service import update_profile

    counter = itertools.count()

    def emails(n: int) -> list[str]:
        return [f"bench-cm-{stamp}-{next(counter)}@example.com" for _ in range(n)]

    board = await link_in_process(env, partner, emails(real), tokens=False)
    ingest = await link_in_process(env, partner, emails(intake))
    teams = [await create_team({
        "code": f"bench-cm-{stamp}-{t}", "kind": "company", "name_zh": f"基准企业{t}", "name_en": f"Bench firm {t}",
        "departments": [{"code": f"d{d}", "name_zh": f"部门{d}", "name_en": f"Department {d}"} for d in range(3)],
    }) for t in range(TEAMS)]
    gate = asyncio.Semaphore(8)

    async def settle(i: int, holder_id: uuid.UUID, team: bool) -> None:
        d, c = place(i)
        async with gate:
            await update_profile(holder_id, {"show_on_public_leaderboards": True, "city": city,
                                             "district": f"基准区{d}", "community": f"基准社区{d}-{c}"})
            if team:
                await join_team(holder_id, teams[i % TEAMS]["join_code"], f"d{i % 3}")

    await asyncio.gather(*(settle(i, r.holder_id, False) for i, r in enumerate(board)),
                         *(settle(i, r.holder_id, True) for i, r in enumerate(ingest)))
    return board, ingest


def _by_reduction(pool: Sequence[Item]) -> list[Item]:
    from wallet.methodology.catalogue import current_version, reduction_mg

    return sorted(pool, key=lambda it: -reduction_mg(current_version(it.behaviour), it.quantity))


async def week_start(tz: ZoneInfo) -> datetime:
    """This week's start in the boards' zone; waits (at most two minutes) if the week began under two minutes ago,
    so the leaders' activities have room to be dated inside it."""
    from gamification.leaderboards.boards import period_of

    start = period_of("week", datetime.now(UTC), tz).start
    assert start is not None
    if (wait := (start + timedelta(minutes=2) - datetime.now(UTC)).total_seconds()) > 0:
        await asyncio.sleep(wait)
    return start


async def _credit(leaders: Sequence[Resident], others: Sequence[Resident], partner: dict[str, Any],
                  pool: Sequence[Item], start: datetime, tag: str, parallel: int = 8) -> int:
    """Every real resident's activities through `record_reports` (one call each); all must be credited."""
    from wallet.intake.judge import record_reports
    from wallet.intake.reports import Report

    ranked, now = _by_reduction(pool), datetime.now(UTC)
    span = min(now - start - timedelta(seconds=60), timedelta(days=1))
    plans: list[tuple[Resident, list[Item]]] = []
    for j, r in enumerate(leaders):
        items = ranked[:TOP_ITEMS] + ranked[TOP_ITEMS + EXTRA * j:TOP_ITEMS + EXTRA * (j + 1)]
        step = span / (len(items) + 1)
        plans.append((r, [replace(it, occurred_at=now - timedelta(seconds=30) - k * step)
                          for k, it in enumerate(items)]))
    below = ranked[TOP_ITEMS + EXTRA * len(leaders):]
    for i, r in enumerate(others):
        plans.append((r, random.Random(i).sample(below, 1 + (i * 7) % OTHER_ITEMS)))
    srcs = sources([r for r, _ in plans], partner)
    gate, verdicts = asyncio.Semaphore(parallel), Counter[str]()

    async def one(i: int, src: Any, items: list[Item]) -> None:
        reports = [Report(f"{tag}-{i:06d}-{k}", it.behaviour, it.quantity, it.occurred_at)
                   for k, it in enumerate(items)]
        async with gate:
            receipts = await record_reports(src, reports)
        verdicts.update(r.verdict or r.code for r in receipts)

    await asyncio.gather(*(one(i, s, items) for i, (s, (_, items)) in enumerate(zip(srcs, plans, strict=True))))
    if set(verdicts) != {"credited"}:
        raise RuntimeError(f"not every activity of the city's residents was credited: {dict(verdicts)}")
    return verdicts["credited"]


async def catch_up() -> int:
    """Community follower steps (waiting for the lock) until one finds nothing new; entries counted."""
    from gamification.community.follow import step

    counted = 0
    while (done := await step(wait=True)).entries:
        counted += done.entries
    return counted


async def _challenge(city: str, stamp: str, leaders: Sequence[Resident]) -> int:
    from gamification.challenges.service import create_challenge, join

    now = datetime.now(UTC)
    made = await create_challenge({
        "code": f"bench-cm-{stamp}", "title_zh": "基准城市绿色月", "title_en": "Bench city green month",
        "description_zh": "全城一起减排。", "description_en": "The whole city cuts emissions together.",
        "scope": "city", "scope_id": city, "goal_kind": "grams", "goal": 10_000_000,
        "starts_at": now - timedelta(days=7), "ends_at": now + timedelta(days=21)})
    for r in leaders:
        await join(r.holder_id, made["id"])
    return int(made["id"])


async def set_up_city(env: dict[str, str], partner: dict[str, Any], redis: Redis, tz: ZoneInfo, stamp: str,
                      real: int, intake: int, pool: Sequence[Item]) -> City:
    from gamification.leaderboards.boards import board_key, period_of
    from gamification.leaderboards.follow import rebuild

    name = f"基准市{stamp[-4:]}"
    board, ingest = await _residents(env, partner, stamp, name, real, intake)
    start = await week_start(tz)
    leaders, others = board[:LEADERS], board[LEADERS:]
    credited = await _credit(leaders, others, partner, pool, start, f"{stamp}-cm")
    await rebuild(redis, tz)
    await catch_up()
    key = board_key("city", name, period_of("week", datetime.now(UTC), tz))
    values = await redis.hmget(key + ":v", [str(r.holder_id) for r in leaders])
    if any(v is None for v in values):
        raise RuntimeError("rebuild did not put every leader on the city's week board")
    floor = min(int((v.decode() if isinstance(v, bytes) else v).split(":")[0]) for v in values) // 1000
    challenge = await _challenge(name, stamp, leaders)
    districts = [f"基准区{d}" for d in range(DISTRICTS)]
    communities = sorted({(f"基准区{d}", f"基准社区{d}-{c}") for d, c in map(place, range(real))})
    return City(name, districts, communities, leaders, others, ingest, credited, challenge, key, start, floor)


@dataclass
class Populated:
    members: int
    seconds: float
    cpu: dict[str, float]
    commands: int

    def us(self, group: str) -> float:
        return self.cpu.get(group, 0.0) / 100 * self.seconds * 1e6 / self.members if self.members else float("nan")


async def populate(redis: Redis, tz: ZoneInfo, city: City, count: int, spec: LoadSpec) -> Populated:
    """`count` synthetic members through APPLY (a seat with the city only, this week's period: the global and the
    city week boards), pipelined 2,000 per round trip on two connections; totals below the last leader's."""
    from gamification.leaderboards.boards import Seat, period_of
    from gamification.leaderboards.store import Part, apply_commands, scripts

    if city.leader_floor_g < 2:
        raise ValueError("the leaders' totals leave no room for synthetic members")
    apply, rng, now = scripts(redis)["apply"], random.Random(11), datetime.now(UTC)
    period = period_of("week", now, tz)
    seat = Seat(city.name, None, None, None, None, True, False, datetime(2026, 1, 1, tzinfo=UTC))
    elapsed = int((now - city.week_start).total_seconds()) - 1

    async def chunk(lo: int, hi: int) -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(lo, hi):
                part = Part(period, rng.randrange(1, city.leader_floor_g) * 1000 + rng.randrange(1000),
                            now - timedelta(seconds=rng.randrange(elapsed)))
                keys, args = apply_commands(synthetic_id(n), seat, [part])
                await apply(keys=keys, args=args, client=pipe)
            await pipe.execute()

    gate = asyncio.Semaphore(2)

    async def gated(lo: int) -> None:
        async with gate:
            await chunk(lo, min(count, lo + PIPELINE))

    calls = (await redis.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
    before, t0 = cpu_snapshot(spec, os.getpid()), time.perf_counter()
    await asyncio.gather(*(gated(lo) for lo in range(0, count, PIPELINE)))
    seconds = time.perf_counter() - t0
    cpu = cpu_pct(before, cpu_snapshot(spec, os.getpid()), seconds)
    calls = (await redis.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0) - calls
    top = await redis.zrevrange(city.week_key, 0, 19)
    real = {str(r.holder_id) for r in city.real}
    if not all((m.decode() if isinstance(m, bytes) else m) in real for m in top):
        raise RuntimeError("a synthetic member reached the city board's top 20")
    return Populated(count, seconds, cpu, calls)


async def participation(city: City, count: int, zone: str, days: int = 30) -> float:
    """The aggregates a city of this many residents would have, for the synthetic members (bench-only rows, no
    book entries or reductions behind them): each is a member of the city and of `all` (`community_member`, and the
    `community_scope` counters the page reads go up by as many) and took part in both on one of the last `days`
    days (`community_participant`). Returns the seconds it took (with ANALYZE)."""
    from wallet.db import engine

    t0 = time.perf_counter()
    async with engine().transaction() as tx:
        conn = tx.connection
        await conn.execute(
            """CREATE TEMP TABLE bench_synthetic ON COMMIT DROP AS
               SELECT ($1 || lpad(to_hex(g), 12, '0'))::uuid AS holder, (now() AT TIME ZONE $3)::date - g % $4 AS day
               FROM generate_series(0, $2::int - 1) AS g""", SYNTHETIC, count, zone, days)
        for scope in ("all", f"city:{city.name}"):
            await conn.execute("INSERT INTO community_member (scope, holder) SELECT $1, holder FROM bench_synthetic",
                               scope)
            await conn.execute("INSERT INTO community_participant (scope, day, holder) "
                               "SELECT $1, day, holder FROM bench_synthetic", scope)
            await conn.execute("UPDATE community_scope SET participants = participants + $2 WHERE scope = $1",
                               scope, count)
    async with engine().transaction() as tx:
        await tx.connection.execute("ANALYZE community_member, community_participant, community_scope")
    return time.perf_counter() - t0
