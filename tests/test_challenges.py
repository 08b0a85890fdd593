"""Challenges over HTTP on the real book: only operators create them, and a challenge that is not valid is
refused naming the problem (409 for a code taken); anyone lists and reads them without a token; residents
join only challenges of their city, community or team (403 otherwise) and joining twice changes nothing;
progress sums the participants' settled entries inside the window (held ones never, a reversal lowers it),
for the challenge's behaviours, in grams, energy or actions; contributors are ranked with nicknames only for
residents who opted in; outcomes are progress ÷ unlock_every; the worker's step records met or missed once,
and a late entry does not change it; after the end joining is 409 and before it leaving works."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from gamification.challenges.service import finish_due, join, step
from tests.leaderboard_support import GROWER, Arena, Player, create_team, make_arena, mg_of, tag
from tests.leaderboard_support import join as join_team
from tests.ledger_support import source_for
from tests.partner_support import activity
from tests.support import Resident, assert_problem
from wallet.db import connection
from wallet.intake.judge import Receipt, record_reports
from wallet.intake.reports import Report
from wallet.methodology.catalogue import current_version, energy_for
from wallet.partners.service import PartnerSpec, register_partner
from wallet.sealing import SecretBox

BIKE, MEAL = "shared_bike_ride", "plant_based_meal"


@pytest.fixture(scope="module")
async def arena(passwords: object, settings: Any, client: httpx.Client, db: object) -> AsyncIterator[Arena]:
    redis = Redis.from_url(os.environ["REDIS_URL"])
    yield await make_arena(passwords, settings, client, redis)
    await redis.aclose()


@pytest.fixture(scope="module")
async def partner(settings: Any, db: object) -> dict[str, Any]:
    """A verified partner reporting bike rides and plant-based meals."""
    return (await register_partner(PartnerSpec(
        name=f"骑行餐饮 {tag()}", name_en="Ride and meal", kind="other",
        redirect_uris=["https://partner.example/oauth/callback"], allowed_scopes=["activities:write"],
        allowed_behaviours=[BIKE, MEAL], trust_tier="verified"), SecretBox(settings.data_key))).partner


async def act(p: Player, partner: dict[str, Any], behaviour: str, occurred: datetime | None = None) -> Receipt:
    occurred = occurred or datetime.now(UTC) - timedelta(minutes=5)
    (receipt,) = await record_reports(await source_for(p.id, partner),
                                      [Report(f"ch-{uuid.uuid4().hex}", behaviour, 1, occurred)])
    assert receipt.verdict == "credited", receipt
    return receipt


def spec(**fields: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    body = {"code": f"ch-{tag()}", "title_zh": "绿色周", "title_en": "Green week", "scope": "global",
            "goal_kind": "grams", "goal": 10_000, "starts_at": now - timedelta(days=1),
            "ends_at": now + timedelta(days=7), **fields}
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in body.items()}


def create(operator: Resident, **fields: Any) -> dict[str, Any]:
    r = operator.post("/v1/admin/challenges", json=spec(**fields))
    assert r.status_code == 201, r.text
    return r.json()


def read(client: httpx.Client, challenge_id: int) -> dict[str, Any]:
    r = client.get(f"/v1/challenges/{challenge_id}")
    assert r.status_code == 200, r.text
    return r.json()


async def counted(client: httpx.Client, challenge_id: int) -> dict[str, Any]:
    """A read after the worker's step has counted the book (it follows it every second); `now` in the past: this
    step records no result, the tests of results finish challenges themselves."""
    await step(wait=True, now=datetime(2000, 1, 1, tzinfo=UTC))
    return read(client, challenge_id)


def enter(p: Player, challenge_id: int) -> dict[str, Any]:
    r = p.http.post(f"/v1/me/challenges/{challenge_id}")
    assert r.status_code == 200, r.text
    return r.json()


async def reverse(operator: Resident, receipt: Receipt) -> None:
    async with connection() as conn:
        entry = await conn.fetchval("SELECT id FROM book_entry WHERE activity = $1", receipt.activity_id)
    r = operator.post(f"/v1/admin/book/entries/{entry}/reverse", json={"reason": "撤回 / withdrawn"})
    assert r.status_code == 201, r.text


def past_window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(days=3), now - timedelta(hours=1)


# --- creating and reading -------------------------------------------------------------------------------


def test_only_operators_create_challenges(client: httpx.Client, operator: Resident, resident: Resident) -> None:
    assert_problem(resident.post("/v1/admin/challenges", json=spec()), 403, "operator-only")
    assert_problem(client.post("/v1/admin/challenges", json=spec()), 401)
    made = create(operator, scope="city", scope_id="北京市", goal_kind="actions", goal=50, behaviours=[BIKE],
                  outcome_zh="每10次种一棵树", outcome_en="A tree per 10 rides", unlock_every=10)
    assert (made["scope"], made["scope_id"], made["goal_kind"], made["goal"], made["behaviours"]) == (
        "city", "北京市", "actions", 50, [BIKE])
    assert (made["state"], made["result"], made["progress"], made["participants"], made["outcomes"]) == (
        "active", None, 0, 0, 0)
    assert made["title"] == {"zh-CN": "绿色周", "en": "Green week"} and made["contributors"] == []


@pytest.mark.parametrize(("fields", "status", "code", "field"), [
    ({"scope": "planet"}, 400, None, None),
    ({"goal_kind": "trees"}, 400, None, None),
    ({"goal": 0}, 400, None, None),
    ({"behaviours": ["teleporting"]}, 422, "invalid-challenge", "behaviours"),
    ({"code": "Not A Code!"}, 422, "invalid-challenge", "code"),
    ({"scope": "city", "scope_id": ""}, 422, "invalid-challenge", "scope_id"),
    ({"starts_at": datetime(2026, 12, 2, tzinfo=UTC), "ends_at": datetime(2026, 12, 1, tzinfo=UTC)}, 422,
     "invalid-challenge", "ends_at"),
    ({"starts_at": datetime(2026, 12, 1, tzinfo=UTC), "ends_at": datetime(2026, 12, 1, tzinfo=UTC)}, 422,
     "invalid-challenge", "ends_at"),
    ({"starts_at": "2026-12-01T00:00:00", "ends_at": "2026-12-08T00:00:00"}, 422, "invalid-challenge", None),
])
def test_a_challenge_that_is_not_valid_is_refused_naming_the_problem(
        operator: Resident, fields: dict[str, Any], status: int, code: str | None, field: str | None) -> None:
    body = assert_problem(operator.post("/v1/admin/challenges", json=spec(**fields)), status, code)
    assert field is None or body["field"] == field, body


def test_a_city_challenge_without_a_scope_id_is_refused(operator: Resident) -> None:
    body = spec(scope="city")
    assert "scope_id" not in body
    assert_problem(operator.post("/v1/admin/challenges", json=body), 422, "invalid-challenge")


def test_a_challenge_code_is_taken_once(operator: Resident) -> None:
    made = create(operator)
    assert_problem(operator.post("/v1/admin/challenges", json=spec(code=made["code"])), 409, "challenge-code-taken")


def test_anyone_lists_and_reads_challenges_without_a_token(client: httpx.Client, operator: Resident) -> None:
    made = create(operator)
    listed = client.get("/v1/challenges")
    assert listed.status_code == 200, listed.text
    assert made["id"] in [c["id"] for c in listed.json()]
    assert read(client, made["id"]) == made
    assert_problem(client.get("/v1/challenges/999999999"), 404, "challenge-not-found")
    assert_problem(client.get("/v1/challenges/0"), 404, "challenge-not-found")


# --- joining --------------------------------------------------------------------------------------------


async def test_residents_join_only_challenges_of_their_city_community_or_team(
        arena: Arena, operator: Resident, client: httpx.Client) -> None:
    city, other = f"挑战市{tag()}", f"别市{tag()}"
    here = await arena.player(city=city, district="海淀区", community="中关村社区")
    neighbour = await arena.player(city=city, district="海淀区", community="花园路社区")
    away, nowhere = await arena.player(city=other), await arena.player()
    by_city = create(operator, scope="city", scope_id=city)
    assert enter(here, by_city["id"])["joined"] is True
    assert enter(neighbour, by_city["id"])["participants"] == 2
    for outsider in (away, nowhere):
        assert_problem(outsider.http.post(f"/v1/me/challenges/{by_city['id']}"), 403, "not-in-scope")
    by_community = create(operator, scope="community", scope_id=f"{city}|海淀区|中关村社区")
    assert enter(here, by_community["id"])["participants"] == 1
    assert_problem(neighbour.http.post(f"/v1/me/challenges/{by_community['id']}"), 403, "not-in-scope")
    team = create_team(operator)
    join_team(away, team)
    by_team = create(operator, scope="team", scope_id=str(team["id"]))
    assert enter(away, by_team["id"])["joined"] is True
    assert_problem(here.http.post(f"/v1/me/challenges/{by_team['id']}"), 403, "not-in-scope")

    again = enter(here, by_city["id"])  # a no-op
    assert (again["joined"], again["participants"]) == (True, 2)
    async with connection() as conn:
        joined = await conn.fetchval("SELECT count(*) FROM outbox_event WHERE name = 'challenge.joined' AND "
                                     "holder_id = $1 AND (payload->>'challenge_id')::bigint = $2", here.id,
                                     by_city["id"])
    assert joined == 1
    assert (await counted(client, by_city["id"]))["participants"] == 2
    assert_problem(here.http.post("/v1/me/challenges/999999999"), 404, "challenge-not-found")
    assert_problem(client.post(f"/v1/me/challenges/{by_city['id']}"), 401)


# --- progress -------------------------------------------------------------------------------------------


async def test_progress_sums_participants_settled_entries_inside_the_window(
        arena: Arena, operator: Resident, client: httpx.Client) -> None:
    starts, ends = past_window()
    made = create(operator, starts_at=starts, ends_at=ends, goal=100_000, unlock_every=1_000)
    a, b, outsider = await arena.player(), await arena.player(), await arena.player()
    for p in (a, b):
        await join(p.id, made["id"], now=starts + timedelta(minutes=1))
    await a.credit(1_000, occurred=starts - timedelta(minutes=1))  # before the window
    await a.credit(2_000, occurred=starts + timedelta(hours=1))
    await a.credit(300, occurred=ends)  # the window is [starts, ends)
    await a.credit(400, occurred=datetime.now(UTC) - timedelta(minutes=10))  # after it
    await b.credit(500, occurred=ends - timedelta(minutes=1))
    withdrawn = await b.credit(700, occurred=starts + timedelta(hours=2))
    await outsider.credit(5_000, occurred=starts + timedelta(hours=1))  # not a participant
    held = b.http.post("/v1/me/activities", json={"activities": [activity(
        behaviour="clean_plate", details={"photo_ref": "photos/plate.jpg"},
        occurred_at=(starts + timedelta(hours=3)).isoformat())]})
    assert held.status_code == 200 and held.json()["receipts"][0]["verdict"] == "held", held.text

    before = await counted(client, made["id"])
    assert before["progress"] == mg_of(2_000) // 1000 + (mg_of(500) + mg_of(700)) // 1000
    await reverse(operator, withdrawn)
    got = await counted(client, made["id"])
    amounts = (mg_of(2_000) // 1000, mg_of(500) // 1000)
    assert (got["progress"], got["participants"], got["state"]) == (sum(amounts), 2, "closing")
    assert got["outcomes"] == sum(amounts) // 1_000 == 3
    assert [(c["rank"], c["nickname"], c["amount"]) for c in got["contributors"]] == [
        (1, a.nickname, amounts[0]), (2, b.nickname, amounts[1])]


async def test_a_behaviour_filter_and_each_goal_kind_count_their_own_units(
        arena: Arena, operator: Resident, client: httpx.Client, partner: dict[str, Any]) -> None:
    kinds = {(k, tuple(f)): create(operator, goal_kind=k, behaviours=list(f))
             for k in ("grams", "energy", "actions") for f in ((), (BIKE,))}
    a, b = await arena.player(), await arena.player()
    earlier = datetime.now(UTC) - timedelta(hours=1)
    receipts = {a.id: [await a.credit(1_000), await act(a, partner, BIKE)],
                b.id: [await act(b, partner, BIKE), await act(b, partner, MEAL, earlier)]}
    for made in kinds.values():
        enter(a, made["id"])
        enter(b, made["id"])

    def amount(kind: str, rs: list[Receipt]) -> int:
        if kind == "grams":
            return sum(r.credited_mg for r in rs) // 1000
        if kind == "energy":
            return sum(energy_for(current_version(r.behaviour), r.credited_mg) for r in rs)
        return len(rs)

    for (kind, only), made in kinds.items():
        mine = {h: [r for r in rs if not only or r.behaviour in only] for h, rs in receipts.items()}
        got = await counted(client, made["id"])
        assert got["progress"] == sum(amount(kind, rs) for rs in mine.values()), (kind, only)
        assert sorted(c["amount"] for c in got["contributors"]) == sorted(
            amount(kind, rs) for rs in mine.values()), (kind, only)
    assert receipts[a.id][0].behaviour == GROWER


async def test_a_participant_without_actions_adds_no_actions(arena: Arena, operator: Resident,
                                                             client: httpx.Client, partner: dict[str, Any]) -> None:
    made = create(operator, goal_kind="actions", behaviours=[BIKE])
    busy, idle, other = await arena.player(), await arena.player(), await arena.player()
    await act(busy, partner, BIKE)
    await act(other, partner, MEAL)  # not a bike ride
    for p in (busy, idle, other):
        enter(p, made["id"])
    got = await counted(client, made["id"])
    assert sorted(c["amount"] for c in got["contributors"]) == [0, 0, 1]
    assert got["progress"] == 1


async def test_contributors_are_ranked_with_nicknames_only_for_residents_who_opted_in(
        arena: Arena, operator: Resident, client: httpx.Client) -> None:
    made = create(operator, goal=2_000, unlock_every=500)
    shown, top, hidden = await arena.player(), await arena.player(), await arena.player(public=False)
    for p, grams in ((shown, 300), (top, 900), (hidden, 100)):
        await p.credit(grams)
        enter(p, made["id"])
    amounts = {p.id: mg_of(g) // 1000 for p, g in ((shown, 300), (top, 900), (hidden, 100))}
    got = await counted(client, made["id"])
    assert [(c["rank"], c["nickname"], c["amount"]) for c in got["contributors"]] == [
        (1, top.nickname, amounts[top.id]), (2, shown.nickname, amounts[shown.id]), (3, None, amounts[hidden.id])]
    assert hidden.nickname not in str(got) and str(hidden.id) not in str(got)
    assert got["outcomes"] == sum(amounts.values()) // 500
    listed = hidden.http.get("/v1/me/challenges")
    assert listed.status_code == 200, listed.text
    (mine,) = [c for c in listed.json() if c["id"] == made["id"]]
    assert (mine["joined"], mine["my_amount"], mine["my_rank"]) == (True, amounts[hidden.id], 3)


# --- the end --------------------------------------------------------------------------------------------


async def test_the_result_is_recorded_once_and_a_late_entry_does_not_change_it(
        arena: Arena, operator: Resident, client: httpx.Client) -> None:
    starts, ends = past_window()
    met = create(operator, starts_at=starts, ends_at=ends, goal=1_000)
    missed = create(operator, starts_at=starts, ends_at=ends, goal=10**9)
    p = await arena.player()
    for made in (met, missed):
        await join(p.id, made["id"], now=starts + timedelta(minutes=1))
    await p.credit(1_000, occurred=starts + timedelta(hours=1))
    assert (await counted(client, met["id"]))["state"] == "closing"
    now = datetime.now(UTC)
    assert await finish_due(now=now) >= 2
    assert await finish_due(now=now) == 0  # a second call does nothing
    got = {c["id"]: await counted(client, c["id"]) for c in (met, missed)}
    grams = mg_of(1_000) // 1000
    assert [(g["state"], g["result"], g["progress"]) for g in got.values()] == [
        ("finished", "met", grams), ("finished", "missed", grams)]

    await p.credit(5_000, occurred=ends - timedelta(minutes=5))  # a late report for the window
    assert await finish_due() == 0
    for made in (met, missed):
        late = await counted(client, made["id"])
        assert (late["result"], late["progress"]) == (got[made["id"]]["result"], grams)
        assert_problem(p.http.post(f"/v1/me/challenges/{made['id']}"), 409, "challenge-over")
        assert_problem(p.http.delete(f"/v1/me/challenges/{made['id']}"), 404, "not-joined")
    assert met["id"] not in [c["id"] for c in client.get("/v1/challenges").json()]
    assert met["id"] in [c["id"] for c in client.get("/v1/challenges", params={"finished": "true"}).json()]


async def test_a_late_entry_does_not_change_a_finished_challenges_contributors(
        arena: Arena, operator: Resident, client: httpx.Client) -> None:
    starts, ends = past_window()
    made = create(operator, starts_at=starts, ends_at=ends, goal=1_000)
    p = await arena.player()
    await join(p.id, made["id"], now=starts + timedelta(minutes=1))
    await p.credit(1_000, occurred=starts + timedelta(hours=1))
    await finish_due()
    finished = await counted(client, made["id"])
    assert finished["result"] == "met"
    await p.credit(5_000, occurred=ends - timedelta(minutes=5))  # a late report for the window
    late = await counted(client, made["id"])
    assert late["progress"] == finished["progress"]
    assert late["contributors"] == finished["contributors"]


async def test_after_the_end_joining_is_refused_even_before_the_result(arena: Arena, operator: Resident) -> None:
    starts, ends = past_window()
    made = create(operator, starts_at=starts, ends_at=ends)
    p = await arena.player()
    assert_problem(p.http.post(f"/v1/me/challenges/{made['id']}"), 409, "challenge-over")


async def test_a_resident_leaves_a_running_challenge_and_may_join_again(
        arena: Arena, operator: Resident, client: httpx.Client) -> None:
    made = create(operator)
    p = await arena.player()
    await p.credit(100)
    assert enter(p, made["id"])["my_amount"] == mg_of(100) // 1000
    left = p.http.delete(f"/v1/me/challenges/{made['id']}")
    assert left.status_code == 204, left.text
    after = await counted(client, made["id"])
    assert (after["participants"], after["progress"]) == (0, 0)
    assert made["id"] not in [c["id"] for c in p.http.get("/v1/me/challenges").json()]
    assert_problem(p.http.delete(f"/v1/me/challenges/{made['id']}"), 404, "not-joined")
    assert enter(p, made["id"])["participants"] == 1


async def test_leaving_after_the_end_is_refused_even_before_the_result(arena: Arena, operator: Resident,
                                                                       client: httpx.Client) -> None:
    """Once the window closed, what participants did stays theirs for the result the worker records."""
    starts, ends = past_window()
    made = create(operator, starts_at=starts, ends_at=ends, goal=1_000)
    p = await arena.player()
    await join(p.id, made["id"], now=starts + timedelta(minutes=1))
    await p.credit(1_000, occurred=starts + timedelta(hours=1))
    assert_problem(p.http.delete(f"/v1/me/challenges/{made['id']}"), 404, "not-joined")
    assert (await counted(client, made["id"]))["participants"] == 1
