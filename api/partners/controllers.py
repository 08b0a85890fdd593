"""Partner-facing endpoints: the partner API (OAuth bearer tokens) and signed server-to-server pushes."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

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
from api.problems import problem_responses
from api.strict import strict_json
from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.holders.service import get_holder
from wallet.intake.judge import Receipt, record_reports
from wallet.intake.reports import Report, Source
from wallet.intake.service import activity_counts
from wallet.partners.service import get_partner_by_client_id, webhook_secrets
from wallet.partners.signatures import SIGNATURE_MISMATCH, verify

__all__ = [
    "BATCH_BODY_MAX_BYTES", "PartnerApiController", "PushController", "batch_receipt", "has_nul", "receipt_out",
    "strict_body", "to_report",
]

T = TypeVar("T")
PARTNER_TOKEN: list[dict[str, list[str]]] = [{"PartnerToken": []}]
NOT_LINKED = "No resident who linked your platform with activities:write has this sub_account_id."
BATCH_BODY_MAX_BYTES = 2 * 1024 * 1024


def to_report(item: ActivityIn) -> Report:
    if has_nul(item.details) or "\x00" in item.behaviour:
        raise ValidationException(detail=f"Activity {item.event_id!r} contains a NUL character (U+0000); remove it.")
    return Report(
        external_id=item.event_id, behaviour=item.behaviour, quantity=item.quantity,
        occurred_at=item.occurred_at, ended_at=item.ended_at, details=item.details,
    )


def has_nul(value: Any) -> bool:
    """PostgreSQL text and jsonb cannot hold U+0000: refuse it as bad input instead of failing the insert."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


async def strict_body(request: Request[Any, Any, Any], kind: type[T]) -> T:
    """An activity body as its documented schema says: `strict_json` for the top-level fields, then each
    activity's times and quantity (a number is not a date; "1" and 1.5 are not quantities)."""
    value = await strict_json(request, kind)
    raw = msgspec.json.decode(await request.body())
    items = raw.get("activities", []) if isinstance(raw, dict) and "activities" in raw else [raw]
    for i, item in enumerate(items if isinstance(items, list) else []):
        where = f"$.activities[{i}]" if isinstance(raw, dict) and "activities" in raw else "$"
        if not isinstance(item, dict):
            continue
        for name in ("occurred_at", "ended_at"):
            if name in item and item[name] is not None and not isinstance(item[name], str):
                raise ValidationException(detail=f"{name} must be an RFC 3339 date-time string (at {where}.{name}).")
        quantity = item.get("quantity")
        if isinstance(quantity, bool | str) or (isinstance(quantity, float) and not quantity.is_integer()):
            raise ValidationException(detail=f"quantity must be a whole number (at {where}.quantity).")
    return value


def receipt_out(r: Receipt) -> ReceiptOut:
    return ReceiptOut(
        event_id=r.external_id, activity_id=r.activity_id, verdict=r.verdict, code=r.code,  # type: ignore[arg-type]
        reason=r.reasons, credited_quantity=r.credited_quantity, credited_mg=r.credited_mg, replayed=r.replayed,
    )


def batch_receipt(receipts: Sequence[Receipt], quota_left: int | None) -> BatchReceipt:
    """Verdict counts are of activities judged by this request; `replayed` counts those answered with an
    earlier verdict, so summing `credited` over retries never counts an action twice."""
    counts: Counter[str | None] = Counter(r.verdict for r in receipts if not r.replayed)
    return BatchReceipt(
        credited=counts["credited"], partially_credited=counts["partially_credited"], duplicate=counts["duplicate"],
        rejected=counts["rejected"], held=counts["held"], conflicts=counts[None],
        replayed=sum(1 for r in receipts if r.replayed), quota_remaining_today=quota_left,
        receipts=[receipt_out(r) for r in receipts],
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
            credited_activities=counts["credited"], reduction_mg=counts["reduction_mg"],
            first_activity_at=counts["first_at"], last_activity_at=counts["last_at"],
        )

    @post("/activities", operation_id="partnerReportActivities", status_code=HTTP_200_OK,
          summary="Report the resident's green actions (activities:write)", request_max_body_size=BATCH_BODY_MAX_BYTES,
          responses=problem_responses(400, 401, 403, 413, 429, 503))
    async def report(
        self, request: Request[Any, Any, State], state: State, partner: PartnerPrincipal,
        data: JSONBody[ActivityBatch],
    ) -> BatchReceipt:
        """One to 1,000 activities of this resident, each with your own `event_id`, judged against the
        methodology: each gets a verdict (`credited`, `partially_credited`, `duplicate`, `rejected`, `held`)
        with a code and a reason in zh-CN and en. Sending the same request again is safe: an event id already
        judged answers with its stored verdict (`replayed`); with different content, `event-id-reused`.
        Counts against your per-minute limit and daily quota."""
        data = await strict_body(request, ActivityBatch)
        require_scope(partner, "activities:write")
        quota_left = await consume_daily_quota(state, partner.partner_id, partner.daily_quota, len(data.activities))
        receipts = await record_reports(_token_source(partner), [to_report(a) for a in data.activities])
        return batch_receipt(receipts, quota_left)

    @post("/activity", operation_id="partnerReportActivity", summary="Report one green action (activities:write)",
          responses={**problem_responses(400, 401, 403, 413, 422, 429, 503),
                     200: ResponseSpec(data_container=ReceiptOut, description="The stored verdict, replayed")})
    async def report_one(
        self, request: Request[Any, Any, State], state: State, partner: PartnerPrincipal,
        data: JSONBody[ActivityIn],
    ) -> Response[ReceiptOut]:
        """One activity: `201` with its verdict; `200` with the stored verdict when the same `event_id` is
        sent again with the same content; `422 event-id-reused` when it comes with different content."""
        data = await strict_body(request, ActivityIn)
        require_scope(partner, "activities:write")
        await consume_daily_quota(state, partner.partner_id, partner.daily_quota, 1)
        (receipt,) = await record_reports(_token_source(partner), [to_report(data)])
        if receipt.verdict is None:
            raise DomainError(
                "invalid", "event-id-reused",
                f"Event id {data.event_id!r} was already used for a different report; send a new event id.",
                activity_id=str(receipt.activity_id),
            )
        return Response(receipt_out(receipt), status_code=HTTP_200_OK if receipt.replayed else HTTP_201_CREATED)


def _token_source(partner: PartnerPrincipal) -> Source:
    return Source(
        holder_id=partner.holder_id, sub_account_id=partner.sub_account_id, partner_id=partner.partner_id,
        via="token", trust_tier=partner.trust_tier, names=(partner.partner_name, partner.partner_name_en),
        allowed_behaviours=partner.allowed_behaviours,
    )


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
        batch = await strict_body(request, PushBatch)
        if await _push_seen(partner["id"], message_id):  # checked again, atomically, when it is recorded
            raise _replayed(message_id)
        quota_left = await consume_daily_quota(state, partner["id"], partner["daily_quota"], len(batch.activities))
        try:
            receipts = await _receive_push(partner, message_id, batch)
        except DomainError as exc:
            if exc.code == "push-replayed":  # lost a race with the same push: it took nothing
                await refund_daily_quota(state, partner["id"], len(batch.activities))
            raise
        return batch_receipt(receipts, quota_left)


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
                    item.event_id, None, "rejected", "not-linked", {}, behaviour=item.behaviour,
                    reasons={"zh-CN": NOT_LINKED, "en": NOT_LINKED},
                )
        # Heads are locked in holder order, so two pushes naming the same residents cannot deadlock.
        for sub_account_id in sorted(groups, key=lambda s: (linked[s], s)):
            indexes = groups[sub_account_id]
            source = Source(
                holder_id=linked[sub_account_id], sub_account_id=sub_account_id, partner_id=partner["id"],
                via="signed_push", trust_tier=partner["trust_tier"],
                names=(partner["name"], partner["name_en"] or partner["name"]), allowed_behaviours=allowed,
            )
            got = await record_reports(source, [to_report(batch.activities[i]) for i in indexes])
            receipts.update(zip(indexes, got, strict=True))
    return [receipts[i] for i in range(len(batch.activities))]


