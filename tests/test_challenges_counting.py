"""Challenge progress is kept by a follower of the book, and stays equal to a recount: joining counts at once
what the book already holds, the worker's step counts the rest once, leaving takes a participant's part out,
and reports, joins, leaves and steps racing one another end with every participant's amount, the challenge's
progress and its participants equal to what the book says. Residents excluded from competition neither count
nor appear, and count again when restored."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from gamification.challenges.service import create_challenge, get_challenge, join, leave, step
from gamification.leaderboards.service import exclude, restore
from tests.leaderboard_support import Arena, make_arena, mg_of, tag
from tests.support import Resident
from wallet.db import connection

NEVER = datetime(2000, 1, 1, tzinfo=UTC)  # a step told it is 2000 records no result: it only counts


@pytest.fixture(scope="module")
async def arena(passwords: object, settings: Any, client: object, db: object) -> AsyncIterator[Arena]:
    redis = Redis.from_url(os.environ["REDIS_URL"])
    yield await make_arena(passwords, settings, client, redis)  # type: ignore[arg-type]
    await redis.aclose()


async def challenge(**fields: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return await create_challenge({
        "code": f"cc-{tag()}", "title_zh": "计数", "title_en": "Counting", "scope": "global", "goal_kind": "grams",
        "goal": 10**9, "starts_at": now - timedelta(days=1), "ends_at": now + timedelta(days=1), **fields})


async def recount(challenge_id: int) -> tuple[dict[uuid.UUID, int], int, int]:
    """What the book says, summed from scratch: each participant's amount (mg), progress, participants."""
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT p.holder, coalesce(sum(e.reduction_mg), 0) AS mg FROM challenge_participant p
               JOIN challenge c ON c.id = p.challenge
               LEFT JOIN book_entry e ON e.holder = p.holder AND e.occurred_at >= c.starts_at
                    AND e.occurred_at < c.ends_at
               WHERE c.id = $1 GROUP BY p.holder""", challenge_id)
    amounts = {r["holder"]: int(r["mg"]) for r in rows}
    return amounts, sum(mg // 1000 for mg in amounts.values()), len(amounts)


async def stored(challenge_id: int) -> tuple[dict[uuid.UUID, int], int, int]:
    async with connection() as conn:
        rows = await conn.fetch("SELECT holder, amount FROM challenge_participant WHERE challenge = $1", challenge_id)
        c = await conn.fetchrow("SELECT progress, participants FROM challenge WHERE id = $1", challenge_id)
    return {r["holder"]: r["amount"] for r in rows}, c["progress"], c["participants"]


async def test_joining_counts_at_once_what_the_book_holds_and_a_step_counts_the_rest_once(arena: Arena) -> None:
    made = await challenge()
    p = await arena.player()
    await p.credit(400)
    await step(now=NEVER, wait=True)  # the cursor moves past the first credit
    await p.credit(300)  # after the cursor, before joining: still counted at joining
    joined = await join(p.id, made["id"])
    assert joined["my_amount"] == (mg_of(400) + mg_of(300)) // 1000  # no step needed
    await p.credit(200)
    assert (await get_challenge(made["id"], holder_id=p.id))["my_amount"] == joined["my_amount"]
    counted = await step(now=NEVER, wait=True)
    assert counted.entries >= 1 and counted.participants >= 1
    await step(now=NEVER, wait=True)  # a second step adds nothing
    got = await get_challenge(made["id"], holder_id=p.id)
    assert got["my_amount"] == got["progress"] == (mg_of(400) + mg_of(300) + mg_of(200)) // 1000
    assert await stored(made["id"]) == await recount(made["id"])


async def test_leaving_takes_a_participants_part_out_and_joining_again_counts_it_afresh(arena: Arena) -> None:
    made = await challenge()
    stay, go = await arena.player(), await arena.player()
    for p in (stay, go):
        await join(p.id, made["id"])
        await p.credit(500)
    await step(now=NEVER, wait=True)
    assert (await get_challenge(made["id"]))["progress"] == 2 * (mg_of(500) // 1000)
    assert await leave(go.id, made["id"]) is True
    await go.credit(100)  # not a participant: not counted
    await step(now=NEVER, wait=True)
    got = await get_challenge(made["id"])
    assert (got["progress"], got["participants"]) == (mg_of(500) // 1000, 1)
    await join(go.id, made["id"])
    assert await stored(made["id"]) == await recount(made["id"])


async def test_reports_joins_leaves_and_steps_racing_end_equal_to_a_recount(arena: Arena) -> None:
    """Eight residents report while they join and leave at random and the worker steps, all at once; one last
    step later, every stored number equals the book's."""
    made = await challenge()
    players = [await arena.player() for _ in range(8)]
    rng = random.Random(7)
    stop = asyncio.Event()

    async def resident(i: int) -> None:
        p = players[i]
        for n in range(12):
            action = rng.random()
            if action < 0.5:
                await p.credit(rng.randint(1, 400))
            elif action < 0.8:
                await join(p.id, made["id"])
            else:
                await leave(p.id, made["id"])
            if n % 4 == 0:
                await asyncio.sleep(0)

    async def worker() -> None:
        while not stop.is_set():
            await step(now=NEVER)  # skips when another step runs, as the worker's cron does
            await asyncio.sleep(0.005)

    stepping = asyncio.create_task(worker())
    await asyncio.gather(*(resident(i) for i in range(len(players))))
    stop.set()
    await stepping
    await step(now=NEVER, wait=True)
    amounts, progress, participants = await stored(made["id"])
    assert (amounts, progress, participants) == await recount(made["id"])
    got = await get_challenge(made["id"], top=100)
    assert got["progress"] == progress and got["participants"] == participants
    assert sum(c["amount"] for c in got["contributors"]) == progress  # the parts sum to the whole


async def test_an_excluded_resident_neither_counts_nor_appears_until_restored(arena: Arena,
                                                                               operator: Resident) -> None:
    made = await challenge()
    fair, cheat = await arena.player(), await arena.player()
    for p, quantity in ((fair, 100), (cheat, 900)):
        await p.credit(quantity)
        await join(p.id, made["id"])
    before = await get_challenge(made["id"], holder_id=cheat.id)
    assert (before["participants"], before["my_rank"]) == (2, 1)
    await exclude(cheat.id, "重复上报 / repeated reports", uuid.UUID(operator.holder_id))
    got = await get_challenge(made["id"], holder_id=cheat.id)
    assert (got["progress"], got["participants"]) == (mg_of(100) // 1000, 1)
    assert [c["amount"] for c in got["contributors"]] == [mg_of(100) // 1000]
    assert (got["joined"], got["my_rank"]) == (True, None)  # I still see what I did, without a rank
    assert (await get_challenge(made["id"], holder_id=fair.id))["my_rank"] == 1
    await restore(cheat.id)
    assert (await get_challenge(made["id"]))["progress"] == before["progress"]


async def test_a_result_leaves_out_excluded_residents_and_entries_recorded_after_it(arena: Arena,
                                                                                    operator: Resident) -> None:
    now = datetime.now(UTC)
    made = await challenge(starts_at=now - timedelta(days=2), ends_at=now - timedelta(minutes=30), goal=1)
    fair, cheat = await arena.player(), await arena.player()
    for p in (fair, cheat):
        await join(p.id, made["id"], now=now - timedelta(hours=1))
        await p.credit(300, occurred=now - timedelta(hours=2))
    await exclude(cheat.id, "重复上报 / repeated reports", uuid.UUID(operator.holder_id))
    assert (await step(wait=True)).finished >= 1
    await fair.credit(700, occurred=now - timedelta(hours=3))  # late: the result is recorded
    await step(wait=True)
    got = await get_challenge(made["id"])
    assert (got["result"], got["progress"], got["state"]) == ("met", mg_of(300) // 1000, "finished")
    assert got["counted_at"] is not None
    await restore(cheat.id)
