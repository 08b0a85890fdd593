"""The rewards operators put in the mall: validated on the way in, listed for residents on the way out."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import msgspec

from wallet.db import connection, engine
from wallet.errors import DomainError

__all__ = ["CATEGORIES", "adjust_stock", "create_reward", "get_reward", "list_rewards", "load_vouchers",
           "update_reward"]

CATEGORIES = ("transit", "bike", "coffee", "food", "parking", "goods", "charging", "other")
FULFILMENTS = ("code", "pool", "merchant")
STATUSES = ("active", "paused", "retired")
PRICE_MAX = 100_000_000
_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{1,63}$")
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def _bad(field: str, detail: str) -> DomainError:
    return DomainError("invalid", "invalid-reward", detail, field=field)


def _text(fields: dict[str, Any], name: str, limit: int, *, required: bool) -> str:
    value = fields.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise _bad(name, f"{name} must be text of 1 to {limit} characters.")
    return value.strip()


def _optional_int(fields: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(name, f"{name} must be a whole number from {low} to {high}, or null.")
    return value


def _url(value: Any, name: str, *, loopback: bool = False) -> str:
    """https only; a merchant on this machine over plain http only outside production (local runs, tests)."""
    if not isinstance(value, str) or len(value) > 500:
        raise _bad(name, f"{name} must be a URL of at most 500 characters.")
    parts = urlsplit(value)
    if (parts.scheme == "https" and parts.hostname) or (
            loopback and parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return value
    raise _bad(name, f"{name} must be an https URL" + (" (http only for localhost)." if loopback else "."))


def _time(fields: dict[str, Any], name: str) -> datetime | None:
    value = fields.get(name)
    if value is None or isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise _bad(name, f"{name} must be an ISO 8601 time with an offset, or null.") from exc
    if parsed.tzinfo is None:
        raise _bad(name, f"{name} needs a UTC offset, e.g. 2026-12-01T00:00:00+08:00.")
    return parsed


def _clean(fields: dict[str, Any], *, partial: bool, loopback: bool) -> dict[str, Any]:
    """Every field a reward has, checked; with `partial`, only those given."""
    out: dict[str, Any] = {}

    def given(name: str) -> bool:
        return not partial or name in fields

    if not partial:
        code = fields.get("code")
        if not isinstance(code, str) or not _CODE.match(code):
            raise _bad("code", "code must be 2-64 lowercase letters, digits or dashes, e.g. metro-ride-5.")
        out["code"] = code
    for name, limit in (("title_zh", 120), ("title_en", 120), ("merchant_zh", 80), ("merchant_en", 80)):
        if given(name):
            out[name] = _text(fields, name, limit, required=True)
    for name in ("description_zh", "description_en"):
        if given(name):
            out[name] = _text(fields, name, 4000, required=False)
    if given("category"):
        if fields.get("category") not in CATEGORIES:
            raise _bad("category", f"category must be one of {', '.join(CATEGORIES)}.")
        out["category"] = fields["category"]
    if given("price"):
        price = _optional_int(fields, "price", 1, PRICE_MAX)
        if price is None:
            raise _bad("price", f"price must be a whole number of energy from 1 to {PRICE_MAX}.")
        out["price"] = price
    for name in ("per_day_limit", "lifetime_limit"):
        if given(name):
            out[name] = _optional_int(fields, name, 1, 10_000)
    if not partial:
        out["stock"] = _optional_int(fields, "stock", 0, 10_000_000)
    for name in ("valid_from", "valid_until"):
        if given(name):
            out[name] = _time(fields, name)
    if given("images"):
        images = fields.get("images") or []
        if not isinstance(images, list) or len(images) > 8:
            raise _bad("images", "images must be a list of at most 8 image URLs.")
        out["images"] = msgspec.json.encode([_url(i, "images") for i in images]).decode()
    if given("fulfilment"):
        if fields.get("fulfilment", "code") not in FULFILMENTS:
            raise _bad("fulfilment", "fulfilment must be code (we issue a voucher), pool (loaded codes) or merchant.")
        out["fulfilment"] = fields.get("fulfilment", "code")
    if given("merchant_url"):
        out["merchant_url"] = None if fields.get("merchant_url") is None else _url(
            fields["merchant_url"], "merchant_url", loopback=loopback)
    if given("voucher_valid_days"):
        out["voucher_valid_days"] = _optional_int(fields, "voucher_valid_days", 1, 3650) or 30
    if given("status"):
        if fields.get("status", "active") not in STATUSES:
            raise _bad("status", "status must be active, paused or retired.")
        out["status"] = fields.get("status", "active")
    if given("partner_id"):
        out["partner"] = fields.get("partner_id")
    return out


def _check_whole(reward: dict[str, Any]) -> None:
    if reward.get("fulfilment") == "merchant" and not reward.get("merchant_url"):
        raise _bad("merchant_url", "A reward the merchant fulfils needs merchant_url, the address we call.")
    if reward.get("fulfilment") == "merchant" and not reward.get("partner"):
        raise _bad("partner_id", "A reward the merchant fulfils needs partner_id: we sign calls with its secret.")
    start, end = reward.get("valid_from"), reward.get("valid_until")
    if start and end and start >= end:
        raise _bad("valid_until", "valid_until must be after valid_from.")


_COLUMNS = """r.id, r.code, r.title_zh, r.title_en, r.description_zh, r.description_en, r.merchant_zh, r.merchant_en,
    r.partner, r.category, r.price, r.stock, r.per_day_limit, r.lifetime_limit, r.valid_from, r.valid_until, r.images,
    r.fulfilment, r.merchant_url, r.voucher_valid_days, r.status, r.created_at, r.updated_at"""


def _out(row: Any) -> dict[str, Any]:
    out = dict(row)
    images = out.get("images")
    out["images"] = msgspec.json.decode(images) if isinstance(images, str | bytes) else (images or [])
    return out


async def create_reward(fields: dict[str, Any], *, local: bool = False) -> dict[str, Any]:
    """`local`: not production, so a merchant on this machine may be called over plain http."""
    clean = _clean(fields, partial=False, loopback=local)
    clean.setdefault("fulfilment", "code")
    _check_whole(clean)
    if clean["fulfilment"] == "pool" and clean["stock"]:
        raise _bad("stock", "A pool reward's stock is the number of codes loaded; load codes instead.")
    if clean["fulfilment"] == "pool":
        clean["stock"] = 0
    names = ", ".join(clean)
    values = ", ".join(f"${i}" + ("::jsonb" if n == "images" else "") for i, n in enumerate(clean, start=1))
    async with connection() as conn:
        try:
            row = await conn.fetchrow(
                f"INSERT INTO reward ({names}, created_at, updated_at) VALUES ({values}, now(), now()) "  # noqa: S608
                f"RETURNING {_COLUMNS.replace('r.', '')}",
                *clean.values(),
            )
        except asyncpg.UniqueViolationError as exc:
            raise DomainError("conflict", "reward-code-taken", f"A reward with code {clean['code']} exists.") from exc
        except (asyncpg.ForeignKeyViolationError, asyncpg.DataError) as exc:
            raise _bad("partner_id", "partner_id must be the id of a registered partner.") from exc
    return _out(row)


async def update_reward(reward_id: int, changes: dict[str, Any], *, local: bool = False) -> dict[str, Any]:
    """Change what a reward is; stock moves only through `adjust_stock` (it is a counter, not a setting)."""
    clean = _clean(changes, partial=True, loopback=local)
    async with engine().transaction() as tx:
        conn = tx.connection
        current = await conn.fetchrow(f"SELECT {_COLUMNS} FROM reward r WHERE id = $1 FOR UPDATE", reward_id)  # noqa: S608
        if current is None:
            raise DomainError("not_found", "reward-not-found", "No reward has this id.")
        _check_whole({**dict(current), **clean})
        if clean:
            sets = ", ".join(f"{n} = ${i}" + ("::jsonb" if n == "images" else "")
                             for i, n in enumerate(clean, start=2))
            await conn.execute(f"UPDATE reward SET {sets}, updated_at = now() WHERE id = $1",  # noqa: S608
                               reward_id, *clean.values())
    return await get_reward(reward_id)


async def adjust_stock(reward_id: int, delta: int) -> dict[str, Any]:
    """Add (or, negative, withdraw) items; never below what is left. Unlimited rewards have no stock."""
    async with connection() as conn:
        row = await conn.fetchrow(
            """UPDATE reward SET stock = stock + $2, updated_at = now()
               WHERE id = $1 AND stock IS NOT NULL AND fulfilment <> 'pool' AND stock + $2 >= 0 RETURNING stock""",
            reward_id, delta,
        )
        if row is None:
            current = await conn.fetchrow("SELECT stock, fulfilment FROM reward WHERE id = $1", reward_id)
            if current is None:
                raise DomainError("not_found", "reward-not-found", "No reward has this id.")
            if current["fulfilment"] == "pool":
                raise DomainError("conflict", "stock-is-codes", "A pool reward's stock is its loaded codes.")
            if current["stock"] is None:
                raise DomainError("conflict", "stock-unlimited", "This reward has unlimited stock.")
            raise DomainError("conflict", "stock-too-low", f"Only {current['stock']} items are left to withdraw.")
    return await get_reward(reward_id)


async def load_vouchers(reward_id: int, codes: list[str]) -> dict[str, Any]:
    """Load a merchant's voucher codes for a pool reward; each adds one item of stock, a repeat adds none."""
    clean = sorted({c.strip() for c in codes if isinstance(c, str) and c.strip()})
    if not clean or len(clean) > 10_000 or any(len(c) > 120 for c in clean):
        raise DomainError("invalid", "invalid-vouchers", "Send 1 to 10,000 codes of at most 120 characters each.")
    async with engine().transaction() as tx:
        conn = tx.connection
        kind = await conn.fetchval("SELECT fulfilment FROM reward WHERE id = $1 FOR UPDATE", reward_id)
        if kind is None:
            raise DomainError("not_found", "reward-not-found", "No reward has this id.")
        if kind != "pool":
            raise DomainError("conflict", "not-a-pool-reward", "Only a pool reward takes loaded voucher codes.")
        added = await conn.fetchval(
            """WITH ins AS (INSERT INTO reward_voucher (reward, code, loaded_at) SELECT $1, c, now()
                            FROM unnest($2::text[]) AS c ON CONFLICT (reward, code) DO NOTHING RETURNING 1)
               SELECT count(*) FROM ins""",
            reward_id, clean,
        )
        await conn.execute("UPDATE reward SET stock = stock + $2, updated_at = now() WHERE id = $1", reward_id, added)
    return {"loaded": added, "repeated": len(clean) - added, "reward": await get_reward(reward_id)}


async def get_reward(reward_id: int) -> dict[str, Any]:
    async with connection() as conn:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM reward r WHERE id = $1", reward_id)  # noqa: S608
    if row is None:
        raise DomainError("not_found", "reward-not-found", "No reward has this id.")
    return _out(row)


async def list_rewards(*, offered_only: bool, category: str | None = None,
                       now: datetime | None = None) -> list[dict[str, Any]]:
    """`offered_only`: what residents see (active, inside its validity window), cheapest first."""
    async with connection() as conn:
        rows = await conn.fetch(
            f"""SELECT {_COLUMNS} FROM reward r
                WHERE (NOT $1 OR (r.status = 'active' AND (r.valid_from IS NULL OR r.valid_from <= $2)
                                  AND (r.valid_until IS NULL OR r.valid_until > $2)))
                  AND ($3::text IS NULL OR r.category = $3)
                ORDER BY r.price, r.id""",  # noqa: S608 - constant columns
            offered_only, now or datetime.now(UTC), category,
        )
    return [_out(r) for r in rows]
