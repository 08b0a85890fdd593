"""Operators create teams (companies and organisations) with departments, list them with member counts, add
departments, and rotate a team's join code."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from api.partners.admin import operator_only
from api.problems import problem_responses
from api.residents.schemas import Input
from api.security import BEARER
from api.strict import strict_json
from api.teams.controllers import DepartmentCode, TeamOut, team_out
from gamification.teams.service import (
    DEPARTMENTS_MAX,
    add_department,
    create_team,
    get_team,
    list_teams,
    rotate_join_code,
)
from wallet.errors import DomainError

__all__ = ["TeamAdminController"]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=80)]


class DepartmentIn(Input, kw_only=True):
    code: DepartmentCode
    name_zh: Name
    name_en: Name


class TeamCreate(Input, kw_only=True):
    code: Annotated[str, msgspec.Meta(min_length=2, max_length=64, examples=["greenmotion-tech"],
                                      description="2-64 lowercase letters, digits or dashes.")]
    kind: Literal["company", "organisation"]
    name_zh: Name
    name_en: Name
    city: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    departments: Annotated[list[DepartmentIn], msgspec.Meta(max_length=DEPARTMENTS_MAX)] = msgspec.field(
        default_factory=list)


class AdminTeamOut(TeamOut, kw_only=True):
    """What only operators see: the join code they hand out, and the team's status."""

    join_code: str
    status: Literal["active", "archived"]
    created_at: datetime


def admin_team_out(row: dict[str, Any]) -> AdminTeamOut:
    return AdminTeamOut(**msgspec.structs.asdict(team_out(row)), join_code=row["join_code"], status=row["status"],
                        created_at=row["created_at"])


def _team_id(value: int) -> int:
    if not 1 <= value < 2**63:
        raise DomainError("not_found", "team-not-found", "No team has this id.")
    return value


class TeamAdminController(Controller):
    path = "/v1/admin/teams"
    tags = ["admin"]
    security = BEARER
    guards = [operator_only]

    @post("", operation_id="adminCreateTeam", status_code=HTTP_201_CREATED, summary="Create a team",
          responses=problem_responses(400, 401, 403, 409, 413, 422, 503))
    async def create(self, request: Request, data: JSONBody[TeamCreate]) -> AdminTeamOut:
        """A company or organisation with its departments; the answer has the join code to hand out.
        `409 team-code-taken`; `422 duplicate-department` when two departments share a code."""
        data = await strict_json(request, TeamCreate)
        return admin_team_out(await create_team(msgspec.to_builtins(data)))

    @get("", operation_id="adminListTeams", summary="Every team", responses=problem_responses(401, 403, 503))
    async def list(self) -> list[AdminTeamOut]:
        """Oldest first, with active members per team and per department."""
        return [admin_team_out(t) for t in await list_teams()]

    @get("/{team_id:int}", operation_id="adminGetTeam", summary="One team",
         responses=problem_responses(400, 401, 403, 404, 503))
    async def get(self, team_id: FromPath[int]) -> AdminTeamOut:
        return admin_team_out(await get_team(_team_id(team_id)))

    @post("/{team_id:int}/departments", operation_id="adminAddTeamDepartment", status_code=HTTP_201_CREATED,
          summary="Add a department", responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 503))
    async def department(self, request: Request, team_id: FromPath[int], data: JSONBody[DepartmentIn]) -> AdminTeamOut:
        """`409 department-code-taken` when the team has one with this code."""
        data = await strict_json(request, DepartmentIn)
        return admin_team_out(await add_department(_team_id(team_id), msgspec.to_builtins(data)))

    @post("/{team_id:int}/join-code/rotate", operation_id="adminRotateTeamJoinCode", status_code=HTTP_200_OK,
          summary="Rotate a team's join code", responses=problem_responses(400, 401, 403, 404, 503))
    async def rotate(self, team_id: FromPath[int]) -> AdminTeamOut:
        """The old code stops working at once (use it when a code leaked); members stay."""
        return admin_team_out(await rotate_join_code(_team_id(team_id)))
