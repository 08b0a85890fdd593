"""The carbon market for residents and the public: the programmes, every lot's public account, my choice to have
my reductions sold, and my statement (which of my entries went into which lot, at what price, what I received)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, get, put
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody

from api.auth.middleware import Principal
from api.energy.controllers import page_limit
from api.market.schemas import (
    ConsentIn,
    ConsentOut,
    MyLotEntry,
    MyLotOut,
    MyMarketOut,
    ProgrammeOut,
    PublicLotOut,
    my_lot_summary,
    programme_out,
    public_lot_out,
)
from api.problems import known_id, problem_responses
from api.security import BEARER
from api.strict import strict_json
from wallet.errors import DomainError
from wallet.market.programmes import get_programme, list_programmes
from wallet.market.statements import get_consent, my_lot, my_market, public_lot, public_lots, set_consent

__all__ = ["MarketController", "MyMarketController", "before_checked", "market_statement"]

Req = Request[Principal, Any, State]


async def market_statement(holder_id: uuid.UUID) -> MyMarketOut:
    """Also part of the personal data export."""
    out = await my_market(holder_id)
    return MyMarketOut(consent=ConsentOut(**out["consent"]), balance_fen=out["balance_fen"],
                       received_fen=out["received_fen"], converted_fen=out["converted_fen"],
                       received_energy=out["received_energy"],
                       lots=[my_lot_summary(r) for r in out["lots"]])


def before_checked(before: int | None) -> int | None:
    if before is not None and not 1 <= before < 2**63:
        raise DomainError("invalid", "invalid-cursor", "before must be a lot id from the previous page.")
    return before


class MarketController(Controller):
    path = "/v1/market"
    tags = ["market"]

    @get("/programmes", operation_id="listMarketProgrammes", summary="Carbon market programmes",
         opt={"exclude_from_auth": True}, responses=problem_responses(503))
    async def programmes(self) -> list[ProgrammeOut]:
        """What may be pooled into lots and sold, and how contributors are paid; open programmes first."""
        return [programme_out(p) for p in await list_programmes()]

    @get("/programmes/{code:str}", operation_id="getMarketProgramme", summary="One carbon market programme",
         opt={"exclude_from_auth": True}, responses=problem_responses(404, 503))
    async def programme(self, code: FromPath[str]) -> ProgrammeOut:
        return programme_out(await get_programme(code[:64]))

    @get("/lots", operation_id="listPublicLots", summary="Every lot, with its sale", opt={"exclude_from_auth": True},
         responses=problem_responses(400, 422, 503))
    async def lots(self, before: FromQuery[int | None] = None, limit: FromQuery[int] = 50) -> list[PublicLotOut]:
        """Newest first; the next page is `before` = the last id. Totals, contributors and, once settled, the price
        and where the public-benefit share went. Cancelled lots stay listed: they are part of the record."""
        return [public_lot_out(lot) for lot in await public_lots(before=before_checked(before),
                                                                 limit=page_limit(limit, 100))]

    @get("/lots/{lot_id:int}", operation_id="getPublicLot", summary="One lot's public account",
         opt={"exclude_from_auth": True}, responses=problem_responses(404, 503))
    async def lot(self, lot_id: FromPath[int]) -> PublicLotOut:
        """The same account as the page `/lots/{lot_id}`; never who contributed."""
        return public_lot_out(await public_lot(known_id(lot_id, "lot-not-found", "lot")))


class MyMarketController(Controller):
    path = "/v1/me/market"
    tags = ["market"]
    security = BEARER

    @get("", operation_id="getMyMarketStatement", summary="My market statement",
         responses=problem_responses(401, 503))
    async def statement(self, request: Req) -> MyMarketOut:
        """My choice, my money balance (fen), what lots have paid me, and every lot holding my entries."""
        return await market_statement(request.user.holder_id)

    @get("/consent", operation_id="getMyMarketConsent", summary="Whether my reductions may be sold",
         responses=problem_responses(401, 503))
    async def consent(self, request: Req) -> ConsentOut:
        return ConsentOut(**await get_consent(request.user.holder_id))

    @put("/consent", operation_id="setMyMarketConsent", summary="Choose whether my reductions may be sold",
         responses=problem_responses(400, 401, 422, 503))
    async def set_consent(self, request: Req, data: JSONBody[ConsentIn]) -> ConsentOut:
        """Opted in, lots may take my eligible entries (only those the programme accepts; see
        `GET /v1/market/programmes`). Opting out stops later lots; entries already pooled stay and are paid."""
        data = await strict_json(request, ConsentIn)
        return ConsentOut(**await set_consent(request.user.holder_id, data.opted_in))

    @get("/lots/{lot_id:int}", operation_id="getMyLot", summary="My entries in one lot and what each earned",
         responses=problem_responses(401, 404, 503))
    async def lot(self, request: Req, lot_id: FromPath[int]) -> MyLotOut:
        """`404 lot-not-found` when none of my entries is in the lot."""
        out = await my_lot(request.user.holder_id, known_id(lot_id, "lot-not-found", "lot"))
        summary = my_lot_summary(out["lot"])
        entries = [MyLotEntry(entry_id=e["id"], local_day=e["local_day"], behaviour=e["behaviour"],
                              behaviour_version=e["behaviour_version"], methodology_release=e["methodology_release"],
                              category=e["category"], reduction_mg=e["reduction_mg"],
                              entry_hash=bytes(e["entry_hash"]).hex(), reversed=e["reversed"], fen=e["fen"],
                              energy=e["energy"]) for e in out["entries"]]
        return MyLotOut(**msgspec.structs.asdict(summary), entries=entries)

