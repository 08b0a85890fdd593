"""Challenges: operators set a collective goal for a scope and a window; residents of the scope join; progress
is what the participants' settled book entries (credits minus reversals; held ones never) add up to inside
the window, for the challenge's behaviours; when the window closes the worker records the result once.

Progress is kept by a follower of the book (counting.py), so reading a challenge of a whole city costs index
lookups, not a sum over its participants' books."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from gamification.challenges.counting import STEP, amount, counts, cursor, whole
from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.methodology.catalogue import behaviours
from wallet.outbox.service import record_events

__all__ = ["Step", "create_challenge", "finish_due", "get_challenge", "join", "leave", "list_challenges",
           "my_challenges", "step"]

SCOPES = ("global", "city", "community", "team")
GOALS = ("grams", "energy", "actions")
_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{1,63}$")

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


def _state(row: Any, now: datetime) -> str:
    if row["result"] is not None:
        return "finished"
    return "upcoming" if now < row["starts_at"] else ("active" if now < row["ends_at"] else "closing")


_EXCLUDED = f"""
SELECT count(*) AS n, coalesce(sum({whole('c.goal_kind', 'p.amount')}), 0)::bigint AS whole
FROM competition_exclusion x JOIN challenge_participant p ON p.holder = x.holder AND p.challenge = $1
JOIN challenge c ON c.id = p.challenge"""  # noqa: S608 - constant fragments

_LEADERS = f"""
SELECT p.holder, {whole('c.goal_kind', 'p.amount')} AS amount,
       CASE WHEN h.show_on_public_leaderboards THEN h.nickname END AS nickname
FROM challenge_participant p JOIN challenge c ON c.id = p.challenge JOIN holder h ON h.id = p.holder
WHERE p.challenge = $1 AND NOT EXISTS (SELECT 1 FROM competition_exclusion x WHERE x.holder = p.holder)
ORDER BY p.amount DESC, p.holder LIMIT $2"""  # noqa: S608

_MINE = f"""
SELECT {whole('c.goal_kind', 'p.amount')} AS amount,
       EXISTS (SELECT 1 FROM competition_exclusion x WHERE x.holder = p.holder) AS excluded,
       (SELECT count(*) FROM challenge_participant o
        WHERE o.challenge = p.challenge AND (o.amount > p.amount OR (o.amount = p.amount AND o.holder < p.holder))
          AND NOT EXISTS (SELECT 1 FROM competition_exclusion x WHERE x.holder = o.holder)) + 1 AS rank
FROM challenge_participant p JOIN challenge c ON c.id = p.challenge WHERE p.challenge = $1 AND p.holder = $2
"""  # noqa: S608


async def get_challenge(challenge_id: int, *, holder_id: uuid.UUID | None = None, top: int = 10,
                        now: datetime | None = None) -> dict[str, Any]:
    """The challenge, its progress (whole units of its goal kind) as of `counted_at`, participants, top
    contributors (by nickname, for residents who opted in), the outcomes unlocked so far, and, for a resident,
    whether they joined and their part. Residents excluded from competition neither count nor appear."""
    now = now or datetime.now(UTC)
    async with connection() as conn:
        row = await conn.fetchrow(
            "SELECT c.*, (SELECT updated_at FROM challenge_cursor WHERE id = 1) AS counted_at FROM challenge c "
            "WHERE c.id = $1", challenge_id)
        if row is None:
            raise DomainError("not_found", "challenge-not-found", "No challenge has this id.")
        excluded = await conn.fetchrow(_EXCLUDED, challenge_id)
        leaders = await conn.fetch(_LEADERS, challenge_id, top)
        mine = await conn.fetchrow(_MINE, challenge_id, holder_id) if holder_id is not None else None
    finished = row["final_progress"] is not None
    progress = row["final_progress"] if finished else row["progress"] - excluded["whole"]
    out = dict(row)
    raw = row["behaviours"]
    out["behaviours"] = msgspec.json.decode(raw) if isinstance(raw, str) else raw
    out.update(state=_state(row, now), progress=progress, participants=row["participants"] - excluded["n"],
               counted_at=row["finished_at"] if finished else row["counted_at"],
               outcomes=progress // row["unlock_every"] if row["unlock_every"] else None,
               contributors=[{"rank": i, "nickname": r["nickname"], "amount": r["amount"]}
                             for i, r in enumerate(leaders, start=1)])
    if holder_id is not None:
        counted = mine is not None and not mine["excluded"]
        out.update(joined=mine is not None, my_amount=mine["amount"] if mine else 0,
                   my_rank=mine["rank"] if counted else None)
    return out


async def list_challenges(*, include_finished: bool = False, now: datetime | None = None) -> list[dict[str, Any]]:
    async with connection() as conn:
        rows = await conn.fetch(
            "SELECT c.* FROM challenge c WHERE $1 OR c.result IS NULL ORDER BY c.ends_at, c.id", include_finished)
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


_THROUGH = f"""
SELECT coalesce(sum({amount('e')}), 0)::bigint FROM challenge c JOIN book_entry e ON e.holder = $2 AND {counts('e')}
WHERE c.id = $1 AND pg_visible_in_snapshot(e.txid, $3::text::pg_snapshot)"""  # noqa: S608 - constant fragments


_JOINED = f"""UPDATE challenge SET participants = participants + 1,
    progress = progress + {whole('goal_kind', '$2::bigint')} WHERE id = $1"""  # noqa: S608
_LEFT = f"""UPDATE challenge SET participants = participants - 1,
    progress = progress - {whole('goal_kind', '$2::bigint')} WHERE id = $1"""  # noqa: S608


async def join(holder_id: uuid.UUID, challenge_id: int, *, now: datetime | None = None) -> dict[str, Any]:
    """Join a challenge of my city, community or team (or everyone's) before it ends; joining twice is a
    no-op. Everything I did in its window counts, also before I joined: counted here, up to this moment."""
    now = now or datetime.now(UTC)
    async with engine().transaction() as tx:
        conn = tx.connection
        await cursor(conn, exclusive=False)  # the cursor first, then the challenge: a step's order
        row = await conn.fetchrow("SELECT * FROM challenge WHERE id = $1 FOR UPDATE", challenge_id)
        if row is None:
            raise DomainError("not_found", "challenge-not-found", "No challenge has this id.")
        if row["result"] is not None or now >= row["ends_at"]:
            raise DomainError("conflict", "challenge-over", "This challenge has ended.")
        if not await _in_scope(conn, row, holder_id):
            raise DomainError("forbidden", "not-in-scope", "This challenge is for another city, community or team.")
        seen = await conn.fetchval("SELECT pg_current_snapshot()::text")
        so_far = await conn.fetchval(_THROUGH, challenge_id, holder_id, seen)
        joined = await conn.fetchval(
            """INSERT INTO challenge_participant (challenge, holder, joined_at, amount, counted_through)
               VALUES ($1, $2, now(), $3, $4) ON CONFLICT (challenge, holder) DO NOTHING RETURNING 1""",
            challenge_id, holder_id, so_far, seen,
        )
        if joined:
            await conn.execute(_JOINED, challenge_id, so_far)
            await record_events([("challenge.joined", {"challenge_id": challenge_id}, holder_id)])
    return await get_challenge(challenge_id, holder_id=holder_id, now=now)


async def leave(holder_id: uuid.UUID, challenge_id: int) -> bool:
    """Only while the challenge runs: once its window closed, what participants did stays in its result."""
    async with engine().transaction() as tx:
        conn = tx.connection
        await cursor(conn, exclusive=False)
        gone = await conn.fetchval(
            """DELETE FROM challenge_participant p USING challenge c
               WHERE p.challenge = $1 AND p.holder = $2 AND c.id = p.challenge AND c.result IS NULL
                 AND c.ends_at > now() RETURNING p.amount""",
            challenge_id, holder_id,
        )
        if gone is not None:
            await conn.execute(_LEFT, challenge_id, gone)
    return gone is not None


async def my_challenges(holder_id: uuid.UUID) -> list[dict[str, Any]]:
    async with connection() as conn:
        ids = [r["challenge"] for r in await conn.fetch(
            "SELECT challenge FROM challenge_participant WHERE holder = $1 ORDER BY joined_at DESC", holder_id)]
    return [await get_challenge(i, holder_id=holder_id, top=3) for i in ids]


@dataclass(frozen=True, slots=True)
class Step:
    entries: int  # book entries that became visible since the last step
    participants: int  # participants whose amount moved
    finished: int  # challenges whose result was recorded


async def step(*, now: datetime | None = None, wait: bool = False) -> Step:
    """The worker's step (every second): count the entries written since the cursor, then record the result of
    every challenge whose window has closed, once, in the same transaction, so a result counts exactly the
    entries recorded before it (a late report for the window does not change it). Without `wait`, a step that
    finds another one running does nothing."""
    async with engine().transaction() as tx:
        conn = tx.connection
        done = await cursor(conn, exclusive=True, wait=wait)
        if done is None:
            return Step(0, 0, 0)
        target = await conn.fetchval("SELECT pg_current_snapshot()::text")
        moved = await conn.fetchrow(STEP, done, target)
        await conn.execute("UPDATE challenge_cursor SET snapshot = $1, updated_at = now() WHERE id = 1", target)
        due = await conn.fetch(
            "SELECT * FROM challenge WHERE result IS NULL AND ends_at <= coalesce($1, now()) ORDER BY id FOR UPDATE",
            now)
        for row in due:
            total = row["progress"] - (await conn.fetchrow(_EXCLUDED, row["id"]))["whole"]
            result = "met" if total >= row["goal"] else "missed"
            await conn.execute(
                "UPDATE challenge SET result = $2, final_progress = $3, finished_at = now() WHERE id = $1",
                row["id"], result, total,
            )
            await record_events([("challenge.finished", {"challenge_id": row["id"], "result": result,
                                                         "progress": total}, None)])
    return Step(moved["entries"], moved["participants"], len(due))


async def finish_due(*, now: datetime | None = None) -> int:
    """A step that waits for a running one; how many challenges it finished."""
    return (await step(now=now, wait=True)).finished
