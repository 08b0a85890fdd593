"""The redemption mall: rewards anyone can browse, and my redemptions (two-phase, idempotent)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from api.auth.middleware import Principal
from api.energy.controllers import id_cursor, page_limit
from api.problems import problem_responses
from api.residents.schemas import Input
from api.security import BEARER
from api.strict import strict_json
from wallet.book.reads import encode_cursor
from wallet.errors import DomainError
from wallet.mall.catalogue import CATEGORIES, get_reward, list_rewards
from wallet.mall.redeem import fulfil, redemption_of, redemptions_page, reserve

__all__ = [
    "Category","IdempotencyKey", "MallController", "RedemptionsController", "RewardOut", "reward_out"]

Req = Request[Principal, Any, State]
IdempotencyKey = Annotated[str | None, Parameter(
    header="Idempotency-Key", required=False, min_length=1, max_length=120,
    description="Your id for this purchase (e.g. a UUID). Repeating the request with the same key returns the "
                "same result instead of buying twice; a refused request stores nothing, so its key may be reused.",
)]


Category = Literal["transit", "bike", "coffee", "food", "parking", "goods", "charging", "other"]
RedemptionState = Annotated[Literal["pending", "fulfilled", "voided"] | None, Parameter(query="state")]


class RewardOut(msgspec.Struct, kw_only=True):
    id: int
    code: str
    title: dict[str, str]
    description: dict[str, str]
    merchant: dict[str, str]
    category: str
    price: int
    stock: int | None  # what is left; null = unlimited
    sold_out: bool
    per_day_limit: int | None
    lifetime_limit: int | None
    valid_from: datetime | None
    valid_until: datetime | None
    images: list[str]
    fulfilment: Literal["code", "pool", "merchant"]
    status: Literal["active", "paused", "retired"]


def reward_out(r: dict[str, Any]) -> RewardOut:
    return RewardOut(
        id=r["id"], code=r["code"], title={"zh-CN": r["title_zh"], "en": r["title_en"]},
        description={"zh-CN": r["description_zh"], "en": r["description_en"]},
        merchant={"zh-CN": r["merchant_zh"], "en": r["merchant_en"]}, category=r["category"], price=r["price"],
        stock=r["stock"], sold_out=r["stock"] == 0, per_day_limit=r["per_day_limit"],
        lifetime_limit=r["lifetime_limit"], valid_from=r["valid_from"], valid_until=r["valid_until"],
        images=r["images"], fulfilment=r["fulfilment"], status=r["status"],
    )


class RedeemRequest(Input, kw_only=True):
    reward_id: Annotated[int, msgspec.Meta(ge=1)]


class RedemptionOut(msgspec.Struct, kw_only=True):
    """`pending`: energy and an item are reserved while the voucher is fetched; it becomes `fulfilled` (with
    `voucher_code`) or `voided` (with `void_reason`, energy returned) exactly once."""

    id: int
    reward_id: int
    reward: dict[str, str]
    merchant: dict[str, str]
    price: int
    state: Literal["pending", "fulfilled", "voided"]
    voucher_code: str | None
    voucher_expires_at: datetime | None
    void_reason: str | None
    created_at: datetime
    resolved_at: datetime | None


class RedemptionPage(msgspec.Struct, kw_only=True):
    items: list[RedemptionOut]
    next_cursor: str | None


def redemption_out(r: dict[str, Any]) -> RedemptionOut:
    return RedemptionOut(
        id=r["id"], reward_id=r["reward"], reward={"zh-CN": r["title_zh"], "en": r["title_en"]},
        merchant={"zh-CN": r["merchant_zh"], "en": r["merchant_en"]}, price=r["price"], state=r["state"],
        voucher_code=r["voucher_code"], voucher_expires_at=r["voucher_expires_at"], void_reason=r["void_reason"],
        created_at=r["created_at"], resolved_at=r["resolved_at"],
    )


class MallController(Controller):
    path = "/v1/mall/rewards"
    tags = ["mall"]
    opt = {"exclude_from_auth": True}

    @get("", operation_id="listRewards", summary="Rewards on offer", responses=problem_responses(400, 503))
    async def rewards(self, category: FromQuery[Category | None] = None) -> list[RewardOut]:
        """Active rewards inside their validity window, cheapest first, with what is left in stock. Filter by
        `category` (transit, bike, coffee, food, parking, goods, charging, other)."""
        return [reward_out(r) for r in await list_rewards(offered_only=True, category=category)]

    @get("/{reward_id:int}", operation_id="getReward", summary="One reward", responses=problem_responses(404, 503))
    async def reward(self, reward_id: FromPath[int]) -> RewardOut:
        if not 1 <= reward_id < 2**63:
            raise DomainError("not_found", "reward-not-found", "No reward has this id.")
        found = await get_reward(reward_id)
        if found["status"] == "retired":
            raise DomainError("not_found", "reward-not-found", "No reward has this id.")
        return reward_out(found)


class RedemptionsController(Controller):
    path = "/v1/me/redemptions"
    tags = ["mall"]
    security = BEARER

    @post("", operation_id="redeemReward", summary="Redeem energy for a reward",
          responses={**problem_responses(400, 401, 404, 409, 422, 503), 200: ResponseSpec(
              data_container=RedemptionOut, description="A repeat (same Idempotency-Key): the stored redemption.")})
    async def redeem(self, request: Req, data: JSONBody[RedeemRequest],
                     idempotency_key: IdempotencyKey = None) -> Response[RedemptionOut]:
        """Reserves the price and one item, then fetches the voucher: `201` with `fulfilled` and the voucher
        (or `pending` while a merchant is asked; poll `GET /v1/me/redemptions/{id}`). Refusals are `409`:
        `sold-out`, `insufficient-energy`, `daily-limit-reached`, `lifetime-limit-reached`,
        `reward-not-offered`. Send an `Idempotency-Key`: a repeat returns the stored redemption with `200`,
        the same key for another reward is `422 idempotency-key-reused`."""
        data = await strict_json(request, RedeemRequest)
        if data.reward_id >= 2**63:
            raise DomainError("not_found", "reward-not-found", "No reward in the mall has this id.")
        redemption, created = await reserve(request.user.holder_id, data.reward_id, idempotency_key=idempotency_key)
        if created:  # fetch the voucher now; if that fails the worker retries, and the resident sees `pending`
            redemption = await fulfil(redemption["id"], request.app.state.merchant)
        return Response(redemption_out(redemption), status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @get("", operation_id="listMyRedemptions", summary="My redemptions",
         responses=problem_responses(400, 401, 422, 503))
    async def redemptions(self, request: Req, redemption_state: RedemptionState = None,
                          cursor: FromQuery[str | None] = None, limit: FromQuery[int] = 20) -> RedemptionPage:
        """Newest first, with status and voucher; pass `next_cursor` back as `cursor` for more."""
        rows = await redemptions_page(request.user.holder_id, before=id_cursor(cursor), limit=page_limit(limit, 100),
                                      state=redemption_state)
        return RedemptionPage(items=[redemption_out(r) for r in rows],
                              next_cursor=encode_cursor(rows[-1]["id"]) if len(rows) == limit else None)

    @get("/{redemption_id:int}", operation_id="getMyRedemption", summary="One of my redemptions",
         responses=problem_responses(401, 404, 503))
    async def redemption(self, request: Req, redemption_id: FromPath[int]) -> RedemptionOut:
        if not 1 <= redemption_id < 2**63:
            raise DomainError("not_found", "redemption-not-found", "You have no redemption with this id.")
        return redemption_out(await redemption_of(redemption_id, request.user.holder_id))


assert set(Category.__args__) == set(CATEGORIES), "the API's categories are the catalogue's"
