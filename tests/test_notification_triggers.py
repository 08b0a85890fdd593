"""Scheduled notifications (notifications/triggers_scheduled.py) on the real book, energy balls, friendships and
challenges: each trigger tells the right residents once however often its cron runs, in their own local time
(the evening streak reminder at 20:xx and the Monday report at 09:xx where each resident lives, with one `now`
for Shanghai and New York), leaves out whom it should (collected or long-ripe balls, a day already counted, a
one-day streak, strangers, excluded residents, a friend who did not pass, other and finished challenges), and
every message reads in zh-CN and in en through GET /v1/me/inbox. Time is passed explicitly; only balls' times
are set with SQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import msgspec
import pytest
from redis.asyncio import Redis

from gamification.challenges.service import finish_due, join
from gamification.friends.service import befriend
from gamification.leaderboards.service import exclude
from notifications.triggers_scheduled import (
    challenge_ending,
    energy_expiring,
    energy_ripe,
    overtaken,
    streak_at_risk,
    weekly_report,
)
from tests.leaderboard_support import GROWER, Arena, Player, make_arena, mg_of, tag
from tests.ledger_support import source_for
from tests.support import Resident
from wallet.db import connection
from wallet.energy.balls import collect
from wallet.energy.policy import EnergyPolicy, configure, policy
from wallet.intake.judge import record_reports
from wallet.intake.reports import Report
from wallet.partners.service import PartnerSpec, register_partner
from wallet.sealing import SecretBox

SH, NY = ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York")
MEAL = "plant_based_meal"  # food, 1,070 g a meal: outweighs a little clothes recycling


@pytest.fixture(scope="module")
async def arena(passwords: object, settings: Any, client: httpx.Client, db: object) -> AsyncIterator[Arena]:
    redis = Redis.from_url(os.environ["REDIS_URL"])
    yield await make_arena(passwords, settings, client, redis)
    await redis.aclose()


async def told(p: Player, kind: str) -> list[dict[str, Any]]:
    """The params of every message of `kind` the resident has, oldest first."""
    async with connection() as conn:
        rows = await conn.fetch("SELECT params FROM inbox_message WHERE holder_id = $1 AND kind = $2 ORDER BY id",
                                p.id, kind)
    return [msgspec.json.decode(r["params"]) for r in rows]


def profile(p: Player, **changes: str) -> None:
    r = p.http.patch("/v1/me", json=changes)
    assert r.status_code == 200, r.text


def read(p: Player, kind: str) -> dict[str, dict[str, Any]]:
    """The newest message of `kind` as the app shows it, in zh-CN and then in en (the language switched with
    PATCH /v1/me, as a resident does); every placeholder filled."""
    out = {}
    for language in ("zh-CN", "en"):
        profile(p, language=language)
        r = p.http.get("/v1/me/inbox", params={"limit": 100})
        assert r.status_code == 200, r.text
        message = next(m for m in r.json()["items"] if m["kind"] == kind)
        assert "{" not in message["title"] + message["body"] + message["link"], message
        out[language] = message
    return out


async def ball(p: Player, *, ripen: timedelta, window: timedelta) -> dict[str, Any]:
    """A credited report that grows a ball ripening `ripen` after now and expiring `window` later (the energy
    policy of this process, for this one report); the ball."""
    previous = policy()
    configure(EnergyPolicy(int(ripen.total_seconds()), int(window.total_seconds()), previous.friend_help_daily_cap))
    try:
        await p.credit(100)
    finally:
        configure(previous)
    async with connection() as conn:
        return dict(await conn.fetchrow(
            "SELECT amount, ripens_at, expires_at FROM energy_ball WHERE holder = $1 ORDER BY id DESC LIMIT 1", p.id))


def at(day: date, zone: ZoneInfo, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), zone)


def today_in(zone: ZoneInfo) -> date:
    return datetime.now(zone).date()


# --- energy ------------------------------------------------------------------------------------------------


async def test_ripe_balls_are_told_once_with_their_count_and_energy_and_again_only_after_four_hours(
        arena: Arena) -> None:
    ripe, gathered, long_ripe = [await arena.player() for _ in range(3)]
    first = await ball(ripe, ripen=timedelta(hours=3), window=timedelta(days=2))
    await ball(gathered, ripen=timedelta(0), window=timedelta(days=2))
    assert (await collect(gathered.id))["collected"] > 0
    await ball(long_ripe, ripen=timedelta(0), window=timedelta(days=2))  # ripe three hours before `now`: told then
    now = first["ripens_at"] + timedelta(minutes=10)

    assert await energy_ripe(now=now) >= 1
    assert await energy_ripe(now=now) == 0
    amount = first["amount"]
    assert await told(ripe, "energy_ripe") == [{"count": 1, "amount": amount, "balls_en": "1 energy ball"}]
    assert await told(gathered, "energy_ripe") == [] and await told(long_ripe, "energy_ripe") == []

    second = await ball(ripe, ripen=timedelta(hours=4), window=timedelta(days=2))  # inside the four hours: waits
    await energy_ripe(now=second["ripens_at"] + timedelta(minutes=5))
    assert len(await told(ripe, "energy_ripe")) == 1
    third = await ball(ripe, ripen=timedelta(hours=7, minutes=15), window=timedelta(days=2))  # after them
    assert third["ripens_at"] + timedelta(minutes=5) > now + timedelta(hours=4)
    await energy_ripe(now=third["ripens_at"] + timedelta(minutes=5))
    amount += second["amount"] + third["amount"]
    assert (await told(ripe, "energy_ripe"))[1:] == [{"count": 3, "amount": amount, "balls_en": "3 energy balls"}]

    shown = read(ripe, "energy_ripe")
    assert shown["zh-CN"]["title"] == "3颗能量球成熟了" and f"{amount}能量" in shown["zh-CN"]["body"]
    assert shown["en"]["title"] == "3 energy balls ripe to collect" and f"{amount} energy" in shown["en"]["body"]
    assert shown["en"]["link"] == "carbonwallet://energy" and shown["en"]["trigger"] == "energy_ripe"


def clock(expires: datetime, now: datetime) -> tuple[str, str]:
    """When a ball expires as a Shanghai resident reads it, in zh-CN and en."""
    local = expires.astimezone(SH)
    if local.date() == now.astimezone(SH).date():
        return f"{local:%H:%M}", f"{local:%H:%M}"
    return f"明天{local:%H:%M}", f"{local:%H:%M} tomorrow"


async def test_ripe_balls_expiring_within_twelve_hours_are_told_once_per_local_day(arena: Arena) -> None:
    soon, later, growing, gathered = [await arena.player() for _ in range(4)]
    first = await ball(soon, ripen=timedelta(0), window=timedelta(hours=10))
    await ball(later, ripen=timedelta(0), window=timedelta(hours=24))  # 20 hours after `now`
    await ball(growing, ripen=timedelta(hours=5), window=timedelta(hours=1))  # expires soon, but not ripe yet
    await ball(gathered, ripen=timedelta(0), window=timedelta(hours=10))
    await collect(gathered.id)
    now = first["expires_at"] - timedelta(hours=6)

    assert await energy_expiring(now=now) >= 1
    assert await energy_expiring(now=now) == 0
    zh, en = clock(first["expires_at"], now)
    assert await told(soon, "energy_expiring") == [{"count": 1, "amount": first["amount"], "time": zh,
                                                    "time_en": en, "hours": 6, "balls_en": "1 energy ball"}]
    assert [await told(p, "energy_expiring") for p in (later, growing, gathered)] == [[], [], []]

    next_day = datetime.combine(now.astimezone(SH).date() + timedelta(days=1), time(1), SH)
    second = await ball(soon, ripen=timedelta(0), window=next_day + timedelta(hours=6) - datetime.now(UTC))
    await energy_expiring(now=next_day)
    alive = [b for b in (first, second) if next_day < b["expires_at"] <= next_day + timedelta(hours=12)]
    amount, (zh, en) = sum(b["amount"] for b in alive), clock(min(b["expires_at"] for b in alive), next_day)
    assert [(m["count"], m["amount"], m["time"]) for m in (await told(soon, "energy_expiring"))[1:]] == [
        (len(alive), amount, zh)]
    shown = read(soon, "energy_expiring")
    assert shown["zh-CN"]["title"] == f"{amount}能量即将过期" and f"{zh}过期" in shown["zh-CN"]["body"]
    assert f"the first expires at {en}" in shown["en"]["body"] and "ripe and not yet" in shown["en"]["body"]


# --- streak ------------------------------------------------------------------------------------------------


async def credit_on(p: Player, days: list[date], zone: ZoneInfo) -> None:
    """A credited report at noon of each local day (or just before now, for a today whose noon has not come)."""
    for day in days:
        await p.credit(100, occurred=max(at(day, zone, 0), min(at(day, zone, 12), datetime.now(UTC) - timedelta(
            minutes=1))))


async def test_a_streak_at_risk_is_told_at_twenty_oclock_where_each_resident_lives_once_a_day(arena: Arena) -> None:
    sh_day, ny_day = today_in(SH), today_in(NY)
    risky, counted, fresh, new_yorker = [await arena.player() for _ in range(4)]
    profile(new_yorker, time_zone="America/New_York")
    await credit_on(risky, [sh_day - timedelta(days=2), sh_day - timedelta(days=1)], SH)
    await credit_on(counted, [sh_day - timedelta(days=2), sh_day - timedelta(days=1), sh_day], SH)
    await credit_on(fresh, [sh_day - timedelta(days=1)], SH)  # a one-day streak is not worth a reminder
    await credit_on(new_yorker, [ny_day - timedelta(days=2), ny_day - timedelta(days=1)], NY)

    shanghai_evening = at(sh_day, SH, 20, 30)  # 07:30 or 08:30 in New York
    assert await streak_at_risk(now=shanghai_evening) >= 1
    assert await streak_at_risk(now=shanghai_evening) == 0
    await streak_at_risk(now=shanghai_evening + timedelta(minutes=20))
    assert await told(risky, "streak_at_risk") == [{"days": 2}]
    assert [await told(p, "streak_at_risk") for p in (counted, fresh, new_yorker)] == [[], [], []]
    await streak_at_risk(now=at(sh_day, SH, 19, 55))  # before the evening: nobody
    await streak_at_risk(now=at(sh_day, SH, 21, 5))  # after it: nobody
    assert await told(new_yorker, "streak_at_risk") == []

    new_york_evening = at(ny_day, NY, 20, 30)  # the next morning in Shanghai
    assert await streak_at_risk(now=new_york_evening) >= 1
    assert await told(new_yorker, "streak_at_risk") == [{"days": 2}]
    assert len(await told(risky, "streak_at_risk")) == 1
    shown = read(new_yorker, "streak_at_risk")
    assert shown["zh-CN"]["title"] == "连续2天的减排就要中断了"
    assert shown["en"]["title"] == "Keep your 2-day streak going" and shown["en"]["link"] == "carbonwallet://progress"


# --- weekly report -----------------------------------------------------------------------------------------


async def test_the_weekly_report_comes_on_monday_at_nine_local_time_with_grams_change_rank_category_and_tip(
        arena: Arena, settings: Any) -> None:
    partner = (await register_partner(PartnerSpec(
        name=f"周报测试 {tag()}", name_en="Weekly test", kind="other", redirect_uris=["https://p.example/cb"],
        allowed_scopes=["activities:write"], allowed_behaviours=[GROWER, MEAL], trust_tier="verified"),
        SecretBox(settings.data_key))).partner

    async def report(p: Player, behaviour: str, quantity: int, when: datetime) -> None:
        (receipt,) = await record_reports(await source_for(p.id, partner),
                                          [Report(f"wr-{uuid.uuid4().hex}", behaviour, quantity, when)])
        assert receipt.verdict == "credited", receipt

    monday = today_in(SH) - timedelta(days=today_in(SH).weekday())
    ny_monday = today_in(NY) - timedelta(days=today_in(NY).weekday())
    steady, newcomer, new_yorker, climber = [await arena.player() for _ in range(4)]
    profile(new_yorker, time_zone="America/New_York")
    await befriend(steady.id, newcomer.id)
    await befriend(steady.id, climber.id)
    await report(climber, GROWER, 300, at(monday - timedelta(days=9), SH, 12))  # ahead the week before only
    await report(steady, GROWER, 100, at(monday - timedelta(days=10), SH, 12))  # the week before
    await report(steady, GROWER, 100, at(monday - timedelta(days=5), SH, 12))  # last week: clothing…
    await report(steady, MEAL, 1, at(monday - timedelta(days=4), SH, 12))  # …and more food
    await report(newcomer, GROWER, 100, at(monday - timedelta(days=3), SH, 12))
    await report(new_yorker, GROWER, 100, at(ny_monday - timedelta(days=3), NY, 12))

    shanghai_morning = at(monday, SH, 9, 30)  # Sunday evening in New York
    assert await weekly_report(now=shanghai_morning) >= 2
    assert await weekly_report(now=shanghai_morning) == 0
    assert await weekly_report(now=at(monday, SH, 10, 30)) == 0
    last = (monday - timedelta(days=7)).isocalendar()
    week = f"{last[0]}-W{last[1]:02d}"
    (mine,) = await told(steady, "weekly_report")
    grams = (mg_of(100) + mg_of(1, MEAL)) // 1000
    change = round((grams - mg_of(100) // 1000) * 100 / (mg_of(100) // 1000))
    assert (mine["week"], mine["grams_en"], mine["change"], mine["category"]) == (
        week, f"{grams / 1000:,.1f} kg", f"+{change}%", "food")
    ((theirs,),) = [await told(newcomer, "weekly_report")]
    assert (theirs["change"], theirs["category"], theirs["grams_en"]) == ("new", "clothing",
                                                                          f"{mg_of(100) // 1000} g")
    # among friends: first last week, second the week before (the climber led then); the newcomer stayed second
    assert mine["rank_en"] == "You are #1 among your friends (#2 the week before). "
    assert theirs["rank"] == "在好友中仍排第2名。"
    assert await told(new_yorker, "weekly_report") == []

    assert await weekly_report(now=at(ny_monday, NY, 9, 30)) >= 1
    assert [m["category"] for m in await told(new_yorker, "weekly_report")] == ["clothing"]
    shown = read(steady, "weekly_report")
    assert shown["zh-CN"]["title"] == f"你的周报：上周减排{grams / 1000:,.1f}千克"
    assert f"比前一周多{change}%" in shown["zh-CN"]["body"] and "「饮食」" in shown["zh-CN"]["body"]
    assert f"up {change}% on the week before" in shown["en"]["body"] and "from food. Tip: " in shown["en"]["body"]
    assert shown["en"]["link"] == f"carbonwallet://reports/weekly/{week}"


# --- overtaken ---------------------------------------------------------------------------------------------


async def test_a_friend_passing_me_on_this_weeks_board_is_told_once_and_nobody_else_is(
        arena: Arena, operator: Resident) -> None:
    redis, now = arena.redis, datetime.now(UTC)
    local = now.astimezone(SH)
    week_start = datetime.combine(local.date() - timedelta(days=local.weekday()), time.min, SH)
    occurred = max(week_start + timedelta(seconds=1), now - timedelta(minutes=1))
    await overtaken(redis, now=now)  # the cursor: where the book is now
    me, friend, slow, stranger, cheat = [await arena.player() for _ in range(5)]
    await befriend(me.id, friend.id)
    await befriend(slow.id, me.id)
    await befriend(me.id, cheat.id)
    await exclude(cheat.id, "tampered reports", uuid.UUID(operator.holder_id))

    await me.credit(100, occurred=occurred)
    await overtaken(redis, now=now)
    await friend.credit(200, occurred=occurred)  # passes me
    await slow.credit(50, occurred=occurred)  # does not
    for p in (stranger, cheat):
        await p.credit(500, occurred=occurred)
    assert await overtaken(redis, now=now) >= 1
    assert await overtaken(redis, now=now) == 0
    await friend.credit(100, occurred=occurred)  # further ahead: told already this week
    await overtaken(redis, now=now)
    g = mg_of(100) // 1000, mg_of(200) // 1000
    assert [m["friend"] for m in await told(me, "overtaken")] == [friend.nickname]
    assert (await told(me, "overtaken"))[0] | {"week": ""} == {
        "friend": friend.nickname, "friend_total": f"{g[1]}克", "friend_total_en": f"{g[1]} g", "mine": f"{g[0]}克",
        "mine_en": f"{g[0]} g", "gap": f"{g[1] - g[0]}克", "gap_en": f"{g[1] - g[0]} g", "week": ""}
    assert [await told(p, "overtaken") for p in (friend, slow, cheat, stranger)] == [[], [], [], []]

    await me.credit(300, occurred=occurred)  # now I pass my friend, and nobody else
    await overtaken(redis, now=now)
    assert [m["friend"] for m in await told(friend, "overtaken")] == [me.nickname]
    assert await told(slow, "overtaken") == [] and len(await told(me, "overtaken")) == 1
    shown = read(me, "overtaken")
    assert shown["zh-CN"]["title"] == f"{friend.nickname}在本周好友榜上超过了你"
    assert shown["en"]["body"].startswith(f"{friend.nickname} has avoided {g[1]} g of CO2e this week and you {g[0]} g")
    assert shown["en"]["link"] == "carbonwallet://leaderboards/friends/week"


# --- challenges --------------------------------------------------------------------------------------------


def challenge(operator: Resident, now: datetime, ends_in: timedelta) -> int:
    body = {"code": f"ce-{tag()}", "title_zh": "绿色冲刺", "title_en": "Green sprint", "scope": "global",
            "goal_kind": "grams", "goal": 10_000, "starts_at": (now - timedelta(days=1)).isoformat(),
            "ends_at": (now + ends_in).isoformat()}
    r = operator.post("/v1/admin/challenges", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def test_every_participant_of_a_challenge_ending_within_a_day_is_told_once_in_batches(
        arena: Arena, operator: Resident) -> None:
    now = datetime.now(UTC)
    ending, later, finished = (challenge(operator, now, timedelta(hours=h)) for h in (12, 72, 1))
    runners = [await arena.player() for _ in range(3)]
    await runners[0].credit(100)
    for p in runners:
        await join(p.id, ending)
    waiting, done = await arena.player(), await arena.player()
    await join(waiting.id, later)
    await join(done.id, finished)
    assert await finish_due(now=now + timedelta(hours=2)) >= 1  # its window closed: a result, no reminder

    assert await challenge_ending(now=now, batch=2) >= 3
    assert await challenge_ending(now=now, batch=2) == 0
    grams = mg_of(100) // 1000
    for p in runners:
        assert await told(p, "challenge_ending") == [{
            "challenge_id": ending, "challenge": "绿色冲刺", "challenge_en": "Green sprint",
            "progress": f"{grams}克减排", "progress_en": f"{grams} g CO2e", "goal": "10.0千克减排",
            "goal_en": "10.0 kg CO2e", "percent": grams * 100 // 10_000}]
    assert await told(waiting, "challenge_ending") == [] and await told(done, "challenge_ending") == []
    shown = read(runners[0], "challenge_ending")
    assert shown["zh-CN"]["title"] == "「绿色冲刺」将在24小时内结束"
    percent = grams * 100 // 10_000
    assert f"完成了{grams}克减排，目标是10.0千克减排（{percent}%）" in shown["zh-CN"]["body"]
    assert shown["en"]["title"] == "“Green sprint” ends within 24 hours"
    assert shown["en"]["body"].startswith(f"So far {grams} g CO2e of the 10.0 kg CO2e goal ({percent}%).")
    assert shown["en"]["link"] == f"carbonwallet://challenges/{ending}"
