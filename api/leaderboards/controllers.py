"""Leaderboards: my boards (with my rank and neighbours), public boards, per-capita boards, and operators'
exclusions and rebuilds."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from api.auth.middleware import Principal
from api.partners.admin import operator_only
from api.problems import problem_responses
from api.residents.schemas import Input
from api.security import BEARER
from api.strict import strict_json
from gamification.leaderboards.follow import rebuild
from gamification.leaderboards.service import (
    Board,
    exclude,
    exclusions,
    friends_board,
    group_board,
    my_board,
    public_board,
    restore,
)
from gamification.leaderboards.store import Standing
from wallet.errors import DomainError

__all__ = ["LeaderboardAdminController", "MyLeaderboardsController", "PublicLeaderboardsController"]

Req = Request[Principal, Any, State]
Period = Literal["today", "week", "month", "all"]
Scope = Literal["global", "city", "district", "community", "team", "department", "newcomer"]
Limit = Annotated[int, Parameter(query="limit", ge=1, le=100)]


class Row(msgspec.Struct, kw_only=True):
    rank: int
    nickname: str
    avatar_url: str | None
    reduction_mg: int
    me: bool = False
    holder_id: uuid.UUID | None = None  # only on the friends board and for me


class Me(msgspec.Struct, kw_only=True):
    """Where I stand, also when I keep out of public view (`visible` false: I am counted, not shown), or am
    excluded from competition (`excluded_reason`, and no rank)."""

    rank: int | None
    reduction_mg: int
    visible: bool
    excluded_reason: str | None


class BoardOut(msgspec.Struct, kw_only=True):
    scope: str
    scope_id: str
    period: str
    period_key: str
    residents: int
    top: list[Row]
    me: Me | None = None
    neighbours: list[Row] = msgspec.field(default_factory=list)


def _row(s: Standing, board: Board, me: str | None, *, ids: bool = False) -> Row:
    name = board.names.get(s.member, {})
    return Row(rank=s.rank, nickname=name.get("nickname") or "", avatar_url=name.get("avatar_url"),
               reduction_mg=s.mg, me=s.member == me,
               holder_id=uuid.UUID(s.member) if ids or s.member == me else None)


_TOP_ROWS: dict[int, tuple[list[Standing], list[Row]]] = {}


def _top(board: Board, me: str | None, ids: bool) -> list[Row]:
    """A cached top N (the same list while the boards have not moved) is turned into rows once; only my own
    row, when I am in it, is made for me."""
    top = board.read.top
    if ids:
        return [_row(s, board, me, ids=True) for s in top]
    hit = _TOP_ROWS.get(id(top))
    if hit is None or hit[0] is not top:
        if len(_TOP_ROWS) > 1_000:
            _TOP_ROWS.clear()
        hit = _TOP_ROWS[id(top)] = (top, [_row(s, board, None) for s in top])
    rows = hit[1]
    if me is not None and board.read.me is not None and board.read.me.rank <= len(rows):
        rows = [_row(s, board, me) if s.member == me else r for s, r in zip(top, rows, strict=True)]
    return rows


def _out(board: Board, me: str | None = None, *, ids: bool = False) -> BoardOut:
    read = board.read
    mine = None
    if me is not None:
        mine = Me(rank=read.me.rank if read.me and not board.excluded_reason else None,
                  reduction_mg=read.me.mg if read.me else 0, visible=board.visible,
                  excluded_reason=board.excluded_reason)
    return BoardOut(scope=board.scope, scope_id=board.scope_id, period=board.period, period_key=board.period_key,
                    residents=read.count, top=_top(board, me, ids), me=mine,
                    neighbours=[_row(s, board, me) for s in read.neighbours])


class MyLeaderboardsController(Controller):
    path = "/v1/me/leaderboards"
    tags = ["leaderboards"]
    security = BEARER

    @get("/friends/{period:str}", operation_id="getMyFriendsLeaderboard", summary="Me and my friends",
         responses=problem_responses(401, 404, 503))
    async def friends(self, request: Req, state: State, period: FromPath[str]) -> BoardOut:
        """Everyone I am friends with and me, ranked by settled reductions in the period."""
        board = await friends_board(state.redis, state.settings.leaderboard_zone, request.user.holder_id, period)
        return _out(board, str(request.user.holder_id), ids=True)

    @get("/{board:str}/{period:str}", operation_id="getMyLeaderboard", summary="A board I belong to",
         responses=problem_responses(400, 401, 404, 503))
    async def board(self, request: Req, state: State, board: FromPath[str], period: FromPath[str],
                    limit: Limit = 20, around: Annotated[int, Parameter(query="around", ge=0, le=10)] = 2,
                    ) -> BoardOut:
        """`board` is global, city, district, community (from my profile), team, department (my team), or
        newcomer (my first 30 days); `period` today, week, month or all (the boards' time zone). The top
        `limit`, my rank and score, and `around` residents above and below me."""
        found = await my_board(state.redis, state.settings.leaderboard_zone, request.user.holder_id, board, period,
                               limit=limit, around=around)
        return _out(found, str(request.user.holder_id))


class PublicLeaderboardsController(Controller):
    path = "/v1/leaderboards"
    tags = ["leaderboards"]
    opt = {"exclude_from_auth": True}

    @get("/per-capita/{groups:str}/{period:str}", operation_id="getPerCapitaLeaderboard",
         summary="Teams or communities by grams per active resident", responses=problem_responses(400, 404, 503))
    async def per_capita(self, state: State, groups: FromPath[str], period: FromPath[str], limit: Limit = 20,
                         city: FromQuery[str | None] = None) -> BoardOut:
        """A fair board for groups of any size: each group's reductions divided by its residents active in
        the period. `groups` team (everywhere) or community (of `city`)."""
        board_id = "-" if groups == "team" else (city or "")
        if groups == "community" and not city:
            raise DomainError("invalid", "city-required", "Say which city's communities: ?city=…")
        return _out(await group_board(state.redis, state.settings.leaderboard_zone, groups, board_id, period,
                                      limit=limit))

    @get("/{board:str}/{period:str}", operation_id="getPublicLeaderboard", summary="A public board",
         responses=problem_responses(400, 404, 503))
    async def board(self, state: State, board: FromPath[str], period: FromPath[str], limit: Limit = 20,
                    scope_id: FromQuery[str] = "-") -> BoardOut:
        """Residents who chose to appear publicly, by nickname. `scope_id`: a city ("北京市"), a district
        ("北京市|海淀区"), a community ("北京市|海淀区|中关村社区"), a team or department id; `-` for global and
        newcomer boards."""
        return _out(await public_board(state.redis, state.settings.leaderboard_zone, board, scope_id, period,
                                       limit=limit))


class ExclusionIn(Input, kw_only=True):
    holder_id: uuid.UUID
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]


class ExclusionOut(msgspec.Struct, kw_only=True):
    holder_id: uuid.UUID
    nickname: str | None = None
    reason: str
    excluded_at: datetime


class Rebuilt(msgspec.Struct, kw_only=True):
    residents: int
    boards: int


class LeaderboardAdminController(Controller):
    path = "/v1/admin/leaderboards"
    tags = ["admin"]
    security = BEARER
    guards = [operator_only]

    @post("/exclusions", operation_id="adminExcludeFromLeaderboards", status_code=HTTP_201_CREATED,
          summary="Take a resident off competitive boards", responses=problem_responses(400, 401, 403, 404, 422, 503))
    async def exclude(self, request: Req, data: JSONBody[ExclusionIn]) -> ExclusionOut:
        """Anti-cheat: the resident leaves every competitive board (their book and energy stay) and sees the
        `reason` on their boards."""
        data = await strict_json(request, ExclusionIn)
        row = await exclude(data.holder_id, data.reason, request.user.holder_id)
        return ExclusionOut(holder_id=row["holder"], nickname=row["nickname"], reason=row["reason"],
                            excluded_at=row["excluded_at"])

    @get("/exclusions", operation_id="adminListLeaderboardExclusions", summary="Residents off competitive boards",
         responses=problem_responses(401, 403, 503))
    async def list(self) -> list[ExclusionOut]:
        return [ExclusionOut(holder_id=r["holder"], nickname=r["nickname"], reason=r["reason"],
                             excluded_at=r["excluded_at"]) for r in await exclusions()]

    @delete("/exclusions/{holder_id:uuid}", operation_id="adminRestoreToLeaderboards",
            status_code=HTTP_204_NO_CONTENT, summary="Put a resident back on competitive boards",
            responses=problem_responses(400, 401, 403, 404, 503))
    async def restore(self, holder_id: FromPath[uuid.UUID]) -> None:
        if not await restore(holder_id):
            raise DomainError("not_found", "not-excluded", "This resident is not excluded.")

    @post("/rebuild", operation_id="adminRebuildLeaderboards", status_code=HTTP_200_OK,
          summary="Recreate every current board from the book", responses=problem_responses(401, 403, 503))
    async def rebuild(self, state: State) -> Rebuilt:
        """Exact by construction (one snapshot of the book); the worker also does it nightly."""
        done = await rebuild(state.redis, state.settings.leaderboard_zone)
        return Rebuilt(**done)
