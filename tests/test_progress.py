"""Levels, streaks and badges: `streak_of` as a pure function (deterministic, bounded, a freeze per seven
counted days used automatically for a missed day, days after today ignored, at risk when today is still
empty), `level_of` and the validation of `rules.toml` (a broken copy is refused naming the entry); a streak
built from each entry's recorded `local_day`, so travel across time zones keeps it; every badge earned over
HTTP from the real paths (credited actions, a fulfilled redemption, a donation, a joined challenge), with
progress capped at the target, exactly once however often, concurrently or in whatever order it is
evaluated (the API, the follower, the event handlers), an inbox message per badge, and kept after a
reversal; the follower evaluating the residents whose books changed since its cursor."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from gamification.progress.rules import RULES_PATH, Streak, level_of, rules, streak_of
from gamification.progress.service import HANDLERS, badges_of, evaluate, follow_book, progress
from tests.leaderboard_support import Arena, Player, make_arena, mg_of
from tests.ledger_support import source_for
from tests.mall_support import fund, new_reward, redeem
from tests.partner_support import activity
from tests.support import Resident, deliver_pending_events, race
from wallet.db import connection
from wallet.intake.judge import Receipt, record_reports
from wallet.intake.reports import Report
from wallet.outbox.service import Event
from wallet.partners.service import PartnerSpec, register_partner
from wallet.sealing import SecretBox

SHANGHAI, LOS_ANGELES = ZoneInfo("Asia/Shanghai"), ZoneInfo("America/Los_Angeles")
FREEZE_EVERY, FREEZES_MAX = rules().freeze_every_days, rules().freezes_max
D0 = date(2026, 1, 1)
# One credited action per category, each with a quantity the verified partner may report.
ONE_PER_CATEGORY = [("clothes_recycling", 100), ("plant_based_meal", 1), ("home_water_saved", 100),
                    ("shared_bike_ride", 1), ("parcel_box_reuse", 1), ("online_meeting", 1), ("e_ticket", 1)]


def days(*offsets: int) -> list[date]:
    return [D0 + timedelta(days=o) for o in sorted(set(offsets))]


# --- streak_of, pure ------------------------------------------------------------------------------------

day_sets = st.sets(st.integers(0, 60), max_size=40)


@given(day_sets, st.integers(0, 70))
def test_a_streak_is_deterministic_bounded_and_ignores_days_after_today(offsets: set[int], t: int) -> None:
    today = D0 + timedelta(days=t)
    s = streak_of(days(*offsets), today)
    assert s == streak_of(days(*offsets), today)
    assert 0 <= s.current <= s.longest <= len([o for o in offsets if o <= t])
    assert 0 <= s.freezes <= FREEZES_MAX
    assert s == streak_of(days(*[o for o in offsets if o <= t]), today)
    assert s.counted_today == (t in offsets)
    assert not (s.at_risk and s.counted_today) and (s.current > 0 or not s.at_risk)
    in_a_row = [o for o in range(t + 1) if all(o - k in offsets for k in range(s.longest + 1))]
    assert not in_a_row  # no more days really in a row than the longest streak


@given(st.integers(1, 40))
def test_a_run_ending_today_counts_every_day_and_earns_a_freeze_per_seven(n: int) -> None:
    s = streak_of(days(*range(n)), D0 + timedelta(days=n - 1))
    assert (s.current, s.longest, s.freezes) == (n, n, min(n // FREEZE_EVERY, FREEZES_MAX))
    assert (s.counted_today, s.at_risk) == (True, False)


@given(st.integers(1, 30), st.integers(1, 4))
def test_missed_days_are_bridged_by_freezes_and_break_the_streak_when_more(run: int, missed: int) -> None:
    earned = min(run // FREEZE_EVERY, FREEZES_MAX)
    today = run + missed
    s = streak_of(days(*range(run), today), D0 + timedelta(days=today))
    if missed <= earned:
        left = earned - missed
        again = (run + 1) % FREEZE_EVERY == 0 and left < FREEZES_MAX  # the day after the gap may earn one
        assert (s.current, s.longest, s.freezes) == (run + 1, run + 1, left + again)
    else:
        assert (s.current, s.longest, s.freezes) == (1, run, earned)  # a break keeps the saved freezes


def test_a_run_of_seven_days_earns_a_freeze_that_keeps_the_streak_over_one_missed_day() -> None:
    assert streak_of(days(*range(7)), D0 + timedelta(days=6)).freezes == 1
    kept = streak_of(days(*range(7), 8), D0 + timedelta(days=8))
    assert (kept.current, kept.longest, kept.freezes, kept.counted_today) == (8, 8, 0, True)
    broken = streak_of(days(*range(6), 7), D0 + timedelta(days=7))
    assert (broken.current, broken.longest) == (1, 6)
    two_missed = streak_of(days(*range(7), 9), D0 + timedelta(days=9))
    assert (two_missed.current, two_missed.longest) == (1, 7)


def test_a_streak_is_at_risk_when_yesterday_counted_and_today_not_yet() -> None:
    at_risk = streak_of(days(0, 1, 2), D0 + timedelta(days=3))
    assert (at_risk.current, at_risk.counted_today, at_risk.at_risk) == (3, False, True)
    gone = streak_of(days(0, 1, 2), D0 + timedelta(days=4))
    assert (gone.current, gone.longest, gone.at_risk) == (0, 3, False)
    frozen = streak_of(days(*range(7)), D0 + timedelta(days=8))  # yesterday bridged by the saved freeze
    assert (frozen.current, frozen.freezes, frozen.at_risk) == (7, 0, True)
    assert streak_of([], D0) == streak_of(days(5), D0 + timedelta(days=4)) == Streak(0, 0, 0, False, False)


# --- levels and the rules file --------------------------------------------------------------------------


@pytest.mark.parametrize(("grams", "number", "name", "following"), [
    (-5, 1, "Sprout", 1_000), (0, 1, "Sprout", 1_000), (999, 1, "Sprout", 1_000), (1_000, 2, "Seedling", 10_000),
    (10_000, 3, "Sapling", 50_000), (99_999, 4, "Tree", 100_000), (500_000, 6, "Forest", 1_000_000),
    (1_000_000, 7, "Guardian of the green", None), (10**12, 7, "Guardian of the green", None)])
def test_a_level_starts_at_its_threshold_and_names_the_next(grams: int, number: int, name: str,
                                                             following: int | None) -> None:
    level, nxt = level_of(grams)
    assert (level.number, level.name_en, nxt.grams if nxt else None) == (number, name, following)


@given(st.integers(0, 2_000_000))
def test_the_level_reached_is_the_highest_threshold_at_or_below(grams: int) -> None:
    level, nxt = level_of(grams)
    assert level.grams <= grams and (nxt is None or grams < nxt.grams)
    assert nxt is None or nxt.number == level.number + 1


def test_the_shipped_rules_are_valid() -> None:
    r = rules()
    assert [lv.grams for lv in r.levels] == [0, 1_000, 10_000, 50_000, 100_000, 500_000, 1_000_000]
    assert len({b.code for b in r.badges}) == len(r.badges) == 10
    assert (r.freeze_every_days, r.freezes_max) == (7, 2)


def broken(tmp_path: Path, old: str, new: str) -> Path:
    text = RULES_PATH.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "rules.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(("old", "new", "named"), [
    ('code = "first-ride"\nkind = "actions"', 'code = "first-ride"\nkind = "miles"', "'first-ride': kind"),
    ('kind = "redemptions"\ntarget = 1', 'kind = "redemptions"\ntarget = 0', "'first-redemption': target"),
    ('kind = "donations"\ntarget = 1', 'kind = "donations"\ntarget = "1"', "'first-donation': target"),
    ('["shared_bike_ride", "private_bike_ride"]', '["shared_bike_ride", "hoverboard"]',
     "'first-ride': unknown behaviours ['hoverboard']"),
    ('kind = "categories"\ntarget = 7', 'kind = "categories"\ntarget = 8', "'category-explorer': there are only 7"),
    ("grams = 10_000\n", "grams = 1_000\n", "levels must start at 0 grams and rise strictly"),
    ("grams = 0\n", "grams = 5\n", "levels must start at 0 grams"),
    ('code = "saved-100kg"', 'code = "saved-10kg"', "saved-10kg"),
    ('name_en = "Challenger"\n', "", "'challenger'"),
    ("freeze_every_days = 7", "freeze_every_days = 0", "freeze_every_days"),
])
def test_a_broken_rules_file_is_refused_naming_the_entry(tmp_path: Path, old: str, new: str, named: str) -> None:
    path = broken(tmp_path, old, new)
    with pytest.raises(ValueError, match=r"rules\.toml") as refused:
        rules(path)
    assert named in str(refused.value)


# --- over HTTP, on the real book ------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def arena(passwords: object, settings: Any, client: httpx.Client, db: object) -> AsyncIterator[Arena]:
    redis = Redis.from_url(os.environ["REDIS_URL"])
    yield await make_arena(passwords, settings, client, redis)
    await redis.aclose()


@pytest.fixture(scope="module")
async def everything(settings: Any, db: object) -> dict[str, Any]:
    """A verified partner that may report one behaviour of every category, and both bike rides."""
    allowed = [b for b, _ in ONE_PER_CATEGORY] + ["private_bike_ride"]
    return (await register_partner(PartnerSpec(
        name=f"全能 {uuid.uuid4().hex[:6]}", name_en="All-rounder", kind="other",
        redirect_uris=["https://partner.example/oauth/callback"], allowed_scopes=["activities:write"],
        allowed_behaviours=allowed, trust_tier="verified"), SecretBox(settings.data_key))).partner


async def act(p: Player, partner: dict[str, Any], behaviour: str, quantity: int = 1,
              occurred: datetime | None = None) -> Receipt:
    source = await source_for(p.id, partner)
    occurred = occurred or datetime.now(UTC) - timedelta(minutes=5)
    (receipt,) = await record_reports(source, [Report(f"pg-{uuid.uuid4().hex}", behaviour, quantity, occurred)])
    assert receipt.verdict == "credited", receipt
    return receipt


def mine(p: Player | Resident) -> dict[str, Any]:
    http = p.http if isinstance(p, Player) else p
    r = http.get("/v1/me/progress")
    assert r.status_code == 200, r.text
    return r.json()


def badge(body: dict[str, Any], code: str) -> dict[str, Any]:
    return next(b for b in body["badges"] if b["code"] == code)


def earned(body: dict[str, Any]) -> set[str]:
    return {b["code"] for b in body["badges"] if b["earned_at"] is not None}


async def earned_events(holder: uuid.UUID) -> Counter[str]:
    async with connection() as conn:
        rows = await conn.fetch("SELECT payload->>'badge' AS b FROM outbox_event WHERE name = 'badge.earned' "
                                "AND holder_id = $1", holder)
    return Counter(r["b"] for r in rows)


async def test_a_first_credited_action_earns_first_green_action_and_only_a_bike_ride_first_ride(
        arena: Arena, everything: dict[str, Any]) -> None:
    fresh = await arena.player()
    held = fresh.http.post("/v1/me/activities", json={"activities": [
        activity(behaviour="clean_plate", details={"photo_ref": "photos/plate.jpg"})]})
    assert held.status_code == 200 and held.json()["receipts"][0]["verdict"] == "held", held.text
    assert earned(mine(fresh)) == set() and mine(fresh)["level"]["number"] == 1  # held never counts
    await fresh.credit(100)
    body = mine(fresh)
    assert earned(body) == {"first-green-action"}
    assert (badge(body, "first-green-action")["value"], badge(body, "first-ride")["value"]) == (1, 0)
    assert body["grams"] == mg_of(100) // 1000 and body["next_level"]["grams"] == 1_000
    rider = await arena.player()
    await act(rider, everything, "private_bike_ride", 3_000)
    await act(rider, everything, "shared_bike_ride", 1)
    body = mine(rider)
    assert earned(body) == {"first-green-action", "first-ride"}
    assert badge(body, "first-ride")["value"] == 1  # two rides, shown capped at the target


async def test_ten_kilograms_earn_saved_10kg_and_a_reversal_below_it_does_not_take_the_badge_back(
        arena: Arena, operator: Resident) -> None:
    p = await arena.player()
    await p.credit(100)
    big = await p.credit(7_813)  # 10,000.64 g
    body = mine(p)
    assert body["grams"] == (mg_of(100) + mg_of(7_813)) // 1000 >= 10_000
    assert (body["level"]["name"]["en"], body["next_level"]["grams"]) == ("Sapling", 50_000)
    assert {"saved-10kg", "first-green-action"} <= earned(body) and "saved-100kg" not in earned(body)
    assert (badge(body, "saved-10kg")["value"], badge(body, "saved-100kg")["value"]) == (10_000, body["grams"])
    when = badge(body, "saved-10kg")["earned_at"]
    async with connection() as conn:
        entry = await conn.fetchval("SELECT id FROM book_entry WHERE activity = $1", big.activity_id)
    r = operator.post(f"/v1/admin/book/entries/{entry}/reverse", json={"reason": "重复上报 / reported twice"})
    assert r.status_code == 201, r.text
    after = mine(p)
    assert after["grams"] == mg_of(100) // 1000 and after["level"]["name"]["en"] == "Sprout"
    assert badge(after, "saved-10kg")["value"] == after["grams"]  # progress is what stands now...
    assert badge(after, "saved-10kg")["earned_at"] == when  # ...but a badge, once earned, stays
    assert (await earned_events(p.id))["saved-10kg"] == 1


async def test_category_explorer_needs_a_credited_action_in_all_seven_categories(
        arena: Arena, everything: dict[str, Any]) -> None:
    p = await arena.player()
    start = datetime.now(UTC) - timedelta(hours=2)
    for i, (behaviour, quantity) in enumerate(ONE_PER_CATEGORY[:-1]):
        await act(p, everything, behaviour, quantity, start + timedelta(minutes=10 * i))
    body = mine(p)
    assert badge(body, "category-explorer")["value"] == 6 and "category-explorer" not in earned(body)
    await act(p, everything, *ONE_PER_CATEGORY[-1])
    body = mine(p)
    assert badge(body, "category-explorer")["value"] == 7 and "category-explorer" in earned(body)


async def test_seven_days_in_a_row_make_a_streak_with_a_freeze_and_the_streak_7_badge(arena: Arena) -> None:
    p = await arena.player()
    now = datetime.now(UTC)
    moments = [now - timedelta(days=k, minutes=2) for k in range(6, -1, -1)]
    for moment in moments:
        await p.credit(10, occurred=moment)
    body = mine(p)
    counted_today = moments[-1].astimezone(SHANGHAI).date() == datetime.now(UTC).astimezone(SHANGHAI).date()
    assert body["streak"] == {"current": 7, "longest": 7, "freezes": 1, "counted_today": counted_today,
                              "at_risk": not counted_today}
    assert "streak-7" in earned(body) and "streak-30" not in earned(body)
    assert badge(body, "streak-30")["value"] == 7


async def test_a_streak_follows_each_entrys_local_day_across_a_trip_between_time_zones(arena: Arena) -> None:
    """Shanghai on day X at 10:00, then Los Angeles on day X+1 at 20:00, which is X+2 in Shanghai: the days
    recorded when each was judged (X, X+1) make one streak; recomputed in one zone they would not."""
    p = await arena.player()
    x = datetime.now(UTC).date() - timedelta(days=5)
    first = datetime.combine(x, time(10), SHANGHAI)
    second = datetime.combine(x + timedelta(days=1), time(20), LOS_ANGELES)
    assert second.astimezone(SHANGHAI).date() == x + timedelta(days=2)
    await p.credit(10, occurred=first)
    assert p.http.patch("/v1/me", json={"time_zone": "America/Los_Angeles"}).status_code == 200
    await p.credit(10, occurred=second)
    async with connection() as conn:
        recorded = [r["local_day"] for r in await conn.fetch(
            "SELECT local_day FROM book_entry WHERE holder = $1 ORDER BY occurred_at", p.id)]
    assert recorded == [x, x + timedelta(days=1)]
    there = (await progress(p.id, now=second + timedelta(minutes=1)))["streak"]
    assert (there.current, there.longest, there.counted_today) == (2, 2, True)
    assert p.http.patch("/v1/me", json={"time_zone": "Asia/Shanghai"}).status_code == 200
    home = (await progress(p.id, now=second + timedelta(minutes=1)))["streak"]  # X+2 at home: not yet today
    assert (home.current, home.longest, home.counted_today, home.at_risk) == (2, 2, False, True)


# --- once, whatever the order ---------------------------------------------------------------------------


def project_and_challenge(operator: Resident) -> tuple[int, int]:
    tag = uuid.uuid4().hex[:10]
    project = operator.post("/v1/admin/projects", json={
        "code": f"pg-{tag}", "title_zh": "种树", "title_en": "Trees", "outcome_zh": "一棵树",
        "outcome_en": "A tree", "goal": 10**9})
    assert project.status_code == 201, project.text
    now = datetime.now(UTC)
    challenge = operator.post("/v1/admin/challenges", json={
        "code": f"pg-{tag}", "title_zh": "挑战", "title_en": "Challenge", "scope": "global", "goal_kind": "grams",
        "goal": 1_000, "starts_at": (now - timedelta(days=1)).isoformat(),
        "ends_at": (now + timedelta(days=7)).isoformat()})
    assert challenge.status_code == 201, challenge.text
    return project.json()["id"], challenge.json()["id"]


async def test_each_badge_is_earned_once_however_often_concurrently_and_in_whatever_order_it_is_evaluated(
        arena: Arena, operator: Resident, base_url: str) -> None:
    p = await arena.player()
    await p.credit(100)
    fund(operator, p.http, 300)
    assert redeem(p.http, new_reward(operator, price=100, stock=5)["id"]).json()["state"] == "fulfilled"
    project_id, challenge_id = project_and_challenge(operator)
    gift = p.http.post(f"/v1/projects/{project_id}/donations", json={"amount": 50},
                       headers={"Idempotency-Key": uuid.uuid4().hex})
    assert gift.status_code == 201, gift.text
    assert p.http.post(f"/v1/me/challenges/{challenge_id}").status_code == 200
    expected = {"first-green-action", "first-redemption", "first-donation", "challenger"}

    first = await asyncio.gather(*(evaluate([p.id]) for _ in range(6)))  # the first evaluation, six at once
    assert Counter(b for awards in first for _, b in awards) == Counter(expected)

    async with connection() as conn:  # the events those facts recorded, handled newest first and twice
        rows = await conn.fetch("SELECT * FROM outbox_event WHERE holder_id = $1 AND name = ANY($2::text[]) "
                                "ORDER BY id DESC", p.id, list(HANDLERS))
    assert {r["name"] for r in rows} == set(HANDLERS)
    for row in [*rows, *rows]:
        event = Event(row["event_id"], row["name"], row["holder_id"], {}, row["created_at"])
        for handler in HANDLERS[row["name"]]:
            await handler(event)
    await follow_book()
    answers = race(4, lambda: httpx.Client(base_url=base_url, timeout=30),
                   lambda http: http.get("/v1/me/progress", headers=p.http.headers))
    assert {a.status_code for a in answers} == {200}
    await deliver_pending_events()
    assert await evaluate([p.id]) == []

    assert Counter(a["badge"] for a in await badges_of(p.id)) == Counter(expected)
    assert await earned_events(p.id) == Counter(expected)
    body = mine(p)
    assert earned(body) == expected
    assert all(b["value"] <= b["target"] for b in body["badges"])
    inbox = p.http.get("/v1/me/inbox", params={"limit": 100}).json()["items"]
    names = {b.code: b.name_zh for b in rules().badges}
    assert sorted(m["title"] for m in inbox if m["kind"] == "badge_earned") == sorted(
        f"获得徽章：{names[code]}" for code in expected)


async def test_residents_reading_their_progress_at_once_earn_a_badge_once(arena: Arena, base_url: str) -> None:
    p = await arena.player()
    await p.credit(100)
    answers = race(6, lambda: httpx.Client(base_url=base_url, timeout=30),
                   lambda http: http.get("/v1/me/progress", headers=p.http.headers))
    assert {a.status_code for a in answers} == {200}
    assert {badge(a.json(), "first-green-action")["earned_at"] for a in answers} != {None}
    assert [a["badge"] for a in await badges_of(p.id)] == ["first-green-action"]
    assert await earned_events(p.id) == Counter({"first-green-action": 1})


# --- the follower ---------------------------------------------------------------------------------------


async def cursor() -> str:
    async with connection() as conn:
        return await conn.fetchval("SELECT snapshot FROM progress_cursor WHERE id = 1")


async def test_the_follower_evaluates_residents_whose_books_changed_and_moves_its_cursor(arena: Arena) -> None:
    await follow_book()  # whatever earlier tests wrote
    before = await cursor()
    p, q = await arena.player(), await arena.player()
    await p.credit(100)
    assert await badges_of(p.id) == []
    assert await follow_book() == 1  # p only: q's book did not change
    assert [a["badge"] for a in await badges_of(p.id)] == ["first-green-action"]
    assert await badges_of(q.id) == []
    moved = await cursor()
    assert moved != before
    assert await follow_book() == 0
    assert [a["badge"] for a in await badges_of(p.id)] == ["first-green-action"]
    assert await earned_events(p.id) == Counter({"first-green-action": 1})
    await p.credit(7_813)
    assert await follow_book() == 1
    assert Counter(a["badge"] for a in await badges_of(p.id)) == Counter({"first-green-action": 1, "saved-10kg": 1})
