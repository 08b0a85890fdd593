"""Authorization codes, grants and partner refresh tokens.

Codes and refresh tokens are random and stored only as SHA-256 digests. Each is consumed by a guarded
UPDATE, so two concurrent presentations cannot both win. Presenting a consumed code or refresh token
again means it leaked: the grant it produced is revoked (RFC 6749 §4.1.2, RFC 9700 §4.14).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from wallet.db import connection, engine

__all__ = [
    "GrantTokens",
    "OAuthError",
    "exchange_code",
    "issue_code",
    "live_grant",
    "pkce_challenge",
    "revoke_grant",
    "revoke_grants_of_sub_account",
    "revoke_refresh_token",
    "rotate_refresh_token",
]

CODE_PREFIX = "cwa_"
REFRESH_PREFIX = "cwpr_"
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")  # RFC 7636 §4.1
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")  # base64url of a SHA-256, unpadded


class OAuthError(Exception):
    """An error in RFC 6749 terms (`error` code and description), raised by the token and revocation
    endpoints and shown or redirected by the authorization endpoint."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def pkce_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def valid_challenge(challenge: str) -> bool:
    return bool(_CHALLENGE.match(challenge))


@dataclass(frozen=True, slots=True)
class GrantTokens:
    grant_id: uuid.UUID
    holder_id: uuid.UUID
    sub_account_id: uuid.UUID
    scopes: list[str]
    refresh_token: str


async def issue_code(
    *, partner_id: uuid.UUID, holder_id: uuid.UUID, sub_account_id: uuid.UUID, redirect_uri: str,
    scopes: list[str], code_challenge: str, ttl_s: int,
) -> str:
    code = CODE_PREFIX + secrets.token_urlsafe(32)
    async with connection() as conn:
        await conn.execute(
            """INSERT INTO oauth_code (code_hash, partner, holder, sub_account, redirect_uri, scopes, code_challenge,
                   created_at, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, now(), now() + make_interval(secs => $8))""",
            _digest(code), partner_id, holder_id, sub_account_id, redirect_uri, scopes, code_challenge, float(ttl_s),
        )
    return code


async def _insert_refresh(conn: asyncpg.Connection, grant_id: uuid.UUID, ttl_s: int) -> str:
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO oauth_refresh_token (grant_id, token_hash, created_at, expires_at) VALUES ($1, $2, now(), $3)",
        grant_id, _digest(token), datetime.now(UTC) + timedelta(seconds=ttl_s),
    )
    return token


_LINK_LIVE = """SELECT s.status = 'active' AND p.status = 'active' AND h.status = 'active'
                FROM sub_account s JOIN partner p ON p.id = s.partner JOIN holder h ON h.id = s.holder
                WHERE s.id = $1"""


async def exchange_code(
    partner_id: uuid.UUID, code: str, *, redirect_uri: str | None, code_verifier: str | None, refresh_ttl_s: int
) -> GrantTokens:
    if not code_verifier or not _VERIFIER.match(code_verifier):
        raise OAuthError("invalid_request", "code_verifier is required: 43-128 characters of [A-Za-z0-9-._~].")
    reused_grant: uuid.UUID | None = None
    failure: OAuthError | None = None
    async with engine().transaction() as tx:
        conn = tx.connection
        row = await conn.fetchrow(
            "UPDATE oauth_code SET used_at = now() WHERE code_hash = $1 AND used_at IS NULL "
            "RETURNING id, partner, holder, sub_account, redirect_uri, scopes, code_challenge, expires_at",
            _digest(code),
        )
        if row is None:
            reused_grant = await conn.fetchval(
                "SELECT grant_id FROM oauth_code WHERE code_hash = $1 AND partner = $2", _digest(code), partner_id
            )
            if reused_grant is not None:
                await conn.execute(
                    "UPDATE oauth_grant SET revoked_at = now(), revoked_reason = 'code-reuse' "
                    "WHERE id = $1 AND revoked_at IS NULL",
                    reused_grant,
                )
        else:
            # The code is spent whatever happens next: the transaction commits `used_at` and the error is
            # raised after it, so a code presented wrongly once cannot be tried again.
            failure = await _code_failure(conn, row, partner_id, redirect_uri, code_verifier)
            if failure is None:
                grant_id = uuid.uuid4()
                # A re-link since the code was issued may have narrowed what the resident allows.
                scopes = await conn.fetchval(
                    "SELECT ARRAY(SELECT unnest($2::varchar[]) INTERSECT SELECT unnest(scopes)) FROM sub_account "
                    "WHERE id = $1",
                    row["sub_account"], row["scopes"],
                )
                scopes = [s for s in row["scopes"] if s in scopes]
                await conn.execute(
                    """INSERT INTO oauth_grant (id, partner, holder, sub_account, scopes, created_at, last_refreshed_at)
                       VALUES ($1, $2, $3, $4, $5, now(), now())""",
                    grant_id, partner_id, row["holder"], row["sub_account"], scopes,
                )
                await conn.execute("UPDATE oauth_code SET grant_id = $2 WHERE id = $1", row["id"], grant_id)
                refresh = await _insert_refresh(conn, grant_id, refresh_ttl_s)
                return GrantTokens(grant_id, row["holder"], row["sub_account"], scopes, refresh)
    if failure is not None:
        raise failure
    if reused_grant is not None:
        raise OAuthError("invalid_grant", "This authorization code was already used; its tokens are now revoked.")
    raise OAuthError("invalid_grant", "The authorization code is invalid, expired or already used.")


async def _code_failure(
    conn: asyncpg.Connection, row: asyncpg.Record, partner_id: uuid.UUID, redirect_uri: str | None, verifier: str
) -> OAuthError | None:
    if row["partner"] != partner_id or row["expires_at"] <= datetime.now(UTC):
        return OAuthError("invalid_grant", "The authorization code is invalid, expired or already used.")
    bound = row["redirect_uri"]  # "" when the authorization request relied on the one registered URI
    if bound and redirect_uri != bound:
        return OAuthError("invalid_grant", "redirect_uri does not match the one the code was issued for.")
    if not bound and redirect_uri is not None:
        registered = await conn.fetchval("SELECT redirect_uris FROM partner WHERE id = $1", partner_id)
        if redirect_uri not in registered:
            return OAuthError("invalid_grant", "redirect_uri does not match the one the code was issued for.")
    if not hmac.compare_digest(pkce_challenge(verifier), row["code_challenge"]):
        return OAuthError("invalid_grant", "code_verifier does not match the code_challenge (PKCE S256).")
    if not await conn.fetchval(_LINK_LIVE, row["sub_account"]):
        return OAuthError("invalid_grant", "The resident unlinked this platform, or it was suspended.")
    return None


async def rotate_refresh_token(
    partner_id: uuid.UUID, presented: str, *, scopes: list[str] | None, refresh_ttl_s: int
) -> GrantTokens:
    """`scopes` may narrow the grant for the new access token (RFC 6749 §6), never widen it."""
    digest = _digest(presented)
    reused = False
    async with engine().transaction() as tx:
        conn = tx.connection
        row = await conn.fetchrow(
            """UPDATE oauth_refresh_token t SET used_at = now() FROM oauth_grant g, sub_account s
               WHERE t.token_hash = $1 AND t.used_at IS NULL AND g.id = t.grant_id AND g.partner = $2
                 AND s.id = g.sub_account
               RETURNING t.grant_id, t.expires_at, g.holder, g.sub_account, g.revoked_at,
                         ARRAY(SELECT unnest(g.scopes) INTERSECT SELECT unnest(s.scopes)) AS scopes""",
            digest, partner_id,
        )
        if row is None:
            grant_id = await conn.fetchval(
                """SELECT t.grant_id FROM oauth_refresh_token t JOIN oauth_grant g ON g.id = t.grant_id
                   WHERE t.token_hash = $1 AND g.partner = $2""",
                digest, partner_id,
            )
            if grant_id is not None:
                reused = True
                await conn.execute(
                    "UPDATE oauth_grant SET revoked_at = now(), revoked_reason = 'refresh-reuse' "
                    "WHERE id = $1 AND revoked_at IS NULL",
                    grant_id,
                )
        else:
            if row["expires_at"] <= datetime.now(UTC) or row["revoked_at"] is not None:
                raise OAuthError("invalid_grant", "This refresh token has expired or was revoked; link again.")
            if not await conn.fetchval(_LINK_LIVE, row["sub_account"]):
                raise OAuthError("invalid_grant", "The resident unlinked this platform, or it was suspended.")
            granted = sorted(row["scopes"])  # the grant's scopes that the resident's current consent still allows
            if scopes is not None:
                wider = sorted(set(scopes) - set(granted))
                if wider:
                    raise OAuthError("invalid_scope", f"Scopes not granted by the resident: {' '.join(wider)}.")
                granted = [s for s in granted if s in set(scopes)]
            await conn.execute("UPDATE oauth_grant SET last_refreshed_at = now() WHERE id = $1", row["grant_id"])
            refresh = await _insert_refresh(conn, row["grant_id"], refresh_ttl_s)
            return GrantTokens(row["grant_id"], row["holder"], row["sub_account"], granted, refresh)
    if reused:
        raise OAuthError(
            "invalid_grant", "This refresh token was already used, so it may have been copied; the grant is revoked."
        )
    raise OAuthError("invalid_grant", "This refresh token is not valid.")


async def revoke_refresh_token(partner_id: uuid.UUID, presented: str) -> bool:
    """RFC 7009: revoking a refresh token revokes its whole grant; another client's token is left alone."""
    async with connection() as conn:
        grant_id = await conn.fetchval(
            """SELECT t.grant_id FROM oauth_refresh_token t JOIN oauth_grant g ON g.id = t.grant_id
               WHERE t.token_hash = $1 AND g.partner = $2""",
            _digest(presented), partner_id,
        )
    return grant_id is not None and await revoke_grant(partner_id, grant_id, reason="revoked-by-partner")


async def revoke_grant(partner_id: uuid.UUID, grant_id: uuid.UUID, *, reason: str) -> bool:
    async with connection() as conn:
        done = await conn.fetchval(
            "UPDATE oauth_grant SET revoked_at = now(), revoked_reason = $3 "
            "WHERE id = $1 AND partner = $2 AND revoked_at IS NULL RETURNING id",
            grant_id, partner_id, reason,
        )
    return done is not None


async def revoke_grants_of_sub_account(sub_account_id: uuid.UUID, *, reason: str) -> int:
    async with connection() as conn:
        result = await conn.execute(
            "UPDATE oauth_grant SET revoked_at = now(), revoked_reason = $2 "
            "WHERE sub_account = $1 AND revoked_at IS NULL",
            sub_account_id, reason,
        )
    return int(result.split()[-1])


async def live_grant(grant_id: uuid.UUID, sub_account_id: uuid.UUID) -> dict[str, Any] | None:
    """Everything a partner request needs to be authorised, in one query, read fresh on every request so
    an unlink, a suspension or a revocation takes effect at once."""
    async with connection() as conn:
        row = await conn.fetchrow(
            """SELECT g.holder AS holder_id, g.partner AS partner_id, g.scopes, s.scopes AS link_scopes, g.revoked_at,
                      s.status AS link_status, h.status AS holder_status, p.status AS partner_status,
                      p.client_id, p.name AS partner_name, p.name_en AS partner_name_en, p.allowed_behaviours,
                      p.trust_tier,
                      p.rate_limit_per_minute, p.daily_quota
               FROM oauth_grant g
               JOIN sub_account s ON s.id = g.sub_account
               JOIN partner p ON p.id = g.partner
               JOIN holder h ON h.id = g.holder
               WHERE g.id = $1 AND g.sub_account = $2""",
            grant_id, sub_account_id,
        )
    return dict(row) if row else None
