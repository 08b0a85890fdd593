"""Authorising a partner request: a valid partner token, a live grant, an active partner, a resident who
still links it, the scope the route needs, and room in the partner's rate limit. A partner's own token
(client credentials, no resident) is authorised by `authorise_partner_client` instead, on the routes that
read the partner's own data; each kind of token is refused, with its reason, where the other is expected.

Partner routes are excluded from the residents' bearer middleware; these run instead, as dependencies.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.datastructures import State

from api.auth.tokens import CLIENT_GRANT
from api.oauth.grants import live_grant
from api.settings import RateLimit
from wallet.errors import DomainError
from wallet.partners.service import get_partner_by_client_id

__all__ = [
    "LEDGER_SCOPE",
    "PartnerClient",
    "PartnerPrincipal",
    "authorise_ledger_client",
    "authorise_partner",
    "authorise_partner_client",
    "check_partner_limits",
    "consume_daily_quota",
    "refund_daily_quota",
    "require_scope",
    "suspended",
]

LEDGER_SCOPE = "ledger:read"


@dataclass(frozen=True, slots=True)
class PartnerPrincipal:
    partner_id: uuid.UUID
    client_id: str
    partner_name: str
    partner_name_en: str
    holder_id: uuid.UUID
    sub_account_id: uuid.UUID
    grant_id: uuid.UUID
    scopes: frozenset[str]
    allowed_behaviours: frozenset[str]
    trust_tier: str
    rate_limit_per_minute: int
    daily_quota: int


def suspended() -> DomainError:
    return DomainError(
        "forbidden", "partner-suspended",
        "This partner platform is suspended, so its requests are refused; contact Carbon Wallet operations.",
    )


@dataclass(frozen=True, slots=True)
class PartnerClient:
    """A partner acting for itself with its own token (client credentials): no resident, no grant."""

    partner_id: uuid.UUID
    client_id: str
    partner_name: str
    scopes: frozenset[str]


def _bearer(request: Request[Any, Any, State], grant: str) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise DomainError(
            "unauthorized", "authentication-required",
            f"Send a partner access token from POST /oauth/token ({grant}): Authorization: Bearer <token>.",
        )
    return token.strip()


def _is_kind(verify: Any, token: str) -> bool:
    """Whether `token` is one `verify` signed (expired or not): only to say why a token is refused here."""
    try:
        verify(token)
    except DomainError as exc:
        return exc.code == "token-expired"
    return True


async def authorise_partner(request: Request[Any, Any, State]) -> PartnerPrincipal:
    token = _bearer(request, "grant_type=authorization_code")
    tokens = request.app.state.partner_tokens
    try:
        claims = tokens.verify(token)
    except DomainError as exc:
        if exc.code == "token-invalid" and _is_kind(tokens.clients.verify, token):
            raise DomainError(
                "forbidden", "resident-token-required",
                "This is your platform's own token (grant_type=client_credentials), which acts for no resident; "
                "acting for a resident needs the token from their link (grant_type=authorization_code).",
            ) from exc
        raise
    grant = await live_grant(claims.grant_id, claims.sub_account_id)
    if grant is None or grant["client_id"] != claims.client_id:
        raise DomainError("unauthorized", "token-revoked", "This token's grant no longer exists; link again.")
    if grant["partner_status"] != "active":
        raise suspended()
    if grant["link_status"] != "active":
        raise DomainError(
            "forbidden", "resident-unlinked",
            "This resident unlinked your platform, so you can no longer act for them. "
            "They can link again from your app.",
        )
    if grant["revoked_at"] is not None or grant["holder_status"] != "active":
        raise DomainError("unauthorized", "token-revoked", "This token was revoked; refresh it or link again.")
    principal = PartnerPrincipal(
        partner_id=grant["partner_id"], client_id=grant["client_id"], partner_name=grant["partner_name"],
        partner_name_en=grant["partner_name_en"] or grant["partner_name"],
        holder_id=grant["holder_id"], sub_account_id=claims.sub_account_id, grant_id=claims.grant_id,
        # What the token says, what the grant holds, and what the resident's latest consent still allows.
        scopes=claims.scopes & frozenset(grant["scopes"]) & frozenset(grant["link_scopes"]),
        allowed_behaviours=frozenset(grant["allowed_behaviours"]),
        trust_tier=grant["trust_tier"], rate_limit_per_minute=grant["rate_limit_per_minute"],
        daily_quota=grant["daily_quota"],
    )
    await check_partner_limits(request.app.state, principal.partner_id, principal.rate_limit_per_minute)
    return principal


async def authorise_partner_client(request: Request[Any, Any, State], scope: str) -> PartnerClient:
    """A partner's own token (grant_type=client_credentials) that carries `scope`, for a partner that is
    active and still allowed `scope` (both read fresh, so suspension or narrowing act at once), within its rate
    limit. A token acting for a resident is `403 client-token-required`; a resident's app token, or anything
    else, `401 token-invalid`."""
    token = _bearer(request, f"grant_type=client_credentials, scope {scope}")
    state = request.app.state
    try:
        claims = state.partner_tokens.clients.verify(token)
    except DomainError as exc:
        if exc.code != "token-invalid":
            raise
        if _is_kind(state.partner_tokens.verify, token):
            raise DomainError(
                "forbidden", "client-token-required",
                f"This token acts for one resident; this route needs your platform's own token with {scope}, "
                f"from POST /oauth/token with grant_type={CLIENT_GRANT}.", required_scope=scope,
            ) from exc
        who = "a resident's app token" if _is_kind(state.access_tokens.verify, token) else "not a token of ours"
        raise DomainError(
            "unauthorized", "token-invalid",
            f"This is {who}; send your platform's own token from POST /oauth/token with grant_type={CLIENT_GRANT}.",
        ) from exc
    partner = await get_partner_by_client_id(claims.client_id)
    if partner is None:
        raise DomainError("unauthorized", "token-invalid", "This token's client no longer exists.")
    if partner["status"] != "active":
        raise suspended()
    scopes = claims.scopes & frozenset(partner["allowed_scopes"])
    if scope not in scopes:
        raise DomainError(
            "forbidden", "insufficient-scope",
            f"This token lacks the {scope} scope, or your platform is no longer allowed it; ask Carbon Wallet.",
            required_scope=scope,
        )
    await check_partner_limits(state, partner["id"], partner["rate_limit_per_minute"])
    return PartnerClient(partner_id=partner["id"], client_id=partner["client_id"], partner_name=partner["name"],
                         scopes=scopes)


async def authorise_ledger_client(request: Request[Any, Any, State]) -> PartnerClient:
    """The dependency for the enterprise ledger (`GET /v1/partner/ledger`): a client token with ledger:read."""
    return await authorise_partner_client(request, LEDGER_SCOPE)


async def check_partner_limits(state: State, partner_id: uuid.UUID, per_minute: int) -> None:
    """Per partner, not per resident: one partner cannot starve the others, across all API processes."""
    await state.rate_limiter.hit("partner-rpm", str(partner_id), RateLimit(per_minute, 60))


async def consume_daily_quota(state: State, partner_id: uuid.UUID, quota: int, activities: int) -> int:
    return await state.rate_limiter.consume_daily(
        "partner-daily", str(partner_id), quota=quota, cost=activities, now_s=int(time.time())
    )


async def refund_daily_quota(state: State, partner_id: uuid.UUID, activities: int) -> None:
    await state.rate_limiter.refund_daily("partner-daily", str(partner_id), cost=activities, now_s=int(time.time()))


def require_scope(principal: PartnerPrincipal, scope: str) -> None:
    if scope not in principal.scopes:
        raise DomainError(
            "forbidden", "insufficient-scope",
            f"This token lacks the {scope} scope; ask the resident to link again and approve it.",
            required_scope=scope,
        )
