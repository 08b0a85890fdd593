"""Judging reported activities and writing the book, for one holder, in one transaction.

The holder's chain head is locked first, so caps, overlaps and duplicates are decided against a book
nobody else is writing; other holders are not blocked. The request's activities are stored (idempotent
on the source's event id), decided in order by `rules.decide`, and their verdicts, the book entries, the
chain head and one outbox event per credited activity commit together: nothing accepted is lost, and a
replay returns the stored verdict.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from wallet.book.service import Draft, append, lock_head
from wallet.db import engine
from wallet.intake.reasons import reasons_both
from wallet.intake.reports import Report, Source
from wallet.intake.rules import Claim, Context, Judged, decide
from wallet.methodology.catalogue import (
    CURRENT_RELEASE,
    BehaviourVersion,
    behaviours,
    current_version,
    energy_for,
    version_of,
)
from wallet.methodology.catalogue import reduction_mg as reduction_of
from wallet.outbox.service import record_events

__all__ = ["Receipt", "load_context", "record_reports", "reduction_event"]

SELF_SOURCE = ("自己上报", "your own report")


@dataclass(frozen=True, slots=True)
class Receipt:
    """What one report got. `replayed` means this event id was seen before with the same content and the
    stored verdict is returned; `verdict` is None only for `event-id-reused` (same id, other content)."""

    external_id: str
    activity_id: uuid.UUID | None
    verdict: str | None
    code: str
    params: dict[str, Any]
    credited_quantity: int = 0
    credited_mg: int = 0
    replayed: bool = False
    behaviour: str = ""
    reasons: dict[str, str] = field(default_factory=dict)


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _version(code: str) -> BehaviourVersion | None:
    return current_version(code) if code in behaviours() else None


_INSERT = """
INSERT INTO activity (id, holder, sub_account, partner, external_id, behaviour, quantity, occurred_at, ended_at,
                      details, request_digest, received_via, received_at, verdict, reason_params, credited_quantity,
                      credited_mg)
SELECT u.id, $1, $2, $3, u.external_id, u.behaviour, u.quantity, u.occurred_at, u.ended_at, u.details::jsonb,
       u.digest, $4, now(), 'received', '{}'::jsonb, 0, 0
FROM unnest($5::uuid[], $6::text[], $7::text[], $8::bigint[], $9::timestamptz[], $10::timestamptz[], $11::text[],
            $12::text[]) AS u(id, external_id, behaviour, quantity, occurred_at, ended_at, details, digest)
ON CONFLICT (sub_account, external_id) DO NOTHING
RETURNING external_id, id
"""

_UPDATE = """
UPDATE activity a SET verdict = u.verdict, reason_code = u.code, reason_params = u.params::jsonb,
       related_activity = u.related, behaviour_version = u.version, methodology_release = $2,
       local_day = u.local_day, credited_quantity = u.quantity, credited_mg = u.mg, judged_at = now()
FROM unnest($1::uuid[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::int[], $8::date[], $9::bigint[],
            $10::bigint[]) AS u(id, verdict, code, params, related, version, local_day, quantity, mg)
WHERE a.id = u.id
"""


async def record_reports(source: Source, reports: Sequence[Report], *, now: datetime | None = None) -> list[Receipt]:
    now = now or datetime.now(UTC)
    fresh: dict[str, tuple[Report, str]] = {}
    for report in reports:
        fresh.setdefault(report.external_id, (report, report.digest()))
    async with engine().transaction() as tx:
        conn = tx.connection
        head = await lock_head(conn, source.holder_id)
        zone = _zone(head.time_zone)
        rows = list(fresh.values())
        new_ids = {
            r["external_id"]: r["id"]
            for r in await conn.fetch(
                _INSERT, source.holder_id, source.sub_account_id, source.partner_id, source.via,
                [uuid.uuid4() for _ in rows], [r.external_id for r, _ in rows], [r.behaviour for r, _ in rows],
                [r.quantity for r, _ in rows], [r.occurred_at for r, _ in rows], [r.ended_at for r, _ in rows],
                [msgspec.json.encode(r.details).decode() for r, _ in rows], [d for _, d in rows],
            )
        }
        stored = await _stored(conn, source.sub_account_id, [k for k in fresh if k not in new_ids])
        decided = await _decide_new(conn, source, [(new_ids[k], fresh[k][0]) for k in fresh if k in new_ids],
                                    zone, now)
        head, entry_ids = await append(conn, head, [d for _, _, d in decided if d is not None])
        await _save_verdicts(conn, decided)
        await record_events([
            ("reduction.recorded", reduction_event(source, r, draft, entry_ids[r.activity_id]), source.holder_id)
            for r, _, draft in decided if draft is not None and r.activity_id is not None
        ] + [
            ("activity.held", {"activity_id": str(r.activity_id), "code": r.code}, source.holder_id)
            for r, _, _ in decided if r.verdict == "held"
        ])
    by_id = {r.external_id: r for r, _, _ in decided}
    out: list[Receipt] = []
    for report in reports:
        digest = report.digest()
        first = by_id.get(report.external_id)
        if first is not None and fresh[report.external_id][0] is report:
            receipt = first
        elif first is not None:  # a repeat inside one request: a replay of the first, or a conflict
            receipt = _replay(report.external_id, digest, fresh[report.external_id][1], first)
        else:
            saved_digest, saved = stored[report.external_id]
            receipt = _replay(report.external_id, digest, saved_digest, saved)
        out.append(replace(receipt, behaviour=report.behaviour, reasons=reasons_both(
            receipt.code, receipt.params, behaviour=report.behaviour, time_zone=head.time_zone,
        )))
    return out


def _replay(external_id: str, digest: str, stored_digest: str, stored: Receipt) -> Receipt:
    if digest != stored_digest:
        return Receipt(external_id, stored.activity_id, None, "event-id-reused", {})
    return Receipt(external_id, stored.activity_id, stored.verdict, stored.code, stored.params,
                   stored.credited_quantity, stored.credited_mg, replayed=True)


async def _stored(
    conn: asyncpg.Connection, sub_account_id: uuid.UUID, keys: list[str]
) -> dict[str, tuple[str, Receipt]]:
    if not keys:
        return {}
    rows = await conn.fetch(
        """SELECT external_id, id, request_digest, verdict, reason_code, reason_params, credited_quantity, credited_mg
           FROM activity WHERE sub_account = $1 AND external_id = ANY($2::text[])""",
        sub_account_id, keys,
    )
    return {
        r["external_id"]: (r["request_digest"], Receipt(
            r["external_id"], r["id"], r["verdict"], r["reason_code"] or "received", _params(r["reason_params"]),
            r["credited_quantity"], r["credited_mg"],
        ))
        for r in rows
    }


def _params(raw: Any) -> dict[str, Any]:
    value = msgspec.json.decode(raw) if isinstance(raw, str | bytes) else raw
    return value if isinstance(value, dict) else {}


async def load_context(conn: asyncpg.Connection, holder_id: uuid.UUID, codes: list[str], zone: ZoneInfo,
                   first: datetime, last: datetime) -> Context:
    """The holder's claims near these activities, and cap usage for the days and months they fall in."""
    ctx = Context()
    day_from = first.astimezone(zone).date().replace(day=1)
    day_to = last.astimezone(zone).date()
    claims = await conn.fetch(
        """SELECT a.id, a.sub_account, a.behaviour, a.behaviour_version, a.occurred_at, a.ended_at, a.quantity,
                  a.local_day, p.name, p.name_en
           FROM activity a LEFT JOIN partner p ON p.id = a.partner
           WHERE a.holder = $1 AND a.verdict IN ('credited', 'partially_credited', 'held')
             AND a.occurred_at BETWEEN $2 AND $3""",
        holder_id, first - timedelta(days=1), last + timedelta(days=1),
    )
    for c in claims:
        known = c["behaviour"] in behaviours()
        version = (version_of(c["behaviour"], c["behaviour_version"]) if known and c["behaviour_version"]
                   else _version(c["behaviour"]))
        ctx.claims.append(Claim(
            c["id"], c["sub_account"], (c["name"], c["name_en"] or c["name"]) if c["name"] else SELF_SOURCE,
            c["behaviour"], c["occurred_at"], c["ended_at"], version.exclusivity_group if version else "",
        ))
    usage = await conn.fetch(
        """SELECT behaviour, local_day, sum(quantity)::bigint AS q,
                  coalesce(sum(quantity) FILTER (WHERE trust_tier = 'self_reported'), 0)::bigint AS self_q
           FROM book_entry WHERE holder = $1 AND behaviour = ANY($2::text[]) AND local_day BETWEEN $3 AND $4
           GROUP BY behaviour, local_day""",
        holder_id, codes, day_from, day_to,
    )
    for u in usage:
        day: date = u["local_day"]
        ctx.used_month[(u["behaviour"], day.year, day.month)] += u["q"]
        ctx.used_day[(u["behaviour"], day)] += u["q"]
        ctx.used_self_day[(u["behaviour"], day)] += u["self_q"]
    for c in claims:
        if c["local_day"] is not None:
            ctx.reported_day[(c["behaviour"], c["local_day"])] += c["quantity"]
    return ctx


async def _decide_new(conn: asyncpg.Connection, source: Source, new: list[tuple[uuid.UUID, Report]],
                      zone: ZoneInfo, now: datetime) -> list[tuple[Receipt, Any, Draft | None]]:
    if not new:
        return []
    times = [r.occurred_at for _, r in new] + [r.ended_at for _, r in new if r.ended_at]
    codes = sorted({r.behaviour for _, r in new})
    ctx = await load_context(conn, source.holder_id, codes, zone, min(times), max(times))
    out: list[tuple[Receipt, Any, Draft | None]] = []
    for activity_id, report in new:
        version = _version(report.behaviour)
        local_day = report.occurred_at.astimezone(zone).date()
        decision = decide(Judged(
            activity_id=activity_id, sub_account_id=source.sub_account_id, source=source.names,
            source_tier=source.trust_tier, self_reported=source.partner_id is None,
            allowed_behaviours=source.allowed_behaviours, behaviour=report.behaviour, quantity=report.quantity,
            occurred_at=report.occurred_at, ended_at=report.ended_at, local_day=local_day, details=report.details,
        ), version, ctx, now)
        draft = None
        mg = 0
        if decision.credited_quantity and version is not None:
            mg = reduction_of(version, decision.credited_quantity)
            draft = Draft(
                kind="credit", activity_id=activity_id, external_id=report.external_id, reverses=None,
                sub_account_id=source.sub_account_id, partner_id=source.partner_id, trust_tier=source.trust_tier,
                behaviour=report.behaviour, behaviour_version=version.version, methodology_release=CURRENT_RELEASE,
                category=behaviours()[report.behaviour].category, quantity=decision.credited_quantity,
                reduction_mg=mg, energy=energy_for(version, mg), occurred_at=report.occurred_at, local_day=local_day,
            )
        receipt = Receipt(report.external_id, activity_id, decision.verdict, decision.code, decision.params,
                          decision.credited_quantity, mg)
        out.append((receipt, (decision, version, local_day), draft))
    return out


async def _save_verdicts(conn: asyncpg.Connection, decided: list[tuple[Receipt, Any, Draft | None]]) -> None:
    if not decided:
        return
    columns: list[list[Any]] = [[] for _ in range(9)]
    for receipt, (decision, version, local_day), _ in decided:
        for column, value in zip(columns, (
            receipt.activity_id, decision.verdict, decision.code, msgspec.json.encode(decision.params).decode(),
            decision.related_activity, version.version if version else None, local_day,
            receipt.credited_quantity, receipt.credited_mg,
        ), strict=True):
            column.append(value)
    await conn.execute(_UPDATE, columns[0], CURRENT_RELEASE, *columns[1:])


def reduction_event(source: Source, receipt: Receipt, draft: Draft, entry_id: int) -> dict[str, Any]:
    """What gamification, energy and notifications need without reading the book back."""
    return {
        "entry_id": entry_id, "activity_id": str(receipt.activity_id), "sub_account_id": str(source.sub_account_id),
        "partner_id": str(source.partner_id) if source.partner_id else None, "behaviour": draft.behaviour,
        "behaviour_version": draft.behaviour_version, "category": draft.category, "quantity": draft.quantity,
        "reduction_mg": draft.reduction_mg, "energy": draft.energy, "occurred_at": draft.occurred_at.isoformat(),
        "local_day": draft.local_day.isoformat(), "verdict": receipt.verdict,
    }


