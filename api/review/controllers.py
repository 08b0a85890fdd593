"""Operators work the review queue: activities held as suspicious are credited or rejected with a note."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from api.auth.middleware import Principal
from api.partners.admin import operator_only
from api.problems import problem_responses
from api.residents.schemas import Input
from api.security import BEARER
from wallet.book.corrections import reverse_entry
from wallet.book.reads import decode_keyset, encode_cursor
from wallet.errors import DomainError
from wallet.intake.review import held_page, resolve

__all__ = ["CorrectionsController", "ReviewController"]

Req = Request[Principal, Any, State]


class HeldActivity(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    holder_id: uuid.UUID
    event_id: str
    behaviour: str
    quantity: int
    occurred_at: datetime
    ended_at: datetime | None
    received_at: datetime
    source: str
    held_because: str | None
    details: dict[str, Any]


class HeldPage(msgspec.Struct, kw_only=True):
    items: list[HeldActivity]
    next_cursor: str | None


class ReviewDecision(Input, kw_only=True):
    decision: Literal["credit", "reject"]
    note: str = msgspec.field(default="")


class ReviewResult(msgspec.Struct, kw_only=True):
    activity_id: uuid.UUID
    verdict: str
    code: str
    credited_quantity: int
    credited_mg: int


def _json(value: Any) -> dict[str, Any]:
    decoded = msgspec.json.decode(value) if isinstance(value, str | bytes) else value
    return decoded if isinstance(decoded, dict) else {}


class ReviewController(Controller):
    path = "/v1/admin/review"
    tags = ["admin"]
    security = BEARER
    guards = [operator_only]

    @get("", operation_id="adminListHeldActivities", summary="Activities held for review",
         responses=problem_responses(400, 401, 403, 422, 503))
    async def queue(self, cursor: FromQuery[str | None] = None, limit: FromQuery[int] = 50) -> HeldPage:
        """Oldest first, with why each was held and the evidence the source sent."""
        if not 1 <= limit <= 200:
            raise DomainError("invalid", "invalid-limit", "limit must be between 1 and 200.")
        rows = await held_page(before=decode_keyset(cursor), limit=limit)
        items = [
            HeldActivity(
                id=r["id"], holder_id=r["holder"], event_id=r["external_id"], behaviour=r["behaviour"],
                quantity=r["quantity"], occurred_at=r["occurred_at"], ended_at=r["ended_at"],
                received_at=r["received_at"], source=r["partner_name"] or "self-reported",
                held_because=r["reason_code"], details=_json(r["details"]),
            )
            for r in rows
        ]
        last = rows[-1] if len(rows) == limit else None
        return HeldPage(items=items,
                        next_cursor=encode_cursor(last["received_at"].isoformat(), last["id"]) if last else None)

    @post("/{activity_id:uuid}", operation_id="adminResolveHeldActivity", status_code=HTTP_200_OK,
          summary="Credit or reject a held activity", responses=problem_responses(400, 401, 403, 404, 409, 422, 503))
    async def decide(
        self, request: Req, activity_id: FromPath[uuid.UUID], data: JSONBody[ReviewDecision]
    ) -> ReviewResult:
        """`credit` books it (within the caps as they stand now) or `reject` refuses it; the `note` is the
        reason the resident reads. An activity is resolved once (`409 not-held` after that)."""
        result = await resolve(activity_id, data.decision, data.note, request.user.holder_id)
        return ReviewResult(**result)


class ReverseEntry(Input, kw_only=True):
    reason: str


class Reversal(msgspec.Struct, kw_only=True):
    """`energy_cancelled`: the credit's ball was still growing; `energy_clawed_back`: it was collected and taken
    back from available; `energy_short`: what was already spent and could not be taken back."""

    entry_id: int
    reverses: int
    reduction_mg: int
    seq: int
    energy_cancelled: int
    energy_clawed_back: int
    energy_short: int


class CorrectionsController(Controller):
    path = "/v1/admin/book/entries"
    tags = ["admin"]
    security = BEARER
    guards = [operator_only]

    @post("/{entry_id:int}/reverse", operation_id="adminReverseBookEntry", status_code=HTTP_201_CREATED,
          summary="Reverse a credited entry", responses=problem_responses(400, 401, 403, 404, 409, 422, 503))
    async def reverse(self, request: Req, entry_id: FromPath[int], data: JSONBody[ReverseEntry]) -> Reversal:
        """Append a negative entry that cancels a credit found wrong later (fraud, a partner's retraction).
        The original stays in the chain; the holder's totals net out and the `reason` is shown to them."""
        if not 1 <= entry_id < 2**63:
            raise DomainError("not_found", "entry-not-found", "No book entry has this id.")
        done = await reverse_entry(entry_id, reason=data.reason, operator_id=request.user.holder_id)
        energy = done.pop("energy")
        return Reversal(**done, energy_cancelled=energy["cancelled"], energy_clawed_back=energy["clawed_back"],
                        energy_short=energy["short"])
