"""Access tokens: short-lived EdDSA JWTs. One pinned algorithm, required claims, fixed issuer and audience.

Residents' app tokens and partners' API tokens share the signing key but never an audience, so neither
is accepted where the other is expected. A partner's own token (client credentials, no resident) shares the
partner audience but not the claims: it has no `sid` and carries `gty`, and each verifier refuses the other's.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import jwt

from api.auth.keys import key_id, load_private_key
from wallet.errors import DomainError

__all__ = [
    "ALGORITHM", "CLIENT_GRANT", "AccessClaims", "AccessTokens", "ClientClaims", "ClientTokens", "PartnerClaims",
    "PartnerTokens",
]

ALGORITHM = "EdDSA"
TOKEN_TYPE = "at+jwt"  # noqa: S105 - the JWT "typ" header (RFC 9068), not a secret
LEEWAY_S = 5
CLIENT_GRANT = "client_credentials"  # the `gty` claim of a partner's own token
VERIFIED_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class AccessClaims:
    holder_id: uuid.UUID
    session_id: uuid.UUID
    jti: str
    expires_at: int
    not_before: int


@dataclass(frozen=True, slots=True)
class PartnerClaims:
    """RFC 9068 claims of a partner's token: `sub` is the sub-account, `sid` the grant (refresh family)."""

    sub_account_id: uuid.UUID
    grant_id: uuid.UUID
    client_id: str
    scopes: frozenset[str]
    jti: str
    expires_at: int
    not_before: int


@dataclass(frozen=True, slots=True)
class ClientClaims:
    """A partner's own token (RFC 6749 §4.4): `sub` is its client id, and no resident or grant is named."""

    client_id: str
    scopes: frozenset[str]
    jti: str
    expires_at: int
    not_before: int


C = TypeVar("C", AccessClaims, PartnerClaims, ClientClaims)


class _SignedTokens(Generic[C]):
    required = ["iss", "aud", "sub", "exp", "iat", "jti", "nbf", "sid"]

    def __init__(self, private_key_pem: bytes, *, issuer: str, audience: str, ttl_s: int) -> None:
        self._private = load_private_key(private_key_pem)
        self._public = self._private.public_key()
        self.kid = key_id(self._public)
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        self._verified: OrderedDict[str, C] = OrderedDict()

    def _sign(self, subject: str, session: str | None, extra: dict[str, Any], now_s: int | None) -> tuple[str, int]:
        issued_at = int(time.time()) if now_s is None else now_s
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            **({"sid": session} if session is not None else {}),
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + self.ttl_s,
            "jti": uuid.uuid4().hex,
            **extra,
        }
        token = jwt.encode(claims, self._private, algorithm=ALGORITHM, headers={"kid": self.kid, "typ": TOKEN_TYPE})
        return token, claims["exp"]

    def _parse(self, claims: dict[str, Any]) -> C:
        raise NotImplementedError

    def verify(self, token: str, *, now_s: int | None = None) -> C:
        """Signature and claims are checked once per token string and remembered (bounded LRU): a client
        sends the same token for its whole lifetime, and the Ed25519 check plus PyJWT's parsing was the
        largest CPU cost of an authenticated request. Time is checked on every call, so a remembered token
        still expires; revocation is checked by the caller against the session or grant."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify_uncached(token)
            self._verified[token] = claims
            if len(self._verified) > VERIFIED_CACHE_MAX:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(token)
        now = int(time.time()) if now_s is None else now_s
        if now > claims.expires_at + LEEWAY_S:
            self._verified.pop(token, None)
            raise DomainError("unauthorized", "token-expired", "The access token has expired; refresh it.")
        if now < claims.not_before - LEEWAY_S:
            raise DomainError("unauthorized", "token-invalid", "The access token is not valid yet.")
        return claims

    def _verify_uncached(self, token: str) -> C:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != ALGORITHM or header.get("typ") != TOKEN_TYPE:
                raise jwt.InvalidTokenError("unexpected token header")
            claims = jwt.decode(
                token, self._public, algorithms=[ALGORITHM], audience=self.audience, issuer=self.issuer,
                options={"require": self.required, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
            return self._parse(claims)
        except (jwt.InvalidTokenError, ValueError, TypeError, KeyError) as exc:
            raise DomainError("unauthorized", "token-invalid", "The access token is not valid; log in again.") from exc


class AccessTokens(_SignedTokens[AccessClaims]):
    def issue(self, holder_id: uuid.UUID, session_id: uuid.UUID, *, now_s: int | None = None) -> tuple[str, int]:
        return self._sign(str(holder_id), str(session_id), {}, now_s)

    def _parse(self, claims: dict[str, Any]) -> AccessClaims:
        return AccessClaims(
            uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"]), str(claims["jti"]),
            int(claims["exp"]), int(claims["nbf"]),
        )


class PartnerTokens(_SignedTokens[PartnerClaims]):
    """Tokens acting for one resident (authorization code). `clients` signs and verifies the partner's own
    tokens (client credentials) with the same key, issuer, audience and lifetime."""

    required = [*_SignedTokens.required, "client_id", "scope"]

    def __init__(self, private_key_pem: bytes, *, issuer: str, audience: str, ttl_s: int) -> None:
        super().__init__(private_key_pem, issuer=issuer, audience=audience, ttl_s=ttl_s)
        self.clients = ClientTokens(private_key_pem, issuer=issuer, audience=audience, ttl_s=ttl_s)

    def issue(
        self, sub_account_id: uuid.UUID, grant_id: uuid.UUID, client_id: str, scopes: list[str], *,
        now_s: int | None = None,
    ) -> tuple[str, int]:
        return self._sign(
            str(sub_account_id), str(grant_id), {"client_id": client_id, "scope": " ".join(scopes)}, now_s
        )

    def _parse(self, claims: dict[str, Any]) -> PartnerClaims:
        if "gty" in claims:
            raise ValueError("a partner's own token does not act for a resident")
        return PartnerClaims(
            uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"]), str(claims["client_id"]),
            frozenset(str(claims["scope"]).split()), str(claims["jti"]), int(claims["exp"]), int(claims["nbf"]),
        )


class ClientTokens(_SignedTokens[ClientClaims]):
    """A partner's own token, with no resident: `sub` = `client_id`, `gty` = client_credentials, no `sid`."""

    required = ["iss", "aud", "sub", "exp", "iat", "jti", "nbf", "client_id", "scope", "gty"]

    def issue(self, client_id: str, scopes: list[str], *, now_s: int | None = None) -> tuple[str, int]:
        return self._sign(client_id, None, {"client_id": client_id, "scope": " ".join(scopes), "gty": CLIENT_GRANT},
                          now_s)

    def _parse(self, claims: dict[str, Any]) -> ClientClaims:
        if claims["gty"] != CLIENT_GRANT or "sid" in claims or claims["sub"] != claims["client_id"]:
            raise ValueError("not a client credentials token")
        return ClientClaims(
            str(claims["client_id"]), frozenset(str(claims["scope"]).split()), str(claims["jti"]),
            int(claims["exp"]), int(claims["nbf"]),
        )
