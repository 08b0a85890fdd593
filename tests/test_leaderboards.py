"""Leaderboards as residents and the public read them, over HTTP against boards the follower keeps from the
book: credited reductions order a board, held and rejected activities never count (a held one counts once an
operator credits it), a reversal lowers a score and can reorder; periods are local to Asia/Shanghai; ties go
to whoever reached the score first and survive a rebuild; public boards show nicknames and avatars and no
ids, phones or e-mails; my rank, score and two neighbours each side; residents who did not opt in are counted
but never shown (they still see where they stand); friends see each other whatever their public choice;
404s for scopes I am not in and unknown boards or periods; operators exclude and restore residents (with a
reason the resident sees), and only operators may.

Each test places its residents in a city of its own, so its boards are its own."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from gamification.friends.service import befriend
from gamification.leaderboards.boards import PERIODS, period_of
from gamification.leaderboards.follow import rebuild
from tests.leaderboard_support import TZ, Arena, Player, fresh_start, hget_mg, make_arena, mg_of, settle, step, tag
from tests.partner_support import activity
from tests.support import Resident, assert_problem, register, unique_phone
from wallet.db import connection


@pytest.fixture(scope="module")
async def redis(db: object) -> AsyncIterator[Redis]:
    client = Redis.from_url(os.environ["REDIS_URL"])
    await fresh_start(client)  # the cursor exists from here on, as after the worker's first start
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def arena(passwords: object, settings: object, client: httpx.Client, redis: Redis) -> Arena:
    return await make_arena(passwords, settings, client, redis)


def public(client: httpx.Client, board: str, scope_id: str = "-", period: str = "all",
           **params: Any) -> dict[str, Any]:
    r = client.get(f"/v1/leaderboards/{board}/{period}", params={"scope_id": scope_id, **params})
    assert r.status_code == 200, r.text
    return r.json()


def ranking(body: dict[str, Any], key: str = "top") -> list[tuple[int, str, int]]:
    return [(row["rank"], row["nickname"], row["reduction_mg"]) for row in body[key]]


async def entry_of(activity_id: uuid.UUID) -> int:
    async with connection() as conn:
        return await conn.fetchval("SELECT id FROM book_entry WHERE activity = $1 AND kind = 'credit'", activity_id)


# --- ranking -------------------------------------------------------------------------------------------


async def test_credited_reductions_order_the_board_and_held_or_rejected_ones_never_count(
        arena: Arena, redis: Redis, client: httpx.Client, operator: Resident) -> None:
    city = f"排名市{tag()}"
    a, b, c = [await arena.player(city=city) for _ in range(3)]
    await a.credit(300)
    await b.credit(500)
    await c.credit(100)
    (rejected,) = await c.report(40_000)  # more than anyone hands in at once
    assert (rejected.verdict, rejected.code) == ("rejected", "implausible-quantity")
    r = c.http.post("/v1/me/activities", json={"activities": [
        activity(behaviour="clean_plate", details={"photo_ref": "photos/lb.jpg"})]})
    assert r.status_code == 200, r.text
    (held,) = r.json()["receipts"]
    assert held["verdict"] == "held", held
    await step(redis)
    assert ranking(public(client, "city", city)) == [
        (1, b.nickname, mg_of(500)), (2, a.nickname, mg_of(300)), (3, c.nickname, mg_of(100))]

    r = operator.post(f"/v1/admin/review/{held['activity_id']}", json={"decision": "credit", "note": "照片清晰"})
    assert r.status_code == 200, r.text
    await step(redis)
    assert c.board("city")["me"]["reduction_mg"] == mg_of(100) + mg_of(1, "clean_plate")


async def test_a_reversal_lowers_the_score_and_can_reorder(arena: Arena, redis: Redis, client: httpx.Client,
                                                           operator: Resident) -> None:
    city = f"冲正市{tag()}"
    a, b = await arena.player(city=city), await arena.player(city=city)
    await a.credit(300)
    padded = await a.credit(200)
    await b.credit(400)
    await step(redis)
    assert ranking(public(client, "city", city, "today")) == [
        (1, a.nickname, mg_of(300) + mg_of(200)), (2, b.nickname, mg_of(400))]

    r = operator.post(f"/v1/admin/book/entries/{await entry_of(padded.activity_id)}/reverse",
                      json={"reason": "重复上报 / reported twice"})
    assert r.status_code == 201, r.text
    assert await step(redis) == 1
    for period in PERIODS:
        assert ranking(public(client, "city", city, period)) == [
            (1, b.nickname, mg_of(400)), (2, a.nickname, mg_of(300))], period


async def test_an_entry_of_yesterday_counts_in_its_periods_but_not_today(arena: Arena, redis: Redis) -> None:
    p = await arena.player(city=f"昨日市{tag()}")
    now = datetime.now(UTC)
    entries = [(now - timedelta(days=1), 100), (now - timedelta(minutes=5), 50)]
    for occurred, quantity in entries:
        await p.credit(quantity, occurred=occurred)
    await step(redis)
    for period in PERIODS:
        current = period_of(period, now, TZ).key
        expected = sum(mg_of(q) for occurred, q in entries if period_of(period, occurred, TZ).key == current)
        assert p.board("city", period)["me"]["reduction_mg"] == expected, period
    assert p.board("city", "today")["me"]["reduction_mg"] == mg_of(50)
    assert p.board("city", "all")["me"]["reduction_mg"] == mg_of(100) + mg_of(50)


async def test_an_entry_at_23_30_utc_counts_for_the_next_local_day(arena: Arena, redis: Redis) -> None:
    city = f"时区市{tag()}"
    p = await arena.player(city=city)
    now = datetime.now(UTC)
    late = now.replace(hour=23, minute=30, second=0, microsecond=0)
    if late > now - timedelta(minutes=1):
        late -= timedelta(days=1)
    await p.credit(10, occurred=late)
    await step(redis)
    local_day = late.date() + timedelta(days=1)  # 07:30 the next morning in Shanghai (UTC+8)
    assert period_of("today", late, TZ).key == f"d{local_day:%Y%m%d}"
    assert await hget_mg(redis, f"lb:city:{city}:d{local_day:%Y%m%d}", p.id) == mg_of(10)
    assert await hget_mg(redis, f"lb:city:{city}:d{late.date():%Y%m%d}", p.id) is None
    if period_of("today", now, TZ).key == f"d{local_day:%Y%m%d}":
        assert p.board("city", "today")["me"]["reduction_mg"] == mg_of(10)


# --- ties ----------------------------------------------------------------------------------------------


async def tied_pair(arena: Arena, city: str) -> tuple[Player, Player]:
    """Two residents who reach the same grams 1.1 s apart. The first has the lower id: boards that broke
    ties by id (Redis orders equal scores by member, highest first) would put the second first."""
    first, second = sorted([await arena.player(city=city), await arena.player(city=city)], key=lambda p: p.sid)
    await first.credit(100)
    await asyncio.sleep(1.1)
    await second.credit(60)
    await second.credit(40)  # another way to the same 128 g: what counts is when the score was reached
    assert mg_of(100) == mg_of(60) + mg_of(40)
    return first, second


async def test_equal_scores_go_to_whoever_reached_them_first_also_after_a_rebuild(
        arena: Arena, redis: Redis, client: httpx.Client) -> None:
    city = f"并列市{tag()}"
    first, second = await tied_pair(arena, city)
    await step(redis)
    expected = [(1, first.nickname, mg_of(100)), (2, second.nickname, mg_of(100))]
    for period in ("today", "week", "month"):
        assert ranking(public(client, "city", city, period)) == expected, period
    assert second.board("city", "today")["me"]["rank"] == 2
    await rebuild(redis, TZ)
    for period in ("today", "week", "month"):
        assert ranking(public(client, "city", city, period)) == expected, period


@pytest.mark.xfail(strict=True, reason=(
    "Known limit, documented: a sorted-set score is a double, so after 29 bits of grams the all-time board's "
    "tie-break has room for minutes only (period boards have seconds); two residents reaching the same score "
    "within one minute tie exactly and Redis orders them by holder id"))
async def test_all_time_ties_within_a_minute_also_go_to_whoever_was_first(
        arena: Arena, redis: Redis, client: httpx.Client) -> None:
    if datetime.now(UTC).second >= 50:  # both reach the score within the same minute
        await asyncio.sleep(61 - datetime.now(UTC).second)
    city = f"并列总榜{tag()}"
    first, second = await tied_pair(arena, city)
    await step(redis)
    assert [row["nickname"] for row in public(client, "city", city, "all")["top"]] == [
        first.nickname, second.nickname]


# --- reads ---------------------------------------------------------------------------------------------


async def test_public_boards_show_nicknames_and_avatars_and_no_ids_phones_or_emails(
        arena: Arena, redis: Redis, client: httpx.Client) -> None:
    city, district, community = f"公开市{tag()}", "海淀区", "中关村社区"
    phoned, nickname = register(client, phone=unique_phone()), f"手机{tag()}"
    r = phoned.patch("/v1/me", json={"nickname": nickname, "city": city, "district": district,
                                     "community": community, "show_on_public_leaderboards": True,
                                     "avatar_url": "https://img.example/a1.png"})
    assert r.status_code == 200, r.text
    r = phoned.post("/v1/me/activities", json={"activities": [activity(behaviour="clothes_repair")]})
    assert r.json()["receipts"][0]["verdict"] == "credited", r.text
    mailed = await arena.player(city=city, district=district, community=community,
                                avatar_url="https://img.example/a2.png")
    await mailed.credit(10)
    await settle(redis)
    private = {phoned.holder_id, phoned.login, mailed.sid, mailed.http.login}
    for board, scope_id in (("city", city), ("district", f"{city}|{district}"),
                            ("community", f"{city}|{district}|{community}")):
        response = client.get(f"/v1/leaderboards/{board}/all", params={"scope_id": scope_id})
        body = response.json()
        assert {(row["nickname"], row["avatar_url"]) for row in body["top"]} == {
            (nickname, "https://img.example/a1.png"),
            (mailed.nickname, "https://img.example/a2.png")}, body
        assert all(row["holder_id"] is None and row["me"] is False for row in body["top"]), body
        assert body["me"] is None and body["residents"] == 2
        assert not any(secret in response.text for secret in private), response.text
        assert all(set(row) == {"rank", "nickname", "avatar_url", "reduction_mg", "me", "holder_id"}
                   for row in body["top"])
        assert '"email"' not in response.text and '"phone"' not in response.text


async def test_my_board_has_my_rank_score_and_two_neighbours_each_side(arena: Arena, redis: Redis) -> None:
    city = f"邻居市{tag()}"
    players = [await arena.player(city=city) for _ in range(7)]
    for i, p in enumerate(players):
        await p.credit(700 - 100 * i)  # ranks 1..7 in order
    await step(redis)
    names = [p.nickname for p in players]
    me = players[3]
    body = me.board("city", "all", limit=3)
    assert body["residents"] == 7 and body["scope_id"] == city
    assert [row["nickname"] for row in body["top"]] == names[:3]
    assert body["me"] == {"rank": 4, "reduction_mg": mg_of(400), "visible": True, "excluded_reason": None}
    assert [(row["rank"], row["nickname"], row["me"]) for row in body["neighbours"]] == [
        (2, names[1], False), (3, names[2], False), (4, names[3], True), (5, names[4], False), (6, names[5], False)]
    assert [row["holder_id"] for row in body["neighbours"]] == [None, None, me.sid, None, None]
    assert [row["rank"] for row in players[0].board("city")["neighbours"]] == [1, 2, 3]
    assert [row["rank"] for row in players[6].board("city")["neighbours"]] == [5, 6, 7]
    assert [row["rank"] for row in me.board("city", around=1)["neighbours"]] == [3, 4, 5]


async def test_a_resident_who_did_not_opt_in_is_counted_but_never_shown(arena: Arena, redis: Redis,
                                                                       client: httpx.Client) -> None:
    city = f"隐身市{tag()}"
    a, b = await arena.player(city=city), await arena.player(city=city)
    hidden = await arena.player(city=city, public=False)
    d, e = await arena.player(city=city), await arena.player(city=city)
    for p, quantity in ((a, 700), (b, 500), (hidden, 400), (d, 300), (e, 100)):
        await p.credit(quantity)
    await befriend(a.id, hidden.id)
    await step(redis)
    shown = [a.nickname, b.nickname, d.nickname, e.nickname]
    for period in PERIODS:
        response = client.get(f"/v1/leaderboards/city/{period}", params={"scope_id": city})
        assert [row["nickname"] for row in response.json()["top"]] == shown, period
        assert response.json()["residents"] == 4 and hidden.nickname not in response.text
    mine = hidden.board("city")
    assert mine["me"] == {"rank": 3, "reduction_mg": mg_of(400), "visible": False, "excluded_reason": None}
    assert [row["nickname"] for row in mine["top"]] == shown
    assert [(row["rank"], row["nickname"]) for row in mine["neighbours"]] == list(enumerate(shown, start=1))
    for other in (a, b, d, e):
        body = other.board("city")
        assert hidden.nickname not in {row["nickname"] for row in body["top"] + body["neighbours"]}
    assert d.board("city")["me"]["rank"] == 3
    assert await redis.zscore("lb:global:-:all", hidden.sid) is None
    assert await hget_mg(redis, "lb:global:-:all", hidden.id) == mg_of(400)  # counted, not shown
    friends = a.friends()  # friends see each other whatever their public choice
    assert [(row["nickname"], row["holder_id"], row["reduction_mg"]) for row in friends["top"]] == [
        (a.nickname, a.sid, mg_of(700)), (hidden.nickname, hidden.sid, mg_of(400))]


async def test_the_friends_board_ranks_me_and_my_friends_only(arena: Arena, redis: Redis) -> None:
    me, shown, unshown = await arena.player(), await arena.player(), await arena.player(public=False)
    stranger = await arena.player()
    await befriend(me.id, shown.id)
    await befriend(unshown.id, me.id)
    for p, quantity in ((me, 100), (shown, 300), (unshown, 500), (stranger, 900)):
        await p.credit(quantity)
    await step(redis)
    for period in ("today", "all"):
        body = me.friends(period)
        assert [(row["rank"], row["nickname"], row["holder_id"], row["me"]) for row in body["top"]] == [
            (1, unshown.nickname, unshown.sid, False), (2, shown.nickname, shown.sid, False),
            (3, me.nickname, me.sid, True)], period
        assert body["me"]["rank"] == 3 and body["residents"] == 3
    assert [row["nickname"] for row in unshown.friends()["top"]] == [unshown.nickname, me.nickname]


async def test_boards_i_am_not_in_and_unknown_boards_or_periods_are_404(arena: Arena, client: httpx.Client) -> None:
    nowhere = await arena.player()
    for board in ("city", "district", "community", "team", "department"):
        assert_problem(nowhere.http.get(f"/v1/me/leaderboards/{board}/all"), 404, "not-in-scope")
    only_city = await arena.player(city=f"无区市{tag()}")
    assert only_city.board("city")["me"] == {"rank": None, "reduction_mg": 0, "visible": True, "excluded_reason": None}
    assert_problem(only_city.http.get("/v1/me/leaderboards/district/all"), 404, "not-in-scope")
    assert_problem(nowhere.http.get("/v1/me/leaderboards/planet/all"), 404, "unknown-board")
    assert_problem(nowhere.http.get("/v1/me/leaderboards/global/year"), 404, "unknown-period")
    assert_problem(nowhere.http.get("/v1/me/leaderboards/friends/decade"), 404, "unknown-period")
    assert_problem(client.get("/v1/leaderboards/planet/all"), 404, "unknown-board")
    assert_problem(client.get("/v1/leaderboards/global/yesterday"), 404, "unknown-period")
    assert_problem(client.get("/v1/leaderboards/per-capita/department/all"), 404, "unknown-board")
    assert_problem(client.get("/v1/leaderboards/per-capita/team/forever"), 404, "unknown-period")
    assert_problem(client.get("/v1/leaderboards/per-capita/community/all"), 422, "city-required")
    assert_problem(client.get("/v1/leaderboards/global/all", params={"limit": 101}), 400)
    assert_problem(client.get("/v1/me/leaderboards/global/all"), 401)


# --- anti-cheat ----------------------------------------------------------------------------------------


async def test_an_excluded_resident_leaves_every_board_sees_why_and_returns_whole_when_restored(
        arena: Arena, redis: Redis, client: httpx.Client, operator: Resident) -> None:
    city, district = f"排除市{tag()}", "朝阳区"
    cheat, honest = await arena.player(city=city, district=district), await arena.player(city=city)
    friend = await arena.player()
    await befriend(friend.id, cheat.id)
    await cheat.credit(500)
    await honest.credit(300)
    await friend.credit(10)
    await step(redis)
    assert [row["nickname"] for row in public(client, "city", city)["top"]] == [cheat.nickname, honest.nickname]

    reason = "上报异常，正在核查 / unusual reports under review"
    r = operator.post("/v1/admin/leaderboards/exclusions", json={"holder_id": cheat.sid, "reason": reason})
    assert r.status_code == 201, r.text
    assert (r.json()["reason"], r.json()["nickname"]) == (reason, cheat.nickname)
    assert cheat.sid in {x["holder_id"] for x in operator.get("/v1/admin/leaderboards/exclusions").json()}
    await settle(redis)
    await cheat.credit(200)  # still reporting while excluded: the book counts it, the boards do not
    await settle(redis)
    for period in PERIODS:
        assert [row["nickname"] for row in public(client, "city", city, period)["top"]] == [honest.nickname]
    for key in ("lb:global:-:all", f"lb:city:{city}:all", f"lb:district:{city}|{district}:all",
                "lb:newcomer:-:all"):
        assert await hget_mg(redis, key, cheat.id) is None, key
    assert [row["nickname"] for row in friend.friends()["top"]] == [friend.nickname]
    for board in ("global", "city", "district", "newcomer"):
        assert cheat.board(board)["me"] == {"rank": None, "reduction_mg": 0, "visible": False,
                                            "excluded_reason": reason}, board
    own = cheat.friends()
    assert own["me"]["rank"] is None and own["me"]["reduction_mg"] == 0
    assert [row["nickname"] for row in own["top"]] == [friend.nickname]

    assert operator.delete(f"/v1/admin/leaderboards/exclusions/{cheat.sid}").status_code == 204
    await settle(redis)
    whole = mg_of(500) + mg_of(200)
    assert ranking(public(client, "city", city)) == [(1, cheat.nickname, whole), (2, honest.nickname, mg_of(300))]
    assert cheat.board("district")["me"] == {"rank": 1, "reduction_mg": whole, "visible": True,
                                             "excluded_reason": None}
    assert [(row["nickname"], row["reduction_mg"]) for row in friend.friends()["top"]] == [
        (cheat.nickname, whole), (friend.nickname, mg_of(10))]


async def test_an_excluded_resident_sees_the_reason_on_their_friends_board_too(
        arena: Arena, redis: Redis, operator: Resident) -> None:
    cheat, friend = await arena.player(), await arena.player()
    await befriend(cheat.id, friend.id)
    await cheat.credit(50)
    reason = "刷量 / padded reports"
    r = operator.post("/v1/admin/leaderboards/exclusions", json={"holder_id": cheat.sid, "reason": reason})
    assert r.status_code == 201, r.text
    await settle(redis)
    assert cheat.friends()["me"] == {"rank": None, "reduction_mg": 0, "visible": False, "excluded_reason": reason}


# --- admin ---------------------------------------------------------------------------------------------


async def test_only_operators_rebuild_and_exclude_and_they_must_say_who_and_why(
        arena: Arena, redis: Redis, client: httpx.Client, operator: Resident) -> None:
    someone = await arena.player(city=f"管理市{tag()}")
    await someone.credit(10)
    body = {"holder_id": someone.sid, "reason": "test"}
    for who, status in ((someone.http, 403), (None, 401)):
        headers = who.headers if who else {}
        code = "operator-only" if status == 403 else None
        assert_problem(client.post("/v1/admin/leaderboards/rebuild", headers=headers), status, code)
        assert_problem(client.post("/v1/admin/leaderboards/exclusions", json=body, headers=headers), status, code)
        assert_problem(client.get("/v1/admin/leaderboards/exclusions", headers=headers), status, code)
        assert_problem(client.delete(f"/v1/admin/leaderboards/exclusions/{someone.sid}", headers=headers),
                       status, code)
    assert someone.sid not in {x["holder_id"] for x in operator.get("/v1/admin/leaderboards/exclusions").json()}

    exclusions = "/v1/admin/leaderboards/exclusions"
    assert_problem(operator.post(exclusions, json={"holder_id": str(uuid.uuid4()), "reason": "x"}), 404,
                   "holder-not-found")
    assert_problem(operator.delete(f"{exclusions}/{someone.sid}"), 404, "not-excluded")
    assert_problem(operator.delete(f"{exclusions}/{uuid.uuid4()}"), 404, "not-excluded")
    assert_problem(operator.post(exclusions, json={"holder_id": someone.sid}), 400)
    assert_problem(operator.post(exclusions, json={"holder_id": someone.sid, "reason": ""}), 400)
    assert_problem(operator.post(exclusions, json={"holder_id": someone.sid, "reason": "   "}), 422, "reason-required")
    assert_problem(operator.post(exclusions, json={"holder_id": someone.sid, "reason": "x" * 301}), 400)
    assert someone.sid not in {x["holder_id"] for x in operator.get(exclusions).json()}

    r = operator.post("/v1/admin/leaderboards/rebuild")
    assert r.status_code == 200, r.text
    assert r.json()["residents"] >= 1 and r.json()["boards"] >= 4
    await step(redis)  # the cursor the API's rebuild left is one the follower continues from
    assert await hget_mg(redis, "lb:global:-:all", someone.id) == mg_of(10)
