"""Friendships, as far as other features need them now: whether two residents are friends, and making two
residents friends (the request/accept/block flow that leads here comes with gamification's friends)."""

from __future__ import annotations

import uuid

import asyncpg

from wallet.db import connection

__all__ = ["are_friends", "befriend"]


def _pair(a: uuid.UUID, b: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    return (a, b) if a < b else (b, a)


async def are_friends(conn: asyncpg.Connection, a: uuid.UUID, b: uuid.UUID) -> bool:
    return a != b and await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM friendship WHERE holder_a = $1 AND holder_b = $2)", *_pair(a, b)
    )


async def befriend(a: uuid.UUID, b: uuid.UUID) -> None:
    if a == b:
        raise ValueError("a resident cannot befriend themselves")
    async with connection() as conn:
        await conn.execute(
            "INSERT INTO friendship (holder_a, holder_b, since) VALUES ($1, $2, now()) ON CONFLICT DO NOTHING",
            *_pair(a, b),
        )
