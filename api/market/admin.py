"""Operators run the carbon market: programmes, lots (create, inspect, export the manifest, cancel) and sales
(record pending, settle, cancel)."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from api.auth.middleware import Principal
from api.energy.controllers import page_limit
from api.mall.controllers import IdempotencyKey
from api.market.controllers import before_checked
from api.market.schemas import (
    EligibleOut,
    LotCancel,
    LotCreate,
    LotOut,
    ProgrammeCreate,
    ProgrammeOut,
    SaleCancel,
    SaleCreate,
    SaleOut,
    lot_out,
    programme_out,
    sale_out,
)
from api.partners.admin import operator_only
from api.problems import known_id, problem_responses
from api.security import BEARER
from api.strict import strict_json
from wallet.market.lots import cancel_lot, create_lot, eligible_summary, get_lot, list_lots, lot_manifest
from wallet.market.manifest import manifest_csv
from wallet.market.programmes import close_programme, create_programme
from wallet.market.sales import cancel_sale, get_sale, list_sales, record_sale, settle_sale

__all__ = ["MarketAdminController"]

Req = Request[Principal, Any, State]
LotStateQuery = Annotated[Literal["open", "pending", "settled", "cancelled"] | None,
                          Parameter(query="state", required=False, description="Only lots in this state.")]


def _created(body: Any, created: bool) -> Response[Any]:
    return Response(body, status_code=HTTP_201_CREATED if created else HTTP_200_OK)


class MarketAdminController(Controller):
    path = "/v1/admin/market"
    tags = ["market"]
    security = BEARER
    guards = [operator_only]

    @post("/programmes", operation_id="adminCreateMarketProgramme", status_code=HTTP_201_CREATED,
          summary="Publish a market programme", responses=problem_responses(400, 401, 403, 409, 422, 503))
    async def create_programme(self, request: Req, data: JSONBody[ProgrammeCreate]) -> ProgrammeOut:
        """Its rules never change afterwards (lot manifests quote them): `409 programme-exists` for a used code."""
        data = await strict_json(request, ProgrammeCreate)
        fields = {f: getattr(data, f) for f in data.__struct_fields__}
        return programme_out(await create_programme(fields))

    @post("/programmes/{code:str}/close", operation_id="adminCloseMarketProgramme", status_code=HTTP_200_OK,
          summary="Close a programme to new lots", responses=problem_responses(401, 403, 404, 503))
    async def close_programme(self, code: FromPath[str]) -> ProgrammeOut:
        """Lots already made keep their programme and can still be sold."""
        return programme_out(await close_programme(code[:64]))

    @get("/eligible", operation_id="adminMarketEligible", summary="What a new lot could take now",
         responses=problem_responses(400, 401, 403, 404, 422, 503))
    async def eligible(self, programme: FromQuery[str], day_from: FromQuery[date | None] = None,
                       day_to: FromQuery[date | None] = None) -> EligibleOut:
        """Eligible, not-yet-pooled grams, entries and residents (opted in) in the programme's period."""
        return EligibleOut(**await eligible_summary(programme[:64], day_from, day_to))

    @post("/lots", operation_id="adminCreateLot", summary="Pool eligible entries into a lot", responses={
        **problem_responses(400, 401, 403, 404, 409, 422, 503),
        200: ResponseSpec(data_container=LotOut, description="A repeat (same Idempotency-Key): the stored lot.")})
    async def create_lot(self, request: Req, data: JSONBody[LotCreate],
                         idempotency_key: IdempotencyKey = None) -> Response[LotOut]:
        """Takes the eligible, not-yet-pooled entries of opted-in residents, oldest local day first (then by entry
        id), until `target_mg` is reached. `409 not-enough-eligible` says how much there is (`available_mg`);
        `409 programme-closed`. Send an `Idempotency-Key`: a repeat returns the same lot with `200`."""
        data = await strict_json(request, LotCreate)
        lot, created = await create_lot(request.user.holder_id, data.programme, data.target_mg,
                                        day_from=data.day_from, day_to=data.day_to, note=data.note,
                                        idempotency_key=idempotency_key)
        return _created(lot_out(lot), created)

    @get("/lots", operation_id="adminListLots", summary="Lots, newest first", responses=problem_responses(
        400, 401, 403, 422, 503))
    async def lots(self, lot_state: LotStateQuery = None, before: FromQuery[int | None] = None,
                   limit: FromQuery[int] = 50) -> list[LotOut]:
        return [lot_out(x) for x in await list_lots(state=lot_state, before=before_checked(before),
                                                    limit=page_limit(limit, 100))]

    @get("/lots/{lot_id:int}", operation_id="adminGetLot", summary="One lot",
         responses=problem_responses(401, 403, 404, 503))
    async def lot(self, lot_id: FromPath[int]) -> LotOut:
        return lot_out(await get_lot(known_id(lot_id, "lot-not-found", "lot")))

    @get("/lots/{lot_id:int}/manifest.json", operation_id="adminExportLotManifestJson",
         summary="The lot's manifest for the exchange's verifier (JSON)", media_type="application/json",
         responses=problem_responses(401, 403, 404, 503))
    async def manifest_json(self, lot_id: FromPath[int]) -> Response[bytes]:
        """Canonical JSON: `contributors` (holder, grams, entries, chain head seq and hash, consent time),
        `entries` (id, holder, seq, local day, behaviour@version, release, tier, mg, entry_hash) and `lot` (totals,
        the programme's rules). Header `Manifest-SHA256` = SHA-256("carbon-lot/v1\\n" ‖ these exact bytes), the hash
        recorded when the lot was made."""
        lot, manifest = await lot_manifest(known_id(lot_id, "lot-not-found", "lot"))
        return Response(manifest.body, media_type="application/json", headers=_manifest_headers(lot, manifest.sha256,
                                                                                                 "json"))

    @get("/lots/{lot_id:int}/manifest.csv", operation_id="adminExportLotManifestCsv",
         summary="The lot's entries for the exchange's verifier (CSV)", media_type="text/csv",
         responses=problem_responses(401, 403, 404, 503))
    async def manifest_csv(self, lot_id: FromPath[int]) -> Response[str]:
        """One row per entry, the same rows as the JSON manifest; the header `Manifest-SHA256` is the JSON's hash."""
        lot, manifest = await lot_manifest(known_id(lot_id, "lot-not-found", "lot"))
        body = await asyncio.to_thread(manifest_csv, lot["id"], manifest)  # seconds of CPU for a large lot
        return Response(body, media_type="text/csv; charset=utf-8",
                        headers=_manifest_headers(lot, manifest.sha256, "csv"))

    @post("/lots/{lot_id:int}/cancel", operation_id="adminCancelLot", status_code=HTTP_200_OK,
          summary="Cancel an unsold lot and release its entries",
          responses=problem_responses(400, 401, 403, 404, 409, 422, 503))
    async def cancel(self, request: Req, lot_id: FromPath[int], data: JSONBody[LotCancel]) -> LotOut:
        """Its entries may be pooled again. `409 sale-pending` (cancel the sale first) or `409 lot-sold`; cancelling
        a cancelled lot returns it as it is."""
        data = await strict_json(request, LotCancel)
        return lot_out(await cancel_lot(known_id(lot_id, "lot-not-found", "lot"), data.reason))

    @get("/lots/{lot_id:int}/sales", operation_id="adminListLotSales", summary="A lot's sales, cancelled ones too",
         responses=problem_responses(401, 403, 404, 503))
    async def sales(self, lot_id: FromPath[int]) -> list[SaleOut]:
        await get_lot(known_id(lot_id, "lot-not-found", "lot"))
        return [sale_out(s) for s in await list_sales(lot_id)]

    @post("/lots/{lot_id:int}/sales", operation_id="adminRecordSale", summary="Record a sale (pending)", responses={
        **problem_responses(400, 401, 403, 404, 409, 422, 503),
        200: ResponseSpec(data_container=SaleOut, description="A repeat (same exchange_ref, same sale).")})
    async def record(self, request: Req, lot_id: FromPath[int], data: JSONBody[SaleCreate]) -> Response[SaleOut]:
        """Pending until the exchange pays; then settle it. `409`: `lot-sold` (never sold twice), `lot-cancelled`,
        `sale-pending`, `lot-has-reversals`, `exchange-ref-used`. The exchange reference makes it idempotent."""
        data = await strict_json(request, SaleCreate)
        sale, created = await record_sale(
            request.user.holder_id, known_id(lot_id, "lot-not-found", "lot"), buyer=data.buyer,
            exchange_ref=data.exchange_ref, sale_date=data.sale_date, price_per_tonne_fen=data.price_per_tonne_fen,
            note=data.note)
        return _created(sale_out(sale), created)

    @get("/sales/{sale_id:int}", operation_id="adminGetSale", summary="One sale",
         responses=problem_responses(401, 403, 404, 503))
    async def sale(self, sale_id: FromPath[int]) -> SaleOut:
        return sale_out(await get_sale(known_id(sale_id, "sale-not-found", "sale")))

    @post("/sales/{sale_id:int}/settle", operation_id="adminSettleSale", status_code=HTTP_200_OK,
          summary="Settle a sale: split and pay the proceeds", responses=problem_responses(401, 403, 404, 409, 503))
    async def settle(self, sale_id: FromPath[int]) -> SaleOut:
        """The public-benefit share first (floor of the programme's ppm), then largest-remainder shares by grams,
        paid in fen or converted to energy. Settling a settled sale changes nothing; `409 sale-cancelled`."""
        sale, _ = await settle_sale(known_id(sale_id, "sale-not-found", "sale"))
        return sale_out(sale)

    @post("/sales/{sale_id:int}/cancel", operation_id="adminCancelSale", status_code=HTTP_200_OK,
          summary="Cancel a pending sale (the lot is open again)",
          responses=problem_responses(400, 401, 403, 404, 409, 422, 503))
    async def cancel_sale(self, request: Req, sale_id: FromPath[int], data: JSONBody[SaleCancel]) -> SaleOut:
        """`409 sale-settled`: a settled sale stands."""
        data = await strict_json(request, SaleCancel)
        sale, _ = await cancel_sale(known_id(sale_id, "sale-not-found", "sale"), data.reason)
        return sale_out(sale)


def _manifest_headers(lot: dict[str, Any], sha256: bytes, ext: str) -> dict[str, str]:
    return {"Manifest-SHA256": sha256.hex(), "ETag": f'"{sha256.hex()}"',
            "Content-Disposition": f'attachment; filename="lot-{lot["id"]}-manifest.{ext}"',
            "Cache-Control": "private, no-store"}
