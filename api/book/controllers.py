"""The signed-in resident's carbon book: read, chart, verify, export, and report their own actions."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import date
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromQuery, JSONBody
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK

from api.auth.middleware import Principal
from api.book.schemas import (
    ActivityOut,
    ActivityPage,
    BookSummary,
    CategoryTotal,
    DayPoint,
    EntryOut,
    EntryPage,
    Periods,
    SubAccountTotal,
    VerificationOut,
)
from api.partners.controllers import BATCH_BODY_MAX_BYTES, batch_receipt, strict_body, to_report
from api.partners.schemas import ActivityBatch, BatchReceipt
from api.problems import problem_responses
from api.security import BEARER
from api.settings import RateLimit
from wallet.book.reads import (
    activities_page,
    daily_series,
    decode_cursor,
    decode_keyset,
    encode_cursor,
    entries_page,
    iter_entries,
    local_today,
    summary,
)
from wallet.book.service import verify_holder
from wallet.db import connection
from wallet.errors import DomainError
from wallet.holders.service import get_holder
from wallet.intake.judge import SELF_SOURCE, record_reports
from wallet.intake.reasons import reason
from wallet.intake.reports import Source

__all__ = ["BookController"]

Req = Request[Principal, Any, State]
SELF_REPORT_LIMIT = RateLimit(60, 60)  # requests per minute per holder: the caps bound what counts, this the load
Verdict = Literal["received", "credited", "partially_credited", "duplicate", "rejected", "held"]
EXPORT_COLUMNS = ("id", "seq", "kind", "local_day", "occurred_at", "behaviour", "behaviour_version",
                  "methodology_release", "category", "quantity", "reduction_mg", "energy", "source", "trust_tier",
                  "activity_id", "event_id", "partner_id", "sub_account_id", "reverses", "recorded_at", "note",
                  "prev_hash", "entry_hash")


def _limit(limit: int) -> int:
    if not 1 <= limit <= 200:
        raise DomainError("invalid", "invalid-limit", "limit must be between 1 and 200.")
    return limit


def _entry(row: dict[str, Any]) -> EntryOut:
    return EntryOut(
        id=row["id"], seq=row["seq"], kind=row["kind"], activity_id=row["activity"], event_id=row["external_id"],
        reverses=row["reverses"], sub_account_id=row["sub_account"], partner_id=row["partner"],
        source=row["partner_name"] or "self",
        trust_tier=row["trust_tier"], behaviour=row["behaviour"], behaviour_version=row["behaviour_version"],
        methodology_release=row["methodology_release"], category=row["category"], quantity=row["quantity"],
        reduction_mg=row["reduction_mg"], energy=row["energy"], occurred_at=row["occurred_at"],
        local_day=row["local_day"], recorded_at=row["recorded_at"], note=row["note"],
        prev_hash=bytes(row["prev_hash"]).hex(),
        entry_hash=bytes(row["entry_hash"]).hex(),
    )


def _download(body: AsyncIterator[bytes], media_type: str, name: str) -> Stream:
    return Stream(body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'})


class BookController(Controller):
    path = "/v1/me"
    tags = ["book"]
    security = BEARER

    @get("/book", operation_id="getMyBook", summary="My carbon book totals", responses=problem_responses(401, 503))
    async def book(self, request: Req) -> BookSummary:
        """Totals in integer mg CO2e for today, this week, this month and all time (my local calendar), by
        category and by sub-account (each linked partner, my own reports, and unlinked sources)."""
        holder = await get_holder(request.user.holder_id)
        data = await summary(holder["id"], holder["time_zone"])
        t = data["totals"]
        en = holder["language"] == "en"
        return BookSummary(
            time_zone=data["time_zone"], today=data["today"],
            totals=Periods(today_mg=t["today"], week_mg=t["week"], month_mg=t["month"], all_time_mg=t["all_time"],
                           energy=t["energy"], credited_activities=t["credits"]),
            by_category=[CategoryTotal(category=c["category"], all_time_mg=c["all_time"], month_mg=c["month"])
                         for c in data["by_category"]],
            by_sub_account=[
                SubAccountTotal(
                    sub_account_id=s["id"], kind=s["kind"], status=s["status"],
                    source=((s["name_en"] or s["name"]) if en else s["name"]) if s["name"] else SELF_SOURCE[en],
                    all_time_mg=s["all_time"], credited_activities=s["credits"],
                )
                for s in data["by_sub_account"]
            ],
        )

    @get("/book/days", operation_id="getMyBookByDay", summary="My reductions per day",
         responses=problem_responses(400, 401, 422, 503))
    async def days(self, request: Req, from_day: FromQuery[date | None] = None,
                   to_day: FromQuery[date | None] = None) -> list[DayPoint]:
        """One point per local day between `from_day` and `to_day` (default: the last 30 days), zeros
        included, for charts. At most 366 days."""
        holder = await get_holder(request.user.holder_id)
        last = to_day or local_today(holder["time_zone"])
        first = from_day or date.fromordinal(last.toordinal() - 29)
        return [DayPoint(**p) for p in await daily_series(holder["id"], first, last)]

    @get("/book/entries", operation_id="listMyBookEntries", summary="My book entries, in chain order",
         responses=problem_responses(400, 401, 422, 503))
    async def entries(self, request: Req, cursor: FromQuery[str | None] = None,
                      limit: FromQuery[int] = 50) -> EntryPage:
        """Entries oldest first with their chain hashes, so anyone can recompute the chain. Pass
        `next_cursor` back as `cursor` for more."""
        after = 0
        if cursor is not None:
            (raw,) = decode_cursor(cursor, 1)
            after = int(raw) if raw.isdigit() else 0
        rows = await entries_page(request.user.holder_id, after_seq=after, limit=_limit(limit))
        next_cursor = encode_cursor(rows[-1]["seq"]) if len(rows) == limit else None
        return EntryPage(items=[_entry(r) for r in rows], next_cursor=next_cursor)

    @get("/book/verify", operation_id="verifyMyBook", summary="Verify my book's hash chain",
         responses=problem_responses(401, 503))
    async def verify(self, request: Req) -> VerificationOut:
        """Recompute my chain from the first entry: positions, links, hashes, the stored values against the
        hashed bytes, and the total. Names the first broken entry if there is one."""
        v = await verify_holder(request.user.holder_id)
        return VerificationOut(ok=v.ok, entries=v.entries, total_mg=v.total_mg, broken_seq=v.broken_seq,
                               reason=v.reason)

    @get("/book/export", operation_id="exportMyBook", summary="Export my whole book as CSV",
         media_type="text/csv; charset=utf-8", responses=problem_responses(401, 503))
    async def export_csv(self, request: Req) -> Stream:
        """Every entry in chain order, streamed as CSV with every hashed field, so the file alone is enough to
        recompute the chain."""
        holder_id = request.user.holder_id

        async def rows() -> AsyncIterator[bytes]:
            yield (",".join(EXPORT_COLUMNS) + "\n").encode()
            async for row in iter_entries(holder_id):
                out = msgspec.to_builtins(_entry(row))
                buffer = io.StringIO()
                csv.writer(buffer).writerow(["" if out.get(c) is None else out[c] for c in EXPORT_COLUMNS])
                yield buffer.getvalue().encode()

        return _download(rows(), "text/csv; charset=utf-8", f"carbon-book-{holder_id}.csv")

    @get("/book/export/jsonl", operation_id="exportMyBookJsonLines", summary="Export my whole book as JSON lines",
         media_type="application/x-ndjson", responses=problem_responses(401, 503))
    async def export_jsonl(self, request: Req) -> Stream:
        """Every entry in chain order, one JSON object per line (the shape of /v1/me/book/entries items)."""
        holder_id = request.user.holder_id

        async def rows() -> AsyncIterator[bytes]:
            async for row in iter_entries(holder_id):
                yield msgspec.json.encode(_entry(row)) + b"\n"

        return _download(rows(), "application/x-ndjson", f"carbon-book-{holder_id}.jsonl")

    @get("/activities", operation_id="listMyActivities", summary="My reported activities and their verdicts",
         responses=problem_responses(400, 401, 422, 503))
    async def activities(self, request: Req, cursor: FromQuery[str | None] = None, limit: FromQuery[int] = 20,
                         verdict: FromQuery[Verdict | None] = None) -> ActivityPage:
        """Newest first, each with its verdict and the reason in my language ("already counted from … at
        08:12", "daily walking cap of 20,000 steps reached"). Filter by `verdict`; pass `next_cursor` back."""
        holder = await get_holder(request.user.holder_id)
        before = decode_keyset(cursor)
        rows = await activities_page(holder["id"], before=before, limit=_limit(limit), verdict=verdict)
        en = holder["language"] == "en"
        items = [
            ActivityOut(
                id=r["id"], event_id=r["external_id"], behaviour=r["behaviour"], quantity=r["quantity"],
                occurred_at=r["occurred_at"], ended_at=r["ended_at"], received_at=r["received_at"],
                source=((r["partner_name_en"] or r["partner_name"]) if en else r["partner_name"])
                if r["partner_name"] else SELF_SOURCE[en],
                source_unlinked=r["source_status"] == "unlinked", verdict=r["verdict"], reason_code=r["reason_code"],
                reason=reason(r["reason_code"] or r["verdict"], r["reason_params"], holder["language"],
                              behaviour=r["behaviour"], time_zone=holder["time_zone"]),
                credited_quantity=r["credited_quantity"], credited_mg=r["credited_mg"],
                behaviour_version=r["behaviour_version"], methodology_release=r["methodology_release"],
                reversed_at=r["reversed_at"], reversal_note=r["reversal_note"],
            )
            for r in rows
        ]
        last = rows[-1] if len(rows) == limit else None
        return ActivityPage(items=items,
                            next_cursor=encode_cursor(last["received_at"].isoformat(), last["id"]) if last else None)

    @post("/activities", operation_id="reportMyActivities", status_code=HTTP_200_OK,
          summary="Report my own green actions", request_max_body_size=BATCH_BODY_MAX_BYTES,
          responses=problem_responses(400, 401, 413, 429, 503))
    async def report(self, request: Req, state: State, data: JSONBody[ActivityBatch]) -> BatchReceipt:
        """Self-reported actions (e.g. today's steps from the phone's health data, or a photo check-in with
        `details.photo_ref`), judged at the self-reported trust tier with tighter caps; photo check-ins wait
        for a review. Each gets a verdict and a reason; sending the same `event_id` again is safe."""
        data = await strict_body(request, ActivityBatch)
        holder_id = request.user.holder_id
        await state.rate_limiter.hit("self-report", str(holder_id), SELF_REPORT_LIMIT)
        async with connection() as conn:
            sub_account_id = await conn.fetchval(
                "SELECT id FROM sub_account WHERE holder = $1 AND kind = 'self'", holder_id
            )
        source = Source(holder_id=holder_id, sub_account_id=sub_account_id, partner_id=None, via="self",
                        trust_tier="self_reported", names=SELF_SOURCE)
        receipts = await record_reports(source, [to_report(a) for a in data.activities])
        return batch_receipt(receipts, quota_left=None)


