"""Demo friends and a demo company for `make run`: the demo residents know each other in a small, realistic
graph and most of them work at one company with two departments. Idempotent: a second seed changes nothing
(a pair that blocked each other is left apart; a resident who ever left the company, or is in another
team, is not moved)."""

from __future__ import annotations

import uuid
from typing import Any

from gamification.friends.service import befriend
from gamification.teams.service import create_team, join_team
from wallet.db import connection

__all__ = ["DEMO_TEAM", "seed_friends_and_team"]

DEMO_TEAM: dict[str, Any] = {
    "code": "greenmotion-tech", "kind": "company", "name_zh": "绿动科技", "name_en": "GreenMotion Tech",
    "city": "北京市",
    "departments": [{"code": "engineering", "name_zh": "研发部", "name_en": "Engineering"},
                    {"code": "marketing", "name_zh": "市场部", "name_en": "Marketing"}],
}
# Pairs of indexes into the residents given to `seed_friends_and_team` (DEMO_HOLDERS order, operator included).
DEMO_FRIENDS = ((0, 1), (0, 2), (0, 4), (1, 4), (2, 3))
# Resident index → department code (the others are in no team).
DEMO_MEMBERS = {0: "engineering", 1: "marketing", 2: "engineering"}


async def _ensure_team() -> tuple[int, str]:
    async with connection() as conn:
        row = await conn.fetchrow("SELECT id, join_code FROM team WHERE code = $1", DEMO_TEAM["code"])
    if row is None:
        team = await create_team(DEMO_TEAM)
        return team["id"], team["join_code"]
    return row["id"], row["join_code"]


async def seed_friends_and_team(residents: list[uuid.UUID]) -> None:
    for a, b in DEMO_FRIENDS:
        async with connection() as conn:
            blocked = await conn.fetchval(
                """SELECT EXISTS (SELECT 1 FROM friend_block
                   WHERE (blocker = $1 AND blocked = $2) OR (blocker = $2 AND blocked = $1))""",
                residents[a], residents[b])
        if not blocked:
            await befriend(residents[a], residents[b])
    team_id, join_code = await _ensure_team()
    for index, department in DEMO_MEMBERS.items():
        async with connection() as conn:
            ever = await conn.fetchval(
                """SELECT EXISTS (SELECT 1 FROM team_member WHERE holder = $2 AND (team = $1 OR left_at IS NULL))""",
                team_id, residents[index])
        if not ever:
            await join_team(residents[index], join_code, department)
