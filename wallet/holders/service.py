"""Holder rules: registration, authentication, profile, password change and deletion.

Each change and its outbox event commit in one transaction. Deletion erases personal data at once and
keeps the random holder id as the pseudonym that book entries go on pointing to.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import available_timezones

import asyncpg

from wallet.accounts.service import ensure_self_sub_account
from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.holders.identity import normalize_email, normalize_login, normalize_phone
from wallet.holders.passwords import Passwords, check_password_policy
from wallet.outbox.service import record_event

__all__ = [
    "LANGUAGES",
    "PROFILE_FIELDS",
    "Registration",
    "authenticate",
    "change_password",
    "delete_holder",
    "get_holder",
    "insert_holder",
    "prepare_registration",
    "register_holder",
    "update_profile",
]

LANGUAGES = ("zh-CN", "en")
PROFILE_FIELDS = (
    "nickname",
    "avatar_url",
    "city",
    "district",
    "community",
    "time_zone",
    "language",
    "show_on_public_leaderboards",
)
_PUBLIC_COLUMNS = (
    "id, status, email, phone, nickname, avatar_url, city, district, community, time_zone, language, "
    "show_on_public_leaderboards, created_at, updated_at, password_changed_at"
)
_TIME_ZONES = frozenset(available_timezones())
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _clean_text(field: str, value: str | None, length_max: int, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise DomainError("invalid", "invalid-profile", f"{field} cannot be empty.", field=field)
        return None
    text = value.strip()
    if _CONTROL.search(text):
        raise DomainError("invalid", "invalid-profile", f"{field} cannot contain control characters.", field=field)
    if len(text) > length_max:
        raise DomainError("invalid", "invalid-profile", f"{field} can be at most {length_max} characters.", field=field)
    if required and not text:
        raise DomainError("invalid", "invalid-profile", f"{field} cannot be empty.", field=field)
    return text or None


def _validate_profile(changes: dict[str, Any]) -> dict[str, Any]:
    unknown = set(changes) - set(PROFILE_FIELDS)
    if unknown:
        raise DomainError("invalid", "invalid-profile", f"Unknown profile fields: {', '.join(sorted(unknown))}.")
    clean: dict[str, Any] = {}
    for field, value in changes.items():
        if field == "nickname":
            clean[field] = _clean_text(field, value, 40, required=True)
        elif field in {"city", "district", "community"}:
            clean[field] = _clean_text(field, value, 64)
        elif field == "avatar_url":
            url = _clean_text(field, value, 500)
            if url is not None and not re.match(r"^https://[^\s/$.?#][^\s]*$", url):
                raise DomainError("invalid", "invalid-profile", "avatar_url must be an https:// address.", field=field)
            clean[field] = url
        elif field == "time_zone":
            if value not in _TIME_ZONES:
                raise DomainError(
                    "invalid",
                    "invalid-time-zone",
                    f"{value!r} is not an IANA time zone such as Asia/Shanghai.",
                    field=field,
                )
            clean[field] = value
        elif field == "language":
            if value not in LANGUAGES:
                raise DomainError("invalid", "invalid-language", "language must be zh-CN or en.", field=field)
            clean[field] = value
        elif field == "show_on_public_leaderboards":
            if not isinstance(value, bool):
                raise DomainError("invalid", "invalid-profile", f"{field} must be true or false.", field=field)
            clean[field] = value
    return clean


def _default_nickname(email: str | None, phone: str | None) -> str:
    if phone:
        return f"居民{phone[-4:]}"
    assert email is not None
    return email.split("@", 1)[0][:40]


@dataclass(frozen=True, slots=True)
class Registration:
    """A validated registration with its password already hashed: everything slow or refusable is done
    before a database connection is taken."""

    holder_id: uuid.UUID
    email: str | None
    phone: str | None
    password_hash: str
    nickname: str
    time_zone: str
    language: str


async def prepare_registration(
    passwords: Passwords,
    *,
    password: str,
    email: str | None = None,
    phone: str | None = None,
    nickname: str | None = None,
    language: str = "zh-CN",
    time_zone: str = "Asia/Shanghai",
) -> Registration:
    if (email is None) == (phone is None):
        raise DomainError("invalid", "one-login-identity", "Register with either an e-mail address or a phone number.")
    email_n = normalize_email(email) if email is not None else None
    phone_n = normalize_phone(phone) if phone is not None else None
    check_password_policy(password)
    profile = _validate_profile(
        {"nickname": nickname or _default_nickname(email_n, phone_n), "language": language, "time_zone": time_zone}
    )
    return Registration(
        holder_id=uuid.uuid4(), email=email_n, phone=phone_n, password_hash=await passwords.hash(password),
        nickname=profile["nickname"], time_zone=profile["time_zone"], language=profile["language"],
    )


async def insert_holder(registration: Registration) -> dict[str, Any]:
    """Insert the holder and its `holder.registered` event; may run inside the caller's transaction."""
    r = registration
    try:
        async with engine().transaction() as tx:
            row = await tx.connection.fetchrow(
                f"""INSERT INTO holder (id, status, email, phone, password_hash, nickname, time_zone, language,
                        show_on_public_leaderboards, created_at, updated_at, password_changed_at)
                    VALUES ($1, 'active', $2, $3, $4, $5, $6, $7, false, now(), now(), now())
                    RETURNING {_PUBLIC_COLUMNS}""",  # noqa: S608 - a constant column list
                r.holder_id,
                r.email,
                r.phone,
                r.password_hash,
                r.nickname,
                r.time_zone,
                r.language,
            )
            await ensure_self_sub_account(r.holder_id)
            await record_event("holder.registered", {"language": r.language}, holder_id=r.holder_id)
    except asyncpg.UniqueViolationError as exc:
        what = "e-mail address" if r.email else "phone number"
        raise DomainError(
            "conflict", "identity-taken", f"This {what} is already registered. Log in, or use another {what}."
        ) from exc
    return dict(row)


async def register_holder(passwords: Passwords, **fields: Any) -> dict[str, Any]:
    """Prepare and insert in one call, for callers that hold no transaction (demo seed, service tests)."""
    return await insert_holder(await prepare_registration(passwords, **fields))


async def authenticate(passwords: Passwords, login: str, password: str) -> uuid.UUID:
    """The holder id for a correct login; one error for every wrong case so accounts cannot be probed."""
    try:
        kind, value = normalize_login(login)
    except DomainError:
        kind, value = "email", ""
    async with connection() as conn:
        row = (
            await conn.fetchrow(
                f"SELECT id, password_hash FROM holder WHERE {kind} = $1 AND status = 'active'",  # noqa: S608 - email|phone
                value,
            )
            if value
            else None
        )
    stored = row["password_hash"] if row else None
    if not await passwords.verify(stored, password) or row is None:
        raise DomainError("unauthorized", "invalid-credentials", "The login or the password is wrong.")
    if passwords.needs_rehash(stored):
        new_hash = await passwords.hash(password)
        async with connection() as conn:
            await conn.execute(
                "UPDATE holder SET password_hash = $2 WHERE id = $1 AND password_hash = $3", row["id"], new_hash, stored
            )
    return row["id"]


async def get_holder(holder_id: uuid.UUID) -> dict[str, Any]:
    async with connection() as conn:
        row = await conn.fetchrow(
            f"SELECT {_PUBLIC_COLUMNS} FROM holder WHERE id = $1 AND status = 'active'",  # noqa: S608 - constant
            holder_id,
        )
    if row is None:
        raise DomainError("not_found", "holder-not-found", "This account does not exist or has been deleted.")
    return dict(row)


async def update_profile(holder_id: uuid.UUID, changes: dict[str, Any]) -> dict[str, Any]:
    clean = _validate_profile(changes)
    if not clean:
        return await get_holder(holder_id)
    assignments = ", ".join(f"{field} = ${i}" for i, field in enumerate(clean, start=2))
    async with engine().transaction() as tx:
        row = await tx.connection.fetchrow(
            # field names come from the PROFILE_FIELDS whitelist, values are bound parameters
            f"UPDATE holder SET {assignments}, updated_at = now() WHERE id = $1 AND status = 'active' "  # noqa: S608
            f"RETURNING {_PUBLIC_COLUMNS}",
            holder_id,
            *clean.values(),
        )
        if row is None:
            raise DomainError("not_found", "holder-not-found", "This account does not exist or has been deleted.")
        await record_event("holder.profile_changed", {"fields": sorted(clean)}, holder_id=holder_id)
    return dict(row)


async def _verify_current_password(passwords: Passwords, holder_id: uuid.UUID, password: str) -> str:
    async with connection() as conn:
        stored = await conn.fetchval("SELECT password_hash FROM holder WHERE id = $1 AND status = 'active'", holder_id)
    if not await passwords.verify(stored, password):
        raise DomainError("forbidden", "wrong-password", "The current password is wrong.")
    return stored


async def change_password(passwords: Passwords, holder_id: uuid.UUID, current: str, new: str) -> None:
    check_password_policy(new)
    if current == new:
        raise DomainError("invalid", "same-password", "The new password must differ from the current one.")
    stored = await _verify_current_password(passwords, holder_id, current)
    new_hash = await passwords.hash(new)
    async with engine().transaction() as tx:
        changed = await tx.connection.fetchval(
            "UPDATE holder SET password_hash = $2, password_changed_at = now(), updated_at = now() "
            "WHERE id = $1 AND password_hash = $3 RETURNING id",
            holder_id,
            new_hash,
            stored,
        )
        if changed is None:
            raise DomainError("conflict", "password-changed-concurrently", "The password was just changed; try again.")
        await record_event("holder.password_changed", {}, holder_id=holder_id)


async def delete_holder(passwords: Passwords, holder_id: uuid.UUID, password: str) -> datetime:
    """Erase personal data now; the row stays as a pseudonym so the immutable book keeps true totals."""
    await _verify_current_password(passwords, holder_id, password)
    deleted_at = datetime.now(UTC)
    async with engine().transaction() as tx:
        done = await tx.connection.fetchval(
            """UPDATE holder SET status = 'deleted', email = NULL, phone = NULL, password_hash = NULL,
                   nickname = '', avatar_url = NULL, city = NULL, district = NULL, community = NULL,
                   show_on_public_leaderboards = false, updated_at = $2, deleted_at = $2
               WHERE id = $1 AND status = 'active' RETURNING id""",
            holder_id,
            deleted_at,
        )
        if done is None:
            raise DomainError("not_found", "holder-not-found", "This account does not exist or has been deleted.")
        await record_event("holder.deleted", {}, holder_id=holder_id)
    return deleted_at
