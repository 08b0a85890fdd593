"""Correcting a transfer by reversing it (LEDGER L3): a new transfer moves the same amount back, pointing at
the original; nothing is edited. Only transfers whose effect lives in the ledger alone can be reversed here
(an award, or a donation to a project that is still open); balls, redemptions and completed projects have
their own corrections (reversing the book entry, voiding a redemption), which keep their state in step."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from wallet.db import engine
from wallet.errors import DomainError
from wallet.ledger.service import Transfer, lock_holder, post

__all__ = ["REVERSIBLE", "reverse_transfer"]

REVERSIBLE = ("award", "donation")


async def reverse_transfer(transfer_id: int, *, reason: str, operator_id: uuid.UUID) -> dict[str, Any]:
    reason = reason.strip()
    if not reason or len(reason) > 200:
        raise DomainError("invalid", "reason-required", "Say in at most 200 characters why; the resident reads it.")
    async with engine().transaction() as tx:
        conn = tx.connection
        t = await conn.fetchrow("SELECT * FROM ledger_transfer WHERE id = $1", transfer_id)
        if t is None:
            raise DomainError("not_found", "transfer-not-found", "No transfer has this id.")
        if t["kind"] not in REVERSIBLE:
            raise DomainError("conflict", "not-reversible",
                              f"A {t['kind']} transfer is corrected through its own feature, not reversed here.")
        ref = t["ref"] if isinstance(t["ref"], dict) else msgspec.json.decode(t["ref"])
        holders = [r["holder"] for r in await conn.fetch(
            "SELECT DISTINCT holder FROM ledger_account WHERE id = ANY($1::bigint[]) AND holder IS NOT NULL",
            [t["debit_account"], t["credit_account"]],
        )]
        for holder in sorted(holders):  # the order every writer of a holder's energy takes
            await lock_holder(conn, holder, t["unit"])
        if t["kind"] == "donation" and await conn.fetchval(
                "SELECT status FROM donation_project WHERE id = $1 FOR UPDATE", ref.get("project")) == "completed":
            raise DomainError("conflict", "project-completed",
                              "This project met its goal and issued certificates; its donations stay.")
        key = f"reverse:{transfer_id}"
        ids = await post(conn, [Transfer(
            key, t["credit_account"], t["debit_account"], t["amount"], "correction",
            {**{k: v for k, v in ref.items() if k in ("project", "reward")}, "reverses": transfer_id,
             "reason": reason, "operator": str(operator_id)}, unit=t["unit"],
        )])
        if not ids:
            raise DomainError("conflict", "already-reversed", "This transfer was already reversed.")
    return {"id": ids[key], "reverses": transfer_id, "amount": t["amount"], "holders": [str(h) for h in holders]}
