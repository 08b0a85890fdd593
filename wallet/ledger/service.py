"""Posting transfers: the one door through which energy (and later fen) moves.

A transfer moves a positive amount from one account to another in one unit, so its postings sum to zero by
construction. `post` writes a batch in one statement: idempotent on each transfer's key, and the cached
balances of holder accounts move in the same statement through a guarded update (`balance + delta >= 0`),
backed by the `ledger_account_balance_floor` CHECK. System accounts cache nothing (LEDGER L6).

Locking (LEDGER L5): every transaction that moves a holder's energy first calls `lock_holder`, which locks
all of that holder's accounts in id order; the intake path (one holder's `balls` account, under the book's
head lock) and the expiry sweep (many `balls` accounts, in id order) take subsets in the same order, so
there is no cycle. System accounts are never locked.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec

from wallet.errors import DomainError

__all__ = [
    "ENERGY",
    "HolderAccounts",
    "Transfer",
    "holder_accounts",
    "lock_holder",
    "post",
    "system_account",
]

ENERGY = "energy"


@dataclass(frozen=True, slots=True)
class Transfer:
    key: str  # the idempotency id: the same effect always derives the same key
    debit: int  # the account the amount leaves
    credit: int  # the account it arrives in
    amount: int
    kind: str
    ref: dict[str, Any] = field(default_factory=dict)
    resolves: int | None = None  # the pending transfer this one posts or voids
    unit: str = ENERGY


@dataclass(frozen=True, slots=True)
class HolderAccounts:
    holder_id: uuid.UUID
    available: int
    balls: int
    held: int
    balances: dict[str, int]

    @property
    def ids(self) -> list[int]:
        return [self.available, self.balls, self.held]


_LOCK = """SELECT id, purpose, balance FROM ledger_account WHERE holder = $1 AND unit = $2 ORDER BY id FOR UPDATE"""
_READ = """SELECT id, purpose, balance FROM ledger_account WHERE holder = $1 AND unit = $2 ORDER BY id"""


def _accounts(holder_id: uuid.UUID, rows: Sequence[asyncpg.Record]) -> HolderAccounts:
    by = {r["purpose"]: r for r in rows}
    if set(by) != {"available", "balls", "held"}:
        raise DomainError("not_found", "holder-not-found", "This account does not exist or has been deleted.")
    return HolderAccounts(holder_id, by["available"]["id"], by["balls"]["id"], by["held"]["id"],
                          {p: r["balance"] for p, r in by.items()})


async def lock_holder(conn: asyncpg.Connection, holder_id: uuid.UUID, unit: str = ENERGY) -> HolderAccounts:
    """Lock the holder's accounts (in id order) for the rest of the transaction and read their balances."""
    return _accounts(holder_id, await conn.fetch(_LOCK, holder_id, unit))


async def holder_accounts(conn: asyncpg.Connection, holder_id: uuid.UUID, unit: str = ENERGY) -> HolderAccounts:
    return _accounts(holder_id, await conn.fetch(_READ, holder_id, unit))


_SYSTEM: dict[str, int] = {}


async def system_account(conn: asyncpg.Connection, code: str) -> int:
    """The id of a system account such as `energy:issuance` (ids never change, so they are kept per process)."""
    if code not in _SYSTEM:
        found = await conn.fetchval("SELECT id FROM ledger_account WHERE code = $1 AND holder IS NULL", code)
        if found is None:
            raise LookupError(f"the ledger has no system account {code!r}; run the migrations")
        _SYSTEM[code] = found
    return _SYSTEM[code]


_POST = """
WITH t AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::bigint[],
                         $8::text[]) WITH ORDINALITY AS t(key, unit, debit, credit, amount, kind, resolves, ref, n)
),
ins AS (
    INSERT INTO ledger_transfer (key, unit, debit_account, credit_account, amount, kind, resolves, ref, created_at)
    SELECT key, unit, debit, credit, amount, kind, resolves, ref::jsonb, now() FROM t ORDER BY n
    ON CONFLICT (key) DO NOTHING
    RETURNING id, key, debit_account, credit_account, amount
),
legs AS (
    SELECT debit_account AS account, -amount AS delta FROM ins
    UNION ALL SELECT credit_account, amount FROM ins
),
moves AS (SELECT account, sum(delta)::bigint AS delta FROM legs GROUP BY account),
upd AS (
    UPDATE ledger_account a SET balance = a.balance + m.delta FROM moves m
    WHERE a.id = m.account AND a.balance IS NOT NULL AND a.balance + m.delta >= 0
    RETURNING a.id
)
SELECT ins.id, ins.key, (SELECT count(*) FROM upd) AS moved,
       (SELECT count(*) FROM moves m JOIN ledger_account a ON a.id = m.account WHERE a.balance IS NOT NULL) AS cached
FROM ins
"""


async def post(conn: asyncpg.Connection, transfers: Sequence[Transfer]) -> dict[str, int]:
    """Post `transfers` inside the caller's transaction; returns the new transfers' ids by key (a key already
    posted is skipped: the effect happened once). If any holder account would go below zero nothing may stay
    written, so this raises `insufficient-energy` and the caller's transaction rolls back."""
    if not transfers:
        return {}
    if not conn.is_in_transaction():
        raise RuntimeError("ledger.post needs the caller's transaction: balances and transfers commit together")
    for t in transfers:
        if t.amount <= 0 or t.debit == t.credit:
            raise ValueError(f"transfer {t.key!r} must move a positive amount between two accounts")
    rows = await conn.fetch(
        _POST, [t.key for t in transfers], [t.unit for t in transfers], [t.debit for t in transfers],
        [t.credit for t in transfers], [t.amount for t in transfers], [t.kind for t in transfers],
        [t.resolves for t in transfers], [msgspec.json.encode(t.ref).decode() for t in transfers],
    )
    if rows and rows[0]["moved"] != rows[0]["cached"]:
        raise DomainError("conflict", "insufficient-energy", "There is not enough energy for this.")
    return {r["key"]: r["id"] for r in rows}
