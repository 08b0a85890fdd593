"""Leaderboards follow residents who move: changing community, city or visibility (PATCH /v1/me), or team
and department, takes the score to the new boards and the old ones lose it; per-capita boards rank teams and
communities by grams per active resident and recompute when members move; the newcomer league holds
residents in their first 30 days only."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from redis.asyncio import Redis

from gamification.leaderboards.boards import PERIODS, current_periods
from gamification.leaderboards.follow import rebuild
from tests.leaderboard_support import (
    TZ,
    Arena,
    create_team,
    department_id,
    fresh_start,
    hget_mg,
    join,
    make_arena,
    mg_of,
    names,
    public,
    settle,
    step,
    tag,
)
from tests.support import Resident


@pytest.fixture(scope="module")
async def redis(db: object) -> AsyncIterator[Redis]:
    client = Redis.from_url(os.environ["REDIS_URL"])
    await fresh_start(client)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def arena(passwords: object, settings: object, client: httpx.Client, redis: Redis) -> Arena:
    return await make_arena(passwords, settings, client, redis)


# --- moves ---------------------------------------------------------------------------------------------


async def test_moving_community_city_or_visibility_takes_the_score_along(arena: Arena, redis: Redis,
                                                                       client: httpx.Client) -> None:
    city, elsewhere = f"搬家市{tag()}", f"新居市{tag()}"
    mover = await arena.player(city=city, district="东区", community="甲小区")
    stayer = await arena.player(city=city, district="东区", community="甲小区")
    await mover.credit(300)
    await stayer.credit(100)
    await step(redis)
    old = f"{city}|东区|甲小区"
    assert names(public(client, "community/all", scope_id=old)) == [mover.nickname, stayer.nickname]

    assert mover.http.patch("/v1/me", json={"community": "乙小区"}).status_code == 200
    await settle(redis)
    assert names(public(client, "community/all", scope_id=old)) == [stayer.nickname]
    new = public(client, "community/all", scope_id=f"{city}|东区|乙小区")
    assert [(row["nickname"], row["reduction_mg"]) for row in new["top"]] == [(mover.nickname, mg_of(300))]
    assert names(public(client, "district/all", scope_id=f"{city}|东区")) == [mover.nickname, stayer.nickname]
    assert mover.board("community")["scope_id"] == f"{city}|东区|乙小区"
    await mover.credit(50)  # entries after the move land on the new boards only
    await step(redis)

    assert mover.http.patch("/v1/me", json={"city": elsewhere}).status_code == 200
    await settle(redis)
    for period in PERIODS:
        assert names(public(client, f"city/{period}", scope_id=city)) == [stayer.nickname], period
        assert names(public(client, f"city/{period}", scope_id=elsewhere)) == [mover.nickname], period
    assert names(public(client, "district/all", scope_id=f"{city}|东区")) == [stayer.nickname]
    assert public(client, "community/all", scope_id=f"{city}|东区|乙小区")["residents"] == 0
    assert mover.board("city")["me"]["reduction_mg"] == mg_of(300) + mg_of(50)

    assert mover.http.patch("/v1/me", json={"show_on_public_leaderboards": False}).status_code == 200
    await settle(redis)
    assert public(client, "city/all", scope_id=elsewhere)["residents"] == 0
    assert mover.board("city")["me"] == {"rank": 1, "reduction_mg": mg_of(300) + mg_of(50), "visible": False,
                                         "excluded_reason": None}
    assert await redis.zscore("lb:global:-:all", mover.sid) is None
    assert await hget_mg(redis, "lb:global:-:all", mover.id) == mg_of(300) + mg_of(50)


async def test_joining_changing_department_and_leaving_a_team_moves_the_score(
        arena: Arena, redis: Redis, client: httpx.Client, operator: Resident) -> None:
    team = create_team(operator)
    team_id, engineering, marketing = str(team["id"]), department_id(team, "engineering"), department_id(
        team, "marketing")
    a, b = await arena.player(), await arena.player()
    await a.credit(300)  # before joining: it follows them into the team
    join(a, team, "engineering")
    join(b, team, "marketing")
    await settle(redis)
    await b.credit(100)
    await step(redis)
    assert names(public(client, "team/all", scope_id=team_id)) == [a.nickname, b.nickname]
    assert names(public(client, "department/all", scope_id=engineering)) == [a.nickname]
    assert (a.board("team")["scope_id"], a.board("department")["scope_id"]) == (team_id, engineering)

    r = a.http.patch("/v1/me/team", json={"department_code": "marketing"})
    assert r.status_code == 200, r.text
    await settle(redis)
    assert public(client, "department/all", scope_id=engineering)["residents"] == 0
    assert names(public(client, "department/all", scope_id=marketing)) == [a.nickname, b.nickname]

    assert a.http.delete("/v1/me/team").status_code == 204
    await settle(redis)
    assert names(public(client, "team/all", scope_id=team_id)) == [b.nickname]
    assert names(public(client, "department/all", scope_id=marketing)) == [b.nickname]
    assert a.http.get("/v1/me/leaderboards/team/all").json()["code"] == "not-in-scope"
    assert await hget_mg(redis, "lb:global:-:all", a.id) == mg_of(300)


# --- per capita ----------------------------------------------------------------------------------------


async def test_per_capita_boards_rank_groups_by_grams_per_active_resident_and_recompute_on_moves(
        arena: Arena, redis: Redis, client: httpx.Client, operator: Resident) -> None:
    city = f"人均市{tag()}"
    a, b = [await arena.player(city=city, district="西区", community="大小区") for _ in range(2)]
    idle = await arena.player(city=city, district="西区", community="大小区")  # no entries: not active
    c = await arena.player(city=city, district="西区", community="小小区")
    await a.credit(300)
    await b.credit(100)
    await c.credit(250)
    await step(redis)
    assert idle.board("community")["residents"] == 2 and idle.board("community")["me"]["rank"] is None
    # 大小区 holds more in total (512 g) but less per active resident (256 g) than 小小区 (320 g)
    assert names(public(client, "per-capita/community/all", city=city)) == ["小小区", "大小区"]
    assert b.http.patch("/v1/me", json={"community": "小小区"}).status_code == 200
    await settle(redis)
    # 大小区: 384 g ÷ 1; 小小区: (320 + 128) g ÷ 2 = 224 g
    assert names(public(client, "per-capita/community/all", city=city)) == ["大小区", "小小区"]

    big, small = create_team(operator), create_team(operator)
    for p, team in ((a, big), (b, big), (c, small)):
        join(p, team)
    await settle(redis)
    rows = [row["nickname"] for row in public(client, "per-capita/team/all", limit=100)["top"]]
    # the same split by team: 512 g ÷ 2 in the big one, 320 g ÷ 1 in the small one
    assert [n for n in rows if n in (big["name_zh"], small["name_zh"])] == [small["name_zh"], big["name_zh"]]


async def test_per_capita_rows_show_grams_per_active_resident(arena: Arena, redis: Redis,
                                                              client: httpx.Client) -> None:
    city = f"人均值市{tag()}"
    a, b = [await arena.player(city=city, district="西区", community="大小区") for _ in range(2)]
    await a.credit(300)
    await b.credit(100)
    await step(redis)
    (row,) = public(client, "per-capita/community/all", city=city)["top"]
    assert row["reduction_mg"] == (mg_of(300) + mg_of(100)) // 2


# --- the newcomer league -------------------------------------------------------------------------------


async def test_the_newcomer_league_holds_residents_in_their_first_30_days(arena: Arena, redis: Redis) -> None:
    new, old = await arena.player(), await arena.player(created_days_ago=40)
    await new.credit(100)
    await old.credit(100)
    await step(redis)
    for period in current_periods(TZ):
        key = f"lb:newcomer:-:{period.key}"
        assert await hget_mg(redis, key, new.id) == mg_of(100), period
        assert await hget_mg(redis, key, old.id) is None, period
    assert new.board("newcomer")["me"]["rank"] >= 1
    assert old.board("newcomer")["me"] == {"rank": None, "reduction_mg": 0, "visible": True, "excluded_reason": None}
    assert old.board("global")["me"]["reduction_mg"] == mg_of(100)


async def test_a_resident_past_their_first_30_days_is_not_in_the_newcomer_league(arena: Arena, redis: Redis) -> None:
    veteran = await arena.player(created_days_ago=40)
    await veteran.credit(100, occurred=datetime.now(UTC) - timedelta(days=29))  # their 11th day
    await step(redis)
    await rebuild(redis, TZ)
    assert await hget_mg(redis, "lb:newcomer:-:all", veteran.id) is None
    assert veteran.board("newcomer")["me"]["rank"] is None
