"""The community aggregates and the three ledgers (city, enterprise, resident). Whatever mix of credits,
reversals, self-reports, teams and moves between cities, and however steps interleave with reports, the city
ledger (over all cities) and the enterprise ledger (over all partners) add up to the book, entry for entry; each
entry counts where its resident lived when it was counted, once. Programme staff read their own city only."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from redis.asyncio import Redis

from gamification.community.follow import step
from gamification.community.reads import city_ledger, consistency, enterprise_ledger, scope_summary
from tests.leaderboard_support import Arena, Player, create_team, join, make_arena, mg_of, tag
from tests.partner_support import activity
from tests.support import Resident, assert_problem, register
from wallet.db import connection
from wallet.holders.roles import grant_role
from wallet.holders.service import update_profile


@pytest.fixture(scope="module")
async def arena(passwords: object, settings: Any, client: httpx.Client, db: object) -> AsyncIterator[Arena]:
    redis = Redis.from_url(os.environ["REDIS_URL"])
    yield await make_arena(passwords, settings, client, redis)
    await redis.aclose()


def today() -> date:
    """Residents' local day (entries are dated in their time zone, Asia/Shanghai for these residents): a UTC date
    is a day behind from 16:00 UTC."""
    return datetime.now(ZoneInfo("Asia/Shanghai")).date()


async def reverse(operator: Resident, receipt: Any) -> None:
    async with connection() as conn:
        entry = await conn.fetchval("SELECT id FROM book_entry WHERE activity = $1", receipt.activity_id)
    r = operator.post(f"/v1/admin/book/entries/{entry}/reverse", json={"reason": "撤回 / withdrawn"})
    assert r.status_code == 201, r.text


async def book_by_day(holders: list[uuid.UUID]) -> dict[tuple[str, date], int]:
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT behaviour, local_day, sum(reduction_mg)::bigint AS mg FROM book_entry
               WHERE holder = ANY($1::uuid[]) GROUP BY 1, 2""", holders)
    return {(r["behaviour"], r["local_day"]): r["mg"] for r in rows}


async def test_a_credit_counts_in_every_scope_of_its_resident_once(arena: Arena, operator: Resident) -> None:
    city = f"账本市{tag()}"
    team = create_team(operator)
    p = await arena.player(city=city, district="西区", community="乙小区")
    join(p, team)
    await p.credit(300)
    first = await step(wait=True)
    assert first.entries >= 1
    assert (await step(wait=True)).entries == 0  # a second step adds nothing
    mg = mg_of(300)
    for scope in (f"city:{city}", f"district:{city}|西区", f"community:{city}|西区|乙小区", f"team:{team['id']}",
                  f"partner:{arena.partner['id']}"):
        summary = await scope_summary(scope, today=today())
        assert (summary["total_mg"], summary["participants"], summary["series"][-1][1]) == (mg, 1, mg), scope
    assert (await consistency()).ok


async def test_a_reversal_lowers_every_scope_and_participants_stay_who_took_part(
        arena: Arena, operator: Resident) -> None:
    city = f"撤回市{tag()}"
    p = await arena.player(city=city, district="东区", community="丙小区")
    keep, withdraw = await p.credit(100), await p.credit(200)
    await step(wait=True)
    await reverse(operator, withdraw)
    await step(wait=True)
    ledger = await city_ledger(city, from_day=today() - timedelta(days=1), to_day=today() + timedelta(days=1),
                               by="community")
    assert ledger["total"] == {"reduction_mg": keep.credited_mg, "credits": 2, "reversals": 1, "participants": 1}
    assert [r["region"] for r in ledger["rows"]] == [f"{city}|东区|丙小区"]
    assert (await consistency()).ok


async def test_a_resident_who_moves_takes_their_future_not_their_past(arena: Arena) -> None:
    old, new = f"旧城{tag()}", f"新城{tag()}"
    p = await arena.player(city=old)
    await p.credit(100)
    await step(wait=True)
    await update_profile(p.id, {"city": new})
    await p.credit(200)
    await step(wait=True)
    window = {"from_day": today() - timedelta(days=1), "to_day": today() + timedelta(days=1), "by": "city"}
    assert (await city_ledger(old, **window))["total"]["reduction_mg"] == mg_of(100)
    assert (await city_ledger(new, **window))["total"]["reduction_mg"] == mg_of(200)
    assert (await consistency()).ok


async def test_self_reports_are_the_residents_own_row_of_the_enterprise_ledger(client: httpx.Client) -> None:
    resident = register(client)
    async with connection() as conn:
        before = await conn.fetchval(
            "SELECT coalesce(sum(reduction_mg), 0) FROM community_day WHERE scope = 'partner:self'")
    r = resident.post("/v1/me/activities", json={"activities": [activity(behaviour="clothes_repair")]})
    assert r.status_code == 200 and r.json()["receipts"][0]["verdict"] == "credited", r.text
    await step(wait=True)
    async with connection() as conn:
        after = await conn.fetchval(
            "SELECT coalesce(sum(reduction_mg), 0) FROM community_day WHERE scope = 'partner:self'")
    assert after - before == r.json()["receipts"][0]["credited_mg"]
    ledger = await enterprise_ledger(None, from_day=today() - timedelta(days=2), to_day=today() + timedelta(days=1))
    assert any(b["behaviour"] == "clothes_repair" for m in ledger["months"] for b in m["behaviours"])
    assert (await consistency()).ok


async def test_reports_moves_and_steps_racing_end_with_three_ledgers_that_agree(arena: Arena,
                                                                                 operator: Resident) -> None:
    """Reports from residents of three cities (one moving between them), reversals, and steps all at once;
    at the end the book, the city ledger and the enterprise ledger are the same total, and everyone's
    aggregate per behaviour and day equals the book's."""
    cities = [f"竞速市{tag()}" for _ in range(3)]
    players: list[Player] = [await arena.player(city=cities[i % 3], district="中区") for i in range(6)]
    rng = random.Random(8)
    receipts: list[Any] = []
    stop = asyncio.Event()

    async def resident(p: Player) -> None:
        for n in range(8):
            receipts.append(await p.credit(rng.randint(1, 300)))
            if p is players[0] and n % 3 == 0:
                await update_profile(p.id, {"city": rng.choice(cities)})
            await asyncio.sleep(0)

    async def worker() -> None:
        while not stop.is_set():
            await step()
            await asyncio.sleep(0.003)

    stepping = asyncio.create_task(worker())
    await asyncio.gather(*(resident(p) for p in players))
    for receipt in receipts[::7]:
        await reverse(operator, receipt)
    stop.set()
    await stepping
    await step(wait=True)
    check = await consistency()
    assert check.ok, check
    holders = [p.id for p in players]
    async with connection() as conn:
        counted = {(r["behaviour"], r["day"]): r["mg"] for r in await conn.fetch(
            """SELECT behaviour, day, sum(reduction_mg)::bigint AS mg FROM community_day
               WHERE scope = ANY($1::text[]) GROUP BY 1, 2""", [f"city:{c}" for c in cities])}
    assert counted == await book_by_day(holders)  # these cities hold exactly these residents' entries


# --- the API --------------------------------------------------------------------------------------------


async def test_programme_staff_read_their_city_only_and_operators_every_city(arena: Arena, client: httpx.Client,
                                                                              operator: Resident) -> None:
    city, other = f"职员市{tag()}", f"别的市{tag()}"
    p = await arena.player(city=city, district="北区", community="丁小区")
    await p.credit(100)
    await step(wait=True)
    staff, resident = register(client), register(client)
    await grant_role(uuid.UUID(staff.holder_id), "programme_staff", city)

    r = staff.get(f"/v1/ledgers/cities/{city}", params={"by": "community"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"]["reduction_mg"] == mg_of(100) and body["rows"][0]["region"] == f"{city}|北区|丁小区"
    assert staff.get("/v1/ledgers/cities").json() == {"all_cities": False, "cities": [city]}
    assert_problem(staff.get(f"/v1/ledgers/cities/{other}"), 403, "not-your-city")
    assert_problem(resident.get(f"/v1/ledgers/cities/{city}"), 403, "not-your-city")
    assert operator.get(f"/v1/ledgers/cities/{other}").status_code == 200
    assert_problem(client.get(f"/v1/ledgers/cities/{city}"), 401)
    path = f"/v1/ledgers/cities/{city}"
    assert_problem(operator.get(path, params={"from_day": "2025-01-01", "to_day": "2026-12-31"}), 422,
                   "range-too-long")
    assert_problem(operator.get(path, params={"from_day": "2026-02-01", "to_day": "2026-01-01"}), 422,
                   "invalid-range")
    assert operator.get(f"/v1/ledgers/cities/{city}", params={"by": "street"}).status_code == 400


async def test_the_enterprise_ledger_and_the_check_are_for_operators(arena: Arena, client: httpx.Client,
                                                                     operator: Resident) -> None:
    p = await arena.player(city=f"企业市{tag()}")
    await p.credit(100)
    await step(wait=True)
    r = operator.get(f"/v1/ledgers/partners/{arena.partner['id']}")
    assert r.status_code == 200, r.text
    month = r.json()["months"][-1]
    assert month["behaviours"] and month["participants"] >= 1
    assert_problem(register(client).get(f"/v1/ledgers/partners/{arena.partner['id']}"), 403, "operator-only")
    assert_problem(operator.get(f"/v1/ledgers/partners/{uuid.uuid4()}"), 404, "partner-not-found")
    check = operator.get("/v1/ledgers/consistency").json()
    assert check["ok"] is True and check["resident_mg"] == check["city_mg"] == check["enterprise_mg"]
