"""Energy an operator awards directly (a campaign prize, goodwill after a fault), straight to `available`,
from `energy:issuance` like every other energy, with the reason the resident reads and the operator's id."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from wallet.db import engine
from wallet.errors import DomainError
from wallet.ledger.service import Transfer, lock_holder, post, system_account
from wallet.outbox.service import record_events

__all__ = ["AWARD_MAX", "award"]

AWARD_MAX = 1_000_000


async def award(holder_id: uuid.UUID, amount: int, *, reason: str, operator_id: uuid.UUID,
                key: str | None = None) -> dict[str, Any]:
    """Idempotent on `key`: an operator's retry awards once; the same key for another amount or reason is
    refused rather than silently taken for a retry."""
    reason = reason.strip()
    if not reason or len(reason) > 200:
        raise DomainError("invalid", "reason-required", "Say in at most 200 characters why; the resident reads it.")
    if isinstance(amount, bool) or not 1 <= amount <= AWARD_MAX:
        raise DomainError("invalid", "invalid-amount", f"amount must be a whole number from 1 to {AWARD_MAX}.")
    transfer_key = f"award:{holder_id}:{key or uuid.uuid4()}"
    request = hashlib.sha256(f"award:v1:{amount}:{reason}".encode()).hexdigest()
    async with engine().transaction() as tx:
        conn = tx.connection
        accounts = await lock_holder(conn, holder_id)
        earlier = await conn.fetchval("SELECT ref->>'request' FROM ledger_transfer WHERE key = $1", transfer_key)
        if earlier is not None and earlier != request:
            raise DomainError("invalid", "idempotency-key-reused",
                              "This Idempotency-Key was used for a different award; use a new key.")
        issuance = await system_account(conn, "energy:issuance")
        ids = await post(conn, [Transfer(transfer_key, issuance, accounts.available, amount, "award",
                                         {"reason": reason, "operator": str(operator_id), "request": request})])
        if ids:
            await record_events([("energy.awarded", {"amount": amount, "reason": reason}, holder_id)])
        available = await conn.fetchval("SELECT balance FROM ledger_account WHERE id = $1", accounts.available)
    return {"awarded": amount if ids else 0, "available": available, "replayed": not ids}
