"""Partner-facing endpoints: the partner API (OAuth bearer tokens) and signed server-to-server pushes."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import ValidationException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK

from api.partners.auth import (
    PartnerPrincipal,
    authorise_partner,
    check_partner_limits,
    consume_daily_quota,
    refund_daily_quota,
    require_scope,
    suspended,
)
from api.partners.schemas import (
    ActivityBatch,
    ActivityIn,
    BatchReceipt,
    PartnerBookOut,
    PartnerProfileOut,
    PushBatch,
    ReceiptOut,
)
from api.partners.signatures import SIGNATURE_MISMATCH, verify
from api.problems import problem_responses
from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.holders.service import get_holder
from wallet.intake.service import Receipt, Report, Source, activity_counts, receive_activities
from wallet.partners.service import get_partner_by_client_id, webhook_secrets

__all__ = ["PartnerApiController", "PushController"]

PARTNER_TOKEN: list[dict[str, list[str]]] = [{"PartnerToken": []}]
BATCH_BODY_MAX_BYTES = 2 * 1024 * 1024


def _report(item: ActivityIn) -> Report:
    return Report(
        external_id=item.event_id, behaviour=item.behaviour, quantity=item.quantity,
        occurred_at=item.occurred_at, ended_at=item.ended_at, details=item.details,
    )


def _batch(receipts: Sequence[Receipt], quota_left: int) -> BatchReceipt:
    counts = defaultdict(int)
    for r in receipts:
        counts[r.status] += 1
    return BatchReceipt(
        accepted=counts["accepted"], duplicates=counts["duplicate"], refused=counts["refused"],
        quota_remaining_today=quota_left,
        receipts=[
            ReceiptOut(event_id=r.external_id, status=r.status, activity_id=r.activity_id, code=r.code, detail=r.detail)
            for r in receipts
        ],
    )


class PartnerApiController(Controller):
    """Acting for one resident, with the token the resident's consent produced."""

    path = "/v1/partner"
    tags = ["partner API"]
    opt = {"exclude_from_auth": True}
    security = PARTNER_TOKEN
    dependencies = {"partner": Provide(authorise_partner)}

    @get("/profile", operation_id="partnerGetProfile", summary="The resident's nickname (profile:read)",
         responses=problem_responses(401, 403, 429, 503))
    async def profile(self, partner: PartnerPrincipal) -> PartnerProfileOut:
        """The nickname of the resident this token acts for, and their sub-account id on your platform."""
        require_scope(partner, "profile:read")
        holder = await get_holder(partner.holder_id)
        return PartnerProfileOut(sub_account_id=partner.sub_account_id, nickname=holder["nickname"])

    @get("/book", operation_id="partnerGetBook", summary="What the resident did through you (book:read)",
         responses=problem_responses(401, 403, 429, 503))
    async def book(self, partner: PartnerPrincipal) -> PartnerBookOut:
        """Totals of this resident's activities reported by your platform; never their other sources."""
        require_scope(partner, "book:read")
        counts = await activity_counts(partner.sub_account_id)
        return PartnerBookOut(
            sub_account_id=partner.sub_account_id, activities=counts["activities"],
            first_activity_at=counts["first_at"], last_activity_at=counts["last_at"],
        )

    @post("/activities", operation_id="partnerReportActivities", status_code=HTTP_200_OK,
          summary="Report the resident's green actions (activities:write)", request_max_body_size=BATCH_BODY_MAX_BYTES,
          responses=problem_responses(400, 401, 403, 413, 429, 503))
    async def report(self, state: State, partner: PartnerPrincipal, data: JSONBody[ActivityBatch]) -> BatchReceipt:
        """One to 1,000 activities of this resident, each with your own `event_id`. Each gets a receipt:
        `accepted` (stored, to be judged against the methodology), `duplicate` (this event id was already
        received with the same content) or `refused` (with a code and a reason). Sending the same request
        again is safe. Counts against your per-minute limit and daily quota."""
        require_scope(partner, "activities:write")
        quota_left = await consume_daily_quota(state, partner.partner_id, partner.daily_quota, len(data.activities))
        source = Source(
            holder_id=partner.holder_id, sub_account_id=partner.sub_account_id, partner_id=partner.partner_id,
            via="token", allowed_behaviours=partner.allowed_behaviours,
        )
        receipts = await receive_activities(source, [_report(a) for a in data.activities])
        return _batch(receipts, quota_left)


class PushController(Controller):
    """Bulk reports from a partner's servers, signed the Standard Webhooks way instead of per-resident tokens."""

    path = "/v1/partners/{client_id:str}/pushes"
    tags = ["partner API"]
    opt = {"exclude_from_auth": True}

    @post("/activities", operation_id="partnerPushActivities", status_code=HTTP_200_OK,
          summary="Signed bulk report for many residents", request_max_body_size=BATCH_BODY_MAX_BYTES,
          responses=problem_responses(400, 401, 403, 409, 413, 429, 503))
    async def push(self, request: Request[Any, Any, State], state: State, client_id: FromPath[str]) -> BatchReceipt:
        """Up to 1,000 activities for any residents who linked your platform with `activities:write`, each
        naming its `sub_account_id`. Sign with HMAC-SHA256 over `webhook-id.webhook-timestamp.body` using
        your webhook secret and send `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64>`.
        Timestamps more than 300 s off are refused; a `webhook-id` is accepted once (a replay gets 409)."""
        body = await request.body()
        partner = await get_partner_by_client_id(client_id)
        if partner is None:
            raise DomainError("unauthorized", "signature-invalid", SIGNATURE_MISMATCH)
        message_id = verify(await webhook_secrets(partner["id"], state.secret_box), request.headers, body)
        if partner["status"] != "active":
            raise suspended()
        await check_partner_limits(state, partner["id"], partner["rate_limit_per_minute"])
        try:
            batch = msgspec.json.decode(body, type=PushBatch, strict=True)
        except msgspec.ValidationError as exc:
            raise ValidationException(detail=f"Invalid push: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise ValidationException(detail="The push body is not valid JSON.") from exc
        if await _push_seen(partner["id"], message_id):  # checked again, atomically, when it is recorded
            raise _replayed(message_id)
        quota_left = await consume_daily_quota(state, partner["id"], partner["daily_quota"], len(batch.activities))
        try:
            receipts = await _receive_push(partner, message_id, batch)
        except DomainError as exc:
            if exc.code == "push-replayed":  # lost a race with the same push: it took nothing
                await refund_daily_quota(state, partner["id"], len(batch.activities))
            raise
        return _batch(receipts, quota_left)


def _replayed(message_id: str) -> DomainError:
    return DomainError(
        "conflict", "push-replayed",
        f"A push with webhook-id {message_id!r} was already accepted; nothing was recorded again.",
    )


async def _push_seen(partner_id: uuid.UUID, message_id: str) -> bool:
    """A replay is refused before it touches the daily quota."""
    async with connection() as conn:
        return bool(await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM partner_push_receipt WHERE partner = $1 AND message_id = $2)",
            partner_id, message_id,
        ))


async def _receive_push(partner: dict[str, Any], message_id: str, batch: PushBatch) -> list[Receipt]:
    """All or nothing: the push receipt and every accepted activity commit together, so a push that
    failed half-way can be sent again with the same webhook-id."""
    allowed = frozenset(partner["allowed_behaviours"])
    async with engine().transaction():
        async with connection() as conn:
            fresh = await conn.fetchval(
                """INSERT INTO partner_push_receipt (partner, message_id, received_at, activities)
                   VALUES ($1, $2, now(), $3) ON CONFLICT (partner, message_id) DO NOTHING RETURNING id""",
                partner["id"], message_id, len(batch.activities),
            )
            if fresh is None:
                raise _replayed(message_id)
            linked = {
                r["id"]: r["holder"]
                for r in await conn.fetch(
                    """SELECT s.id, s.holder FROM sub_account s JOIN holder h ON h.id = s.holder
                       WHERE s.id = ANY($1::uuid[]) AND s.partner = $2 AND s.status = 'active'
                         AND 'activities:write' = ANY(s.scopes) AND h.status = 'active'""",
                    list({a.sub_account_id for a in batch.activities}), partner["id"],
                )
            }
        groups: dict[uuid.UUID, list[int]] = defaultdict(list)
        receipts: dict[int, Receipt] = {}
        for i, item in enumerate(batch.activities):
            if item.sub_account_id in linked:
                groups[item.sub_account_id].append(i)
            else:
                receipts[i] = Receipt(
                    item.event_id, "refused", code="not-linked",
                    detail="No resident who linked your platform with activities:write has this sub_account_id.",
                )
        for sub_account_id, indexes in groups.items():
            source = Source(
                holder_id=linked[sub_account_id], sub_account_id=sub_account_id, partner_id=partner["id"],
                via="signed_push", allowed_behaviours=allowed,
            )
            got = await receive_activities(source, [_report(batch.activities[i]) for i in indexes])
            receipts.update(zip(indexes, got, strict=True))
    return [receipts[i] for i in range(len(batch.activities))]


