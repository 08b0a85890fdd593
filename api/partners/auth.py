"""Authorising a partner request: a valid partner token, a live grant, an active partner, a resident who
still links it, the scope the route needs, and room in the partner's rate limit.

Partner routes are excluded from the residents' bearer middleware; this runs instead, as a dependency.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.datastructures import State

from api.oauth.grants import live_grant
from api.settings import RateLimit
from wallet.errors import DomainError

__all__ = [
    "PartnerPrincipal",
    "authorise_partner",
    "check_partner_limits",
    "consume_daily_quota",
    "refund_daily_quota",
    "require_scope",
    "suspended",
]


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


async def authorise_partner(request: Request[Any, Any, State]) -> PartnerPrincipal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise DomainError(
            "unauthorized", "authentication-required",
            "Send a partner access token from POST /oauth/token: Authorization: Bearer <token>.",
        )
    claims = request.app.state.partner_tokens.verify(token.strip())
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
