"""Corrections: a credited entry found wrong later (fraud, a partner's retraction) is reversed by a new,
negative entry that points at it. Nothing is edited; the chain keeps both, and totals net out. The credit's
energy goes too: a growing ball is cancelled, collected energy is clawed back as far as the balance reaches
(what was already spent is reported as `energy_short`, never taken below zero)."""

from __future__ import annotations

import uuid
from typing import Any

from wallet.book.service import Draft, append, lock_head
from wallet.db import connection, engine
from wallet.energy.balls import cancel_for_reversal
from wallet.errors import DomainError
from wallet.outbox.service import record_events

__all__ = ["reverse_entry"]


async def reverse_entry(entry_id: int, *, reason: str, operator_id: uuid.UUID) -> dict[str, Any]:
    reason = reason.strip()[:500]
    if not reason:
        raise DomainError("invalid", "reason-required", "Say why the entry is reversed; the resident reads it.")
    async with connection() as conn:
        holder_id = await conn.fetchval("SELECT holder FROM book_entry WHERE id = $1", entry_id)
    if holder_id is None:
        raise DomainError("not_found", "entry-not-found", "No book entry has this id.")
    async with engine().transaction() as tx:
        conn = tx.connection
        head = await lock_head(conn, holder_id)
        row = await conn.fetchrow(
            """SELECT e.*, a.external_id FROM book_entry e JOIN activity a ON a.id = e.activity WHERE e.id = $1""",
            entry_id,
        )
        if row["kind"] != "credit":
            raise DomainError("conflict", "not-a-credit", "Only a credit can be reversed; this is a reversal.")
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM book_entry WHERE reverses = $1)", entry_id):
            raise DomainError("conflict", "already-reversed", "This entry was already reversed.")
        draft = Draft(
            kind="reversal", activity_id=row["activity"], external_id=row["external_id"], reverses=entry_id,
            sub_account_id=row["sub_account"], partner_id=row["partner"], trust_tier=row["trust_tier"],
            behaviour=row["behaviour"], behaviour_version=row["behaviour_version"],
            methodology_release=row["methodology_release"], category=row["category"], quantity=-row["quantity"],
            reduction_mg=-row["reduction_mg"], energy=-row["energy"], occurred_at=row["occurred_at"],
            local_day=row["local_day"], note=reason,
        )
        head, ids = await append(conn, head, [draft])
        reversal_id = ids[row["activity"]]
        energy = await cancel_for_reversal(conn, holder_id, entry_id, reversal_id)
        await record_events([(
            "reduction.reversed",
            {"entry_id": reversal_id, "reverses": entry_id, "activity_id": str(row["activity"]),
             "behaviour": row["behaviour"], "category": row["category"], "reduction_mg": -row["reduction_mg"],
             "energy": -row["energy"], "local_day": row["local_day"].isoformat(), "reason": reason,
             "operator_id": str(operator_id), "energy_cancelled": energy["cancelled"],
             "energy_clawed_back": energy["clawed_back"], "energy_short": energy["short"]},
            holder_id,
        )])
    return {"entry_id": reversal_id, "reverses": entry_id, "reduction_mg": -row["reduction_mg"], "seq": head.seq,
            "energy": energy}
