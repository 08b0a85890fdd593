"""The operators' partner registry API. Operators are holders with the `operator` role, granted from the
CLI (`python -m api.cli grant-role`), so the API can never be used to make the first operator."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Controller, get, patch, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from api.auth.middleware import Principal
from api.partners.schemas import (
    PartnerCreate,
    PartnerCreated,
    PartnerOut,
    PartnerPatch,
    PartnerStatusIn,
    SecretRotate,
    SecretRotated,
)
from api.problems import problem_responses
from api.security import BEARER
from wallet.errors import DomainError
from wallet.holders.roles import has_role
from wallet.partners.service import (
    PartnerSpec,
    SecretPurpose,
    get_partner,
    list_partners,
    register_partner,
    rotate_secret,
    set_partner_status,
    update_partner,
)

__all__ = ["PartnerAdminController"]

def _out(row: dict[str, Any]) -> PartnerOut:
    return msgspec.convert(row, PartnerOut, from_attributes=False, strict=False)


async def operator_only(connection: ASGIConnection[Any, Principal, Any, Any], _: BaseRouteHandler) -> None:
    """A guard: runs after bearer authentication, before the handler. CORS preflight (OPTIONS) carries no
    credentials and reveals nothing, so it is let through."""
    if connection.scope["method"] == "OPTIONS":
        return
    if not await has_role(connection.user.holder_id, "operator"):
        raise DomainError("forbidden", "operator-only", "Only Carbon Wallet operators can do this.")


class PartnerAdminController(Controller):
    path = "/v1/admin/partners"
    tags = ["admin"]
    security = BEARER
    guards = [operator_only]

    @post("", operation_id="adminCreatePartner", status_code=HTTP_201_CREATED, summary="Register a partner",
          responses=problem_responses(400, 401, 403, 413, 422, 503))
    async def create(self, state: State, data: JSONBody[PartnerCreate]) -> PartnerCreated:
        """Register a partner platform as an OAuth client. The client secret (confidential clients only) and
        the webhook signing secret are in this response once; store them now."""
        new = await register_partner(
            PartnerSpec(
                name=data.name, name_en=data.name_en, kind=data.kind, client_type=data.client_type,
                redirect_uris=data.redirect_uris, allowed_scopes=list(data.allowed_scopes),
                allowed_behaviours=data.allowed_behaviours, trust_tier=data.trust_tier,
                rate_limit_per_minute=data.rate_limit_per_minute, daily_quota=data.daily_quota,
            ),
            state.secret_box,
        )
        partner = await get_partner(new.partner["id"], with_secrets=True)
        return PartnerCreated(partner=_out(partner), client_secret=new.client_secret, webhook_secret=new.webhook_secret)

    @get("", operation_id="adminListPartners", summary="All partners", responses=problem_responses(401, 403, 503))
    async def list(self) -> list[PartnerOut]:
        """Every registered partner, oldest first."""
        return [_out(p) for p in await list_partners()]

    @get("/{partner_id:uuid}", operation_id="adminGetPartner", summary="One partner",
         responses=problem_responses(400, 401, 403, 404, 503))
    async def get(self, partner_id: FromPath[uuid.UUID]) -> PartnerOut:
        """A partner with its live secrets (last four characters and validity only)."""
        return _out(await get_partner(partner_id, with_secrets=True))

    @patch("/{partner_id:uuid}", operation_id="adminUpdatePartner", summary="Change a partner",
           responses=problem_responses(400, 401, 403, 404, 413, 422, 503))
    async def update(self, partner_id: FromPath[uuid.UUID], data: JSONBody[PartnerPatch]) -> PartnerOut:
        """Change names, kind, redirect URIs, allowed scopes or behaviours, trust tier or limits. Existing
        links keep the scopes residents granted; narrowing `allowed_scopes` applies to new links."""
        changes = {f: v for f in data.__struct_fields__ if (v := getattr(data, f)) is not msgspec.UNSET}
        return _out(await update_partner(partner_id, changes))

    @post("/{partner_id:uuid}/status", operation_id="adminSetPartnerStatus", status_code=HTTP_200_OK,
          summary="Suspend or re-activate a partner", responses=problem_responses(400, 401, 403, 404, 413, 422, 503))
    async def status(self, partner_id: FromPath[uuid.UUID], data: JSONBody[PartnerStatusIn]) -> PartnerOut:
        """A suspended partner's tokens, pushes and authorisation requests are refused from its next request;
        re-activating restores them (residents' links are untouched)."""
        return _out(await set_partner_status(partner_id, data.status, data.reason))

    @post("/{partner_id:uuid}/secrets/{purpose:str}", operation_id="adminRotatePartnerSecret",
          status_code=HTTP_201_CREATED, summary="Rotate a client or webhook secret",
          responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 503))
    async def rotate(
        self, state: State, partner_id: FromPath[uuid.UUID], purpose: FromPath[str],
        data: JSONBody[SecretRotate],
    ) -> SecretRotated:
        """`purpose` is `client` or `webhook`. The new secret is shown once and works at once; the current ones
        keep working for `overlap_s` seconds (default CW_SECRET_ROTATION_OVERLAP_S; 0 ends them now)."""
        if purpose not in ("client", "webhook"):
            raise DomainError("not_found", "unknown-secret", "Secrets are `client` or `webhook`.")
        kind: SecretPurpose = "client" if purpose == "client" else "webhook"
        overlap = state.settings.secret_rotation_overlap_s if data.overlap_s is None else data.overlap_s
        secret = await rotate_secret(partner_id, kind, overlap_s=overlap, box=state.secret_box)
        return SecretRotated(purpose=kind, secret=secret, previous_valid_for_s=overlap)
