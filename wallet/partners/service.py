"""Partner registration and its secrets.

Client secrets are random 256-bit strings, so a plain SHA-256 is a sufficient hash (no password
stretching needed) and lookups stay one indexed query. Webhook signing secrets are sealed instead,
because verifying a partner's HMAC needs the key itself. A rotated secret keeps working for an
overlap window so a partner can deploy the new one without downtime.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import tomllib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import asyncpg

from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.methodology.catalogue import unknown_behaviours
from wallet.outbox.service import record_event
from wallet.sealing import SecretBox

__all__ = [
    "CLIENT_SCOPES",
    "KINDS",
    "RESIDENT_SCOPES",
    "SCOPES",
    "TRUST_TIERS",
    "PartnerSpec",
    "authenticate_client",
    "get_partner",
    "get_partner_by_client_id",
    "list_partners",
    "register_partner",
    "rotate_secret",
    "scope_descriptions",
    "set_partner_status",
    "update_partner",
    "webhook_secrets",
]

KINDS = ("food_delivery", "logistics", "second_hand", "bike_share", "transit", "maps", "employer", "other")
TRUST_TIERS = ("verified", "device", "self_reported")  # most trusted first
SecretPurpose = Literal["client", "webhook"]
REDIRECT_URIS_MAX = 10
CLIENT_ID_PREFIX = "cwc_"
CLIENT_SECRET_PREFIX = "cws_"  # noqa: S105 - a prefix, not a secret
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix
_PRIVATE_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*\.[a-z0-9+.-]+$")  # reverse-DNS scheme of a native app (RFC 8252)
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
_COLUMNS = """id, client_id, name, name_en, kind, client_type, redirect_uris, allowed_scopes, allowed_behaviours,
    trust_tier, rate_limit_per_minute, daily_quota, status, status_reason, created_at, updated_at"""


@cache
def _scope_texts() -> dict[str, dict[str, str]]:
    with (Path(__file__).with_name("scopes.toml")).open("rb") as fh:
        return tomllib.load(fh)


SCOPES: tuple[str, ...] = tuple(_scope_texts())
# A partner's own scopes (`grant = "client_credentials"`, today ledger:read) and those only a resident grants.
CLIENT_SCOPES: tuple[str, ...] = tuple(s for s in SCOPES if _scope_texts()[s].get("grant") == "client_credentials")
RESIDENT_SCOPES: tuple[str, ...] = tuple(s for s in SCOPES if s not in CLIENT_SCOPES)


def scope_descriptions(scopes: Sequence[str], language: str) -> list[dict[str, str]]:
    texts = _scope_texts()
    return [{"scope": s, "description": texts[s].get(language, texts[s]["en"])} for s in scopes if s in texts]


@dataclass(slots=True)
class PartnerSpec:
    name: str
    kind: str
    redirect_uris: list[str]
    allowed_scopes: list[str]
    allowed_behaviours: list[str]
    name_en: str = ""
    client_type: str = "confidential"
    trust_tier: str = "verified"
    rate_limit_per_minute: int = 600
    daily_quota: int = 100_000


def _invalid(field_name: str, detail: str) -> DomainError:
    return DomainError("invalid", "invalid-partner", detail, field=field_name)


def check_redirect_uri(uri: str) -> str:
    """Exact-match URIs: https, a loopback http address for development, or a native app's private scheme."""
    if len(uri) > 500 or any(c.isspace() for c in uri):
        raise _invalid("redirect_uris", f"Redirect URI {uri[:80]!r} is too long or contains spaces.")
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri:
        raise _invalid("redirect_uris", f"Redirect URI {uri!r} must not contain a fragment (RFC 6749 §3.1.2).")
    if parts.scheme == "https" and parts.hostname:
        return uri
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return uri
    if _PRIVATE_SCHEME.match(parts.scheme):
        return uri
    raise _invalid(
        "redirect_uris",
        f"Redirect URI {uri!r} must be https://, http://localhost or a reverse-DNS app scheme (com.example.app:/cb).",
    )


def _validate(values: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if key in {"name", "name_en"}:
            text = str(value).strip()
            if key == "name" and not text:
                raise _invalid(key, "A partner needs a name.")
            if len(text) > 80:
                raise _invalid(key, f"{key} can be at most 80 characters.")
            clean[key] = text
        elif key == "kind":
            if value not in KINDS:
                raise _invalid(key, f"kind must be one of {', '.join(KINDS)}.")
            clean[key] = value
        elif key == "client_type":
            if value not in {"confidential", "public"}:
                raise _invalid(key, "client_type must be confidential (has a server) or public (an app only).")
            clean[key] = value
        elif key == "trust_tier":
            if value not in TRUST_TIERS:
                raise _invalid(key, f"trust_tier must be one of {', '.join(TRUST_TIERS)}.")
            clean[key] = value
        elif key == "redirect_uris":
            uris = list(dict.fromkeys(check_redirect_uri(u) for u in value))
            if not 1 <= len(uris) <= REDIRECT_URIS_MAX:
                raise _invalid(key, f"Register between 1 and {REDIRECT_URIS_MAX} redirect URIs.")
            clean[key] = uris
        elif key == "allowed_scopes":
            unknown = sorted(set(value) - set(SCOPES))
            if unknown:
                raise _invalid(key, f"Unknown scopes: {', '.join(unknown)}. Known: {', '.join(SCOPES)}.")
            clean[key] = [s for s in SCOPES if s in set(value)]
        elif key == "allowed_behaviours":
            unknown = unknown_behaviours(value)
            if unknown:
                raise _invalid(key, f"Unknown behaviours: {', '.join(unknown)}; see GET /v1/methodology/behaviours.")
            clean[key] = sorted(set(value))
        elif key in {"rate_limit_per_minute", "daily_quota"}:
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10_000_000:
                raise _invalid(key, f"{key} must be a whole number between 1 and 10,000,000.")
            clean[key] = value
        else:
            raise _invalid(key, f"Unknown partner field {key!r}.")
    return clean


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret(purpose: SecretPurpose) -> str:
    if purpose == "client":
        return CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32)
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


async def _insert_secret(
    conn: asyncpg.Connection, partner_id: uuid.UUID, purpose: SecretPurpose, box: SecretBox, secret: str | None = None
) -> str:
    secret = secret or _new_secret(purpose)
    await conn.execute(
        """INSERT INTO partner_secret (partner, purpose, secret_hash, secret_sealed, hint, created_at)
           VALUES ($1, $2, $3, $4, $5, now())""",
        partner_id,
        purpose,
        _digest(secret) if purpose == "client" else None,
        box.seal(secret, context=f"{partner_id}:webhook") if purpose == "webhook" else None,
        secret[-4:],
    )
    return secret


@dataclass(frozen=True, slots=True)
class NewPartner:
    partner: dict[str, Any]
    client_secret: str | None
    webhook_secret: str


async def register_partner(
    spec: PartnerSpec, box: SecretBox, *, client_id: str | None = None, known_secrets: tuple[str, str] | None = None
) -> NewPartner:
    """Secrets are returned here once and never again. `client_id` and `known_secrets` (client, webhook) are
    for published demo partners only; real partners get random ones."""
    values = _validate({
        "name": spec.name, "name_en": spec.name_en, "kind": spec.kind, "client_type": spec.client_type,
        "redirect_uris": spec.redirect_uris, "allowed_scopes": spec.allowed_scopes,
        "allowed_behaviours": spec.allowed_behaviours, "trust_tier": spec.trust_tier,
        "rate_limit_per_minute": spec.rate_limit_per_minute, "daily_quota": spec.daily_quota,
    })
    if not values["allowed_scopes"]:
        raise _invalid("allowed_scopes", "Allow at least one scope.")
    partner_id = uuid.uuid4()
    client_id = client_id or CLIENT_ID_PREFIX + secrets.token_urlsafe(12)
    client_given, webhook_given = known_secrets or (None, None)
    async with engine().transaction() as tx:
        conn = tx.connection
        row = await conn.fetchrow(
            f"""INSERT INTO partner (id, client_id, name, name_en, kind, client_type, redirect_uris, allowed_scopes,
                    allowed_behaviours, trust_tier, rate_limit_per_minute, daily_quota, status, status_reason,
                    created_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'active', '', now(), now())
                RETURNING {_COLUMNS}""",  # noqa: S608 - a constant column list
            partner_id, client_id, values["name"], values["name_en"], values["kind"], values["client_type"],
            values["redirect_uris"], values["allowed_scopes"], values["allowed_behaviours"], values["trust_tier"],
            values["rate_limit_per_minute"], values["daily_quota"],
        )
        confidential = values["client_type"] == "confidential"
        client_secret = await _insert_secret(conn, partner_id, "client", box, client_given) if confidential else None
        webhook_secret = await _insert_secret(conn, partner_id, "webhook", box, webhook_given)
        await record_event("partner.registered", {"partner_id": str(partner_id), "name": values["name"]})
    return NewPartner(dict(row), client_secret, webhook_secret)


async def _with_secrets(conn: asyncpg.Connection, row: asyncpg.Record) -> dict[str, Any]:
    partner = dict(row)
    partner["secrets"] = [
        dict(r)
        for r in await conn.fetch(
            """SELECT purpose, hint, created_at, expires_at FROM partner_secret
               WHERE partner = $1 AND (expires_at IS NULL OR expires_at > now()) ORDER BY purpose, created_at""",
            row["id"],
        )
    ]
    return partner


async def get_partner(partner_id: uuid.UUID, *, with_secrets: bool = False) -> dict[str, Any]:
    async with connection() as conn:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM partner WHERE id = $1", partner_id)  # noqa: S608
        if row is None:
            raise DomainError("not_found", "partner-not-found", "No partner has this id.")
        return await _with_secrets(conn, row) if with_secrets else dict(row)


async def get_partner_by_client_id(client_id: str) -> dict[str, Any] | None:
    async with connection() as conn:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM partner WHERE client_id = $1", client_id)  # noqa: S608
    return dict(row) if row else None


async def list_partners() -> list[dict[str, Any]]:
    async with connection() as conn:
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM partner ORDER BY created_at")  # noqa: S608
    return [dict(r) for r in rows]


async def update_partner(partner_id: uuid.UUID, changes: dict[str, Any]) -> dict[str, Any]:
    clean = _validate(changes)
    if "client_type" in clean:
        raise _invalid("client_type", "A partner's client type cannot change; register a new partner instead.")
    if "allowed_scopes" in clean and not clean["allowed_scopes"]:
        raise _invalid("allowed_scopes", "Allow at least one scope.")
    if not clean:
        return await get_partner(partner_id, with_secrets=True)
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(clean, start=2))
    async with engine().transaction() as tx:
        row = await tx.connection.fetchrow(
            # names come from the _validate whitelist, values are bound parameters
            f"UPDATE partner SET {assignments}, updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}",  # noqa: S608
            partner_id,
            *clean.values(),
        )
        if row is None:
            raise DomainError("not_found", "partner-not-found", "No partner has this id.")
        await record_event("partner.changed", {"partner_id": str(partner_id), "fields": sorted(clean)})
        return await _with_secrets(tx.connection, row)


async def set_partner_status(partner_id: uuid.UUID, status: str, reason: str = "") -> dict[str, Any]:
    """Suspension takes effect on the partner's next request: every token check reads the partner's status."""
    if status not in {"active", "suspended"}:
        raise _invalid("status", "status must be active or suspended.")
    async with engine().transaction() as tx:
        row = await tx.connection.fetchrow(
            f"""UPDATE partner SET status = $2, status_reason = $3, updated_at = now() WHERE id = $1
                RETURNING {_COLUMNS}""",  # noqa: S608
            partner_id,
            status,
            reason.strip()[:200],
        )
        if row is None:
            raise DomainError("not_found", "partner-not-found", "No partner has this id.")
        await record_event(f"partner.{status}", {"partner_id": str(partner_id), "reason": reason[:200]})
        return await _with_secrets(tx.connection, row)


async def rotate_secret(partner_id: uuid.UUID, purpose: SecretPurpose, *, overlap_s: int, box: SecretBox) -> str:
    """The new secret works at once; the current ones keep working for `overlap_s` seconds (0 ends them now)."""
    async with engine().transaction() as tx:
        conn = tx.connection
        client_type = await conn.fetchval("SELECT client_type FROM partner WHERE id = $1 FOR UPDATE", partner_id)
        if client_type is None:
            raise DomainError("not_found", "partner-not-found", "No partner has this id.")
        if purpose == "client" and client_type == "public":
            raise DomainError("conflict", "public-client", "A public client has no client secret; it uses PKCE alone.")
        await conn.execute(
            """UPDATE partner_secret SET expires_at = now() + make_interval(secs => $3)
               WHERE partner = $1 AND purpose = $2
                 AND (expires_at IS NULL OR expires_at > now() + make_interval(secs => $3))""",
            partner_id,
            purpose,
            float(overlap_s),
        )
        secret = await _insert_secret(conn, partner_id, purpose, box)
        await record_event("partner.secret_rotated", {"partner_id": str(partner_id), "purpose": purpose})
    return secret


async def authenticate_client(client_id: str, client_secret: str | None) -> dict[str, Any] | None:
    """The partner for valid client credentials, else None. A public client presents no secret; a
    confidential one must present a live secret. Suspension is the caller's rule (its error differs)."""
    partner = await get_partner_by_client_id(client_id) if client_id else None
    if partner is None:
        return None
    if partner["client_type"] == "public":
        return partner if client_secret in (None, "") else None
    if not client_secret:
        return None
    async with connection() as conn:
        hashes = await conn.fetch(
            """SELECT secret_hash FROM partner_secret WHERE partner = $1 AND purpose = 'client'
               AND (expires_at IS NULL OR expires_at > now())""",
            partner["id"],
        )
    presented = _digest(client_secret)
    ok = False
    for row in hashes:
        ok |= hmac.compare_digest(row["secret_hash"], presented)
    return partner if ok else None


async def webhook_secrets(partner_id: uuid.UUID, box: SecretBox) -> list[str]:
    """Every live signing secret, newest first: during rotation a push signed with either verifies."""
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT secret_sealed FROM partner_secret WHERE partner = $1 AND purpose = 'webhook'
               AND (expires_at IS NULL OR expires_at > now()) ORDER BY created_at DESC""",
            partner_id,
        )
    return [box.open(bytes(r["secret_sealed"]), context=f"{partner_id}:webhook") for r in rows]
