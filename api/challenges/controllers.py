"""Challenges: browse (anyone), join and follow (residents), create (operators)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from api.auth.middleware import Principal
from api.partners.admin import operator_only
from api.problems import problem_responses
from api.residents.schemas import Input
from api.security import BEARER
from api.strict import strict_json
from gamification.challenges.service import (
    create_challenge,
    get_challenge,
    join,
    leave,
    list_challenges,
    my_challenges,
)
from wallet.errors import DomainError

__all__ = ["ChallengeAdminController", "ChallengesController", "MyChallengesController"]

Req = Request[Principal, Any, State]
Scope = Literal["global", "city", "community", "team"]
Goal = Literal["grams", "energy", "actions"]


class Contributor(msgspec.Struct, kw_only=True):
    rank: int
    nickname: str | None  # null for a resident who keeps out of public view
    amount: int


class ChallengeOut(msgspec.Struct, kw_only=True):
    """`progress` and `amount`s are whole units of `goal_kind` (grams of CO2e, energy, or actions) from
    participants' settled book entries inside the window, counted up to `counted_at` (the worker follows the book
    every second; a finished challenge: when its result was recorded); `outcomes` is progress ÷ `unlock_every`
    (e.g. trees planted). Residents excluded from competition are neither counted nor listed."""

    id: int
    code: str
    title: dict[str, str]
    description: dict[str, str]
    scope: Scope
    scope_id: str
    goal_kind: Goal
    goal: int
    behaviours: list[str]
    starts_at: datetime
    ends_at: datetime
    state: Literal["upcoming", "active", "closing", "finished"]
    result: Literal["met", "missed"] | None
    progress: int
    participants: int
    outcome: dict[str, str]
    unlock_every: int | None
    outcomes: int | None
    counted_at: datetime | None = None
    contributors: list[Contributor] = msgspec.field(default_factory=list)
    joined: bool | None = None
    my_amount: int | None = None
    my_rank: int | None = None


def _out(c: dict[str, Any]) -> ChallengeOut:
    return ChallengeOut(
        id=c["id"], code=c["code"], title={"zh-CN": c["title_zh"], "en": c["title_en"]},
        description={"zh-CN": c["description_zh"], "en": c["description_en"]}, scope=c["scope"],
        scope_id=c["scope_id"], goal_kind=c["goal_kind"], goal=c["goal"], behaviours=c["behaviours"],
        starts_at=c["starts_at"], ends_at=c["ends_at"], state=c["state"], result=c["result"],
        progress=c["progress"], participants=c["participants"],
        outcome={"zh-CN": c["outcome_zh"], "en": c["outcome_en"]}, unlock_every=c["unlock_every"],
        outcomes=c["outcomes"], counted_at=c.get("counted_at"),
        contributors=[Contributor(**x) for x in c["contributors"]], joined=c.get("joined"),
        my_amount=c.get("my_amount"), my_rank=c.get("my_rank"),
    )


def _id(challenge_id: int) -> int:
    if not 1 <= challenge_id < 2**63:
        raise DomainError("not_found", "challenge-not-found", "No challenge has this id.")
    return challenge_id


class ChallengesController(Controller):
    path = "/v1/challenges"
    tags = ["challenges"]
    opt = {"exclude_from_auth": True}

    @get("", operation_id="listChallenges", summary="Challenges", responses=problem_responses(400, 503))
    async def challenges(self, finished: FromQuery[bool] = False) -> list[ChallengeOut]:
        """Upcoming and active challenges, soonest ending first (`finished=true` adds finished ones)."""
        return [_out(await get_challenge(c["id"], top=3)) for c in await list_challenges(include_finished=finished)]

    @get("/{challenge_id:int}", operation_id="getChallenge", summary="One challenge",
         responses=problem_responses(404, 503))
    async def challenge(self, challenge_id: FromPath[int]) -> ChallengeOut:
        """Progress, participants, the top 10 contributors (by nickname) and the outcomes unlocked so far."""
        return _out(await get_challenge(_id(challenge_id)))


class MyChallengesController(Controller):
    path = "/v1/me/challenges"
    tags = ["challenges"]
    security = BEARER

    @get("", operation_id="listMyChallenges", summary="Challenges I joined", responses=problem_responses(401, 503))
    async def mine(self, request: Req) -> list[ChallengeOut]:
        return [_out(c) for c in await my_challenges(request.user.holder_id)]

    @post("/{challenge_id:int}", operation_id="joinChallenge", status_code=HTTP_200_OK, summary="Join a challenge",
          responses=problem_responses(401, 403, 404, 409, 503))
    async def join(self, request: Req, challenge_id: FromPath[int]) -> ChallengeOut:
        """For my city, community or team (from my profile and team), or everyone's; until it ends. Joining
        again changes nothing. What I did in its window counts, also before I joined."""
        return _out(await join(request.user.holder_id, _id(challenge_id)))

    @delete("/{challenge_id:int}", operation_id="leaveChallenge", status_code=HTTP_204_NO_CONTENT,
            summary="Leave a challenge", responses=problem_responses(401, 404, 503))
    async def leave(self, request: Req, challenge_id: FromPath[int]) -> None:
        if not await leave(request.user.holder_id, _id(challenge_id)):
            raise DomainError("not_found", "not-joined", "You are not in this challenge (or it has ended).")


class ChallengeCreate(Input, kw_only=True):
    code: Annotated[str, msgspec.Meta(max_length=64, examples=["bike-week-beijing"])]
    title_zh: Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
    title_en: Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
    description_zh: Annotated[str, msgspec.Meta(max_length=4000)] = ""
    description_en: Annotated[str, msgspec.Meta(max_length=4000)] = ""
    scope: Scope
    scope_id: Annotated[str, msgspec.Meta(max_length=200)] = "-"
    goal_kind: Goal
    goal: Annotated[int, msgspec.Meta(ge=1, le=10**15)]
    behaviours: Annotated[list[str], msgspec.Meta(max_length=50)] = msgspec.field(default_factory=list)
    starts_at: datetime
    ends_at: datetime
    outcome_zh: Annotated[str, msgspec.Meta(max_length=200)] = ""
    outcome_en: Annotated[str, msgspec.Meta(max_length=200)] = ""
    unlock_every: Annotated[int, msgspec.Meta(ge=1, le=10**15)] | None = None


class ChallengeAdminController(Controller):
    path = "/v1/admin/challenges"
    tags = ["admin"]
    security = BEARER
    guards = [operator_only]

    @post("", operation_id="adminCreateChallenge", status_code=HTTP_201_CREATED, summary="Create a challenge",
          responses=problem_responses(400, 401, 403, 409, 413, 422, 503))
    async def create(self, request: Req, data: JSONBody[ChallengeCreate]) -> ChallengeOut:
        """`scope_id`: the city (北京市), the community (北京市|海淀区|中关村社区) or the team id; `behaviours`
        empty counts every behaviour; `unlock_every` turns progress into outcomes (e.g. 10000 grams = a tree)."""
        data = await strict_json(request, ChallengeCreate)
        if data.starts_at.tzinfo is None or data.ends_at.tzinfo is None:
            raise DomainError("invalid", "invalid-challenge", "starts_at and ends_at need a UTC offset.")
        return _out(await create_challenge(msgspec.structs.asdict(data)))
