"""Receiving reported activities: authorised, idempotent, all-or-nothing per request.

A report's idempotency key is the source's own event id, unique per sub-account. The same id with the
same content is a replay and returns the first receipt; the same id with different content is refused,
never silently merged. Judging activities against the methodology (verdicts, caps, dedupe across
partners, the book) comes after reception and reads these rows.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec

from wallet.db import connection
from wallet.methodology.catalogue import behaviour_codes

__all__ = [
    "BATCH_MAX",
    "REPORTING_WINDOW",
    "Receipt",
    "Report",
    "Source",
    "activity_counts",
    "holder_activities",
    "receive_activities",
]

BATCH_MAX = 1000
REPORTING_WINDOW = timedelta(days=30)
FUTURE_TOLERANCE = timedelta(minutes=5)
ReceiptStatus = Literal["accepted", "duplicate", "refused"]
Via = Literal["token", "signed_push", "self"]


@dataclass(frozen=True, slots=True)
class Source:
    """Who reports, for which holder. `allowed_behaviours` is None for the holder's own reports."""

    holder_id: uuid.UUID
    sub_account_id: uuid.UUID
    partner_id: uuid.UUID | None
    via: Via
    allowed_behaviours: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Report:
    external_id: str
    behaviour: str
    quantity: int
    occurred_at: datetime
    ended_at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        """SHA-256 over a canonical encoding (sorted keys, UTC times), so a byte-different but equal retry
        is still recognised as the same report."""
        canonical = msgspec.json.encode(
            {
                "behaviour": self.behaviour,
                "details": self.details,
                "ended_at": self.ended_at.astimezone(UTC).isoformat() if self.ended_at else None,
                "external_id": self.external_id,
                "occurred_at": self.occurred_at.astimezone(UTC).isoformat(),
                "quantity": self.quantity,
            },
            order="sorted",
        )
        return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class Receipt:
    external_id: str
    status: ReceiptStatus
    activity_id: uuid.UUID | None = None
    code: str | None = None
    detail: str | None = None


def _refusal(report: Report, source: Source, now: datetime) -> Receipt | None:
    def refuse(code: str, detail: str) -> Receipt:
        return Receipt(report.external_id, "refused", code=code, detail=detail)

    if report.behaviour not in behaviour_codes():
        return refuse("unknown-behaviour", f"{report.behaviour!r} is not in the methodology catalogue.")
    if source.allowed_behaviours is not None and report.behaviour not in source.allowed_behaviours:
        return refuse("behaviour-not-allowed", f"This partner is not allowed to report {report.behaviour!r}.")
    if report.occurred_at.tzinfo is None:
        return refuse("naive-time", "occurred_at needs a time zone offset, e.g. 2026-11-21T08:12:00+08:00.")
    if report.occurred_at > now + FUTURE_TOLERANCE:
        return refuse("occurred-in-future", "occurred_at is in the future.")
    if report.occurred_at < now - REPORTING_WINDOW:
        return refuse(
            "outside-reporting-window",
            f"Actions must be reported within {REPORTING_WINDOW.days} days of when they happened.",
        )
    if report.ended_at is not None and report.ended_at < report.occurred_at:
        return refuse("invalid-interval", "ended_at is before occurred_at.")
    return None


_INSERT = """
INSERT INTO activity (id, holder, sub_account, partner, external_id, behaviour, quantity, occurred_at, ended_at,
                      details, request_digest, received_via, received_at, status)
SELECT u.id, $1, $2, $3, u.external_id, u.behaviour, u.quantity, u.occurred_at, u.ended_at, u.details::jsonb,
       u.digest, $4, now(), 'received'
FROM unnest($5::uuid[], $6::text[], $7::text[], $8::bigint[], $9::timestamptz[], $10::timestamptz[], $11::text[],
            $12::text[]) AS u(id, external_id, behaviour, quantity, occurred_at, ended_at, details, digest)
ON CONFLICT (sub_account, external_id) DO NOTHING
RETURNING external_id, id
"""


async def receive_activities(
    source: Source, reports: Sequence[Report], *, now: datetime | None = None
) -> list[Receipt]:
    """One receipt per report, in order. Runs in the caller's transaction when there is one."""
    now = now or datetime.now(UTC)
    receipts: dict[int, Receipt] = {}
    fresh: dict[str, tuple[Report, str]] = {}  # first report per event id; later repeats are replays of it
    for i, report in enumerate(reports):
        refusal = _refusal(report, source, now)
        if refusal is not None:
            receipts[i] = refusal
        elif report.external_id not in fresh:
            fresh[report.external_id] = (report, report.digest())
    stored: dict[str, tuple[uuid.UUID, str]] = {}  # event id -> (activity id, digest of what is stored)
    inserted: set[str] = set()
    if fresh:
        rows = list(fresh.values())
        async with connection() as conn:
            for r in await conn.fetch(
                _INSERT,
                source.holder_id,
                source.sub_account_id,
                source.partner_id,
                source.via,
                [uuid.uuid4() for _ in rows],
                [r.external_id for r, _ in rows],
                [r.behaviour for r, _ in rows],
                [r.quantity for r, _ in rows],
                [r.occurred_at for r, _ in rows],
                [r.ended_at for r, _ in rows],
                [msgspec.json.encode(r.details).decode() for r, _ in rows],
                [d for _, d in rows],
            ):
                stored[r["external_id"]] = (r["id"], fresh[r["external_id"]][1])
                inserted.add(r["external_id"])
            missing = [key for key in fresh if key not in stored]
            if missing:
                for r in await conn.fetch(
                    "SELECT external_id, id, request_digest FROM activity WHERE sub_account = $1 "
                    "AND external_id = ANY($2::text[])",
                    source.sub_account_id,
                    missing,
                ):
                    stored[r["external_id"]] = (r["id"], r["request_digest"])
    for i, report in enumerate(reports):
        if i in receipts:
            continue
        activity_id, stored_digest = stored[report.external_id]
        first = fresh[report.external_id][0] is report
        if first and report.external_id in inserted:
            inserted.discard(report.external_id)
            receipts[i] = Receipt(report.external_id, "accepted", activity_id)
        else:
            receipts[i] = _replay(report.external_id, report.digest(), activity_id, stored_digest)
    return [receipts[i] for i in range(len(reports))]


def _replay(external_id: str, digest: str, activity_id: uuid.UUID, stored_digest: str) -> Receipt:
    if digest == stored_digest:
        return Receipt(external_id, "duplicate", activity_id, "already-received",
                       "This event id was already received with the same content; nothing changed.")
    return Receipt(external_id, "refused", activity_id, "event-id-reused",
                   "This event id was already received with different content; use a new event id for a new action.")


async def activity_counts(sub_account_id: uuid.UUID) -> dict[str, Any]:
    async with connection() as conn:
        row = await conn.fetchrow(
            """SELECT count(*) AS activities, min(occurred_at) AS first_at, max(occurred_at) AS last_at
               FROM activity WHERE sub_account = $1""",
            sub_account_id,
        )
    return dict(row)


async def holder_activities(holder_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every activity reported for a holder, oldest first, with its source: the data-export view."""
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT a.id, a.sub_account AS sub_account_id, p.name AS partner_name, s.status AS source_status,
                      a.external_id AS event_id, a.behaviour, a.quantity, a.occurred_at, a.ended_at, a.details,
                      a.received_via, a.received_at, a.status
               FROM activity a JOIN sub_account s ON s.id = a.sub_account LEFT JOIN partner p ON p.id = a.partner
               WHERE a.holder = $1 ORDER BY a.occurred_at, a.id""",
            holder_id,
        )
    out = []
    for row in rows:
        item = dict(row)
        if isinstance(item["details"], str):
            item["details"] = msgspec.json.decode(item["details"])
        out.append(item)
    return out
