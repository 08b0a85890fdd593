"""Leaderboards that stay true to the book. Wiping Redis and rebuilding recreates every current board exactly
(keys, types, contents and expiry), so boards built by following the book equal boards rebuilt at the same
point, after credits, held and rejected activities, a reversal, entries of earlier days, private residents,
teams, friends, moves, an exclusion and veterans. The follower applies each entry exactly once: twice in a
row, after a step that crashed midway, and while four writers report concurrently."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from gamification.friends.service import befriend
from gamification.leaderboards import follow as follower
from gamification.leaderboards.follow import CURSOR, follow
from tests.leaderboard_support import (
    TZ,
    Arena,
    Player,
    assert_boards_equal_rebuild,
    create_team,
    fresh_start,
    hget_mg,
    join,
    make_arena,
    mg_of,
    settle,
    snapshot,
    step,
    tag,
)
from tests.partner_support import activity
from tests.support import Resident, deliver_pending_events
from wallet.db import connection
from wallet.holders.service import update_profile


@pytest.fixture(scope="module")
async def redis(db: object) -> AsyncIterator[Redis]:
    client = Redis.from_url(os.environ["REDIS_URL"])
    await fresh_start(client)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def arena(passwords: object, settings: object, client: httpx.Client, redis: Redis) -> Arena:
    return await make_arena(passwords, settings, client, redis)


def crash_on_the_second_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker dies in the middle of a step: the first batch (with its cursor progress) lands, the
    second never reaches Redis."""
    real, calls = follower._apply_rows, []

    async def dying(*args: Any, **kw: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionError("the worker died mid-step")
        await real(*args, **kw)

    monkeypatch.setattr(follower, "_apply_rows", dying)


# --- rebuild exactness ---------------------------------------------------------------------------------


async def test_wiping_redis_and_rebuilding_recreates_every_board_exactly(
        arena: Arena, redis: Redis, client: httpx.Client, operator: Resident) -> None:
    await fresh_start(redis)
    city, team = f"重建市{tag()}", create_team(operator)
    a = await arena.player(city=city, district="南区", community="一小区")
    hidden = await arena.player(city=city, district="南区", community="一小区", public=False)
    mover = await arena.player(city=city, district="南区", community="二小区")
    neighbour = await arena.player(city=city, district="南区", community="二小区")
    veteran = await arena.player(city=city, created_days_ago=40)
    cheat, lone = await arena.player(city=city), await arena.player()
    join(a, team, "engineering")
    join(hidden, team, "marketing")
    await befriend(a.id, hidden.id)
    now = datetime.now(UTC)
    await a.credit(300, occurred=now - timedelta(days=1))
    await a.credit(120)
    padded = await hidden.credit(200)
    await hidden.credit(80, occurred=now - timedelta(days=3))
    # 二小区's latest entry stays when the mover leaves it; a group left by its latest contributor is covered
    # by test_after_a_member_leaves_a_group_its_per_capita_board_equals_a_rebuild.
    for p, quantity in ((mover, 150), (neighbour, 70), (veteran, 90), (cheat, 400), (lone, 5)):
        await p.credit(quantity)
    (held,) = a.http.post("/v1/me/activities", json={"activities": [
        activity(behaviour="clean_plate", details={"photo_ref": "photos/rebuild.jpg"})]}).json()["receipts"]
    assert held["verdict"] == "held"
    assert (await veteran.report(40_000))[0].verdict == "rejected"
    async with connection() as conn:
        entry = await conn.fetchval("SELECT id FROM book_entry WHERE activity = $1", padded.activity_id)
    assert operator.post(f"/v1/admin/book/entries/{entry}/reverse", json={"reason": "重复"}).status_code == 201
    await settle(redis)
    assert operator.post("/v1/admin/leaderboards/exclusions",
                         json={"holder_id": cheat.sid, "reason": "刷量"}).status_code == 201
    await update_profile(mover.id, {"community": "一小区"})
    await update_profile(lone.id, {"city": city, "show_on_public_leaderboards": False})
    await settle(redis)
    await mover.credit(60)
    await step(redis)

    built = await assert_boards_equal_rebuild(redis)
    assert f"lb:community:{city}|南区|一小区:all" in built and f"lbpc:team:-:all:a:{team['id']}" in built
    assert cheat.sid not in built[f"lb:city:{city}:all:v"][1]
    assert await step(redis) == 0  # the rebuild's cursor is where the book is: nothing is applied again
    assert await assert_boards_equal_rebuild(redis) == built


async def test_after_a_member_leaves_a_group_its_per_capita_board_equals_a_rebuild(arena: Arena,
                                                                                   redis: Redis) -> None:
    await fresh_start(redis)
    city = f"离组市{tag()}"
    first = await arena.player(city=city, district="北区", community="甲")
    leaver = await arena.player(city=city, district="北区", community="甲")
    loner = await arena.player(city=city, district="北区", community="丙")
    await first.credit(100)
    await asyncio.sleep(1.1)
    await leaver.credit(100)  # the group's latest entry is the leaver's
    await loner.credit(100)
    await step(redis)
    await update_profile(leaver.id, {"community": "乙"})
    await update_profile(loner.id, {"community": "乙"})  # 丙 is left with no active resident
    await settle(redis)
    await assert_boards_equal_rebuild(redis)


# --- exactly once --------------------------------------------------------------------------------------


async def test_following_twice_applies_each_entry_once(arena: Arena, redis: Redis) -> None:
    await fresh_start(redis)
    p = await arena.player(city=f"两次市{tag()}")
    await p.credit(100)
    await p.credit(50)
    assert await step(redis) == 2
    before = await snapshot(redis)
    assert await step(redis) == 0
    assert await snapshot(redis) == before
    assert await hget_mg(redis, "lb:global:-:all", p.id) == mg_of(100) + mg_of(50)


async def test_a_step_that_crashed_midway_resumes_without_applying_anything_twice(
        arena: Arena, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    await fresh_start(redis)
    city = f"崩溃市{tag()}"
    players = [await arena.player(city=city) for _ in range(3)]
    for i in range(5):
        await players[i % 3].credit(10 + i)  # five transactions
    crash_on_the_second_batch(monkeypatch)
    with pytest.raises(ConnectionError):
        await follow(redis, TZ, batch=2)
    monkeypatch.undo()
    cursor = {k.decode(): v.decode() for k, v in (await redis.hgetall(CURSOR)).items()}
    assert cursor["target"] and cursor["after_id"] != "0"  # the first batch and its progress committed together
    await players[0].credit(7)  # committed after the crashed step's snapshot
    assert await step(redis) == 3  # the rest of the crashed step
    assert await step(redis) == 1  # then what came after it

    # The same again by hand: a step whose last batch landed but whose final cursor write was lost.
    done = (await redis.hget(CURSOR, "done")).decode()
    await players[1].credit(3)
    assert await step(redis) == 1
    async with connection() as conn:
        last = await conn.fetchrow("SELECT txid::text, id FROM book_entry ORDER BY id DESC LIMIT 1")
    target = (await redis.hget(CURSOR, "done")).decode()
    await redis.hset(CURSOR, mapping={"done": done, "target": target, "after_txid": last["txid"],
                                      "after_id": str(last["id"])})
    assert await step(redis) == 0
    expected = {0: [10, 13, 7], 1: [11, 14, 3], 2: [12]}
    for i, quantities in expected.items():
        assert await hget_mg(redis, f"lb:city:{city}:all", players[i].id) == sum(mg_of(q) for q in quantities)
    await assert_boards_equal_rebuild(redis)


async def test_a_move_between_a_crashed_step_and_its_resumption_loses_nothing(
        arena: Arena, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    await fresh_start(redis)
    city, elsewhere = f"断点市{tag()}", f"断点新市{tag()}"
    mover = await arena.player(city=city)
    for quantity in (10, 20, 30):
        await mover.credit(quantity)
    crash_on_the_second_batch(monkeypatch)
    with pytest.raises(ConnectionError):
        await follow(redis, TZ, batch=1)
    monkeypatch.undo()
    await update_profile(mover.id, {"city": elsewhere})
    await settle(redis)
    assert await hget_mg(redis, f"lb:city:{elsewhere}:all", mover.id) == mg_of(10) + mg_of(20) + mg_of(30)


@pytest.mark.parametrize("move", ["exclusion", "new city"])
async def test_a_move_whose_event_arrives_after_the_follower_took_a_new_entry_still_moves_the_score(
        arena: Arena, redis: Redis, operator: Resident, move: str) -> None:
    await fresh_start(redis)
    city, elsewhere = f"抢先市{tag()}", f"抢先新市{tag()}"
    p = await arena.player(city=city)
    async with connection() as conn:  # as accounts imported with whole-second times have it
        await conn.execute("UPDATE holder SET created_at = date_trunc('second', created_at) WHERE id = $1", p.id)
    await p.credit(100)
    await step(redis)
    if move == "exclusion":
        r = operator.post("/v1/admin/leaderboards/exclusions", json={"holder_id": p.sid, "reason": "刷量"})
        assert r.status_code == 201, r.text
    else:
        await update_profile(p.id, {"city": elsewhere})
    await p.credit(50)
    await step(redis)  # the follower's step happens to run before the relay delivers the event
    await deliver_pending_events()
    await assert_boards_equal_rebuild(redis)


async def test_reports_racing_the_follower_end_with_boards_equal_to_a_rebuild(arena: Arena, redis: Redis,
                                                                              operator: Resident) -> None:
    await fresh_start(redis)
    city, team = f"并发市{tag()}", create_team(operator)
    writers = [await arena.player(city=city, district="中区", community=f"{i % 2}号院") for i in range(4)]
    for p in writers[:2]:
        join(p, team)
    await settle(redis)
    done = asyncio.Event()
    steps: list[int | None] = []

    async def write(p: Player) -> None:
        for i in range(12):
            await p.credit(1 + i)
            await asyncio.sleep(0)

    async def keep_following() -> None:
        while not done.is_set():
            steps.append(await follow(redis, TZ, batch=3))
            await asyncio.sleep(0.01)

    following = asyncio.create_task(keep_following())
    await asyncio.gather(*(write(p) for p in writers))
    done.set()
    await following
    last = await step(redis)
    assert sum(s or 0 for s in steps) + last == 4 * 12  # every entry applied once, whichever step took it
    for p in writers:
        assert await hget_mg(redis, f"lb:city:{city}:all", p.id) == sum(mg_of(1 + i) for i in range(12))
    await assert_boards_equal_rebuild(redis)


async def test_a_cached_top_is_used_only_while_no_board_has_moved(arena: Arena, redis: Redis) -> None:
    """Readers keep a popular board's top N in memory, but only while Valkey's generation is the one it was
    read at: the next entry, a move, a rebuild or a wipe makes the next read fetch it again."""
    from gamification.leaderboards.boards import board_key, period_of
    from gamification.leaderboards.store import read_board

    city = f"缓存市{tag()}"
    key = board_key("city", city, period_of("all", datetime.now(UTC), TZ))
    first, second = await arena.player(city=city), await arena.player(city=city)
    await first.credit(300)
    await second.credit(100)
    await step(redis)
    before = await read_board(redis, key, holder=None, limit=10)
    again = await read_board(redis, key, holder=second.sid, limit=10)
    assert [s.member for s in before.top] == [first.sid, second.sid]
    assert again.top is before.top and again.generation == before.generation  # served from memory
    assert again.me is not None and again.me.rank == 2  # my standing is always read

    await second.credit(500)
    await step(redis)
    after = await read_board(redis, key, holder=None, limit=10)
    assert after.generation != before.generation
    assert [s.member for s in after.top] == [second.sid, first.sid]
    assert after.top[0].mg == before.top[1].mg + mg_of(500)

    await redis.flushdb()  # nothing in Valkey, no generation: nothing may be served from memory
    assert (await read_board(redis, key, holder=None, limit=10)).top == []
    await follower.rebuild(redis, TZ)
    rebuilt = await read_board(redis, key, holder=None, limit=10)
    assert rebuilt.top == after.top and rebuilt.generation not in ("", after.generation)
