"""Market programmes: which book entries may be pooled into lots, and how a sale's proceeds are paid.

A programme names the behaviours (each at exact methodology versions), the methodology releases, the trust tiers
and the residents' local days it accepts, how old an entry must be before it may be pooled (`settle_days`: a
partner may still reverse a younger one), whether contributors are paid in fen or in energy at a published rate,
and the share of every sale that goes to a public-benefit project. The rules never change once published (lot
manifests quote them); the database refuses an edit, and an operator closes a programme and opens another.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import asyncpg
import msgspec

from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.methodology.catalogue import TRUST_TIERS, behaviours, releases

__all__ = ["PPM", "Programme", "close_programme", "create_programme", "get_programme", "list_programmes"]

PPM = 1_000_000
_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{1,63}$")
_RULE = re.compile(r"^([a-z0-9_]+)(?:@([1-9][0-9]{0,3}))?$")
MAX_PERIOD_DAYS = 3 * 366


class Programme(msgspec.Struct, kw_only=True, frozen=True):
    id: int
    code: str
    name_zh: str
    name_en: str
    exchange_zh: str
    exchange_en: str
    behaviours: list[str]
    methodology_releases: list[str]
    trust_tiers: list[str]
    period_from: date
    period_to: date
    settle_days: int
    payout: str
    energy_per_fen: int | None
    benefit_ppm: int
    benefit_name_zh: str
    benefit_name_en: str
    benefit_url: str
    benefit_account: int | None
    status: str

    def as_rules(self) -> dict[str, Any]:
        """The rules as the manifest quotes them."""
        return {
            "code": self.code, "behaviours": self.behaviours, "methodology_releases": self.methodology_releases,
            "trust_tiers": self.trust_tiers, "period_from": self.period_from.isoformat(),
            "period_to": self.period_to.isoformat(), "settle_days": self.settle_days, "payout": self.payout,
            "energy_per_fen": self.energy_per_fen, "benefit_ppm": self.benefit_ppm,
            "benefit": self.benefit_name_en or None,
        }


def _bad(field: str, detail: str) -> DomainError:
    return DomainError("invalid", "invalid-programme", detail, field=field)


def _list(value: Any) -> list[Any]:
    return msgspec.json.decode(value) if isinstance(value, str | bytes) else list(value or [])


def _programme(row: asyncpg.Record) -> Programme:
    out = dict(row)
    for name in ("behaviours", "methodology_releases", "trust_tiers"):
        out[name] = _list(out[name])
    out.pop("created_at", None)
    return Programme(**out)


def _behaviour_rules(raw: Any) -> list[str]:
    """`code@version` for each accepted version; a bare code means every version the catalogue has now."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= 200:
        raise _bad("behaviours", "behaviours must list 1 to 200 behaviour codes, each optionally @version.")
    known = behaviours()
    out: set[str] = set()
    for item in raw:
        m = _RULE.match(item) if isinstance(item, str) else None
        if not m or m.group(1) not in known:
            raise _bad("behaviours", f"{item!r} is not a behaviour of the methodology (GET /v1/methodology/behaviours)"
                                     ", optionally with @version, e.g. metro_ride@1.")
        versions = known[m.group(1)].versions
        if m.group(2) is None:
            out.update(f"{m.group(1)}@{v.version}" for v in versions)
        elif not 1 <= int(m.group(2)) <= len(versions):
            raise _bad("behaviours", f"{m.group(1)} has versions 1 to {len(versions)}, not {m.group(2)}.")
        else:
            out.add(item)
    return sorted(out)


async def create_programme(fields: dict[str, Any]) -> Programme:
    code = fields.get("code")
    if not isinstance(code, str) or not _CODE.match(code):
        raise _bad("code", "code must be 2-64 lowercase letters, digits or dashes, e.g. beijing-maas-2026.")
    rules = _behaviour_rules(fields.get("behaviours"))
    known_releases = [r.version for r in releases()]
    chosen = fields.get("methodology_releases") or known_releases
    if not isinstance(chosen, list) or any(r not in known_releases for r in chosen):
        raise _bad("methodology_releases", f"methodology_releases must be among {', '.join(known_releases)}.")
    tiers = fields.get("trust_tiers") or ["verified"]
    if not isinstance(tiers, list) or any(t not in TRUST_TIERS for t in tiers):
        raise _bad("trust_tiers", f"trust_tiers must be among {', '.join(TRUST_TIERS)}.")
    start, end = fields.get("period_from"), fields.get("period_to")
    if not isinstance(start, date) or not isinstance(end, date) or start > end:
        raise _bad("period_from", "period_from and period_to are residents' local days, the first not after the last.")
    if (end - start).days >= MAX_PERIOD_DAYS:
        raise _bad("period_to", f"A programme covers at most {MAX_PERIOD_DAYS} days; open another for later years.")
    settle_days = fields.get("settle_days", 7)
    if not isinstance(settle_days, int) or not 0 <= settle_days <= 365:
        raise _bad("settle_days", "settle_days must be 0 to 365: how old an entry must be before it may be pooled.")
    payout = fields.get("payout", "fen")
    rate = fields.get("energy_per_fen")
    if payout not in ("fen", "energy"):
        raise _bad("payout", "payout is fen (money) or energy (converted at energy_per_fen).")
    if (payout == "energy") != (rate is not None) or (rate is not None and not 1 <= rate <= 1_000_000):
        raise _bad("energy_per_fen", "energy_per_fen (1 to 1,000,000 energy per fen) is given exactly when payout "
                                     "is energy.")
    ppm = fields.get("benefit_ppm", 0)
    if not isinstance(ppm, int) or not 0 <= ppm <= PPM:
        raise _bad("benefit_ppm", "benefit_ppm is the public-benefit share of each sale, 0 to 1,000,000 ppm.")
    names = {k: (fields.get(k) or "").strip() for k in ("benefit_name_zh", "benefit_name_en", "benefit_url")}
    if ppm and not (names["benefit_name_zh"] and names["benefit_name_en"]):
        raise _bad("benefit_name_en", "A public-benefit share needs the project's name in zh-CN and en.")
    if names["benefit_url"] and not names["benefit_url"].startswith("https://"):
        raise _bad("benefit_url", "benefit_url must be an https URL where residents can read about the project.")
    for name in ("name_zh", "name_en", "exchange_zh", "exchange_en"):
        value = fields.get(name)
        if not isinstance(value, str) or not value.strip() or len(value) > 120:
            raise _bad(name, f"{name} must be text of 1 to 120 characters.")
    async with engine().transaction() as tx:
        conn = tx.connection
        account = None
        if ppm:
            account = await conn.fetchval(
                """INSERT INTO ledger_account (unit, purpose, code, holder, balance, created_at)
                   VALUES ('fen', 'benefit', $1, NULL, NULL, now()) ON CONFLICT (code) DO NOTHING RETURNING id""",
                f"fen:benefit:{code}")
        try:
            row = await conn.fetchrow(
                """INSERT INTO market_programme (code, name_zh, name_en, exchange_zh, exchange_en, behaviours,
                     methodology_releases, trust_tiers, period_from, period_to, settle_days, payout, energy_per_fen,
                     benefit_ppm, benefit_name_zh, benefit_name_en, benefit_url, benefit_account, status, created_at)
                   VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb, $9, $10, $11, $12, $13, $14, $15, $16,
                           $17, $18, 'open', now()) RETURNING *""",
                code, fields["name_zh"].strip(), fields["name_en"].strip(), fields["exchange_zh"].strip(),
                fields["exchange_en"].strip(), msgspec.json.encode(rules).decode(),
                msgspec.json.encode(sorted(set(chosen))).decode(),
                msgspec.json.encode(sorted(set(tiers), key=TRUST_TIERS.index)).decode(), start, end, settle_days,
                payout, rate, ppm, names["benefit_name_zh"], names["benefit_name_en"], names["benefit_url"], account)
        except asyncpg.UniqueViolationError as exc:
            raise DomainError("conflict", "programme-exists", f"A programme with the code {code} exists.") from exc
        if ppm and account is None:
            raise DomainError("conflict", "programme-exists", f"A programme with the code {code} exists.")
    return _programme(row)


async def get_programme(code_or_id: str | int, conn: asyncpg.Connection | None = None) -> Programme:
    sql = ("SELECT * FROM market_programme WHERE id = $1" if isinstance(code_or_id, int)
           else "SELECT * FROM market_programme WHERE code = $1")
    if conn is not None:
        row = await conn.fetchrow(sql, code_or_id)
    else:
        async with connection() as c:
            row = await c.fetchrow(sql, code_or_id)
    if row is None:
        raise DomainError("not_found", "programme-not-found", "No market programme has this code.")
    return _programme(row)


async def list_programmes() -> list[Programme]:
    async with connection() as conn:
        rows = await conn.fetch("SELECT * FROM market_programme ORDER BY status = 'closed', id DESC")
    return [_programme(r) for r in rows]


async def close_programme(code: str) -> Programme:
    """No new lots; lots already made keep their programme and can still be sold."""
    async with connection() as conn:
        row = await conn.fetchrow("UPDATE market_programme SET status = 'closed' WHERE code = $1 RETURNING *", code)
    if row is None:
        raise DomainError("not_found", "programme-not-found", "No market programme has this code.")
    return _programme(row)
