"""Operators run the mall and the donation projects, void a stuck redemption, and check the ledger."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from api.auth.middleware import Principal
from api.donations.controllers import ProjectOut, project_out
from api.mall.controllers import Category, IdempotencyKey, RedemptionOut, RewardOut, redemption_out, reward_out
from api.partners.admin import operator_only
from api.problems import known_id, problem_responses
from api.residents.schemas import Input
from api.security import BEARER
from api.strict import strict_json
from wallet.donations.service import create_project, update_project
from wallet.energy.awards import AWARD_MAX, award
from wallet.errors import DomainError
from wallet.ledger.check import check_ledger
from wallet.ledger.corrections import reverse_transfer
from wallet.mall.catalogue import adjust_stock, create_reward, list_rewards, load_vouchers, update_reward
from wallet.mall.redeem import void

__all__ = ["LedgerAdminController", "MallAdminController", "ProjectAdminController"]

Text120 = Annotated[str, msgspec.Meta(max_length=120)]
Text80 = Annotated[str, msgspec.Meta(max_length=80)]
Text4000 = Annotated[str, msgspec.Meta(max_length=4000)]
Url = Annotated[str, msgspec.Meta(max_length=500)]


class RewardCreate(Input, kw_only=True):
    code: Annotated[str, msgspec.Meta(max_length=64, examples=["metro-ride-5"])]
    title_zh: Text120
    title_en: Text120
    description_zh: Text4000 = ""
    description_en: Text4000 = ""
    merchant_zh: Text80
    merchant_en: Text80
    partner_id: str | None = None
    category: Category
    price: Annotated[int, msgspec.Meta(ge=1)]
    stock: Annotated[int, msgspec.Meta(ge=0)] | None = None
    per_day_limit: Annotated[int, msgspec.Meta(ge=1)] | None = None
    lifetime_limit: Annotated[int, msgspec.Meta(ge=1)] | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    images: Annotated[list[Url], msgspec.Meta(max_length=8)] = msgspec.field(default_factory=list)
    fulfilment: Literal["code", "pool", "merchant"] = "code"
    merchant_url: Url | None = None
    voucher_valid_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 30
    status: Literal["active", "paused", "retired"] = "active"


class RewardPatch(Input, kw_only=True):
    title_zh: Text120 | msgspec.UnsetType = msgspec.UNSET
    title_en: Text120 | msgspec.UnsetType = msgspec.UNSET
    description_zh: Text4000 | msgspec.UnsetType = msgspec.UNSET
    description_en: Text4000 | msgspec.UnsetType = msgspec.UNSET
    merchant_zh: Text80 | msgspec.UnsetType = msgspec.UNSET
    merchant_en: Text80 | msgspec.UnsetType = msgspec.UNSET
    category: Category | msgspec.UnsetType = msgspec.UNSET
    price: Annotated[int, msgspec.Meta(ge=1)] | msgspec.UnsetType = msgspec.UNSET
    per_day_limit: Annotated[int, msgspec.Meta(ge=1)] | msgspec.UnsetType | None = msgspec.UNSET
    lifetime_limit: Annotated[int, msgspec.Meta(ge=1)] | msgspec.UnsetType | None = msgspec.UNSET
    valid_from: datetime | msgspec.UnsetType | None = msgspec.UNSET
    valid_until: datetime | msgspec.UnsetType | None = msgspec.UNSET
    images: Annotated[list[Url], msgspec.Meta(max_length=8)] | msgspec.UnsetType = msgspec.UNSET
    merchant_url: Url | msgspec.UnsetType | None = msgspec.UNSET
    voucher_valid_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | msgspec.UnsetType = msgspec.UNSET
    status: Literal["active", "paused", "retired"] | msgspec.UnsetType = msgspec.UNSET


class StockChange(Input, kw_only=True):
    """Add items (positive) or withdraw unsold ones (negative)."""

    delta: Annotated[int, msgspec.Meta(ge=-10_000_000, le=10_000_000)]


class VoucherLoad(Input, kw_only=True):
    codes: Annotated[list[Annotated[str, msgspec.Meta(max_length=120)]], msgspec.Meta(min_length=1, max_length=10_000)]


class AdminRewardOut(RewardOut, kw_only=True):
    """What operators set and residents do not see."""

    partner_id: str | None
    merchant_url: str | None
    voucher_valid_days: int
    created_at: datetime
    updated_at: datetime


def admin_reward_out(r: dict[str, Any]) -> AdminRewardOut:
    return AdminRewardOut(
        **msgspec.structs.asdict(reward_out(r)), partner_id=str(r["partner"]) if r["partner"] else None,
        merchant_url=r["merchant_url"], voucher_valid_days=r["voucher_valid_days"], created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


class VouchersLoaded(msgspec.Struct, kw_only=True):
    loaded: int
    repeated: int
    reward: AdminRewardOut


class VoidRequest(Input, kw_only=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ProjectCreate(Input, kw_only=True):
    code: Annotated[str, msgspec.Meta(max_length=64, examples=["wind-turbine-2027"])]
    title_zh: Text120
    title_en: Text120
    description_zh: Text4000 = ""
    description_en: Text4000 = ""
    outcome_zh: Annotated[str, msgspec.Meta(max_length=200)] = ""
    outcome_en: Annotated[str, msgspec.Meta(max_length=200)] = ""
    images: Annotated[list[Url], msgspec.Meta(max_length=8)] = msgspec.field(default_factory=list)
    goal: Annotated[int, msgspec.Meta(ge=1)]
    closes_at: datetime | None = None


class ProjectPatch(Input, kw_only=True):
    title_zh: Text120 | msgspec.UnsetType = msgspec.UNSET
    title_en: Text120 | msgspec.UnsetType = msgspec.UNSET
    description_zh: Text4000 | msgspec.UnsetType = msgspec.UNSET
    description_en: Text4000 | msgspec.UnsetType = msgspec.UNSET
    outcome_zh: Annotated[str, msgspec.Meta(max_length=200)] | msgspec.UnsetType = msgspec.UNSET
    outcome_en: Annotated[str, msgspec.Meta(max_length=200)] | msgspec.UnsetType = msgspec.UNSET
    images: Annotated[list[Url], msgspec.Meta(max_length=8)] | msgspec.UnsetType = msgspec.UNSET
    goal: Annotated[int, msgspec.Meta(ge=1)] | msgspec.UnsetType = msgspec.UNSET
    closes_at: datetime | msgspec.UnsetType | None = msgspec.UNSET
    status: Literal["open", "closed"] | msgspec.UnsetType = msgspec.UNSET


class Finding(msgspec.Struct, kw_only=True):
    name: str
    ok: bool
    offenders: int
    examples: list[dict[str, Any]]


class LedgerCheck(msgspec.Struct, kw_only=True):
    ok: bool
    findings: list[Finding]


def _given(data: msgspec.Struct) -> dict[str, Any]:
    out = {f: v for f in data.__struct_fields__ if (v := getattr(data, f)) is not msgspec.UNSET}
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in out.items()}


class MallAdminController(Controller):
    path = "/v1/admin"
    tags = ["admin"]
    security = BEARER
    guards = [operator_only]

    @post("/rewards", operation_id="adminCreateReward", status_code=HTTP_201_CREATED, summary="Add a reward",
          responses=problem_responses(400, 401, 403, 409, 413, 422, 503))
    async def create(self, request: Request, data: JSONBody[RewardCreate]) -> AdminRewardOut:
        """`stock` null is unlimited. `fulfilment`: `code` (we issue voucher codes), `pool` (load the merchant's
        codes; each adds one item) or `merchant` (we POST to `merchant_url`, signed with the partner's webhook
        secret, and expect `{"voucher_code": …}`)."""
        data = await strict_json(request, RewardCreate)
        return admin_reward_out(await create_reward(_given(data), local=not request.app.state.settings.production))

    @get("/rewards", operation_id="adminListRewards", summary="Every reward, offered or not",
         responses=problem_responses(401, 403, 503))
    async def rewards(self) -> list[AdminRewardOut]:
        return [admin_reward_out(r) for r in await list_rewards(offered_only=False)]

    @patch("/rewards/{reward_id:int}", operation_id="adminUpdateReward", summary="Change a reward",
           responses=problem_responses(400, 401, 403, 404, 413, 422, 503))
    async def update(self, request: Request, reward_id: FromPath[int], data: JSONBody[RewardPatch]) -> AdminRewardOut:
        """Anything but its code and stock (`POST …/stock` moves stock). `status: paused` stops new
        redemptions; `retired` hides it."""
        data = await strict_json(request, RewardPatch)
        return admin_reward_out(await update_reward(known_id(reward_id, "reward-not-found", "reward"), _given(data),
                                                    local=not request.app.state.settings.production))

    @post("/rewards/{reward_id:int}/stock", operation_id="adminAdjustRewardStock", status_code=HTTP_200_OK,
          summary="Add or withdraw stock", responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 503))
    async def stock(self, request: Request, reward_id: FromPath[int], data: JSONBody[StockChange]) -> AdminRewardOut:
        data = await strict_json(request, StockChange)
        return admin_reward_out(await adjust_stock(known_id(reward_id, "reward-not-found", "reward"), data.delta))

    @post("/rewards/{reward_id:int}/vouchers", operation_id="adminLoadRewardVouchers", status_code=HTTP_200_OK,
          summary="Load a merchant's voucher codes", responses=problem_responses(400, 401, 403, 404, 409, 413, 422,
                                                                                   503))
    async def vouchers(self, request: Request, reward_id: FromPath[int],
                       data: JSONBody[VoucherLoad]) -> VouchersLoaded:
        """For `pool` rewards: each new code adds one item of stock; a code loaded before is counted as repeated."""
        data = await strict_json(request, VoucherLoad)
        result = await load_vouchers(known_id(reward_id, "reward-not-found", "reward"), data.codes)
        return VouchersLoaded(loaded=result["loaded"], repeated=result["repeated"],
                              reward=admin_reward_out(result["reward"]))

    @post("/redemptions/{redemption_id:int}/void", operation_id="adminVoidRedemption", status_code=HTTP_200_OK,
          summary="Void a pending redemption", responses=problem_responses(400, 401, 403, 404, 413, 422, 503))
    async def void(self, request: Request, redemption_id: FromPath[int],
                   data: JSONBody[VoidRequest]) -> RedemptionOut:
        """Returns the energy and the item of a redemption still pending (e.g. a merchant that will not answer).
        A resolved redemption is returned unchanged: each resolves exactly once."""
        data = await strict_json(request, VoidRequest)
        return redemption_out(await void(known_id(redemption_id, "redemption-not-found", "redemption"), data.reason))


class ProjectAdminController(Controller):
    path = "/v1/admin/projects"
    tags = ["admin"]
    security = BEARER
    guards = [operator_only]

    @post("", operation_id="adminCreateDonationProject", status_code=HTTP_201_CREATED,
          summary="Open a donation project", responses=problem_responses(400, 401, 403, 409, 413, 422, 503))
    async def create(self, request: Request, data: JSONBody[ProjectCreate]) -> ProjectOut:
        """A collective goal in energy; when donations reach it the project completes and every donor gets a
        certificate with their share."""
        data = await strict_json(request, ProjectCreate)
        return project_out(await create_project(_given(data)))

    @patch("/{project_id:int}", operation_id="adminUpdateDonationProject", summary="Change a donation project",
           responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 503))
    async def update(self, request: Request, project_id: FromPath[int],
                     data: JSONBody[ProjectPatch]) -> ProjectOut:
        data = await strict_json(request, ProjectPatch)
        return project_out(await update_project(known_id(project_id, "project-not-found", "project"), _given(data)))


class AwardRequest(Input, kw_only=True):
    holder_id: uuid.UUID
    amount: Annotated[int, msgspec.Meta(ge=1, le=AWARD_MAX)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Awarded(msgspec.Struct, kw_only=True):
    awarded: int
    available: int
    replayed: bool


class TransferReversal(Input, kw_only=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Reversed(msgspec.Struct, kw_only=True):
    id: int
    reverses: int
    amount: int


class LedgerAdminController(Controller):
    path = "/v1/admin/ledger"
    tags = ["admin"]
    security = BEARER
    guards = [operator_only]

    @post("/awards", operation_id="adminAwardEnergy", status_code=HTTP_200_OK, summary="Award energy to a resident",
          responses=problem_responses(400, 401, 403, 404, 413, 422, 503))
    async def award(self, request: Request[Principal, Any, State], data: JSONBody[AwardRequest],
                    idempotency_key: IdempotencyKey = None) -> Awarded:
        """Straight to the resident's available energy (a campaign prize, goodwill after a fault), with the
        `reason` they read in their statement. Idempotent on `Idempotency-Key`."""
        data = await strict_json(request, AwardRequest)
        done = await award(data.holder_id, data.amount, reason=data.reason, operator_id=request.user.holder_id,
                           key=idempotency_key)
        return Awarded(**done)

    @post("/transfers/{transfer_id:int}/reverse", operation_id="adminReverseTransfer", status_code=HTTP_201_CREATED,
          summary="Reverse an award or a donation", responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 503))
    async def reverse(self, request: Request[Principal, Any, State], transfer_id: FromPath[int],
                      data: JSONBody[TransferReversal]) -> Reversed:
        """Moves the amount back with a `correction` transfer pointing at the original (the resident reads the
        `reason`). Only awards and donations to open projects; at most once (`409 already-reversed`); never
        below zero (`409 insufficient-energy` when the resident has spent it)."""
        data = await strict_json(request, TransferReversal)
        done = await reverse_transfer(known_id(transfer_id, "transfer-not-found", "transfer"), reason=data.reason,
                                      operator_id=request.user.holder_id)
        return Reversed(id=done["id"], reverses=done["reverses"], amount=done["amount"])

    @get("/check", operation_id="adminCheckLedger", summary="Reconcile the ledger (energy and fen) and the market",
         responses=problem_responses(400, 401, 403, 422, 503))
    async def check(self, examples: FromQuery[int] = 5) -> LedgerCheck:
        """Postings sum to zero; cached balances equal their transfers; nothing below zero; each pending
        resolved at most once; balls, held energy and redemptions agree with the ledger; completed projects'
        certificates cover what they raised; lots, sales and payouts agree with the book and the money ledger, and
        every manifest and settlement recomputes (README: The carbon market). Lists a few offenders per failed check."""
        if not 0 <= examples <= 100:
            raise DomainError("invalid", "invalid-examples", "examples must be between 0 and 100.")
        report = await check_ledger(examples=examples)
        return LedgerCheck(ok=report.ok, findings=[Finding(name=f.name, ok=f.ok, offenders=f.offenders,
                                                           examples=f.examples) for f in report.findings])
