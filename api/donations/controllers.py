"""Donation projects: browse anyone can, donate and read my certificates when signed in."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from api.auth.middleware import Principal
from api.mall.controllers import IdempotencyKey
from api.problems import problem_responses
from api.residents.schemas import Input
from api.security import BEARER
from api.strict import strict_json
from wallet.donations.service import DONATION_MAX, certificates_of, donate, donations_of, get_project, list_projects
from wallet.errors import DomainError

__all__ = ["DonationsController", "MyDonationsController", "ProjectOut", "project_out"]

Req = Request[Principal, Any, State]


class ProjectOut(msgspec.Struct, kw_only=True):
    """`raised` and `donors` are sums over the ledger at the time of reading; `progress_ppm` is raised ÷ goal
    in parts per million (capped at 1,000,000)."""

    id: int
    code: str
    title: dict[str, str]
    description: dict[str, str]
    outcome: dict[str, str]
    images: list[str]
    goal: int
    raised: int
    donors: int
    progress_ppm: int
    status: Literal["open", "completed", "closed"]
    opens_at: datetime
    closes_at: datetime | None
    completed_at: datetime | None


def project_out(p: dict[str, Any]) -> ProjectOut:
    raised = p["raised_at_completion"] if p["status"] == "completed" and p["raised_at_completion"] else p["raised"]
    return ProjectOut(
        id=p["id"], code=p["code"], title={"zh-CN": p["title_zh"], "en": p["title_en"]},
        description={"zh-CN": p["description_zh"], "en": p["description_en"]},
        outcome={"zh-CN": p["outcome_zh"], "en": p["outcome_en"]}, images=p["images"], goal=p["goal"],
        raised=raised, donors=p["donors"], progress_ppm=min(1_000_000, raised * 1_000_000 // p["goal"]),
        status=p["status"], opens_at=p["opens_at"], closes_at=p["closes_at"], completed_at=p["completed_at"],
    )


class DonateRequest(Input, kw_only=True):
    amount: Annotated[int, msgspec.Meta(ge=1, le=DONATION_MAX)]


class DonationOut(msgspec.Struct, kw_only=True):
    id: int
    project_id: int
    amount: int
    created_at: datetime


class MyDonation(msgspec.Struct, kw_only=True):
    project: ProjectOut
    given: int
    times: int
    share_ppm: int
    last_at: datetime


class CertificateOut(msgspec.Struct, kw_only=True):
    id: int
    number: str
    project_id: int
    project: dict[str, str]
    outcome: dict[str, str]
    amount: int
    share_ppm: int
    donors: int
    goal: int
    raised: int
    issued_at: datetime


def _id(project_id: int) -> int:
    if not 1 <= project_id < 2**63:
        raise DomainError("not_found", "project-not-found", "No donation project has this id.")
    return project_id


class DonationsController(Controller):
    path = "/v1/projects"
    tags = ["donations"]

    @get("", operation_id="listDonationProjects", summary="Donation projects", opt={"exclude_from_auth": True},
         responses=problem_responses(503))
    async def projects(self) -> list[ProjectOut]:
        """Open projects first, with progress toward each goal."""
        return [project_out(p) for p in await list_projects()]

    @get("/{project_id:int}", operation_id="getDonationProject", summary="One donation project",
         opt={"exclude_from_auth": True}, responses=problem_responses(404, 503))
    async def project(self, project_id: FromPath[int]) -> ProjectOut:
        return project_out(await get_project(_id(project_id)))

    @post("/{project_id:int}/donations", operation_id="donateEnergy", security=BEARER,
          summary="Donate energy to a project", responses={
              **problem_responses(400, 401, 404, 409, 422, 503), 200: ResponseSpec(
                  data_container=DonationOut, description="A repeat (same Idempotency-Key): the stored donation.")})
    async def donate(self, request: Req, project_id: FromPath[int], data: JSONBody[DonateRequest],
                     idempotency_key: IdempotencyKey = None) -> Response[DonationOut]:
        """Moves `amount` from my available energy to the project (`409 insufficient-energy`,
        `project-completed`, `project-closed`). Send an `Idempotency-Key`: a repeat returns the same donation
        with `200`; the same key for another amount or project is `422 idempotency-key-reused`."""
        data = await strict_json(request, DonateRequest)
        made, created = await donate(request.user.holder_id, _id(project_id), data.amount,
                                     idempotency_key=idempotency_key)
        return Response(DonationOut(**made), status_code=HTTP_201_CREATED if created else HTTP_200_OK)


class MyDonationsController(Controller):
    path = "/v1/me"
    tags = ["donations"]
    security = BEARER

    @get("/donations", operation_id="listMyDonations", summary="What I gave, per project",
         responses=problem_responses(401, 503))
    async def donations(self, request: Req) -> list[MyDonation]:
        """Per project: my total, how many times, and my share of everything raised so far (ppm)."""
        return [MyDonation(project=project_out(r), given=r["given"], times=r["times"], share_ppm=r["share_ppm"],
                           last_at=r["last_at"]) for r in await donations_of(request.user.holder_id)]

    @get("/certificates", operation_id="listMyDonationCertificates", summary="My donation certificates",
         responses=problem_responses(401, 503))
    async def certificates(self, request: Req) -> list[CertificateOut]:
        """One per project I gave to that met its goal: my energy, my share (ppm; all shares sum to exactly
        1,000,000) and how many gave."""
        return [
            CertificateOut(id=c["id"], number=c["number"], project_id=c["project"],
                           project={"zh-CN": c["title_zh"], "en": c["title_en"]},
                           outcome={"zh-CN": c["outcome_zh"], "en": c["outcome_en"]}, amount=c["amount"],
                           share_ppm=c["share_ppm"], donors=c["donors"], goal=c["goal"],
                           raised=c["raised_at_completion"], issued_at=c["issued_at"])
            for c in await certificates_of(request.user.holder_id)
        ]
