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
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from wallet.book.service import ENTRY_COLUMNS, Draft, Head, chain, entries_insert_sql, lock_head
from wallet.db import engine
from wallet.energy.balls import grow_params, grow_sql
from wallet.intake.reasons import reasons_both
from wallet.intake.reports import Report, Source
from wallet.intake.rules import COUNTED, Claim, Context, Decision, Judged, decide
from wallet.methodology.catalogue import (
    CURRENT_RELEASE,
    BehaviourVersion,
    behaviours,
    current_version,
    energy_for,
    version_of,
)
from wallet.methodology.catalogue import reduction_mg as reduction_of

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


@cache
def _groups() -> dict[str, frozenset[str]]:
    """Exclusivity group → every behaviour that has ever been in it."""
    members: dict[str, set[str]] = {}
    for behaviour in behaviours().values():
        for version in behaviour.versions:
            if version.exclusivity_group:
                members.setdefault(version.exclusivity_group, set()).add(behaviour.code)
    return {group: frozenset(codes) for group, codes in members.items()}


def _relevant(codes: Sequence[str]) -> tuple[list[str], timedelta]:
    """Which earlier claims can matter to activities of these behaviours (the same behaviours, and for a trip
    every mode of its group) and how far in time (the widest dedupe window or longest trip among them)."""
    related: set[str] = set(codes)
    for code in codes:
        for version in behaviours()[code].versions if code in behaviours() else ():
            related |= _groups().get(version.exclusivity_group, frozenset())
    reach = 0
    for code in related:
        for version in behaviours()[code].versions if code in behaviours() else ():
            reach = max(reach, version.dedupe_window_s, version.plausibility.max_duration_s or 0)
    return sorted(related), timedelta(seconds=reach)


def _version(code: str) -> BehaviourVersion | None:
    return current_version(code) if code in behaviours() else None


_ACTIVITIES = """INSERT INTO activity (id, holder, sub_account, partner, external_id, behaviour, quantity,
    occurred_at, ended_at, details, request_digest, received_via, received_at, verdict, reason_code, reason_params,
    related_activity, behaviour_version, methodology_release, local_day, credited_quantity, credited_mg, judged_at)
SELECT u.id, $1, $2, $3, u.external_id, u.behaviour, u.quantity, u.occurred_at, u.ended_at, u.details::jsonb,
       u.digest, $4, now(), u.verdict, u.code, u.params::jsonb, u.related, u.version, $5, u.local_day, u.credited,
       u.mg, now()
FROM unnest($6::uuid[], $7::text[], $8::text[], $9::bigint[], $10::timestamptz[], $11::timestamptz[], $12::text[],
            $13::text[], $14::text[], $15::text[], $16::text[], $17::uuid[], $18::int[], $19::date[], $20::bigint[],
            $21::bigint[])
     AS u(id, external_id, behaviour, quantity, occurred_at, ended_at, details, digest, verdict, code, params,
          related, version, local_day, credited, mg)
ON CONFLICT (sub_account, external_id) DO NOTHING RETURNING id"""
_E = 22  # first parameter of the entries' columns
_H = _E + len(ENTRY_COLUMNS)  # the head's new seq, hash, total; then whether anything was booked
_V = _H + 4  # the outbox events' ids, names, payloads and activities

# Every write of one request in one statement (one round trip): the activities with their verdicts, the chained
# entries, the new chain head, the outbox events (each credited event told its entry's id) and the entries'
# energy balls with their ledger transfers. PostgreSQL checks
# the entries' foreign keys to the activities at the end of the statement, when both exist.
_WRITE = f"""
WITH a AS ({_ACTIVITIES}),
     e AS ({entries_insert_sql(_E)} RETURNING id, activity, energy),
     h AS (UPDATE book_head SET seq = ${_H}, head_hash = ${_H + 1}, total_mg = ${_H + 2}, updated_at = now()
           WHERE holder_id = $1 AND ${_H + 3} RETURNING 1),
     o AS (INSERT INTO outbox_event (event_id, name, holder_id, payload, created_at, dispatch_count)
           SELECT v.id, v.name, $1, CASE WHEN e.id IS NULL THEN v.payload::jsonb
                                         ELSE v.payload::jsonb || jsonb_build_object('entry_id', e.id) END, now(), 0
           FROM unnest(${_V}::uuid[], ${_V + 1}::text[], ${_V + 2}::text[], ${_V + 3}::uuid[])
                AS v(id, name, payload, activity)
           LEFT JOIN e ON e.activity = v.activity
           RETURNING 1),{grow_sql("e", _V + 4)}
SELECT (SELECT count(*) FROM a) AS activities, (SELECT count(*) FROM e) AS entries
"""  # noqa: S608 - generated placeholders only

# One round trip for everything judgement reads: the holder's claims near these activities, cap usage for
# the days and months they fall in, and what this source already sent under these event ids.
_CONTEXT = """
SELECT 'claim' AS part, a.id, a.sub_account, a.behaviour, a.behaviour_version, a.occurred_at, a.ended_at,
       a.quantity, a.local_day, p.name, p.name_en, NULL::text AS external_id, NULL::text AS digest,
       a.verdict, NULL::text AS code, NULL::jsonb AS params, 0::bigint AS credited_quantity,
       0::bigint AS credited_mg, 0::bigint AS self_q
FROM activity a LEFT JOIN partner p ON p.id = a.partner
WHERE a.holder = $1 AND a.verdict IN ('credited', 'partially_credited', 'held') AND a.occurred_at BETWEEN $2 AND $3
  AND a.behaviour = ANY($9::text[])
UNION ALL
SELECT 'usage', NULL, NULL, b.code, NULL, NULL, NULL, u.q, u.local_day, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, 0, 0, u.self_q
FROM unnest($4::text[]) AS b(code)
CROSS JOIN LATERAL (  -- per behaviour, so the (holder, behaviour, local_day) index serves it, not a month scan
    SELECT local_day, sum(quantity)::bigint AS q,
           coalesce(sum(quantity) FILTER (WHERE trust_tier = 'self_reported'), 0)::bigint AS self_q
    FROM book_entry WHERE holder = $1 AND behaviour = b.code AND local_day BETWEEN $5 AND $6
    GROUP BY local_day
) AS u
UNION ALL
SELECT 'stored', a.id, a.sub_account, a.behaviour, NULL, NULL, NULL, NULL, NULL, NULL, NULL, a.external_id,
       a.request_digest, a.verdict, a.reason_code, a.reason_params, a.credited_quantity, a.credited_mg, 0
FROM activity a WHERE a.sub_account = $7 AND a.external_id = ANY($8::text[])
"""


async def record_reports(source: Source, reports: Sequence[Report], *, now: datetime | None = None) -> list[Receipt]:
    """Judge and write one holder's reports; a receipt per report, in order."""
    if not reports:
        return []
    now = now or datetime.now(UTC)
    fresh: dict[str, tuple[Report, str]] = {}
    for report in reports:
        fresh.setdefault(report.external_id, (report, report.digest()))
    firsts = [r for r, _ in fresh.values()]
    times = [r.occurred_at for r in firsts] + [r.ended_at for r in firsts if r.ended_at]
    async with engine().transaction() as tx:
        conn = tx.connection
        head = await lock_head(conn, source.holder_id)
        zone = _zone(head.time_zone)
        ctx, stored = await load_context(
            conn, source.holder_id, sorted({r.behaviour for r in firsts}), zone, min(times), max(times),
            existing=(source.sub_account_id, list(fresh)),
        )
        # Under the head lock nobody else can add an event id for this holder's sub-accounts, so what is not
        # stored now is new.
        new = [(uuid.uuid4(), report) for report in firsts if report.external_id not in stored]
        decided = _decide_new(ctx, source, new, zone, now)
        head = await _write(conn, source, head, decided, fresh)
    by_id = {r.external_id: r for r, _, _ in decided}
    out: list[Receipt] = []
    for report in reports:
        first_report, first_digest = fresh[report.external_id]
        digest = first_digest if first_report is report else report.digest()
        first = by_id.get(report.external_id)
        if first is not None and first_report is report:
            receipt = first
        elif first is not None:  # a repeat inside one request: a replay of the first, or a conflict
            receipt = _replay(report.external_id, digest, first_digest, first)
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


def _params(raw: Any) -> dict[str, Any]:
    value = msgspec.json.decode(raw) if isinstance(raw, str | bytes) else raw
    return value if isinstance(value, dict) else {}


async def load_context(
    conn: asyncpg.Connection, holder_id: uuid.UUID, codes: list[str], zone: ZoneInfo, first: datetime,
    last: datetime, *, existing: tuple[uuid.UUID, list[str]] | None = None,
) -> tuple[Context, dict[str, tuple[str, Receipt]]]:
    """The holder's claims that can matter to these activities (same behaviours or same exclusivity group,
    as far as their dedupe windows and longest trips reach, and their whole local days), cap usage for the
    whole months they fall in (an earlier day may be reported after a later one), and (with `existing`) what
    a source already stored under these event ids."""
    ctx = Context()
    stored: dict[str, tuple[str, Receipt]] = {}
    first_day, last_day = first.astimezone(zone).date(), last.astimezone(zone).date()
    month_end = (last_day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    related, reach = _relevant(codes)
    # Claims as far as a trip or a dedupe window reaches, and whole local days (a day's plausible total).
    since = min(first - reach, datetime.combine(first_day, time.min, zone))
    until = max(last + reach, datetime.combine(last_day + timedelta(days=1), time.min, zone))
    rows = await conn.fetch(
        _CONTEXT, holder_id, since, until, codes, first_day.replace(day=1), month_end,
        existing[0] if existing else None, existing[1] if existing else [], related,
    )
    for r in rows:
        if r["part"] == "claim":
            known = r["behaviour"] in behaviours()
            version = (version_of(r["behaviour"], r["behaviour_version"]) if known and r["behaviour_version"]
                       else _version(r["behaviour"]))
            if r["verdict"] in COUNTED:
                ctx.claims.append(Claim(
                    r["id"], r["sub_account"], (r["name"], r["name_en"] or r["name"]) if r["name"] else SELF_SOURCE,
                    r["behaviour"], r["occurred_at"], r["ended_at"], version.exclusivity_group if version else "",
                ))
            if r["local_day"] is not None:
                ctx.reported_day[(r["behaviour"], r["local_day"])] += r["quantity"]
        elif r["part"] == "usage":
            day: date = r["local_day"]
            ctx.used_month[(r["behaviour"], day.year, day.month)] += r["quantity"]
            ctx.used_day[(r["behaviour"], day)] += r["quantity"]
            ctx.used_self_day[(r["behaviour"], day)] += r["self_q"]
        else:
            stored[r["external_id"]] = (r["digest"], Receipt(
                r["external_id"], r["id"], r["verdict"], r["code"] or "received", _params(r["params"]),
                r["credited_quantity"], r["credited_mg"],
            ))
    return ctx, stored


Decided = tuple[Receipt, tuple[Decision, BehaviourVersion | None, date], Draft | None]


def _decide_new(ctx: Context, source: Source, new: list[tuple[uuid.UUID, Report]], zone: ZoneInfo,
                now: datetime) -> list[Decided]:
    out: list[Decided] = []
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


async def _write(conn: asyncpg.Connection, source: Source, head: Head, decided: list[Decided],
                 fresh: dict[str, tuple[Report, str]]) -> Head:
    if not decided:
        return head
    activities: list[list[Any]] = [[] for _ in range(16)]
    for receipt, (decision, version, local_day), _ in decided:
        report, digest = fresh[receipt.external_id]
        for column, value in zip(activities, (
            receipt.activity_id, report.external_id, report.behaviour, report.quantity, report.occurred_at,
            report.ended_at, msgspec.json.encode(report.details).decode(), digest, decision.verdict, decision.code,
            msgspec.json.encode(decision.params).decode(), decision.related_activity,
            version.version if version else None, local_day, receipt.credited_quantity, receipt.credited_mg,
        ), strict=True):
            column.append(value)
    drafts = [d for _, _, d in decided if d is not None]
    new_head, entries = chain(head, drafts)
    events = [
        ("reduction.recorded", reduction_event(source, r, d), r.activity_id) for r, _, d in decided if d is not None
    ] + [
        ("activity.held", {"activity_id": str(r.activity_id), "code": r.code}, r.activity_id)
        for r, _, _ in decided if r.verdict == "held"
    ]
    row = await conn.fetchrow(
        _WRITE, source.holder_id, source.sub_account_id, source.partner_id, source.via, CURRENT_RELEASE,
        *activities, *entries, new_head.seq, new_head.hash, new_head.total_mg, bool(drafts),
        [uuid.uuid4() for _ in events], [name for name, _, _ in events],
        [msgspec.json.encode(payload).decode() for _, payload, _ in events], [a for _, _, a in events],
        *grow_params(),
    )
    if row["activities"] != len(decided):  # impossible under the head lock; refuse rather than book a ghost
        raise RuntimeError("an event id appeared while the holder's book was locked")
    return new_head


def reduction_event(source: Source, receipt: Receipt, draft: Draft, entry_id: int | None = None) -> dict[str, Any]:
    """What gamification, energy and notifications need without reading the book back (`entry_id` is added
    by the statement that creates the entry when it is not known yet)."""
    return {
        **({"entry_id": entry_id} if entry_id is not None else {}),
        "activity_id": str(receipt.activity_id), "sub_account_id": str(source.sub_account_id),
        "partner_id": str(source.partner_id) if source.partner_id else None, "behaviour": draft.behaviour,
        "behaviour_version": draft.behaviour_version, "category": draft.category, "quantity": draft.quantity,
        "reduction_mg": draft.reduction_mg, "energy": draft.energy, "occurred_at": draft.occurred_at.isoformat(),
        "local_day": draft.local_day.isoformat(), "verdict": receipt.verdict,
    }


