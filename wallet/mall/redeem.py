"""Redeeming energy for a reward, two-phase (LEDGER L8).

1. `reserve`: under the holder's lock, check limits and balance, take one item of stock with a guarded
   update (`stock > 0`), move the price from `available` to `held`, store the redemption with the
   resident's idempotency key. All or nothing, one transaction.
2. `fulfil`: get a voucher (issue one, take a loaded one, or ask the merchant: outside any transaction).
3. post (`held` → `energy:mall`, voucher stored) or `void` (`held` → `available`, item back in stock).
   Each redemption resolves exactly once: its state moves only from `pending`, and the resolving transfer's
   `resolves` is UNIQUE.

A redemption left pending (the process died after reserving, or the merchant did not answer) is retried by
the worker's sweep with backoff, and voided with a reason after the last attempt, so nothing stays reserved.
A refused request (sold out, not enough energy, a limit) stores nothing, so its idempotency key may be
used again.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.ledger.service import Transfer, lock_holder, post, system_account
from wallet.mall.merchant import Merchant, Outcome
from wallet.outbox.service import record_events

__all__ = ["ATTEMPTS_MAX", "fulfil", "redemption_of", "redemptions_page", "reserve", "sweep_pending", "void"]

ATTEMPTS_MAX = 8
PENDING_MAX = timedelta(hours=24)
INLINE_GRACE = timedelta(seconds=60)  # the sweep leaves a fresh redemption to the request that reserved it
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U to misread


def voucher_code() -> str:
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(12))
    return f"CW-{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def _request_hash(reward_id: int) -> bytes:
    return hashlib.sha256(f"redeem:v1:{reward_id}".encode()).digest()


_COLUMNS = """d.id, d.holder, d.reward, d.price, d.state, d.idempotency_key, d.request_hash, d.local_day,
    d.reserve_transfer, d.resolve_transfer, d.voucher_code, d.voucher_expires_at, d.void_reason, d.attempts,
    d.created_at, d.resolved_at, r.code AS reward_code, r.title_zh, r.title_en, r.merchant_zh, r.merchant_en,
    r.fulfilment, r.merchant_url, r.partner, r.voucher_valid_days"""
_ONE = f"SELECT {_COLUMNS} FROM redemption d JOIN reward r ON r.id = d.reward WHERE d.id = $1"  # noqa: S608
_BY_KEY = f"""SELECT {_COLUMNS} FROM redemption d JOIN reward r ON r.id = d.reward
              WHERE d.holder = $1 AND d.idempotency_key = $2"""  # noqa: S608


def _stored(row: asyncpg.Record, reward_id: int) -> dict[str, Any]:
    """The same key again: the same request gets what it got; another request under it is a mistake."""
    if bytes(row["request_hash"]) != _request_hash(reward_id):
        raise DomainError("invalid", "idempotency-key-reused",
                          "This Idempotency-Key was used for a different redemption; use a new key.")
    return dict(row)


async def reserve(holder_id: uuid.UUID, reward_id: int, *, idempotency_key: str | None,
                  now: datetime | None = None) -> tuple[dict[str, Any], bool]:
    """Phase one. Returns the redemption and whether this call created it (False: a replay)."""
    key = idempotency_key or f"auto-{uuid.uuid4()}"
    now = now or datetime.now(UTC)
    async with connection() as conn:
        if idempotency_key and (row := await conn.fetchrow(_BY_KEY, holder_id, key)):
            return _stored(row, reward_id), False
        reward = await conn.fetchrow(
            """SELECT r.id, r.price, r.stock, r.status, r.valid_from, r.valid_until, r.per_day_limit, r.lifetime_limit,
                      h.time_zone FROM reward r, holder h WHERE r.id = $1 AND h.id = $2""",
            reward_id, holder_id,
        )
    if reward is None or reward["status"] == "retired":
        raise DomainError("not_found", "reward-not-found", "No reward in the mall has this id.")
    if reward["status"] != "active" or (reward["valid_from"] and reward["valid_from"] > now) or (
            reward["valid_until"] and reward["valid_until"] <= now):
        raise DomainError("conflict", "reward-not-offered", "This reward cannot be redeemed now.")
    if reward["stock"] == 0:  # fast path; the guarded update below is what decides
        raise DomainError("conflict", "sold-out", "This reward is sold out.")
    local_day = now.astimezone(ZoneInfo(reward["time_zone"])).date()
    async with engine().transaction() as tx:
        conn = tx.connection
        accounts = await lock_holder(conn, holder_id)
        if idempotency_key and (row := await conn.fetchrow(_BY_KEY, holder_id, key)):
            return _stored(row, reward_id), False  # the same key, committed while we waited for the lock
        used = await conn.fetchrow(
            """SELECT count(*) AS lifetime, count(*) FILTER (WHERE local_day = $3) AS today FROM redemption
               WHERE holder = $1 AND reward = $2 AND state <> 'voided'""",
            holder_id, reward_id, local_day,
        )
        if reward["lifetime_limit"] is not None and used["lifetime"] >= reward["lifetime_limit"]:
            raise DomainError("conflict", "lifetime-limit-reached",
                              f"You can redeem this reward at most {reward['lifetime_limit']} times.")
        if reward["per_day_limit"] is not None and used["today"] >= reward["per_day_limit"]:
            raise DomainError("conflict", "daily-limit-reached",
                              f"You can redeem this reward at most {reward['per_day_limit']} times a day.")
        if accounts.balances["available"] < reward["price"]:
            raise DomainError("conflict", "insufficient-energy",
                              f"This reward costs {reward['price']} energy; you have {accounts.balances['available']}.",
                              price=reward["price"], available=accounts.balances["available"])
        if reward["stock"] is not None and await conn.fetchval(
                "UPDATE reward SET stock = stock - 1 WHERE id = $1 AND stock > 0 RETURNING stock", reward_id) is None:
            raise DomainError("conflict", "sold-out", "This reward is sold out.")
        ids = await post(conn, [Transfer(f"redemption:{holder_id}:{key}:reserve", accounts.available, accounts.held,
                                         reward["price"], "redemption.reserved", {"reward": reward_id})])
        new_id = await conn.fetchval(
            """INSERT INTO redemption (holder, reward, price, state, idempotency_key, request_hash, local_day,
                                       reserve_transfer, attempts, created_at, next_attempt_at)
               VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, 0, now(), now() + $8::interval) RETURNING id""",
            holder_id, reward_id, reward["price"], key, _request_hash(reward_id), local_day,
            next(iter(ids.values())), INLINE_GRACE,
        )
        row = await conn.fetchrow(_ONE, new_id)
    return dict(row), True


async def fulfil(redemption_id: int, merchant: Merchant | None) -> dict[str, Any]:
    """Phase two; safe to call any number of times, from the request or the sweep."""
    async with connection() as conn:
        row = await conn.fetchrow(_ONE, redemption_id)
    if row is None:
        raise DomainError("not_found", "redemption-not-found", "No redemption has this id.")
    if row["state"] != "pending":
        return dict(row)
    outcome = Outcome("issued", voucher_code=voucher_code())
    if row["fulfilment"] == "merchant":
        if merchant is None:
            return dict(row)  # only the worker calls merchants; it will find this pending
        outcome = await merchant(dict(row))
    if outcome.result == "refused":
        return await void(redemption_id, outcome.reason)
    if outcome.result == "retry":
        attempts = await _postpone(redemption_id)
        if attempts is not None and attempts >= ATTEMPTS_MAX:
            return await void(redemption_id, "merchant-unavailable")
        return await redemption_of(redemption_id)
    return await _post(row, outcome)


async def _postpone(redemption_id: int) -> int | None:
    async with connection() as conn:
        return await conn.fetchval(
            """UPDATE redemption SET attempts = attempts + 1,
                      next_attempt_at = now() + least(interval '1 hour', interval '30 seconds' * 2 ^ attempts)
               WHERE id = $1 AND state = 'pending' RETURNING attempts""",
            redemption_id,
        )


async def _post(row: asyncpg.Record, outcome: Outcome) -> dict[str, Any]:
    void_reason: str | None = None
    async with engine().transaction() as tx:
        conn = tx.connection
        accounts = await lock_holder(conn, row["holder"])
        if await conn.fetchval("SELECT state FROM redemption WHERE id = $1 FOR UPDATE", row["id"]) == "pending":
            code = outcome.voucher_code
            if row["fulfilment"] == "pool":
                code = await conn.fetchval(
                    """UPDATE reward_voucher SET redemption = $2 WHERE id = (
                           SELECT id FROM reward_voucher WHERE reward = $1 AND redemption IS NULL
                           ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING code""",
                    row["reward"], row["id"],
                )
            if code is None:
                void_reason = "out-of-codes"
            else:
                mall = await system_account(conn, "energy:mall")
                ids = await post(conn, [Transfer(
                    f"redemption:{row['id']}:posted", accounts.held, mall, row["price"], "redemption.posted",
                    {"redemption": row["id"], "reward": row["reward"]}, resolves=row["reserve_transfer"],
                )])
                expires = outcome.expires_at or datetime.now(UTC) + timedelta(days=row["voucher_valid_days"])
                await conn.execute(
                    """UPDATE redemption SET state = 'fulfilled', voucher_code = $2, voucher_expires_at = $3,
                              resolve_transfer = $4, resolved_at = now() WHERE id = $1""",
                    row["id"], code, expires, ids[f"redemption:{row['id']}:posted"],
                )
                await record_events([("redemption.fulfilled", {"redemption_id": row["id"], "reward_id": row["reward"],
                                                               "price": row["price"]}, row["holder"])])
    if void_reason:
        return await void(row["id"], void_reason)
    return await redemption_of(row["id"])


async def void(redemption_id: int, reason: str) -> dict[str, Any]:
    """Release a pending redemption: energy back to `available`, the item back in stock. A resolved one is
    left as it is (resolving happens once)."""
    async with connection() as conn:
        holder_id = await conn.fetchval("SELECT holder FROM redemption WHERE id = $1", redemption_id)
    if holder_id is None:
        raise DomainError("not_found", "redemption-not-found", "No redemption has this id.")
    async with engine().transaction() as tx:
        conn = tx.connection
        accounts = await lock_holder(conn, holder_id)
        row = await conn.fetchrow(
            "SELECT id, reward, price, state, reserve_transfer FROM redemption WHERE id = $1 FOR UPDATE", redemption_id
        )
        if row["state"] == "pending":
            ids = await post(conn, [Transfer(
                f"redemption:{redemption_id}:voided", accounts.held, accounts.available, row["price"],
                "redemption.voided", {"redemption": redemption_id, "reward": row["reward"]},
                resolves=row["reserve_transfer"],
            )])
            await conn.execute(
                """UPDATE redemption SET state = 'voided', void_reason = $2, resolve_transfer = $3, resolved_at = now()
                   WHERE id = $1""",
                redemption_id, reason[:64], ids[f"redemption:{redemption_id}:voided"],
            )
            await conn.execute("UPDATE reward SET stock = stock + 1 WHERE id = $1 AND stock IS NOT NULL", row["reward"])
            await record_events([("redemption.voided", {"redemption_id": redemption_id, "reward_id": row["reward"],
                                                        "reason": reason[:64]}, holder_id)])
    return await redemption_of(redemption_id)


async def sweep_pending(merchant: Merchant | None, *, batch: int = 100) -> dict[str, int]:
    """The worker's catch-up: retry due pending redemptions, void those pending too long. Claims rows with
    SKIP LOCKED and pushes their next attempt out first, so two workers never work the same one at once."""
    async with connection() as conn:
        stale = await conn.fetch(
            "SELECT id FROM redemption WHERE state = 'pending' AND created_at < now() - $1::interval LIMIT $2",
            PENDING_MAX, batch,
        )
        claimed = await conn.fetch(
            """UPDATE redemption SET next_attempt_at = now() + interval '2 minutes' WHERE id IN (
                   SELECT id FROM redemption WHERE state = 'pending' AND next_attempt_at <= now()
                   ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING id""",
            batch,
        )
    for r in stale:
        await void(r["id"], "fulfilment-timed-out")
    done = 0
    for r in claimed:
        if (await fulfil(r["id"], merchant))["state"] != "pending":
            done += 1
    return {"voided_stale": len(stale), "tried": len(claimed), "resolved": done}


async def redemption_of(redemption_id: int, holder_id: uuid.UUID | None = None) -> dict[str, Any]:
    async with connection() as conn:
        row = await conn.fetchrow(_ONE, redemption_id)
    if row is None or (holder_id is not None and row["holder"] != holder_id):
        raise DomainError("not_found", "redemption-not-found", "You have no redemption with this id.")
    return dict(row)


async def redemptions_page(holder_id: uuid.UUID, *, before: int | None, limit: int,
                           state: str | None = None) -> list[dict[str, Any]]:
    async with connection() as conn:
        rows = await conn.fetch(
            f"""SELECT {_COLUMNS} FROM redemption d JOIN reward r ON r.id = d.reward
                WHERE d.holder = $1 AND ($2::bigint IS NULL OR d.id < $2) AND ($4::text IS NULL OR d.state = $4)
                ORDER BY d.id DESC LIMIT $3""",  # noqa: S608 - constant columns
            holder_id, before, limit, state,
        )
    return [dict(r) for r in rows]
