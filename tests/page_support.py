"""Helpers for the public pages' tests: one small world seeded through the product's own paths (residents placed
in a city of its own, a team joined over HTTP, credits through verified partners, a city challenge joined over
HTTP, then the followers the worker runs: community aggregates, leaderboards and challenges), and readers of
the figures a page states in its <data value> elements."""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from gamification.challenges.service import step as challenge_step
from gamification.community.follow import step as community_step
from tests.leaderboard_support import Arena, Player, create_team, join, mg_of, settle, tag
from tests.ledger_support import source_for
from tests.support import ROOT, Resident, unique_phone
from wallet.db import connection
from wallet.intake.judge import record_reports
from wallet.intake.reports import Report
from wallet.methodology.catalogue import current_version, reduction_mg
from wallet.partners.service import PartnerSpec, register_partner
from wallet.sealing import SecretBox

BIKE, MEAL = "shared_bike_ride", "plant_based_meal"
DATA = re.compile(r'<data(?: class="([\w-]+)")? value="(-?\d+)">')
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


@dataclass
class World:
    city: str
    districts: tuple[str, str]  # the first holds `community`, the second `other_community`
    community: str
    other_community: str
    team: dict[str, Any]
    partner: dict[str, Any]  # the arena's verified partner (clothes recycling)
    challenge: dict[str, Any]
    public: list[Player]  # opted in, in the order of their city all-time board
    hidden: Player  # opted out: counted, never shown
    everyone: list[Player]
    phones: list[str]
    expected_city_mg: int
    expected_partner_mg: int
    books: dict[str, int] = field(default_factory=dict)  # nickname -> all-time mg


async def _other_partner(settings: Any) -> dict[str, Any]:
    """A verified partner for bike rides and plant-based meals, so the category chart has more than one row."""
    return (await register_partner(PartnerSpec(
        name=f"骑行餐饮 {tag()}", name_en="Rides and meals", kind="other",
        redirect_uris=["https://partner.example/oauth/callback"], allowed_scopes=["activities:write"],
        allowed_behaviours=[BIKE, MEAL], trust_tier="verified"), SecretBox(settings.data_key))).partner


async def _act(p: Player, partner: dict[str, Any], behaviour: str, occurred: datetime) -> int:
    (receipt,) = await record_reports(await source_for(p.id, partner),
                                      [Report(f"pg-{uuid.uuid4().hex}", behaviour, 1, occurred)])
    assert receipt.verdict == "credited", receipt
    return reduction_mg(current_version(behaviour), 1)


async def seed_world(arena: Arena, redis: Redis, operator: Resident, settings: Any) -> World:
    """Six residents of a fresh city, two districts, a team, a city challenge; credits over the last 10 days."""
    t = tag()
    city, districts = f"页市{t}", ("海淀区", "朝阳区")
    community, other = "中关村社区", "望京社区"
    a = await arena.player(city=city, district=districts[0], community=community, nickname=f"页甲{t}")
    b = await arena.player(city=city, district=districts[0], community=community, nickname=f"页乙{t}")
    c = await arena.player(city=city, district=districts[1], community=other, nickname=f"页丙{t}")
    d = await arena.player(city=city, nickname=f"页丁{t}")  # no district: in the city only
    hidden = await arena.player(city=city, district=districts[0], community=community, public=False,
                                nickname=f"藏{t}")
    everyone = [a, b, c, d, hidden]
    phones = [unique_phone() for _ in everyone]
    async with connection() as conn:
        for p, phone in zip(everyone, phones, strict=True):
            await conn.execute("UPDATE holder SET phone = $2 WHERE id = $1", p.id, phone)
    team = create_team(operator)
    join(a, team)
    join(c, team)
    r = operator.post("/v1/admin/challenges", json={
        "code": f"pg-{t}", "title_zh": f"页面挑战{t}", "title_en": f"Page challenge {t}", "scope": "city",
        "scope_id": city, "goal_kind": "grams", "goal": 5_000, "outcome_zh": "每 1 千克种一棵树",
        "outcome_en": "A tree per kg", "unlock_every": 1_000,
        "starts_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        "ends_at": (datetime.now(UTC) + timedelta(days=7)).isoformat()})
    assert r.status_code == 201, r.text
    challenge = r.json()
    for p in (a, b):
        assert p.http.post(f"/v1/me/challenges/{challenge['id']}").status_code == 200
    await settle(redis)  # the team moves first, so the credits below count on the team's board

    now = datetime.now(UTC)
    books: dict[str, int] = {}
    plan = [(a, 300, 0), (a, 200, 3), (b, 500, 0), (b, 150, 10), (c, 250, 1), (d, 50, 0), (hidden, 400, 0)]
    for p, grams, days_ago in plan:
        await p.credit(grams, occurred=now - timedelta(days=days_ago, minutes=5))
        books[p.nickname] = books.get(p.nickname, 0) + mg_of(grams)
    partner_mg = sum(books.values())
    rides = await _other_partner(settings)
    books[b.nickname] += await _act(b, rides, BIKE, now - timedelta(days=2))
    books[c.nickname] += await _act(c, rides, MEAL, now - timedelta(minutes=5))

    await community_step(wait=True)
    await settle(redis)
    await challenge_step(wait=True, now=datetime(2000, 1, 1, tzinfo=UTC))  # counts; records no result
    public = sorted([a, b, c, d], key=lambda p: -books[p.nickname])
    return World(city, districts, community, other, team, arena.partner, challenge, public, hidden, everyone,
                 phones, sum(books.values()), partner_mg, books)


def figures(html: str) -> dict[str, int]:
    """The page's named figures: <data class="total" value="…"> and the like."""
    return {name: int(value) for name, value in DATA.findall(html) if name}


def values(html: str) -> list[int]:
    return [int(value) for _, value in DATA.findall(html)]


def get_page(client: httpx.Client, path: str, **headers: str) -> httpx.Response:
    r = client.get(path, headers=headers)
    assert r.headers["content-type"].startswith("text/html"), (path, r.status_code, r.text[:300])
    return r


def artefacts_dir() -> Path:
    """Screenshots go to $CW_TEST_ARTIFACTS/screenshots when set, else test-artifacts/screenshots/ (git-ignored)."""
    base = Path(os.environ["CW_TEST_ARTIFACTS"]) if os.environ.get("CW_TEST_ARTIFACTS") else ROOT / "test-artifacts"
    out = base / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def local_today(settings: Any) -> date:
    return datetime.now(settings.leaderboard_zone).date()
