"""Staff roles. A role is granted by an operator from the CLI, never through the public API, so the
first operator exists only because someone with shell access made them one."""

from __future__ import annotations

import uuid

from wallet.db import connection
from wallet.errors import DomainError
from wallet.holders.identity import normalize_login

__all__ = ["ROLES", "grant_role", "has_role", "holder_id_for_login", "revoke_role", "role_scopes"]

# operator: runs the service (everything staff can do). programme_staff: a city programme's staff, who read
# that city's ledger only; the role's scope is the city (`北京市`).
ROLES = ("operator", "programme_staff")


async def holder_id_for_login(login: str) -> uuid.UUID:
    kind, value = normalize_login(login)
    async with connection() as conn:
        holder_id = await conn.fetchval(
            f"SELECT id FROM holder WHERE {kind} = $1 AND status = 'active'", value  # noqa: S608 - email|phone
        )
    if holder_id is None:
        raise DomainError("not_found", "holder-not-found", f"No active holder logs in as {login!r}.")
    return holder_id


async def grant_role(holder_id: uuid.UUID, role: str, scope: str = "") -> bool:
    """True when granted now, False when the holder already had it."""
    if role not in ROLES:
        raise DomainError("invalid", "unknown-role", f"role must be one of {', '.join(ROLES)}.")
    if role == "programme_staff" and not scope.strip():
        raise DomainError("invalid", "scope-required", "programme_staff needs the city it serves, e.g. 北京市.")
    async with connection() as conn:
        done = await conn.fetchval(
            """INSERT INTO holder_role (holder, role, scope, granted_at) VALUES ($1, $2, $3, now())
               ON CONFLICT (holder, role, scope) DO NOTHING RETURNING id""",
            holder_id,
            role,
            scope,
        )
    return done is not None


async def revoke_role(holder_id: uuid.UUID, role: str, scope: str = "") -> bool:
    async with connection() as conn:
        done = await conn.fetchval(
            "DELETE FROM holder_role WHERE holder = $1 AND role = $2 AND scope = $3 RETURNING id",
            holder_id,
            role,
            scope,
        )
    return done is not None


async def has_role(holder_id: uuid.UUID, role: str) -> bool:
    async with connection() as conn:
        return bool(
            await conn.fetchval(
                """SELECT EXISTS (SELECT 1 FROM holder_role r JOIN holder h ON h.id = r.holder
                   WHERE r.holder = $1 AND r.role = $2 AND h.status = 'active')""",
                holder_id,
                role,
            )
        )


async def role_scopes(holder_id: uuid.UUID, role: str) -> list[str]:
    """The scopes a holder has a role for (e.g. the cities a programme staff member serves)."""
    async with connection() as conn:
        return [r["scope"] for r in await conn.fetch(
            """SELECT r.scope FROM holder_role r JOIN holder h ON h.id = r.holder
               WHERE r.holder = $1 AND r.role = $2 AND h.status = 'active' ORDER BY r.scope""", holder_id, role)]
