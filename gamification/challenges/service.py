"""Challenges: operators set a collective goal for a scope and a window; residents of the scope join; progress
is what the participants' settled book entries (credits minus reversals; held ones never) add up to inside
the window, for the challenge's behaviours; when the window closes the worker records the result once.

Progress is summed from the book on each read (by participant, through the (holder, occurred_at) index), so it
is exact and needs no second copy; a challenge of a whole city with a very large book would want the
leaderboard follower to keep its sums instead (README: Scaling out)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.methodology.catalogue import behaviours
from wallet.outbox.service import record_events

__all__ = ["create_challenge", "finish_due", "get_challenge", "join", "leave", "list_challenges", "my_challenges"]

SCOPES = ("global", "city", "community", "team")
GOALS = ("grams", "energy", "actions")
_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{1,63}$")
_AMOUNT = {"grams": "e.reduction_mg / 1000.0", "energy": "e.energy",
           "actions": "CASE e.kind WHEN 'credit' THEN 1 WHEN 'reversal' THEN -1 ELSE 0 END"}


def _bad(field: str, detail: str) -> DomainError:
    return DomainError("invalid", "invalid-challenge", detail, field=field)


async def create_challenge(fields: dict[str, Any]) -> dict[str, Any]:
    code = fields.get("code")
    if not isinstance(code, str) or not _CODE.match(code):
        raise _bad("code", "code must be 2-64 lowercase letters, digits or dashes.")
    if fields.get("scope") not in SCOPES:
        raise _bad("scope", f"scope must be one of {', '.join(SCOPES)}.")
    if fields["scope"] != "global" and fields.get("scope_id") in (None, "", "-"):
        raise _bad("scope_id", "Name the city (北京市), community (北京市|海淀区|中关村社区) or team id.")
    if fields.get("goal_kind") not in GOALS:
        raise _bad("goal_kind", f"goal_kind must be one of {', '.join(GOALS)}.")
    unknown = [b for b in fields.get("behaviours") or [] if b not in behaviours()]
    if unknown:
        raise _bad("behaviours", f"Unknown behaviours: {', '.join(unknown)}.")
    starts, ends = fields["starts_at"], fields["ends_at"]
    if starts >= ends:
        raise _bad("ends_at", "ends_at must be after starts_at.")
    async with connection() as conn:
        try:
            row = await conn.fetchrow(
                """INSERT INTO challenge (code, title_zh, title_en, description_zh, description_en, scope,
                       scope_id, goal_kind, goal, behaviours, starts_at, ends_at, outcome_zh, outcome_en,
                       unlock_every, created_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, $15, now())
                   RETURNING id""",
                code, fields["title_zh"], fields["title_en"], fields.get("description_zh", ""),
                fields.get("description_en", ""), fields["scope"], fields.get("scope_id") or "-",
                fields["goal_kind"], fields["goal"], msgspec.json.encode(fields.get("behaviours") or []).decode(),
                starts, ends, fields.get("outcome_zh", ""), fields.get("outcome_en", ""), fields.get("unlock_every"),
            )
        except asyncpg.UniqueViolationError as exc:
            raise DomainError("conflict", "challenge-code-taken", f"A challenge with code {code} exists.") from exc
    return await get_challenge(row["id"])


def _progress_sql(challenge_id_param: str = "$1") -> str:
    return f"""
SELECT p.holder, coalesce(sum(
           CASE c.goal_kind WHEN 'grams' THEN {_AMOUNT['grams']} WHEN 'energy' THEN {_AMOUNT['energy']}
                ELSE {_AMOUNT['actions']} END), 0) AS amount
FROM challenge c JOIN challenge_participant p ON p.challenge = c.id
LEFT JOIN book_entry e ON e.holder = p.holder AND e.occurred_at >= c.starts_at AND e.occurred_at < c.ends_at
     AND (jsonb_array_length(c.behaviours) = 0 OR c.behaviours ? e.behaviour)
     AND (c.finished_at IS NULL OR e.recorded_at <= c.finished_at)  -- a recorded result does not move
WHERE c.id = {challenge_id_param} GROUP BY p.holder"""  # noqa: S608 - constant fragments


def _state(row: Any, now: datetime) -> str:
    if row["result"] is not None:
        return "finished"
    return "upcoming" if now < row["starts_at"] else ("active" if now < row["ends_at"] else "closing")


async def get_challenge(challenge_id: int, *, holder_id: uuid.UUID | None = None, top: int = 10,
                        now: datetime | None = None) -> dict[str, Any]:
    """The challenge, its progress (whole units of its goal kind), participants, top contributors (by
    nickname), the outcomes unlocked so far, and, for a resident, whether they joined and their part."""
    now = now or datetime.now(UTC)
    async with connection() as conn:
        row = await conn.fetchrow("SELECT * FROM challenge WHERE id = $1", challenge_id)
        if row is None:
            raise DomainError("not_found", "challenge-not-found", "No challenge has this id.")
        parts = await conn.fetch(_progress_sql(), challenge_id)
        amounts = sorted(((int(p["amount"]), p["holder"]) for p in parts), key=lambda x: (-x[0], str(x[1])))
        leaders = amounts[:top]
        names = {r["id"]: r["nickname"] for r in await conn.fetch(
            "SELECT id, nickname FROM holder WHERE id = ANY($1::uuid[]) AND show_on_public_leaderboards",
            [h for _, h in leaders])}
    progress = row["final_progress"] if row["final_progress"] is not None else sum(a for a, _ in amounts)
    out = dict(row)
    raw = row["behaviours"]
    out["behaviours"] = msgspec.json.decode(raw) if isinstance(raw, str) else raw
    out.update(state=_state(row, now), progress=progress, participants=len(amounts),
               outcomes=progress // row["unlock_every"] if row["unlock_every"] else None,
               contributors=[{"rank": i, "nickname": names.get(h), "amount": a}
                             for i, (a, h) in enumerate(leaders, start=1)])
    if holder_id is not None:
        mine = next(((a, i) for i, (a, h) in enumerate(amounts, start=1) if h == holder_id), None)
        out.update(joined=mine is not None, my_amount=mine[0] if mine else 0, my_rank=mine[1] if mine else None)
    return out


async def list_challenges(*, include_finished: bool = False, now: datetime | None = None) -> list[dict[str, Any]]:
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT c.*, (SELECT count(*) FROM challenge_participant p WHERE p.challenge = c.id) AS participants
               FROM challenge c WHERE $1 OR c.result IS NULL ORDER BY c.ends_at, c.id""",
            include_finished,
        )
    now = now or datetime.now(UTC)
    return [{**dict(r), "state": _state(r, now)} for r in rows]


async def _in_scope(conn: asyncpg.Connection, row: Any, holder_id: uuid.UUID) -> bool:
    if row["scope"] == "global":
        return True
    h = await conn.fetchrow(
        """SELECT h.city, h.district, h.community, m.team FROM holder h
           LEFT JOIN team_member m ON m.holder = h.id AND m.left_at IS NULL WHERE h.id = $1""",
        holder_id,
    )
    if row["scope"] == "city":
        return h["city"] == row["scope_id"]
    if row["scope"] == "community":
        return f"{h['city']}|{h['district']}|{h['community']}" == row["scope_id"]
    return str(h["team"]) == row["scope_id"]


async def join(holder_id: uuid.UUID, challenge_id: int, *, now: datetime | None = None) -> dict[str, Any]:
    """Join a challenge of my city, community or team (or everyone's) before it ends; joining twice is a
    no-op. Everything I did in its window counts, also before I joined."""
    now = now or datetime.now(UTC)
    async with engine().transaction() as tx:
        conn = tx.connection
        row = await conn.fetchrow("SELECT * FROM challenge WHERE id = $1", challenge_id)
        if row is None:
            raise DomainError("not_found", "challenge-not-found", "No challenge has this id.")
        if row["result"] is not None or now >= row["ends_at"]:
            raise DomainError("conflict", "challenge-over", "This challenge has ended.")
        if not await _in_scope(conn, row, holder_id):
            raise DomainError("forbidden", "not-in-scope", "This challenge is for another city, community or team.")
        joined = await conn.fetchval(
            """INSERT INTO challenge_participant (challenge, holder, joined_at) VALUES ($1, $2, now())
               ON CONFLICT (challenge, holder) DO NOTHING RETURNING 1""",
            challenge_id, holder_id,
        )
        if joined:
            await record_events([("challenge.joined", {"challenge_id": challenge_id}, holder_id)])
    return await get_challenge(challenge_id, holder_id=holder_id, now=now)


async def leave(holder_id: uuid.UUID, challenge_id: int) -> bool:
    """Only while the challenge runs: once its window closed, what participants did stays in its result."""
    async with connection() as conn:
        return bool(await conn.fetchval(
            """DELETE FROM challenge_participant p USING challenge c
               WHERE p.challenge = $1 AND p.holder = $2 AND c.id = p.challenge AND c.result IS NULL
                 AND c.ends_at > now() RETURNING 1""",
            challenge_id, holder_id,
        ))


async def my_challenges(holder_id: uuid.UUID) -> list[dict[str, Any]]:
    async with connection() as conn:
        ids = [r["challenge"] for r in await conn.fetch(
            "SELECT challenge FROM challenge_participant WHERE holder = $1 ORDER BY joined_at DESC", holder_id)]
    return [await get_challenge(i, holder_id=holder_id, top=3) for i in ids]


async def finish_due(*, now: datetime | None = None) -> int:
    """The worker's step: record the result of every challenge whose window has closed, once. Entries for the
    window that arrive later (a late report) do not change a recorded result."""
    finished = 0
    async with connection() as conn:
        due = [r["id"] for r in await conn.fetch(
            "SELECT id FROM challenge WHERE result IS NULL AND ends_at <= coalesce($1, now())", now)]
    for challenge_id in due:
        async with engine().transaction() as tx:
            conn = tx.connection
            row = await conn.fetchrow(
                "SELECT * FROM challenge WHERE id = $1 AND result IS NULL FOR UPDATE SKIP LOCKED", challenge_id)
            if row is None:
                continue
            total = sum(int(p["amount"]) for p in await conn.fetch(_progress_sql(), challenge_id))
            result = "met" if total >= row["goal"] else "missed"
            await conn.execute(
                "UPDATE challenge SET result = $2, final_progress = $3, finished_at = now() WHERE id = $1",
                challenge_id, result, total,
            )
            await record_events([("challenge.finished", {"challenge_id": challenge_id, "result": result,
                                                         "progress": total}, None)])
            finished += 1
    return finished
