"""My team: join a company or organisation with its join code, pick a department, switch, leave."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, patch, put
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from api.auth.middleware import Principal
from api.problems import problem_responses
from api.residents.schemas import Input
from api.security import BEARER
from api.strict import strict_json
from gamification.teams.service import change_department, join_team, leave_team, my_team

__all__ = ["DepartmentCode", "DepartmentOut", "TeamController", "TeamOut", "team_out"]

Req = Request[Principal, Any, State]
DepartmentCode = Annotated[str, msgspec.Meta(min_length=1, max_length=64, examples=["engineering"])]


class DepartmentOut(msgspec.Struct, kw_only=True):
    id: int
    code: str
    name_zh: str
    name_en: str
    member_count: int


class TeamOut(msgspec.Struct, kw_only=True):
    id: int
    code: str
    kind: Literal["company", "organisation"]
    name_zh: str
    name_en: str
    city: str | None
    member_count: int
    departments: list[DepartmentOut]


class MyTeamOut(msgspec.Struct, kw_only=True):
    """All null when I am in no team."""

    team: TeamOut | None
    department: DepartmentOut | None
    role: Literal["member", "admin"] | None
    joined_at: datetime | None


class JoinTeam(Input, kw_only=True):
    join_code: Annotated[str, msgspec.Meta(min_length=1, max_length=32, examples=["7KX2M9QHPA"])]
    department_code: DepartmentCode | None = None


class DepartmentChange(Input, kw_only=True):
    """`null` leaves my department (I stay in the team)."""

    department_code: DepartmentCode | None


def department_out(row: dict[str, Any]) -> DepartmentOut:
    return DepartmentOut(id=row["id"], code=row["code"], name_zh=row["name_zh"], name_en=row["name_en"],
                         member_count=row["member_count"])


def team_out(row: dict[str, Any]) -> TeamOut:
    return TeamOut(id=row["id"], code=row["code"], kind=row["kind"], name_zh=row["name_zh"], name_en=row["name_en"],
                   city=row["city"], member_count=row["member_count"],
                   departments=[department_out(d) for d in row["departments"]])


def _mine(row: dict[str, Any] | None) -> MyTeamOut:
    if row is None:
        return MyTeamOut(team=None, department=None, role=None, joined_at=None)
    return MyTeamOut(team=team_out(row["team"]), department=department_out(row["department"]) if row["department"]
                     else None, role=row["role"], joined_at=row["joined_at"])


class TeamController(Controller):
    path = "/v1/me/team"
    tags = ["teams"]
    security = BEARER

    @get("", operation_id="getMyTeam", summary="My team", responses=problem_responses(401, 503))
    async def mine(self, request: Req) -> MyTeamOut:
        """My team and department (with the team's departments to choose from), or nulls."""
        return _mine(await my_team(request.user.holder_id))

    @put("", operation_id="joinTeam", summary="Join a team with its join code",
         responses=problem_responses(400, 401, 404, 409, 413, 422, 503))
    async def join(self, request: Req, data: JSONBody[JoinTeam]) -> MyTeamOut:
        """I leave my current team (if any) and join the team with this code, in `department_code` if given.
        Joining the team I am in changes only my department. `404 team-not-found` for an unknown code;
        `422 unknown-department`."""
        data = await strict_json(request, JoinTeam)
        return _mine(await join_team(request.user.holder_id, data.join_code, data.department_code))

    @patch("", operation_id="changeMyDepartment", summary="Change my department",
           responses=problem_responses(400, 401, 404, 413, 422, 503))
    async def department(self, request: Req, data: JSONBody[DepartmentChange]) -> MyTeamOut:
        """Another department of my team (`null`: none). `404 not-in-team`; `422 unknown-department`."""
        data = await strict_json(request, DepartmentChange)
        return _mine(await change_department(request.user.holder_id, data.department_code))

    @delete("", operation_id="leaveMyTeam", status_code=HTTP_204_NO_CONTENT, summary="Leave my team",
            responses=problem_responses(401, 503))
    async def leave(self, request: Req) -> None:
        """Leaving when in no team is not an error."""
        await leave_team(request.user.holder_id)
