"""The review queue: activities held as suspicious wait for an operator, who credits or rejects each with
a note the resident reads. Crediting applies the caps as they stand at review time (the book may have
filled the day meanwhile), under the holder's chain lock like any other write."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec

from wallet.book.service import Draft, append, lock_head
from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.intake.judge import Receipt as _Receipt
from wallet.intake.judge import load_context, reduction_event
from wallet.intake.reports import Source
from wallet.intake.rules import Judged, caps, other_claims
from wallet.methodology.catalogue import behaviours, energy_for, reduction_mg, version_of
from wallet.outbox.service import record_events

__all__ = ["held_page", "resolve"]

Decision = Literal["credit", "reject"]


async def held_page(*, before: tuple[datetime, uuid.UUID] | None, limit: int) -> list[dict[str, Any]]:
    """Oldest first: the queue is worked in the order things arrived."""
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT a.id, a.holder, a.external_id, a.behaviour, a.quantity, a.occurred_at, a.ended_at,
                      a.details, a.received_at, a.reason_code, a.reason_params, p.name AS partner_name,
                      s.kind AS source_kind
               FROM activity a JOIN sub_account s ON s.id = a.sub_account LEFT JOIN partner p ON p.id = a.partner
               WHERE a.verdict = 'held' AND ($1::timestamptz IS NULL OR (a.received_at, a.id) > ($1, $2))
               ORDER BY a.received_at, a.id LIMIT $3""",
            before[0] if before else None, before[1] if before else None, limit,
        )
    return [dict(r) for r in rows]


async def resolve(activity_id: uuid.UUID, decision: Decision, note: str, operator_id: uuid.UUID) -> dict[str, Any]:
    note = note.strip()[:500]
    if not note:
        raise DomainError("invalid", "note-required", "Give the resident a reason (note) for the decision.")
    async with connection() as conn:
        holder_id = await conn.fetchval("SELECT holder FROM activity WHERE id = $1", activity_id)
    if holder_id is None:
        raise DomainError("not_found", "activity-not-found", "No activity has this id.")
    async with engine().transaction() as tx:
        conn = tx.connection
        head = await lock_head(conn, holder_id)
        row = await conn.fetchrow(
            """SELECT a.*, s.kind AS source_kind, p.trust_tier AS partner_tier FROM activity a
               JOIN sub_account s ON s.id = a.sub_account LEFT JOIN partner p ON p.id = a.partner
               WHERE a.id = $1 FOR UPDATE OF a""",
            activity_id,
        )
        if row["verdict"] != "held":
            raise DomainError("conflict", "not-held", f"This activity is {row['verdict']}, not waiting for review.")
        version = version_of(row["behaviour"], row["behaviour_version"])
        verdict, code, params, quantity, mg = "rejected", "review-rejected", {"note": note}, 0, 0
        related: uuid.UUID | None = None
        entry: Draft | None = None
        if decision == "credit":
            zone = ZoneInfo(head.time_zone)
            ctx, _ = await load_context(conn, holder_id, [row["behaviour"]], zone, row["occurred_at"],
                                 row["ended_at"] or row["occurred_at"])
            judged = Judged(
                activity_id=activity_id, sub_account_id=row["sub_account"], source=("", ""),
                source_tier=row["partner_tier"] or "self_reported", self_reported=row["source_kind"] == "self",
                allowed_behaviours=None, behaviour=row["behaviour"], quantity=row["quantity"],
                occurred_at=row["occurred_at"], ended_at=row["ended_at"], local_day=row["local_day"],
                details={},
            )
            # What was counted while this waited still wins: a reviewed copy is a duplicate, not a second credit.
            capped = other_claims(judged, version, ctx) or caps(judged, version, ctx)
            verdict, quantity = capped.verdict, capped.credited_quantity
            related = capped.related_activity
            if verdict == "credited":
                code, params = "review-credited", {"note": note}
            else:
                code, params = capped.code, capped.params
            if quantity:
                mg = reduction_mg(version, quantity)
                entry = Draft(
                    kind="credit", activity_id=activity_id, external_id=row["external_id"], reverses=None,
                    sub_account_id=row["sub_account"], partner_id=row["partner"],
                    trust_tier=row["partner_tier"] or "self_reported", behaviour=row["behaviour"],
                    behaviour_version=version.version, methodology_release=row["methodology_release"],
                    category=behaviours()[row["behaviour"]].category, quantity=quantity, reduction_mg=mg,
                    energy=energy_for(version, mg), occurred_at=row["occurred_at"], local_day=row["local_day"],
                )
        head, entry_ids = await append(conn, head, [entry] if entry else [])
        await conn.execute(
            """UPDATE activity SET verdict = $2, reason_code = $3, reason_params = $4::jsonb, credited_quantity = $5,
                   credited_mg = $6, reviewed_by = $7, reviewed_at = now(), judged_at = now(), related_activity = $8
               WHERE id = $1""",
            activity_id, verdict, code, msgspec.json.encode(params).decode(), quantity, mg, operator_id, related,
        )
        events = [("activity.reviewed", {"activity_id": str(activity_id), "verdict": verdict, "code": code}, holder_id)]
        if entry is not None:
            source = Source(holder_id, row["sub_account"], row["partner"], "self", entry.trust_tier, ("", ""))
            receipt = _Receipt(row["external_id"], activity_id, verdict, code, params, quantity, mg)
            event = reduction_event(source, receipt, entry, entry_ids[activity_id])
            events.append(("reduction.recorded", event, holder_id))
        await record_events(events)
    return {"activity_id": activity_id, "verdict": verdict, "code": code, "credited_quantity": quantity,
            "credited_mg": mg}
