"""The three ledgers (三本账) for programme staff and operators: the city programme ledger (region × category ×
day), the enterprise ledger (a partner's residents' reductions by behaviour and month) and the check that both
agree with the resident ledger, the book. Not the energy ledger (`/v1/admin/ledger/…`)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import FromPath, FromQuery

from api.auth.middleware import Principal
from api.partners.auth import PartnerClient, authorise_ledger_client
from api.problems import problem_responses
from api.security import BEARER
from gamification.community.reads import city_ledger, consistency, enterprise_ledger
from wallet.errors import DomainError
from wallet.holders.roles import has_role, role_scopes
from wallet.partners.service import get_partner

__all__ = ["LedgersController", "PartnerLedgerController"]

Req = Request[Principal, Any, State]
By = Literal["city", "district", "community"]


class Totals(msgspec.Struct, kw_only=True):
    reduction_mg: int
    credits: int
    reversals: int
    participants: int  # distinct residents with a credited action in the window


class CityRow(msgspec.Struct, kw_only=True):
    region: str  # the city, `city|district` or `city|district|community`
    category: str
    day: date
    reduction_mg: int
    credits: int
    reversals: int
    participants_that_day: int


class CityLedger(msgspec.Struct, kw_only=True):
    """Counted up to `counted_at` (the aggregates follow the book every second)."""

    city: str
    by: str
    from_day: date
    to_day: date
    counted_at: datetime | None
    total: Totals
    rows: list[CityRow]


class BehaviourMonth(msgspec.Struct, kw_only=True):
    behaviour: str
    category: str
    reduction_mg: int
    credits: int
    reversals: int


class Month(msgspec.Struct, kw_only=True):
    month: date
    participants: int
    behaviours: list[BehaviourMonth]


class EnterpriseLedger(msgspec.Struct, kw_only=True):
    partner_id: uuid.UUID
    partner: str
    from_day: date
    to_day: date
    counted_at: datetime | None
    total: Totals
    months: list[Month]


class ConsistencyOut(msgspec.Struct, kw_only=True):
    """`ok`: the book (resident ledger), everyone's total, the city ledger over all cities and the enterprise
    ledger over all partners (and residents' own reports) are the same number of mg, over the same entries."""

    ok: bool
    resident_mg: int
    all_mg: int
    city_mg: int
    enterprise_mg: int
    entries: int


class MyCities(msgspec.Struct, kw_only=True):
    all_cities: bool  # operators read every city
    cities: list[str]


def window(from_day: date | None, to_day: date | None) -> tuple[date, date]:
    """Default: the 30 days up to the latest local day anywhere (rows are residents' local days, and a resident
    in Shanghai is a day ahead of UTC from 16:00 UTC)."""
    to_day = to_day or (datetime.now(UTC) + timedelta(hours=14)).date()
    return from_day or to_day - timedelta(days=29), to_day


async def may_read_city(holder_id: uuid.UUID, city: str) -> None:
    if await has_role(holder_id, "operator") or city in await role_scopes(holder_id, "programme_staff"):
        return
    raise DomainError("forbidden", "not-your-city", "Programme staff read their own city's ledger only.")


def enterprise_out(partner: dict[str, Any], data: dict[str, Any]) -> EnterpriseLedger:
    return EnterpriseLedger(
        partner_id=partner["id"], partner=partner["name"], from_day=data["from_day"], to_day=data["to_day"],
        counted_at=data["counted_at"], total=Totals(**data["total"]),
        months=[Month(month=m["month"], participants=m["participants"],
                      behaviours=[BehaviourMonth(**b) for b in m["behaviours"]]) for m in data["months"]])


class LedgersController(Controller):
    path = "/v1/ledgers"
    tags = ["ledgers"]
    security = BEARER

    @get("/cities", operation_id="listMyLedgerCities", summary="The cities whose ledger I may read",
         responses=problem_responses(401, 503))
    async def cities(self, request: Req) -> MyCities:
        operator = await has_role(request.user.holder_id, "operator")
        return MyCities(all_cities=operator, cities=await role_scopes(request.user.holder_id, "programme_staff"))

    @get("/cities/{city:str}", operation_id="getCityLedger", summary="A city programme's ledger",
         responses=problem_responses(400, 401, 403, 422, 503))
    async def city(self, request: Req, city: FromPath[str], from_day: FromQuery[date | None] = None,
                   to_day: FromQuery[date | None] = None, by: FromQuery[By] = "district") -> CityLedger:
        """Reductions (mg CO2e), credited and reversed actions, and participants by region × category × day for
        the city as a whole, its districts or its communities (`by`), between two of residents' local days (at
        most 366; default the last 30), with the window's totals. Operators read every city; programme staff
        their own (`403 not-your-city`). About a second behind the book (`counted_at`)."""
        await may_read_city(request.user.holder_id, city)
        start, end = window(from_day, to_day)
        data = await city_ledger(city, from_day=start, to_day=end, by=by)
        return CityLedger(city=city, by=by, from_day=start, to_day=end, counted_at=data["counted_at"],
                          total=Totals(**data["total"]),
                          rows=[CityRow(**{k: v for k, v in r.items() if k != "scope"}) for r in data["rows"]])

    @get("/partners/{partner_id:uuid}", operation_id="getEnterpriseLedger", summary="A partner's enterprise ledger",
         responses=problem_responses(400, 401, 403, 404, 422, 503))
    async def partner(self, request: Req, partner_id: FromPath[uuid.UUID], from_day: FromQuery[date | None] = None,
                      to_day: FromQuery[date | None] = None) -> EnterpriseLedger:
        """What residents reduced through one partner, by month and behaviour. Operators only here; the partner
        reads its own with its client token at `GET /v1/partner/ledger`."""
        if not await has_role(request.user.holder_id, "operator"):
            raise DomainError("forbidden", "operator-only", "Only Carbon Wallet operators can do this.")
        partner = await get_partner(partner_id)
        start, end = window(from_day, to_day)
        return enterprise_out(partner, await enterprise_ledger(partner_id, from_day=start, to_day=end))

    @get("/consistency", operation_id="checkLedgersAgree", summary="Do the three ledgers agree?",
         responses=problem_responses(401, 403, 503))
    async def check(self, request: Req) -> ConsistencyOut:
        """Reads the whole book once (operators only): the resident ledger against the city and enterprise
        ledgers, up to the aggregates' cursor."""
        if not await has_role(request.user.holder_id, "operator"):
            raise DomainError("forbidden", "operator-only", "Only Carbon Wallet operators can do this.")
        c = await consistency()
        return ConsistencyOut(ok=c.ok, resident_mg=c.resident_mg, all_mg=c.all_mg, city_mg=c.city_mg,
                              enterprise_mg=c.enterprise_mg, entries=c.entries)


class PartnerLedgerController(Controller):
    """The partner's own view, with its own token (OAuth client credentials, scope ledger:read)."""

    path = "/v1/partner/ledger"
    tags = ["partner API"]
    opt = {"exclude_from_auth": True}
    security = [{"PartnerToken": ["ledger:read"]}]
    dependencies = {"client": Provide(authorise_ledger_client)}

    @get("", operation_id="partnerGetLedger", summary="My enterprise ledger (ledger:read, client token)",
         responses=problem_responses(400, 401, 403, 422, 429, 503))
    async def ledger(self, client: PartnerClient, from_day: FromQuery[date | None] = None,
                     to_day: FromQuery[date | None] = None) -> EnterpriseLedger:
        """What residents reduced through your platform, by month and behaviour, with participants per month,
        between two of residents' local days (at most 366; default the last 30). Ask for the token with
        `grant_type=client_credentials&scope=ledger:read`; resident-linked tokens are refused
        (`403 client-token-required`)."""
        start, end = window(from_day, to_day)
        partner = {"id": client.partner_id, "name": client.partner_name}
        return enterprise_out(partner, await enterprise_ledger(client.partner_id, from_day=start, to_day=end))
