"""Event triggers end to end: the real paths that record outbox events (a self-report held for photo review, an
operator's review, a challenge's result, a level reached), the outbox handlers run in-process, and what the
resident finds in the inbox over HTTP: the kind, its trigger and its deep link, once, however often the handler
runs, and a level not told again after a reversal and a re-credit."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from gamification.challenges.service import finish_due, join
from gamification.progress.service import evaluate
from notifications.inbox.handlers import tell_challenge_finished
from tests.leaderboard_support import Arena, make_arena, tag
from tests.support import Resident, deliver_pending_events, register
from wallet.db import connection
from wallet.outbox.service import Event


@pytest.fixture(scope="module")
async def arena(passwords: object, settings: Any, client: httpx.Client, db: object) -> AsyncIterator[Arena]:
    redis = Redis.from_url(os.environ["REDIS_URL"])
    yield await make_arena(passwords, settings, client, redis)
    await redis.aclose()


def inbox(resident: Resident, kind: str | None = None) -> list[dict[str, Any]]:
    r = resident.get("/v1/me/inbox", params={"limit": 100})
    assert r.status_code == 200, r.text
    return [m for m in r.json()["items"] if kind is None or m["kind"] == kind]


def held_report(resident: Resident, minutes_ago: int) -> str:
    """A self-reported clean plate with a photo: held for an operator to look at; its activity id."""
    occurred = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)
    r = resident.post("/v1/me/activities", json={"activities": [{
        "event_id": f"ev-{uuid.uuid4().hex}", "behaviour": "clean_plate", "quantity": 1,
        "occurred_at": occurred.isoformat(), "details": {"photo_ref": f"photos/{uuid.uuid4().hex}.jpg"}}]})
    assert r.status_code == 200, r.text
    (receipt,) = r.json()["receipts"]
    assert (receipt["verdict"], receipt["code"]) == ("held", "photo-review"), receipt
    return receipt["activity_id"]


async def test_an_activity_held_for_review_and_each_review_outcome_reach_the_inbox_with_their_links(
        client: httpx.Client, operator: Resident, db: object) -> None:
    resident = register(client, language="en")
    credited, rejected = held_report(resident, 30), held_report(resident, 20)

    await deliver_pending_events()

    held = inbox(resident, "activity_held")
    assert sorted((m["link"], m["trigger"]) for m in held) == sorted(
        (f"carbonwallet://book/activities/{a}", "activity_held") for a in (credited, rejected))
    assert held[0]["title"] == "Your action is under review" and held[0]["read_at"] is None

    for activity, decision in ((credited, "credit"), (rejected, "reject")):
        r = operator.post(f"/v1/admin/review/{activity}", json={"decision": decision, "note": "checked / 已核实"})
        assert r.status_code == 200, r.text
    await deliver_pending_events()
    await deliver_pending_events()  # nothing new the second time

    outcomes = [(m["kind"], m["trigger"], m["link"]) for m in inbox(resident) if m["trigger"] == "review_outcome"]
    assert sorted(outcomes) == [("review_credited", "review_outcome", f"carbonwallet://book/activities/{credited}"),
                                ("review_rejected", "review_outcome", f"carbonwallet://book/activities/{rejected}")]
    assert len(inbox(resident, "activity_held")) == 2


def create_challenge(operator: Resident, goal: int, starts: datetime, ends: datetime) -> dict[str, Any]:
    r = operator.post("/v1/admin/challenges", json={
        "code": f"nt-{tag()}", "title_zh": "绿色周", "title_en": "Green week", "scope": "global",
        "goal_kind": "grams", "goal": goal, "starts_at": starts.isoformat(), "ends_at": ends.isoformat()})
    assert r.status_code == 201, r.text
    return r.json()


async def test_every_participant_is_told_a_finished_challenges_result_once_even_if_the_handler_runs_again(
        arena: Arena, operator: Resident) -> None:
    now = datetime.now(UTC)
    starts, ends = now - timedelta(days=3), now - timedelta(hours=1)
    met, missed = create_challenge(operator, 1_000, starts, ends), create_challenge(operator, 10**9, starts, ends)
    players = [await arena.player() for _ in range(3)]
    for p in players:
        for made in (met, missed):
            await join(p.id, made["id"], now=starts + timedelta(minutes=1))
    await players[0].credit(1_000, occurred=starts + timedelta(hours=1))  # 1,280 g: the first goal is met

    assert await finish_due(now=datetime.now(UTC)) >= 2
    await deliver_pending_events()
    async with connection() as conn:
        rows = await conn.fetch("""SELECT event_id, name, holder_id, payload, created_at FROM outbox_event
                                   WHERE name = 'challenge.finished' AND (payload->>'challenge_id')::int = ANY($1)""",
                                [met["id"], missed["id"]])
    assert len(rows) == 2
    for row in rows:  # the handler again, as a retried job would run it
        payload = row["payload"]
        await tell_challenge_finished(Event(row["event_id"], row["name"], row["holder_id"],
                                            json.loads(payload) if isinstance(payload, str) else payload,
                                            row["created_at"]))

    for p in players:
        results = [m for m in inbox(p.http) if m["trigger"] == "challenge_finished"]
        told = {m["kind"]: m for m in results}
        assert len(results) == 2 and set(told) == {"challenge_met", "challenge_missed"}
        assert told["challenge_met"]["link"] == f"carbonwallet://challenges/{met['id']}"
        assert told["challenge_missed"]["link"] == f"carbonwallet://challenges/{missed['id']}"


async def test_a_level_up_is_told_once_and_not_again_after_a_reversal_and_a_re_credit(
        arena: Arena, operator: Resident) -> None:
    p = await arena.player()
    first = await p.credit(1_000)  # 1,280 g: Seedling, from 1,000 g
    await evaluate([p.id])
    await deliver_pending_events()
    [told] = inbox(p.http, "level_up")
    assert (told["trigger"], told["link"], told["title"]) == ("level_up", "carbonwallet://progress", "升级啦：幼苗")

    async with connection() as conn:
        entry = await conn.fetchval("SELECT id FROM book_entry WHERE activity = $1", first.activity_id)
    r = operator.post(f"/v1/admin/book/entries/{entry}/reverse", json={"reason": "重复上报 / reported twice"})
    assert r.status_code == 201, r.text
    await evaluate([p.id])
    assert p.http.get("/v1/me/progress").json()["level"]["name"]["en"] == "Sprout"  # below it again
    await p.credit(1_000)
    await evaluate([p.id])
    await evaluate([p.id])
    await deliver_pending_events()

    assert [m["id"] for m in inbox(p.http, "level_up")] == [told["id"]]
