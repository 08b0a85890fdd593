"""My green energy: balances, energy balls to collect, friends helping, and the statement of every transfer."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK

from api.auth.middleware import Principal
from api.problems import problem_responses
from api.residents.schemas import Input
from api.security import BEARER
from api.strict import strict_json
from gamification.friends.service import are_friends
from wallet.book.reads import decode_cursor, encode_cursor
from wallet.db import connection
from wallet.energy.balls import balls_of, collect, help_collect
from wallet.energy.preferences import friends_may_collect, set_friends_may_collect
from wallet.energy.statement import iter_transfers, summary, transfers_page
from wallet.errors import DomainError

__all__ = ["EnergyController", "FriendEnergyController", "id_cursor", "page_limit"]

Req = Request[Principal, Any, State]
BallState = Annotated[Literal["growing", "collected", "expired", "cancelled"] | None, Parameter(query="state")]


class Lifetime(msgspec.Struct, kw_only=True):
    grown: int
    collected: int
    expired: int
    cancelled: int
    clawed_back: int
    redeemed: int
    donated: int
    awarded: int
    corrected: int  # awards and donations an operator reversed (they came back out of, or into, available)


class EnergySummary(msgspec.Struct, kw_only=True):
    """Integers in energy units. `available` can be spent or donated; `held` is reserved for redemptions
    being fulfilled; `balls` is grown but not yet collected (`ripe` of it can be collected now)."""

    available: int
    held: int
    balls: int
    ripe: int
    ripe_balls: int
    growing: int
    growing_balls: int
    next_ripens_at: datetime | None
    next_expires_at: datetime | None
    lifetime: Lifetime


class BallOut(msgspec.Struct, kw_only=True):
    id: int
    amount: int
    state: Literal["growing", "collected", "expired", "cancelled"]
    ripe: bool
    grown_at: datetime
    ripens_at: datetime
    expires_at: datetime
    resolved_at: datetime | None
    collected_by_friend: bool
    behaviour: str
    category: str
    reduction_mg: int
    local_day: str
    entry_id: int


class BallPage(msgspec.Struct, kw_only=True):
    items: list[BallOut]
    next_cursor: str | None


class Collected(msgspec.Struct, kw_only=True):
    """`collected` is the energy this call moved to `available`; a ball collected before (a double tap)
    is listed in `already_collected` and moves nothing again."""

    collected: int
    balls: list[int]
    already_collected: list[int]
    available: int


class Helped(msgspec.Struct, kw_only=True):
    collected: int
    ball: int
    owner: uuid.UUID


class TransferOut(msgspec.Struct, kw_only=True):
    id: int
    kind: str
    amount: int
    created_at: datetime
    effect: dict[str, int]
    description: dict[str, str]
    resolves: int | None


class TransferPage(msgspec.Struct, kw_only=True):
    items: list[TransferOut]
    next_cursor: str | None


class EnergySettings(msgspec.Struct, kw_only=True):
    friends_may_collect: bool


class EnergySettingsChange(Input, kw_only=True):
    friends_may_collect: bool


def page_limit(limit: int, most: int = 200) -> int:
    if not 1 <= limit <= most:
        raise DomainError("invalid", "invalid-limit", f"limit must be between 1 and {most}.")
    return limit


def id_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    (raw,) = decode_cursor(cursor, 1)
    if not isinstance(raw, str) or not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) < 2**63:
        raise DomainError("invalid", "invalid-cursor", "cursor must be a next_cursor from a previous page.")
    return int(raw)


def _ball(r: dict[str, Any], now: datetime) -> BallOut:
    return BallOut(
        id=r["id"], amount=r["amount"], state=r["state"],
        ripe=r["state"] == "growing" and r["ripens_at"] <= now < r["expires_at"], grown_at=r["grown_at"],
        ripens_at=r["ripens_at"], expires_at=r["expires_at"], resolved_at=r["resolved_at"],
        collected_by_friend=r["collected_by"] is not None and r["collected_by"] != r["holder_id"],
        behaviour=r["behaviour"], category=r["category"], reduction_mg=r["reduction_mg"],
        local_day=r["local_day"].isoformat(), entry_id=r["entry_id"],
    )


def _balls_page(rows: list[dict[str, Any]], holder_id: uuid.UUID, limit: int) -> BallPage:
    now = datetime.now().astimezone()
    items = [_ball({**r, "holder_id": holder_id}, now) for r in rows]
    return BallPage(items=items, next_cursor=encode_cursor(rows[-1]["id"]) if len(rows) == limit else None)


class EnergyController(Controller):
    path = "/v1/me/energy"
    tags = ["energy"]
    security = BEARER

    @get("", operation_id="getMyEnergy", summary="My green energy balances",
         responses=problem_responses(401, 503))
    async def energy(self, request: Req) -> EnergySummary:
        """Balances by account, what can be collected now, when the next ball ripens or expires, and lifetime
        totals (grown, collected, expired, redeemed, donated)."""
        data = await summary(request.user.holder_id)
        return EnergySummary(**{**data, "lifetime": Lifetime(**data["lifetime"])})

    @get("/balls", operation_id="listMyEnergyBalls", summary="My energy balls",
         responses=problem_responses(400, 401, 422, 503))
    async def balls(self, request: Req, ball_state: BallState = None, cursor: FromQuery[str | None] = None,
                    limit: FromQuery[int] = 50) -> BallPage:
        """Newest first. Each ball comes from one credited book entry; `ripe` ones can be collected until
        `expires_at`. Filter by `state`; pass `next_cursor` back as `cursor` for more."""
        rows = await balls_of(request.user.holder_id, state=ball_state, before=id_cursor(cursor),
                              limit=page_limit(limit))
        return _balls_page(rows, request.user.holder_id, limit)

    @post("/balls/collect", operation_id="collectMyRipeEnergyBalls", status_code=HTTP_200_OK,
          summary="Collect every ripe energy ball", responses=problem_responses(401, 503))
    async def collect_all(self, request: Req) -> Collected:
        """Moves the energy of every ripe ball into `available` at once; calling again collects nothing twice."""
        return Collected(**await collect(request.user.holder_id))

    @post("/balls/{ball_id:int}/collect", operation_id="collectMyEnergyBall", status_code=HTTP_200_OK,
          summary="Collect one energy ball", responses=problem_responses(401, 404, 409, 503))
    async def collect_one(self, request: Req, ball_id: FromPath[int]) -> Collected:
        """Collect one ripe ball. A double tap gets 200 with the ball under `already_collected`; a ball still
        growing gets `409 ball-not-ripe` (with `ripens_at`), an expired one `409 ball-expired`."""
        if not 1 <= ball_id < 2**63:
            raise DomainError("not_found", "ball-not-found", "No energy ball of this resident has this id.")
        return Collected(**await collect(request.user.holder_id, ball_id))

    @get("/transfers", operation_id="listMyEnergyTransfers", summary="My energy statement",
         responses=problem_responses(400, 401, 422, 503))
    async def transfers(self, request: Req, account: FromQuery[Literal["available", "balls", "held"] | None] = None,
                        cursor: FromQuery[str | None] = None, limit: FromQuery[int] = 50) -> TransferPage:
        """Every ledger transfer touching my accounts, newest first, with a sentence in zh-CN and en and its
        `effect` on each of my accounts. `account` narrows to one; pass `next_cursor` back for more."""
        rows = await transfers_page(request.user.holder_id, before=id_cursor(cursor), limit=page_limit(limit),
                                    account=account)
        items = [TransferOut(**{k: v for k, v in r.items() if k != "ref"}) for r in rows]
        return TransferPage(items=items, next_cursor=encode_cursor(rows[-1]["id"]) if len(rows) == limit else None)

    @get("/transfers/export", operation_id="exportMyEnergyTransfers", summary="Export my energy statement as CSV",
         media_type="text/csv", responses=problem_responses(401, 503))
    async def export(self, request: Req) -> Stream:
        """Every transfer, newest first: id, time, kind, amount, effect on available/balls/held, description."""
        holder_id = request.user.holder_id

        async def rows() -> AsyncIterator[bytes]:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(["id", "created_at", "kind", "amount", "available", "balls", "held", "description_zh",
                             "description_en"])
            async for r in iter_transfers(holder_id):
                e, d = r["effect"], r["description"]
                writer.writerow([r["id"], r["created_at"].isoformat(), r["kind"], r["amount"], e["available"],
                                 e["balls"], e["held"], d["zh-CN"], d["en"]])
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
            yield buffer.getvalue().encode()

        return Stream(rows(), media_type="text/csv",
                      headers={"Content-Disposition": f'attachment; filename="energy-{holder_id}.csv"'})

    @get("/settings", operation_id="getMyEnergySettings", summary="My energy settings",
         responses=problem_responses(401, 503))
    async def settings(self, request: Req) -> EnergySettings:
        async with connection() as conn:
            allowed = await friends_may_collect(conn, request.user.holder_id)
        return EnergySettings(friends_may_collect=allowed)

    @patch("/settings", operation_id="updateMyEnergySettings", summary="Change my energy settings",
           responses=problem_responses(400, 401, 422, 503))
    async def change_settings(self, request: Req, data: JSONBody[EnergySettingsChange]) -> EnergySettings:
        """`friends_may_collect`: whether friends may collect my ripe balls for me (the energy stays mine)."""
        data = await strict_json(request, EnergySettingsChange)
        await set_friends_may_collect(request.user.holder_id, data.friends_may_collect)
        return EnergySettings(friends_may_collect=data.friends_may_collect)


class FriendEnergyController(Controller):
    path = "/v1/friends/{friend_id:uuid}/energy"
    tags = ["energy"]
    security = BEARER

    @get("/balls", operation_id="listFriendRipeEnergyBalls", summary="A friend's ripe energy balls",
         responses=problem_responses(400, 401, 403, 404, 422, 503))
    async def balls(self, request: Req, friend_id: FromPath[uuid.UUID], limit: FromQuery[int] = 50) -> BallPage:
        """The balls a friend has ripe now, which I may help collect (if they allow it). Only for friends."""
        async with connection() as conn:
            if not await are_friends(conn, request.user.holder_id, friend_id):
                raise DomainError("forbidden", "not-friends", "Only friends can see a resident's energy balls.")
            if not await friends_may_collect(conn, friend_id):
                raise DomainError("forbidden", "help-not-allowed", "This resident collects their energy themselves.")
        rows = await balls_of(friend_id, ripe_only=True, limit=page_limit(limit))
        return _balls_page(rows, friend_id, limit)

    @post("/balls/{ball_id:int}/help", operation_id="helpCollectFriendEnergyBall", status_code=HTTP_200_OK,
          summary="Help a friend collect a ripe energy ball",
          responses=problem_responses(400, 401, 403, 404, 409, 422, 429, 503))
    async def help(self, request: Req, friend_id: FromPath[uuid.UUID], ball_id: FromPath[int]) -> Helped:
        """Collect a friend's ripe ball for them: the energy goes to the friend, who is told who helped. Only
        between friends, only if the friend allows it, and a few balls per friend per day (`429
        help-cap-reached` with Retry-After until their midnight)."""
        if not 1 <= ball_id < 2**63:
            raise DomainError("not_found", "ball-not-found", "No energy ball of this resident has this id.")
        result = await help_collect(request.user.holder_id, friend_id, ball_id, are_friends=are_friends)
        return Helped(collected=result["collected"], ball=result["ball"], owner=friend_id)
