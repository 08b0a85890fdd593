"""Energy balls: grown with their book entry, collected once, helped by friends, expired on time.

A credited entry's energy leaves `energy:issuance` for the holder's `balls` account in the same statement
that writes the entry (`grow_sql`), so a book entry and its ball exist together or not at all. Collecting
moves it on to `available`; expiry to `energy:expiry`; reversing the entry sends it back to issuance (or
claws back what was already collected, never below zero).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from wallet.db import connection, engine
from wallet.energy.policy import policy
from wallet.energy.preferences import friends_may_collect
from wallet.errors import DomainError
from wallet.ledger.service import Transfer, lock_holder, post, system_account
from wallet.outbox.service import record_events

__all__ = [
    "FriendCheck",
    "balls_of",
    "cancel_for_reversal",
    "collect",
    "expire_due",
    "grow_params",
    "grow_sql",
    "help_collect",
]

FriendCheck = Callable[[asyncpg.Connection, uuid.UUID, uuid.UUID], Awaitable[bool]]


def grow_sql(entries: str, first_param: int) -> str:
    """CTEs to append after the CTE `entries` (which returns the new entries' `id` and `energy`): a ball per
    entry with energy, its transfer from issuance into the holder's `balls` account, and that account's
    balance. The holder is $1; `grow_params()` fills parameters first_param and first_param + 1."""
    ripen, window = f"${first_param}::interval", f"${first_param + 1}::interval"
    return f"""
     balls AS (
        INSERT INTO energy_ball (holder, entry, amount, grown_at, ripens_at, expires_at, state)
        SELECT $1, {entries}.id, {entries}.energy, now(), now() + {ripen}, now() + {ripen} + {window}, 'growing'
        FROM {entries} WHERE {entries}.energy > 0
        RETURNING id, entry, amount),
     grown AS (
        INSERT INTO ledger_transfer (key, unit, debit_account, credit_account, amount, kind, ref, created_at)
        SELECT 'ball:' || balls.id || ':grown', 'energy',
               (SELECT id FROM ledger_account WHERE code = 'energy:issuance'),
               (SELECT id FROM ledger_account WHERE holder = $1 AND unit = 'energy' AND purpose = 'balls'),
               balls.amount, 'ball.grown', jsonb_build_object('ball', balls.id, 'entry', balls.entry), now()
        FROM balls RETURNING amount),
     grown_total AS (
        UPDATE ledger_account SET balance = balance + (SELECT sum(amount) FROM grown)
        WHERE holder = $1 AND unit = 'energy' AND purpose = 'balls' AND EXISTS (SELECT 1 FROM grown)
        RETURNING 1)"""  # noqa: S608 - a CTE name and generated placeholders only


def grow_params() -> tuple[timedelta, timedelta]:
    p = policy()
    return timedelta(seconds=p.ripen_s), timedelta(seconds=p.window_s)


# -- reading ---------------------------------------------------------------------------------------------

_BALLS = """
SELECT b.id, b.amount, b.grown_at, b.ripens_at, b.expires_at, b.state, b.resolved_at, b.collected_by,
       e.behaviour, e.category, e.reduction_mg, e.local_day, e.id AS entry_id
FROM energy_ball b JOIN book_entry e ON e.id = b.entry
WHERE b.holder = $1 AND ($2::text IS NULL OR b.state = $2) AND ($3::bigint IS NULL OR b.id < $3)
  AND (NOT $5 OR (b.ripens_at <= now() AND b.expires_at > now()))
ORDER BY b.id DESC LIMIT $4
"""


async def balls_of(holder_id: uuid.UUID, *, state: str | None = None, ripe_only: bool = False,
                   before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Newest first. `ripe_only` is what a friend sees: balls that can be collected now."""
    async with connection() as conn:
        rows = await conn.fetch(_BALLS, holder_id, "growing" if ripe_only else state, before, limit, ripe_only)
    return [dict(r) for r in rows]


# -- collecting ------------------------------------------------------------------------------------------

_TAKE = """
UPDATE energy_ball SET state = 'collected', resolved_at = now(), collected_by = $2
WHERE holder = $1 AND state = 'growing' AND ripens_at <= now() AND expires_at > now()
  AND ($3::bigint[] IS NULL OR id = ANY($3::bigint[]))
RETURNING id, amount, entry
"""


async def _take(conn: asyncpg.Connection, holder_id: uuid.UUID, by: uuid.UUID,
                ids: Sequence[int] | None) -> list[asyncpg.Record]:
    """Under the holder's lock: mark ripe balls collected and move their energy to `available`."""
    accounts = await lock_holder(conn, holder_id)
    taken = await conn.fetch(_TAKE, holder_id, by, list(ids) if ids is not None else None)
    helper = {"helper": str(by)} if by != holder_id else {}
    await post(conn, [
        Transfer(f"ball:{r['id']}:collected", accounts.balls, accounts.available, r["amount"], "ball.collected",
                 {"ball": r["id"], "entry": r["entry"], **helper})
        for r in taken
    ])
    return list(taken)


async def _explain(conn: asyncpg.Connection, holder_id: uuid.UUID, ball_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT id, amount, state, ripens_at, expires_at, collected_by FROM energy_ball WHERE id = $1 AND holder = $2",
        ball_id, holder_id,
    )
    if row is None:
        raise DomainError("not_found", "ball-not-found", "No energy ball of this resident has this id.")
    now = datetime.now(UTC)
    if row["state"] == "growing" and row["ripens_at"] > now:
        raise DomainError("conflict", "ball-not-ripe", "This energy ball is still growing; collect it once it is ripe.",
                          ripens_at=row["ripens_at"].isoformat())
    if row["state"] == "expired" or (row["state"] == "growing" and row["expires_at"] <= now):
        raise DomainError("conflict", "ball-expired", "This energy ball was not collected in time and has expired.")
    if row["state"] == "cancelled":
        raise DomainError("conflict", "ball-cancelled", "This energy ball was cancelled: its reduction was reversed.")
    return dict(row)


async def _balance(conn: asyncpg.Connection, holder_id: uuid.UUID) -> int:
    return await conn.fetchval(
        "SELECT balance FROM ledger_account WHERE holder = $1 AND unit = 'energy' AND purpose = 'available'", holder_id
    )


async def collect(holder_id: uuid.UUID, ball_id: int | None = None) -> dict[str, Any]:
    """Collect one ripe ball, or (without `ball_id`) every ripe ball at once. A ball already collected (a
    double tap) collects nothing again and says so."""
    async with engine().transaction() as tx:
        conn = tx.connection
        taken = await _take(conn, holder_id, holder_id, None if ball_id is None else [ball_id])
        if ball_id is not None and not taken:
            ball = await _explain(conn, holder_id, ball_id)  # raises unless it was collected already
            return {"collected": 0, "balls": [], "already_collected": [ball["id"]],
                    "available": await _balance(conn, holder_id)}
        return {"collected": sum(r["amount"] for r in taken), "balls": [r["id"] for r in taken],
                "already_collected": [], "available": await _balance(conn, holder_id)}


async def help_collect(helper_id: uuid.UUID, owner_id: uuid.UUID, ball_id: int, *, are_friends: FriendCheck,
                       now: datetime | None = None) -> dict[str, Any]:
    """A friend collects a ripe ball for its owner; the owner gets the energy. Allowed when the owner lets
    friends help, at most `friend_help_daily_cap` balls per friend per owner per day (the owner's day)."""
    if helper_id == owner_id:
        raise DomainError("invalid", "help-yourself", "Collect your own energy balls with the collect request.")
    cap = policy().friend_help_daily_cap
    async with engine().transaction() as tx:
        conn = tx.connection
        if not await are_friends(conn, helper_id, owner_id):
            raise DomainError("forbidden", "not-friends", "Only friends can help collect a resident's energy.")
        if not await friends_may_collect(conn, owner_id):
            raise DomainError("forbidden", "help-not-allowed", "This resident collects their energy themselves.")
        zone = ZoneInfo(await conn.fetchval("SELECT time_zone FROM holder WHERE id = $1", owner_id) or "UTC")
        local = (now or datetime.now(UTC)).astimezone(zone)
        day_start = datetime.combine(local.date(), time.min, zone)
        await lock_holder(conn, owner_id)  # before counting, so two helps at once cannot both pass the cap
        helped = await conn.fetchval(
            """SELECT count(*) FROM energy_ball WHERE collected_by = $1 AND holder = $2 AND state = 'collected'
               AND resolved_at >= $3""", helper_id, owner_id, day_start,
        )
        if helped >= cap:
            raise DomainError("rate_limited", "help-cap-reached",
                              f"You can help this friend collect at most {cap} energy balls a day.",
                              retry_after_s=int((day_start + timedelta(days=1) - local).total_seconds()) + 1)
        taken = await _take(conn, owner_id, helper_id, [ball_id])
        if not taken:
            await _explain(conn, owner_id, ball_id)
            raise DomainError("conflict", "ball-already-collected", "This energy ball has already been collected.")
        await record_events([("energy.helped", {"ball_id": ball_id, "amount": taken[0]["amount"],
                                                "helper_id": str(helper_id)}, owner_id)])
    return {"collected": taken[0]["amount"], "ball": ball_id, "owner": str(owner_id)}


# -- expiry and reversal ---------------------------------------------------------------------------------

_DUE = """SELECT id, holder FROM energy_ball WHERE state = 'growing' AND expires_at <= now()
          ORDER BY expires_at, id LIMIT $1"""


async def expire_due(*, batch: int = 1000) -> int:
    """Expire every ball whose window has passed, in batches: idempotent (a ball ends once), and a missed
    run simply finds more due. Returns how many expired."""
    expired = 0
    expiry: int | None = None
    while True:
        async with engine().transaction() as tx:
            conn = tx.connection
            expiry = expiry or await system_account(conn, "energy:expiry")
            due = await conn.fetch(_DUE, batch)
            if not due:
                return expired
            holders = sorted({r["holder"] for r in due})
            # The holders' `balls` accounts in id order first (the order every other writer uses), then the balls.
            accounts = {r["holder"]: r["id"] for r in await conn.fetch(
                """SELECT id, holder FROM ledger_account WHERE holder = ANY($1::uuid[]) AND unit = 'energy'
                   AND purpose = 'balls' ORDER BY id FOR UPDATE""", holders,
            )}
            ended = await conn.fetch(
                """UPDATE energy_ball SET state = 'expired', resolved_at = now()
                   WHERE id = ANY($1::bigint[]) AND state = 'growing' AND expires_at <= now()
                   RETURNING id, holder, amount, entry""",
                [r["id"] for r in due],
            )
            await post(conn, [
                Transfer(f"ball:{r['id']}:expired", accounts[r["holder"]], expiry, r["amount"], "ball.expired",
                         {"ball": r["id"], "entry": r["entry"]})
                for r in ended
            ])
            expired += len(ended)
        if len(due) < batch:
            return expired


async def cancel_for_reversal(conn: asyncpg.Connection, holder_id: uuid.UUID, entry_id: int,
                              reversal_id: int) -> dict[str, int]:
    """Inside the reversal's transaction: a growing ball is cancelled (its energy returns to issuance); a
    collected one is clawed back from `available`, as far as the balance reaches (never below zero)."""
    accounts = await lock_holder(conn, holder_id)
    issuance = await system_account(conn, "energy:issuance")
    ball = await conn.fetchrow("SELECT id, amount, state FROM energy_ball WHERE entry = $1 FOR UPDATE", entry_id)
    if ball is None:
        return {"cancelled": 0, "clawed_back": 0, "short": 0}
    ref = {"ball": ball["id"], "entry": entry_id, "reversal": reversal_id}
    if ball["state"] == "growing":
        await conn.execute("UPDATE energy_ball SET state = 'cancelled', resolved_at = now() WHERE id = $1", ball["id"])
        await post(conn, [Transfer(f"ball:{ball['id']}:cancelled", accounts.balls, issuance, ball["amount"],
                                   "ball.cancelled", ref)])
        return {"cancelled": ball["amount"], "clawed_back": 0, "short": 0}
    if ball["state"] == "collected":
        back = min(ball["amount"], accounts.balances["available"])
        if back:
            await post(conn, [Transfer(f"ball:{ball['id']}:clawback", accounts.available, issuance, back,
                                       "energy.clawback", ref)])
        return {"cancelled": 0, "clawed_back": back, "short": ball["amount"] - back}
    return {"cancelled": 0, "clawed_back": 0, "short": 0}
