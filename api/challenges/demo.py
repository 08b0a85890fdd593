"""Demo challenges for `make run`: a city challenge running this month that unlocks trees, and one for the demo
company. Idempotent by code; the window is the current month in the boards' time zone, fixed at first seed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from gamification.challenges.service import create_challenge, join
from gamification.leaderboards.boards import period_of, zone
from wallet.db import connection
from wallet.errors import DomainError

__all__ = ["seed_challenges"]


async def seed_challenges(residents: list[uuid.UUID]) -> None:
    month = period_of("month", datetime.now(UTC), zone())
    async with connection() as conn:
        team = await conn.fetchval("SELECT id FROM team ORDER BY id LIMIT 1")
        existing = {r["code"] for r in await conn.fetch("SELECT code FROM challenge WHERE code LIKE 'demo-%'")}
    specs = [
        {"code": "demo-beijing-green-month", "title_zh": "北京绿色生活月", "title_en": "Beijing green living month",
         "description_zh": "本月北京居民一起减排，每减少10千克就在京郊种下一棵树。",
         "description_en": "Beijing residents cut emissions together this month: every 10 kg plants a tree.",
         "scope": "city", "scope_id": "北京市", "goal_kind": "grams", "goal": 50_000, "unlock_every": 10_000,
         "outcome_zh": "在京郊种下的树", "outcome_en": "trees planted outside Beijing"},
    ]
    if team is not None:
        specs.append({"code": "demo-team-bike-month", "title_zh": "骑行上班月", "title_en": "Cycle-to-work month",
                      "scope": "team", "scope_id": str(team), "goal_kind": "actions", "goal": 40,
                      "behaviours": ["shared_bike_ride", "private_bike_ride", "walking_steps"],
                      "outcome_zh": "公司捐赠一辆共享单车", "outcome_en": "the company donates a bike"})
    for spec in specs:
        if spec["code"] not in existing:
            await create_challenge({**spec, "starts_at": month.start, "ends_at": month.end})
    async with connection() as conn:
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM challenge WHERE code LIKE 'demo-%'")]
    for holder_id in residents:
        for challenge_id in ids:
            try:
                await join(holder_id, challenge_id)
            except DomainError as exc:  # not in this city or team, or the month is over: fine for a demo
                if exc.code not in ("not-in-scope", "challenge-over"):
                    raise
