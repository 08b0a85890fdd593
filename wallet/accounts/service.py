"""The 1 + N accounts. The holder is the primary account; each linked partner is a sub-account, and so
are the holder's own self-reported actions. Sub-accounts are never deleted: an unlinked one stays so the
book entries it produced keep naming their source, now marked as unlinked.

Every link and unlink closes the previous consent record and (for a link) opens a new one, in the same
transaction, so the consent history is exactly what the holder agreed to and when.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.outbox.service import record_event

__all__ = [
    "SELF_SCOPES",
    "Link",
    "active_sub_account",
    "ensure_self_sub_account",
    "link_partner",
    "list_consents",
    "list_sub_accounts",
    "unlink_partner",
]

SELF_SCOPES = ("activities:write", "book:read")


@dataclass(frozen=True, slots=True)
class Link:
    sub_account_id: uuid.UUID
    consent_id: int
    relinked: bool


async def ensure_self_sub_account(holder_id: uuid.UUID) -> uuid.UUID:
    """Idempotent; runs in the registration transaction so no holder ever lacks its self sub-account."""
    async with connection() as conn:
        created = await conn.fetchval(
            """INSERT INTO sub_account (id, holder, partner, kind, status, scopes, linked_at)
               VALUES ($1, $2, NULL, 'self', 'active', $3, now())
               ON CONFLICT (holder) WHERE kind = 'self' DO NOTHING RETURNING id""",
            uuid.uuid4(),
            holder_id,
            list(SELF_SCOPES),
        )
        if created is not None:
            return created
        return await conn.fetchval("SELECT id FROM sub_account WHERE holder = $1 AND kind = 'self'", holder_id)


async def active_sub_account(holder_id: uuid.UUID, partner_id: uuid.UUID) -> uuid.UUID | None:
    async with connection() as conn:
        return await conn.fetchval(
            "SELECT id FROM sub_account WHERE holder = $1 AND partner = $2 AND status = 'active'", holder_id, partner_id
        )


async def link_partner(holder_id: uuid.UUID, partner_id: uuid.UUID, scopes: Sequence[str]) -> Link:
    """Create or re-activate the holder's sub-account for this partner with exactly `scopes`."""
    async with engine().transaction() as tx:
        conn = tx.connection
        row = await conn.fetchrow(
            """INSERT INTO sub_account AS s (id, holder, partner, kind, status, scopes, linked_at)
               VALUES ($1, $2, $3, 'partner', 'active', $4, now())
               ON CONFLICT (holder, partner) DO UPDATE SET
                   scopes = EXCLUDED.scopes,
                   linked_at = CASE WHEN s.status = 'unlinked' THEN now() ELSE s.linked_at END,
                   status = 'active', unlinked_at = NULL, unlinked_reason = NULL
               RETURNING id, (xmax <> 0) AS existed""",
            uuid.uuid4(),
            holder_id,
            partner_id,
            list(scopes),
        )
        await conn.execute(
            "UPDATE consent SET revoked_at = now(), revoked_reason = 'superseded' "
            "WHERE sub_account = $1 AND revoked_at IS NULL",
            row["id"],
        )
        consent_id = await conn.fetchval(
            """INSERT INTO consent (holder, partner, sub_account, scopes, granted_at)
               VALUES ($1, $2, $3, $4, now()) RETURNING id""",
            holder_id,
            partner_id,
            row["id"],
            list(scopes),
        )
        await record_event(
            "partner.linked",
            {"partner_id": str(partner_id), "sub_account_id": str(row["id"]), "scopes": list(scopes)},
            holder_id=holder_id,
        )
    return Link(row["id"], consent_id, bool(row["existed"]))


async def unlink_partner(holder_id: uuid.UUID, sub_account_id: uuid.UUID, *, reason: str) -> uuid.UUID:
    """Returns the partner id. Unlinking twice is not an error: the second call changes nothing."""
    async with engine().transaction() as tx:
        conn = tx.connection
        row = await conn.fetchrow(
            "SELECT kind, status, partner FROM sub_account WHERE id = $1 AND holder = $2 FOR UPDATE",
            sub_account_id,
            holder_id,
        )
        if row is None:
            raise DomainError("not_found", "sub-account-not-found", "You have no linked account with this id.")
        if row["kind"] == "self":
            raise DomainError(
                "conflict", "self-sub-account",
                "Your self-reported account is part of your book and cannot be unlinked.",
            )
        if row["status"] == "active":
            await conn.execute(
                "UPDATE sub_account SET status = 'unlinked', unlinked_at = now(), unlinked_reason = $2 WHERE id = $1",
                sub_account_id,
                reason,
            )
            await conn.execute(
                "UPDATE consent SET revoked_at = now(), revoked_reason = $2 "
                "WHERE sub_account = $1 AND revoked_at IS NULL",
                sub_account_id,
                reason,
            )
            await record_event(
                "partner.unlinked",
                {"partner_id": str(row["partner"]), "sub_account_id": str(sub_account_id), "reason": reason},
                holder_id=holder_id,
            )
    return row["partner"]


async def list_sub_accounts(holder_id: uuid.UUID) -> list[dict[str, Any]]:
    """The self sub-account first, then partners by link date, each with what it contributed so far."""
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT s.id, s.kind, s.status, s.scopes, s.linked_at, s.unlinked_at, s.unlinked_reason,
                      p.id AS partner_id, p.name AS partner_name, p.name_en AS partner_name_en,
                      p.kind AS partner_kind, p.status AS partner_status,
                      coalesce(a.n, 0) AS activities, a.last_at AS last_activity_at
               FROM sub_account s
               LEFT JOIN partner p ON p.id = s.partner
               LEFT JOIN LATERAL (
                   SELECT count(*) AS n, max(received_at) AS last_at FROM activity WHERE sub_account = s.id
               ) a ON true
               WHERE s.holder = $1
               ORDER BY s.kind = 'self' DESC, s.linked_at""",
            holder_id,
        )
    return [dict(r) for r in rows]


async def list_consents(holder_id: uuid.UUID, *, limit: int = 200) -> list[dict[str, Any]]:
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT c.id, c.partner AS partner_id, p.name AS partner_name, p.name_en AS partner_name_en,
                      c.sub_account AS sub_account_id, c.scopes, c.granted_at, c.revoked_at, c.revoked_reason
               FROM consent c JOIN partner p ON p.id = c.partner
               WHERE c.holder = $1 ORDER BY c.granted_at DESC, c.id DESC LIMIT $2""",
            holder_id,
            limit,
        )
    return [dict(r) for r in rows]
