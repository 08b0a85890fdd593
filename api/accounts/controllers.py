"""A resident's primary account and sub-accounts, unlinking a partner, and the consent history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, delete, get
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.status_codes import HTTP_204_NO_CONTENT

from api.auth.middleware import Principal
from api.oauth.grants import revoke_grants_of_sub_account
from api.problems import problem_responses
from api.security import BEARER
from wallet.accounts.service import list_consents, list_sub_accounts, unlink_partner
from wallet.db import engine
from wallet.holders.service import get_holder
from wallet.partners.service import scope_descriptions

__all__ = ["AccountsController"]

Req = Request[Principal, Any, State]


class ScopeOut(msgspec.Struct, kw_only=True):
    scope: str
    description: str


class PartnerRef(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str
    name_en: str
    kind: str
    status: str


class SubAccountOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    kind: Literal["self", "partner"]
    status: Literal["active", "unlinked"]
    partner: PartnerRef | None
    scopes: list[ScopeOut]
    linked_at: datetime
    unlinked_at: datetime | None
    unlinked_reason: str | None
    activities: int
    last_activity_at: datetime | None


class PrimaryAccountOut(msgspec.Struct, kw_only=True):
    holder_id: uuid.UUID
    nickname: str
    linked_partners: int
    activities: int


class AccountsOut(msgspec.Struct, kw_only=True):
    """The primary account aggregates its sub-accounts: one per linked partner and one for self-reports."""

    primary: PrimaryAccountOut
    sub_accounts: list[SubAccountOut]


class ConsentOut(msgspec.Struct, kw_only=True):
    id: int
    partner_id: uuid.UUID
    partner_name: str
    sub_account_id: uuid.UUID
    scopes: list[ScopeOut]
    granted_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None


def _scopes(scopes: list[str], language: str) -> list[ScopeOut]:
    return [ScopeOut(**s) for s in scope_descriptions(scopes, language)]


class AccountsController(Controller):
    path = "/v1/me"
    tags = ["me"]
    security = BEARER

    @get("/accounts", operation_id="listMyAccounts", summary="My primary account and sub-accounts",
         responses=problem_responses(401, 503))
    async def accounts(self, request: Req) -> AccountsOut:
        """My primary account with every sub-account: the self-reported one first, then each partner I linked
        (also unlinked ones, whose past activities stay in my book), with what each may do."""
        holder = await get_holder(request.user.holder_id)
        language = holder["language"]
        rows = await list_sub_accounts(request.user.holder_id)
        subs = [
            SubAccountOut(
                id=r["id"], kind=r["kind"], status=r["status"],
                partner=PartnerRef(id=r["partner_id"], name=r["partner_name"], name_en=r["partner_name_en"],
                                   kind=r["partner_kind"], status=r["partner_status"]) if r["partner_id"] else None,
                scopes=_scopes(list(r["scopes"]), language) if r["status"] == "active" else [],
                linked_at=r["linked_at"], unlinked_at=r["unlinked_at"], unlinked_reason=r["unlinked_reason"],
                activities=r["activities"], last_activity_at=r["last_activity_at"],
            )
            for r in rows
        ]
        primary = PrimaryAccountOut(
            holder_id=holder["id"], nickname=holder["nickname"],
            linked_partners=sum(1 for s in subs if s.kind == "partner" and s.status == "active"),
            activities=sum(s.activities for s in subs),
        )
        return AccountsOut(primary=primary, sub_accounts=subs)

    @delete("/accounts/{sub_account_id:uuid}", operation_id="unlinkMyPartner", status_code=HTTP_204_NO_CONTENT,
            summary="Unlink a partner", responses=problem_responses(400, 401, 404, 409, 503))
    async def unlink(self, request: Req, sub_account_id: FromPath[uuid.UUID]) -> None:
        """Unlink a partner at once: its tokens are revoked, its further reports are refused, and what it
        already reported stays in my book marked as from an unlinked source. Linking again later works."""
        async with engine().transaction():
            await unlink_partner(request.user.holder_id, sub_account_id, reason="resident-unlinked")
            await revoke_grants_of_sub_account(sub_account_id, reason="resident-unlinked")

    @get("/consents", operation_id="listMyConsents", summary="My consent history",
         responses=problem_responses(401, 503))
    async def consents(self, request: Req) -> list[ConsentOut]:
        """Every consent I gave a partner, newest first: which scopes, when granted, when and why it ended."""
        holder = await get_holder(request.user.holder_id)
        return [
            ConsentOut(
                id=c["id"], partner_id=c["partner_id"],
                partner_name=c["partner_name_en"] if holder["language"] == "en" and c["partner_name_en"]
                else c["partner_name"],
                sub_account_id=c["sub_account_id"], scopes=_scopes(list(c["scopes"]), holder["language"]),
                granted_at=c["granted_at"], revoked_at=c["revoked_at"], revoked_reason=c["revoked_reason"],
            )
            for c in await list_consents(request.user.holder_id)
        ]
