"""Bearer authentication: a valid access token whose session is still live, checked on every request so
logout, revocation and account deletion take effect at once rather than when the token expires."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from api.auth.sessions import live_holder_of_session
from wallet.errors import DomainError

__all__ = ["BearerAuthMiddleware", "Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    holder_id: uuid.UUID
    session_id: uuid.UUID


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise DomainError(
                "unauthorized", "authentication-required", "Send an access token: Authorization: Bearer <token>."
            )
        claims = connection.app.state.access_tokens.verify(token.strip())
        holder_id = await live_holder_of_session(claims.session_id)
        if holder_id is None or holder_id != claims.holder_id:
            raise DomainError("unauthorized", "session-revoked", "This session was signed out; log in again.")
        return AuthenticationResult(user=Principal(holder_id, claims.session_id), auth=claims)
